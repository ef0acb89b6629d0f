"""`leaderboard data`: the data mirror and the dataset pins of a task set and of judged leaderboards."""

from __future__ import annotations

import os
from pathlib import Path

import click

from backend.cli.common import handle_errors

TASK_SET_OPTION = click.option(
    "--task-set",
    default="open_llm_v2",
    show_default=True,
    help="A task set name (tasks/<name>.yaml) or a path to a task set manifest.",
)

JUDGED_OPTION = click.option(
    "--judged",
    "judged",
    multiple=True,
    metavar="NAME",
    help="Also the data of this judged leaderboard (a name in leaderboard_configs/ or a path; repeatable; "
    "'all': every judged config there): its instructions, reference outputs and GLM table.",
)


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


@click.group()
def data() -> None:
    """The benchmarks' data: a local mirror runs read instead of the Hub, and pinned dataset revisions."""


@data.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rows", type=click.IntRange(min=1), default=12, show_default=True, help="Rows per split.")
@click.option("--seed", type=int, default=0, show_default=True)
@TASK_SET_OPTION
@JUDGED_OPTION
@handle_errors
def synthesize(folder: Path, rows: int, seed: int, task_set: str, judged: tuple[str, ...]) -> None:
    """Write made-up data in the real datasets' schemas into FOLDER (for tests and demos, not scores)."""
    from backend.evaluation.data import dataset_revisions, nltk_data_dir
    from backend.evaluation.synthetic import synthesize as synthesize_mirror
    from backend.evaluation.tasks import load_task_set
    from backend.judged.data import load_judged_configs
    from backend.judged.synthetic import synthesize_judged

    configs = load_judged_configs(judged)
    mirror = synthesize_mirror(folder, rows=rows, seed=seed, task_set=load_task_set(task_set))
    if configs:
        synthesize_judged(mirror, configs, rows=rows, seed=seed)
    for repo, revision in sorted(dataset_revisions(mirror).items()):
        click.echo(f"{repo}\t{revision}")
    click.echo(f"synthetic mirror in {mirror}; run with NLTK_DATA={nltk_data_dir(mirror)}")


@data.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@TASK_SET_OPTION
@JUDGED_OPTION
@handle_errors
def mirror(folder: Path, task_set: str, judged: tuple[str, ...]) -> None:
    """Copy every split the task set (and the judged leaderboards) read from the Hub into FOLDER, at the
    pinned revisions (HF_TOKEN is used for gated datasets)."""
    from backend.evaluation.data import dataset_revisions, mirror_from_hub
    from backend.evaluation.tasks import load_task_set
    from backend.judged.data import (
        describe_ref,
        judged_data_files,
        load_judged_configs,
        mirror_judged_from_hub,
    )

    tasks = load_task_set(task_set)
    configs = load_judged_configs(judged)
    unpinned = [pin.repo for pin in tasks.datasets if pin.revision is None]
    unpinned += [describe_ref(r) for c in configs for r in judged_data_files(c) if r.revision is None]
    if unpinned:
        click.echo(f"not pinned, mirrored at the Hub's current commit: {', '.join(unpinned)}", err=True)
    path = mirror_from_hub(folder, tasks, token=_token())
    if configs:
        mirror_judged_from_hub(path, configs, token=_token())
    for repo, revision in sorted(dataset_revisions(path).items()):
        click.echo(f"{repo}\t{revision}")
    click.echo(f"mirror in {path}")


@data.command()
@TASK_SET_OPTION
@JUDGED_OPTION
@click.option("--update", is_flag=True, help="Re-pin every dataset to the Hub's current commit.")
@handle_errors
def pin(task_set: str, judged: tuple[str, ...], update: bool) -> None:
    """Write each dataset's current Hub commit into the task set manifest (and the judged configs, with a
    local judge model's commit), unpinned ones only unless --update; commit the files afterwards."""
    from backend.evaluation.data import pin as pin_datasets
    from backend.evaluation.tasks import load_task_set
    from backend.judged.data import describe_ref, judged_data_files, load_judged_configs, pin_judged

    configs = load_judged_configs(judged)
    tasks = pin_datasets(load_task_set(task_set), token=_token(), update=update)
    for dataset in tasks.datasets:
        click.echo(f"{dataset.repo}\t{dataset.revision}")
    click.echo(f"pinned in {tasks.path}")
    for config in configs:
        pinned = pin_judged(config, token=_token(), update=update)
        for ref in judged_data_files(pinned):
            click.echo(f"{describe_ref(ref)}\t{ref.revision}")
        if pinned.judge.revision is not None:
            click.echo(f"{pinned.judge.model}\t{pinned.judge.revision}")
        click.echo(f"pinned in {pinned.source}")


@data.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@TASK_SET_OPTION
@JUDGED_OPTION
@handle_errors
def verify(folder: Path, task_set: str, judged: tuple[str, ...]) -> None:
    """Check that FOLDER has every file the task set (and the judged leaderboards) read, with the sha256 its
    manifest recorded; the judged data is also read as a run reads it."""
    from backend.evaluation.data import dataset_revisions, verify_mirror
    from backend.evaluation.tasks import load_task_set
    from backend.judged.data import load_judged_configs, verify_judged_mirror

    configs = load_judged_configs(judged)
    verify_mirror(folder, load_task_set(task_set))
    if configs:
        verify_judged_mirror(folder, configs)
    for repo, revision in sorted(dataset_revisions(folder).items()):
        click.echo(f"{repo}\t{revision}")
    click.echo(f"{folder}: every file is present and intact")
