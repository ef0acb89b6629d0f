"""The local data mirror: every benchmark's data in a folder, so runs never need the Hub.

Layout::

    <mirror>/MANIFEST.json                                   what each file is (see below)
    <mirror>/<dataset repo>/<config or "default">/<split>.parquet
    <mirror>/<dataset repo>/_files/<file name>                 a file of the repository (df_gamed.csv)
    <mirror>/nltk_data/tokenizers/punkt_tab/english/         the sentence splitter IFEval scores with

``MANIFEST.json`` records, per file, the repository, config and split, its source (``hub`` or
``synthetic``), the dataset revision (the commit sha read from the Hub, or ``synthetic-<content hash>``),
the row count and the file's sha256 (a repository file also its name under ``file``). A mirror is built on a machine with Hub access by
``mirror_from_hub`` (``leaderboard data mirror``); ``synthesize`` (``leaderboard data synthesize``) writes
small made-up data in the real datasets' schemas for tests and demos. Either way the run's task files
(``tasks.materialize``) read the parquet files and compute exactly what they compute on Hub data. The
judged leaderboards' instruction sets, reference outputs and GLM table join the same mirror
(``backend.judged.data``). A mirror holds one revision of each repository.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from backend.domain import REPO_ID_RE
from backend.errors import DatasetSourceError, MirrorError
from backend.evaluation.tasks import (
    TaskSet,
    load_task_set,
    write_revisions,
)

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = "leaderboard-data-mirror/1"
NLTK_FOLDER = "nltk_data"
PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")
#: Where a repository's files lie beside its configs' folders: no config name starts with '_'.
FILES_FOLDER = "_files"
#: Config, split and file names, as the Hub spells them: one path component, never '.' or '..'.
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")


# ----------------------------------------------------------------------------------------------- layout


def mirror_file(mirror: Path, repo: str, config: str | None, split: str) -> Path:
    """Where the mirror keeps one split of one dataset config."""
    folder = _part(config or "default", "config", repo)
    return Path(mirror) / _repo(repo) / folder / f"{_part(split, 'split', repo)}.parquet"


def mirror_repo_file(mirror: Path, repo: str, filename: str) -> Path:
    """Where the mirror keeps one file of a dataset repository (AlpacaEval's df_gamed.csv)."""
    return Path(mirror) / _repo(repo) / FILES_FOLDER / _part(filename, "file name", repo)


def _repo(repo: str) -> str:
    if not isinstance(repo, str) or not REPO_ID_RE.match(repo):
        raise MirrorError(f"{repo!r} is not a dataset repository id (owner/name): no mirror path for it")
    return repo


def _part(name: str, what: str, repo: str) -> str:
    """One path component inside the mirror: a name the Hub allows, so no path leaves the mirror."""
    if not isinstance(name, str) or not _PART.match(name):
        raise MirrorError(f"{name!r} is not a {what} of {repo} the mirror can hold (letters, digits, '_.-')")
    return name


def nltk_data_dir(mirror: Path) -> Path:
    """The folder to set as NLTK_DATA for runs over this mirror."""
    return Path(mirror) / NLTK_FOLDER


def read_manifest(mirror: Path) -> dict[str, Any]:
    path = Path(mirror) / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MirrorError(
            f"{mirror} is not a data mirror (no {MANIFEST}): build one with `leaderboard data mirror`"
        ) from exc
    except (OSError, ValueError) as exc:
        raise MirrorError(f"{path} is unreadable ({exc}): rebuild the mirror") from exc
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        raise MirrorError(f"{path} is not a {MANIFEST_FORMAT} manifest: rebuild the mirror")
    return manifest


def dataset_revisions(mirror: Path) -> dict[str, str]:
    """Dataset repository -> the revision its files in the mirror were taken at (for results provenance)."""
    revisions: dict[str, str] = {}
    for name, entry in read_manifest(mirror)["files"].items():
        repo, revision = entry["repo"], entry["revision"]
        if revisions.setdefault(repo, revision) != revision:
            raise MirrorError(
                f"{mirror}: files of {repo} come from two revisions ({revisions[repo]}, {revision} for "
                f"{name}): rebuild the mirror"
            )
    return revisions


def mirror_problems(mirror: Path, paths: Iterable[Path], *, checksums: bool = False) -> list[str]:
    """What is wrong with these files of the mirror: not in the manifest, missing, or (with checksums)
    changed since it was written."""
    files = read_manifest(mirror)["files"]
    problems = []
    for path in paths:
        name = path.relative_to(mirror).as_posix()
        if name not in files:
            problems.append(f"{name} is not in {MANIFEST}")
        elif not path.is_file():
            problems.append(f"{name} is missing")
        elif checksums and file_sha256(path) != files[name]["sha256"]:
            problems.append(f"{name} does not match its sha256 in {MANIFEST}")
    return problems


def check_mirror(mirror: Path, task_set: TaskSet, *, checksums: bool = False) -> None:
    """Refuse a mirror that lacks a file the task set reads (and, with checksums, one whose bytes changed)."""
    paths = (mirror_file(mirror, *key) for key in task_set.data_files())
    problems = mirror_problems(mirror, paths, checksums=checksums)
    if problems:
        raise MirrorError(
            f"the data mirror {mirror} cannot serve task set {task_set.name}: {'; '.join(problems)}. "
            "Rebuild it with `leaderboard data mirror` (or `leaderboard data synthesize` for test data)"
        )


def verify_mirror(mirror: Path, task_set: TaskSet | None = None) -> None:
    """Check every file of the task set against the sha256 the manifest recorded."""
    check_mirror(mirror, task_set or load_task_set(), checksums=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(
    mirror: Path,
    task_set: TaskSet,
    rows: Mapping[tuple[str, str | None, str], int],
    revisions: Mapping[str, str],
    source: str,
    punkt: str,
) -> Path:
    entries = dict(
        manifest_entry(
            mirror,
            mirror_file(mirror, repo, config, split),
            repo=repo,
            config=config,
            split=split,
            source=source,
            revision=revisions[repo],
            rows=count,
        )
        for (repo, config, split), count in rows.items()
    )
    manifest = {
        "format": MANIFEST_FORMAT,
        "task_set": task_set.name,
        "nltk_data": {"path": NLTK_FOLDER, "punkt_tab": punkt},
        "files": dict(sorted(entries.items())),
    }
    path = mirror / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def manifest_entry(
    mirror: Path,
    path: Path,
    *,
    repo: str,
    source: str,
    revision: str,
    rows: int,
    config: str | None = None,
    split: str | None = None,
    file: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """A file's name in the manifest and what the manifest records about it (a split, or a ``file``)."""
    entry: dict[str, Any] = {"repo": repo, "config": config, "split": split}
    if file is not None:
        entry["file"] = file
    entry.update(source=source, revision=revision, rows=rows, sha256=file_sha256(path))
    return path.relative_to(mirror).as_posix(), entry


def add_to_manifest(mirror: Path, entries: Mapping[str, Mapping[str, Any]]) -> Path:
    """Record more files in an existing mirror's manifest (the judged leaderboards' data, written after the
    task set's); refused where a repository would have files of two revisions."""
    manifest = read_manifest(mirror)
    files = {**manifest["files"], **{name: dict(entry) for name, entry in entries.items()}}
    revisions: dict[str, str] = {}
    for name, entry in files.items():
        if revisions.setdefault(entry["repo"], entry["revision"]) != entry["revision"]:
            raise MirrorError(
                f"{mirror}: {name} of {entry['repo']} is at revision {entry['revision']}, the mirror's other "
                f"files of it at {revisions[entry['repo']]}: a mirror holds one revision of each repository "
                "(pin them alike, or build another mirror)"
            )
    manifest["files"] = dict(sorted(files.items()))
    path = Path(mirror) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ NLTK


_PUNKT_VOCABULARY_TEXT = """
the quick brown fox jumps over lazy dog while old farmer watches from porch of his house a language
model reads question thinks about answer step by and then writes short reply students in library were
reading books history physics chemistry biology mathematics if train leaves station at nine travels
sixty miles per hour when does it arrive committee decided that every member should vote before end
month most them did water boils one hundred degrees sea level but lower temperature on high mountain she
opened window looked rain falling garden stay inside write city council approved new budget for schools
roads parks hospitals
"""
_PUNKT_VOCABULARY = tuple(_PUNKT_VOCABULARY_TEXT.split())
_PUNKT_NAMES = ("Smith", "Jones", "Brown", "Lee", "Miller", "Garcia", "Chen", "Novak")
_PUNKT_ABBREVIATIONS = ("Dr.", "Mr.", "Mrs.", "Prof.", "St.", "Gen.", "Capt.", "Mt.")


def _punkt_training_text() -> str:
    """Made-up English: ordinary words in every position, titles before names, "e.g." mid-sentence."""
    rng = random.Random(0)
    sentences = []
    for _ in range(4000):
        words = [rng.choice(_PUNKT_VOCABULARY) for _ in range(rng.randrange(5, 14))]
        if rng.random() < 0.3:
            at = rng.randrange(1, len(words))
            words[at:at] = [rng.choice(_PUNKT_ABBREVIATIONS), rng.choice(_PUNKT_NAMES)]
        if rng.random() < 0.1:
            at = rng.randrange(1, len(words))
            words[at:at] = ["e.g.", rng.choice(_PUNKT_VOCABULARY)]
        if rng.random() < 0.1:
            words.insert(len(words) - 1, rng.choice(_PUNKT_NAMES))
        text = " ".join(words)
        sentences.append(text[0].upper() + text[1:] + rng.choice(".....?!"))
    return " ".join(sentences)


@functools.cache
def _train_punkt() -> dict[str, str]:
    """A Punkt model trained with nltk's own trainer on local text: file name -> content."""
    from nltk.tokenize.punkt import PunktTrainer

    trainer = PunktTrainer()
    trainer.train(_punkt_training_text(), finalize=True)
    params = trainer.get_params()
    return {
        "collocations.tab": "\n".join(sorted("\t".join(pair) for pair in params.collocations)),
        "sent_starters.txt": "\n".join(sorted(params.sent_starters)),
        "abbrev_types.txt": "\n".join(sorted(params.abbrev_types)),
        "ortho_context.tab": "\n".join(
            f"{word}\t{flags}" for word, flags in sorted(params.ortho_context.items())
        ),
    }


def prepare_nltk_data(mirror: Path, *, download: bool = False) -> str:
    """Put NLTK's English punkt_tab model under ``<mirror>/nltk_data``; return how it was obtained.

    IFEval scoring splits sentences with it and lm-eval would otherwise try to download it. With
    ``download`` the official model is fetched (``nltk.download``); otherwise, or if that fails, a model
    is trained locally with nltk's Punkt trainer ("trained-locally"), which splits ordinary English
    text the same way but is not byte-identical to the official one.
    """
    target = nltk_data_dir(mirror) / "tokenizers" / "punkt_tab" / "english"
    if download:
        import nltk

        try:
            if nltk.download(
                "punkt_tab", download_dir=str(nltk_data_dir(mirror)), quiet=True, raise_on_error=True
            ):
                return "nltk-download"
        except Exception as exc:  # nltk raises many kinds; the fallback below is logged
            log.warning("could not download punkt_tab (%s): training a Punkt model locally", exc)
    target.mkdir(parents=True, exist_ok=True)
    for name, content in _train_punkt().items():
        (target / name).write_text(content, encoding="utf-8", newline="")
    return "trained-locally"


# --------------------------------------------------------------------------------------------- the Hub


def _hub_error(repo: str, exc: Exception) -> DatasetSourceError:
    return DatasetSourceError(f"could not read dataset {repo} from the Hub: {exc}")


def hub_commit(api: Any, repo: str, repo_type: str = "dataset") -> str:
    """The commit sha of a repository's main branch now (``api``: a huggingface_hub.HfApi)."""
    try:
        info = api.dataset_info(repo) if repo_type == "dataset" else api.model_info(repo)
    except Exception as exc:  # huggingface_hub raises HTTP, gating and network errors alike
        raise DatasetSourceError(f"could not read {repo_type} {repo} from the Hub: {exc}") from exc
    if not info.sha:
        raise DatasetSourceError(f"the Hub gave no commit sha for {repo_type} {repo}")
    sha: str = info.sha
    return sha


def resolve_revisions(task_set: TaskSet, token: str | None = None, *, update: bool = False) -> dict[str, str]:
    """The commit sha of each dataset repository: the pinned one, or (unpinned, or with update) the Hub's."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    revisions = {}
    for pin in task_set.datasets:
        revisions[pin.repo] = pin.revision if pin.revision and not update else hub_commit(api, pin.repo)
    return revisions


def pin(task_set: TaskSet, token: str | None = None, *, update: bool = False) -> TaskSet:
    """Write each dataset's current Hub commit into the manifest (only unpinned ones unless update)."""
    revisions = resolve_revisions(task_set, token, update=update)
    changed = {repo: sha for repo, sha in revisions.items() if task_set.dataset(repo).revision != sha}
    return write_revisions(task_set, changed) if changed else task_set


def mirror_from_hub(folder: Path, task_set: TaskSet, token: str | None = None) -> Path:
    """Copy every split the task set reads from the Hub, at the pinned (else current) revision; return it."""
    import datasets

    mirror = Path(folder).resolve()
    mirror.mkdir(parents=True, exist_ok=True)
    revisions = resolve_revisions(task_set, token)
    written: dict[tuple[str, str | None, str], int] = {}
    for repo, config, split in task_set.data_files():
        try:
            dataset = datasets.load_dataset(repo, config, split=split, revision=revisions[repo], token=token)
        except Exception as exc:  # datasets wraps Hub errors in several types
            raise _hub_error(repo, exc) from exc
        path = mirror_file(mirror, repo, config, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(str(path))
        written[(repo, config, split)] = dataset.num_rows
        log.info(
            "mirrored %s/%s/%s at %s: %d rows",
            repo,
            config or "default",
            split,
            revisions[repo],
            dataset.num_rows,
        )
    punkt = prepare_nltk_data(mirror, download=True)
    write_manifest(mirror, task_set, written, revisions, "hub", punkt)
    return mirror
