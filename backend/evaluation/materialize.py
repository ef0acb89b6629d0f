"""The task files of one run, written from a task set: the installed harness's files, with the data source
overridden.

Each written task file includes the installed lm-eval task file unchanged (so prompts, metrics and
``!function`` helpers are the harness's own) and overrides only where the data comes from: files of a local
data mirror, or the Hub at the pinned dataset revision. The group files (and the run's own group, the
reference's ``leaderboard``) are copied unchanged, so lm-eval loads the tasks in the reference's order. A
manifest task may name ``process_results: package.module:function``, the project's own scorer in place of
the task file's; ``backend.evaluation.rescore`` applies it to stored per-sample outputs.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from backend.errors import DatasetNotPinned, TaskSetError
from backend.evaluation.data import check_mirror, dataset_revisions, mirror_file
from backend.evaluation.tasks import Subtask, TaskSet, check_harness, harness_tasks_folder, read_task_file

#: What ``materialize`` writes next to the task files: the run's task names and data provenance.
MATERIALIZED_FILE = "materialized.json"


def _dump(path: Path, data: Mapping[str, Any], comment: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, width=1000)
    path.write_text(f"# {comment}\n{text}", encoding="utf-8")


def _write_scorer(folder: Path, subtask: Subtask, task_set: TaskSet) -> None:
    """Point the task's ``process_results`` at the project's scorer.

    lm-eval resolves ``!function name.attr`` as ``attr`` of the file ``name.py`` beside the task file, so a
    one-line shim beside it re-exports the manifest's ``package.module:function``.
    """
    assert subtask.process_results is not None
    module, function = subtask.process_results.split(":")
    try:
        found = callable(getattr(importlib.import_module(module), function, None))
    except ImportError as exc:
        raise TaskSetError(
            f"{task_set.path}: task {subtask.name}: process_results {subtask.process_results!r} cannot be "
            f"imported: {exc}"
        ) from exc
    if not found:
        raise TaskSetError(
            f"{task_set.path}: task {subtask.name}: process_results {subtask.process_results!r}: "
            f"{module} has no function {function}"
        )
    shim = f"_scorer_{subtask.name}"
    (folder / f"{shim}.py").write_text(
        f"# {task_set.name}: the project's scorer for {subtask.name}\n"
        f"from {module} import {function} as process_results  # noqa: F401\n",
        encoding="utf-8",
    )
    with (folder / f"{subtask.name}.yaml").open("a", encoding="utf-8") as file:
        file.write(f"process_results: !function {shim}.process_results\n")


def materialize(task_set: TaskSet, out_dir: Path, data_mirror: Path | None) -> Path:
    """Write the task files of one run into ``out_dir``; return the folder to give lm-eval.

    Use it as ``TaskManager(include_path=str(folder), include_defaults=False)`` and evaluate
    ``task_set.run_names`` (also recorded in ``folder/materialized.json``). With ``data_mirror`` every
    task reads the mirror's parquet files; without, it reads the Hub at the pinned revision, and an
    unpinned dataset is refused.
    """
    check_harness(task_set)
    root = harness_tasks_folder()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [
        *out_dir.glob("tasks/*.yaml"),
        *out_dir.glob("tasks/_scorer_*.py"),
        *out_dir.glob("groups/*.yaml"),
    ]:
        stale.unlink()  # left by an earlier materialize into the same folder

    if data_mirror is not None:
        data_mirror = Path(data_mirror).resolve()
        check_mirror(data_mirror, task_set)
        revisions = dataset_revisions(data_mirror)
    else:
        unpinned = [pin.repo for pin in task_set.datasets if pin.revision is None]
        if unpinned:
            raise DatasetNotPinned(
                f"{', '.join(unpinned)} {'has' if len(unpinned) == 1 else 'have'} revision: null in "
                f"{task_set.path}: run `leaderboard data pin --task-set {task_set.name}` where the Hub is "
                "reachable (and commit the manifest), or evaluate from a data mirror"
            )
        revisions = {pin.repo: pin.revision for pin in task_set.datasets if pin.revision}

    sources: dict[str, dict[str, Any]] = {}
    for subtask in task_set.subtasks:
        override: dict[str, Any] = {"include": str(root / subtask.yaml), "task": subtask.name}
        if data_mirror is not None:
            override["dataset_path"] = "parquet"
            override["dataset_name"] = None
            override["dataset_kwargs"] = {
                "data_files": {
                    split: str(mirror_file(data_mirror, subtask.dataset, subtask.config, split))
                    for split in subtask.split_names
                }
            }
        else:
            override["dataset_kwargs"] = {"revision": revisions[subtask.dataset]}
        _dump(
            out_dir / "tasks" / f"{subtask.name}.yaml",
            override,
            f"{task_set.name}: {subtask.name} from lm-eval {task_set.harness.version}, data overridden",
        )
        if subtask.process_results is not None:
            _write_scorer(out_dir / "tasks", subtask, task_set)
        sources[subtask.name] = {
            "config_source": str(root / subtask.yaml),
            "dataset_path": subtask.dataset,
            "dataset_name": subtask.config,
            "revision": revisions[subtask.dataset],
        }
        if subtask.process_results is not None:
            sources[subtask.name]["process_results"] = subtask.process_results

    copied = [(g.name, g.yaml) for g in task_set.groups if g.kind == "group"]
    if task_set.run is not None:
        copied.append((task_set.run.name, task_set.run.yaml))
    for name, relative in copied:
        _dump(
            out_dir / "groups" / f"{name}.yaml",
            read_task_file(root / relative),
            f"{task_set.name}: copied from lm-eval {task_set.harness.version} {relative}",
        )

    provenance = {
        "task_set": task_set.name,
        "manifest": str(task_set.path),
        "harness": {"package": task_set.harness.package, "version": task_set.harness.version},
        "run_names": list(task_set.run_names),
        "data_source": "mirror" if data_mirror is not None else "hub",
        "data_mirror": str(data_mirror) if data_mirror is not None else None,
        # The task set's datasets only: a mirror may also hold other leaderboards' data.
        "dataset_revisions": {repo: revisions[repo] for repo in sorted(p.repo for p in task_set.datasets)},
        "sources": sources,
    }
    (out_dir / MATERIALIZED_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return out_dir


def read_materialized(folder: Path) -> dict[str, Any]:
    """What ``materialize`` recorded in ``folder``: run_names, data_source, dataset_revisions, sources."""
    path = Path(folder) / MATERIALIZED_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TaskSetError(f"{path} is missing or unreadable: materialize the task set again") from exc
    return data


def hub_configs(configs: Mapping[str, Mapping[str, Any]], folder: Path) -> dict[str, dict[str, Any]]:
    """The task configs of a run (``results["configs"]``) as a Hub run at the same revisions records them.

    A mirror run's configs name parquet files by absolute path, which depends on where the mirror
    lies, and the materialized task file as ``metadata.config_source``. This gives back
    ``dataset_path``/``dataset_name``, records the data's revision as ``dataset_kwargs: {revision: ...}``
    and names the installed task file as the source, so runs over the same data record the same configs.
    """
    sources = read_materialized(folder)["sources"]
    restored = {}
    for name, config in configs.items():
        config = dict(config)
        if name in sources:
            source = sources[name]
            config["dataset_path"] = source["dataset_path"]
            config["dataset_name"] = source["dataset_name"]
            config["dataset_kwargs"] = {"revision": source["revision"]}
            if isinstance(config.get("metadata"), Mapping) and "config_source" in config["metadata"]:
                config["metadata"] = {**config["metadata"], "config_source": source["config_source"]}
        restored[name] = config
    return restored
