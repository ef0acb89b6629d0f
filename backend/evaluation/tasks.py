"""The pinned task set: which lm-eval tasks a run evaluates, and where their data comes from.

A task set is a manifest under the repository's ``tasks/`` folder (``tasks/open_llm_v2.yaml``). It names
the harness version and, for every subtask, the installed lm-eval task file, dataset and splits.
``materialize`` turns it into a folder of task files for lm-eval's ``TaskManager``: each one includes the
installed task file unchanged (so prompts, metrics and ``!function`` helpers are the harness's own) and
overrides only the data source: files of a local data mirror, or the Hub at the pinned dataset revision.
A manifest task may also name ``process_results: package.module:function``: the project's own scorer in place
of the task file's (a fixed answer extraction, say); ``backend.evaluation.rescore`` applies it to stored
per-sample outputs without re-running any model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

import backend
from backend.errors import LeaderboardError

DEFAULT_TASK_SET = "open_llm_v2"
#: The roles a task file gives its splits (``test_split`` ...), in the order lm-eval reads them.
SPLIT_ROLES = ("test", "validation", "training", "fewshot")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_SCORER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
#: What ``materialize`` writes next to the task files: the run's task names and data provenance.
MATERIALIZED_FILE = "materialized.json"


class TaskSetError(LeaderboardError):
    """The task set manifest is malformed: fix the file and field the message names."""

    http_status = 500
    code = "task_set_invalid"


class HarnessMismatch(LeaderboardError):
    """The installed lm-eval is not the one the task set pins: install the version it names."""

    http_status = 500
    code = "harness_mismatch"


class DatasetNotPinned(LeaderboardError):
    """A dataset has no pinned revision: run `leaderboard data pin` where the Hub is reachable, or evaluate
    from a data mirror."""

    http_status = 500
    code = "dataset_not_pinned"


@dataclass(frozen=True)
class Harness:
    package: str
    version: str


@dataclass(frozen=True)
class DatasetPin:
    """A dataset repository and the commit runs read it at (None: not pinned yet)."""

    repo: str
    revision: str | None


@dataclass(frozen=True)
class Subtask:
    """One lm-eval task: the unit that has data and metrics."""

    name: str
    group: str
    yaml: str  # relative to the installed lm_eval/tasks folder
    dataset: str
    config: str | None
    splits: tuple[tuple[str, str], ...]  # (role, split name), roles from SPLIT_ROLES
    # The project's scorer replacing the task file's process_results ("package.module:function"); None:
    # the harness's own. Re-scoring stored samples applies a change here without re-running any model.
    process_results: str | None = None

    @property
    def split_names(self) -> tuple[str, ...]:
        """The dataset splits this task reads, each once."""
        return tuple(dict.fromkeys(split for _, split in self.splits))

    def split(self, role: str) -> str | None:
        return dict(self.splits).get(role)


@dataclass(frozen=True)
class Group:
    """What a run passes to lm-eval: a group of subtasks, or a task run on its own."""

    name: str
    kind: str  # "group" or "task"
    yaml: str
    subtasks: tuple[str, ...]


@dataclass(frozen=True)
class TaskSet:
    name: str
    path: Path
    description: str
    harness: Harness
    datasets: tuple[DatasetPin, ...]
    groups: tuple[Group, ...]
    subtasks: tuple[Subtask, ...]

    @property
    def run_names(self) -> tuple[str, ...]:
        """The names to pass to ``lm_eval.simple_evaluate(tasks=...)``, in order."""
        return tuple(group.name for group in self.groups)

    def dataset(self, repo: str) -> DatasetPin:
        for pin in self.datasets:
            if pin.repo == repo:
                return pin
        raise KeyError(repo)

    def data_files(self) -> Iterator[tuple[str, str | None, str]]:
        """Every (repo, config, split) some subtask reads, each once, in manifest order."""
        seen: dict[tuple[str, str | None, str], None] = {}
        for subtask in self.subtasks:
            for split in subtask.split_names:
                seen.setdefault((subtask.dataset, subtask.config, split))
        yield from seen


# ---------------------------------------------------------------------------------------------- loading


def tasks_folder() -> Path:
    """The repository's ``tasks/`` folder, found next to the ``backend`` package."""
    return Path(backend.__file__).resolve().parents[1] / "tasks"


def resolve_task_set_path(name_or_path: str | Path = DEFAULT_TASK_SET) -> Path:
    """A task set name (``open_llm_v2`` -> ``tasks/open_llm_v2.yaml``) or a path to a manifest."""
    text = str(name_or_path)
    if _NAME.match(text):
        path = tasks_folder() / f"{text}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in tasks_folder().glob("*.yaml"))
            raise TaskSetError(f"no task set named {text!r} in {tasks_folder()}: known task sets are {known}")
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        raise TaskSetError(f"task set manifest {path} does not exist")
    return path


class _Fields:
    """Reads one mapping of the manifest, naming the file and field in every error."""

    def __init__(self, path: Path, where: str, data: Any) -> None:
        self.path, self.where = path, where
        if not isinstance(data, dict):
            self.fail("", f"must be a mapping, not {type(data).__name__}")
        self.data: dict[str, Any] = data

    def fail(self, field: str, problem: str) -> NoReturn:
        name = f"{self.where}.{field}" if self.where and field else (self.where or field)
        raise TaskSetError(f"{self.path}: field '{name}' {problem}")

    def text(self, field: str, pattern: re.Pattern[str] | None = None, *, optional: bool = False) -> Any:
        value = self.data.get(field)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            self.fail(field, "is required and must be a non-empty string")
        if pattern is not None and not pattern.match(value):
            self.fail(field, f"has an invalid value {value!r}")
        return value


def load_task_set(name_or_path: str | Path = DEFAULT_TASK_SET) -> TaskSet:
    """Read and validate a task set manifest (see ``tasks/open_llm_v2.yaml`` for the format)."""
    path = resolve_task_set_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TaskSetError(f"{path} is not valid YAML: {exc}") from exc
    top = _Fields(path, "", raw)
    harness_fields = _Fields(path, "harness", top.data.get("harness"))
    harness = Harness(harness_fields.text("package"), str(harness_fields.data.get("version") or ""))
    if not harness.version:
        harness_fields.fail("version", "is required")

    datasets_raw = top.data.get("datasets")
    if not isinstance(datasets_raw, dict) or not datasets_raw:
        top.fail("datasets", "must map each dataset repository to {revision: <sha or null>}")
    pins = []
    for repo, entry in datasets_raw.items():
        if not isinstance(repo, str) or not _REPO.match(repo):
            top.fail("datasets", f"has an invalid repository id {repo!r}")
        fields = _Fields(path, f"datasets.{repo}", entry)
        revision = fields.data.get("revision")
        if revision is not None and (not isinstance(revision, str) or not _SHA.match(revision)):
            fields.fail("revision", f"must be a 40-character commit sha or null, not {revision!r}")
        pins.append(DatasetPin(repo, revision))

    subtasks = []
    seen_tasks: set[str] = set()
    tasks_raw = top.data.get("tasks")
    if not isinstance(tasks_raw, list) or not tasks_raw:
        top.fail("tasks", "must be a non-empty list")
    for index, entry in enumerate(tasks_raw):
        fields = _Fields(path, f"tasks[{index}]", entry)
        name = fields.text("name", _NAME)
        if name in seen_tasks:
            fields.fail("name", f"repeats task {name!r}")
        seen_tasks.add(name)
        dataset = fields.text("dataset", _REPO)
        if dataset not in datasets_raw:
            fields.fail("dataset", f"names {dataset!r}, which is not listed under 'datasets'")
        splits_raw = fields.data.get("splits")
        if not isinstance(splits_raw, dict) or not splits_raw:
            fields.fail("splits", f"must map roles ({', '.join(SPLIT_ROLES)}) to split names")
        for role, split in splits_raw.items():
            if role not in SPLIT_ROLES:
                fields.fail("splits", f"has an unknown role {role!r}: use {', '.join(SPLIT_ROLES)}")
            if not isinstance(split, str) or not _NAME.match(split):
                fields.fail(f"splits.{role}", f"has an invalid split name {split!r}")
        subtasks.append(
            Subtask(
                name=name,
                group=fields.text("group", _NAME),
                yaml=fields.text("yaml"),
                dataset=dataset,
                config=fields.text("config", _NAME, optional=True),
                splits=tuple((role, splits_raw[role]) for role in SPLIT_ROLES if role in splits_raw),
                process_results=fields.text("process_results", _SCORER, optional=True),
            )
        )

    groups = []
    groups_raw = top.data.get("groups")
    if not isinstance(groups_raw, list) or not groups_raw:
        top.fail("groups", "must be a non-empty list")
    for index, entry in enumerate(groups_raw):
        fields = _Fields(path, f"groups[{index}]", entry)
        name = fields.text("name", _NAME)
        kind = fields.text("kind")
        if kind not in ("group", "task"):
            fields.fail("kind", f"must be 'group' or 'task', not {kind!r}")
        members = tuple(s.name for s in subtasks if s.group == name)
        if not members:
            fields.fail("name", f"has no tasks: give some task 'group: {name}'")
        if kind == "task" and members != (name,):
            fields.fail("kind", f"is 'task', so exactly one task named {name!r} must have 'group: {name}'")
        groups.append(Group(name, kind, fields.text("yaml"), members))
    group_names = {g.name for g in groups}
    if len(group_names) != len(groups):
        top.fail("groups", "repeats a group name")
    for index, subtask in enumerate(subtasks):
        if subtask.group not in group_names:
            top.fail(f"tasks[{index}].group", f"names {subtask.group!r}, which is not listed under 'groups'")

    return TaskSet(
        name=top.text("name", _NAME),
        path=path.resolve(),
        description=str(top.data.get("description") or ""),
        harness=harness,
        datasets=tuple(pins),
        groups=tuple(groups),
        subtasks=tuple(subtasks),
    )


def write_revisions(task_set: TaskSet, revisions: Mapping[str, str]) -> TaskSet:
    """Write dataset revisions into the manifest file (comments kept); return the re-read task set."""
    for repo, sha in revisions.items():
        if not _SHA.match(sha):
            raise TaskSetError(f"revision {sha!r} for {repo} is not a 40-character commit sha")
    lines = task_set.path.read_text(encoding="utf-8").splitlines(keepends=True)
    pending: dict[str, str] = dict(revisions)
    block, repo = False, ""
    for index, line in enumerate(lines):
        if not line.startswith((" ", "#")) and line.strip():
            block, repo = line.startswith("datasets:"), ""
            continue
        if not block:
            continue
        stripped = line.split("#", 1)[0].rstrip()
        if stripped.startswith("  ") and not stripped.startswith("   ") and stripped.endswith(":"):
            repo = stripped.strip()[:-1].strip("'\"")
        elif repo in pending and stripped.strip().startswith("revision:"):
            indent = line[: len(line) - len(line.lstrip())]
            comment = line[len(stripped) :].rstrip("\n")
            lines[index] = f"{indent}revision: '{pending.pop(repo)}'{comment}\n"  # quoted: all-digit shas
    if pending:
        raise TaskSetError(f"{task_set.path}: no 'revision:' line found under datasets for {sorted(pending)}")
    task_set.path.write_text("".join(lines), encoding="utf-8")
    return load_task_set(task_set.path)


# ------------------------------------------------------------------------------------ the installed harness


def harness_tasks_folder() -> Path:
    """The installed lm_eval/tasks folder, found without importing lm_eval (which is slow)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise HarnessMismatch("lm-eval is not installed: install the version the task set names")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "tasks"


class _TaskFileLoader(yaml.SafeLoader):
    """Reads lm-eval task files without importing their ``!function`` helpers."""


_TaskFileLoader.add_constructor(
    "!function",
    lambda loader, node: f"!function {loader.construct_scalar(node)}",
)


def read_task_file(path: Path) -> dict[str, Any]:
    """An installed task file with its ``include`` chain merged (later keys win), as lm-eval reads it."""
    config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskFileLoader)
    if not isinstance(config, dict):
        raise HarnessMismatch(f"{path} is not a task file (a YAML mapping)")
    include = config.pop("include", None)
    if include is None:
        return config
    merged: dict[str, Any] = {}
    for item in include if isinstance(include, list) else [include]:
        merged.update(read_task_file(path.parent / item))
    merged.update(config)
    return merged


def installed_splits(config: Mapping[str, Any]) -> dict[str, str]:
    """The splits a merged task file declares, by role."""
    splits = {role: config.get(f"{role}_split") for role in SPLIT_ROLES}
    if splits["fewshot"] is None:
        splits["fewshot"] = (config.get("fewshot_config") or {}).get("split")
    return {role: split for role, split in splits.items() if split is not None}


def check_harness(task_set: TaskSet) -> None:
    """Refuse to run when the installed lm-eval or its task files differ from what the task set pins."""
    package = task_set.harness.package
    try:
        installed = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise HarnessMismatch(
            f"{package} is not installed; install {package}=={task_set.harness.version}"
        ) from exc
    if installed != task_set.harness.version:
        raise HarnessMismatch(
            f"{task_set.path.name} pins {package} {task_set.harness.version} but {installed} is installed: "
            f"install {package}=={task_set.harness.version}"
        )
    root = harness_tasks_folder()
    problems = []
    for subtask in task_set.subtasks:
        path = root / subtask.yaml
        if not path.is_file():
            problems.append(f"{subtask.name}: {subtask.yaml} is not in the installed harness")
            continue
        config = read_task_file(path)
        expected = {
            "task": subtask.name,
            "dataset_path": subtask.dataset,
            "dataset_name": subtask.config,
            "splits": dict(subtask.splits),
        }
        actual = {
            "task": config.get("task"),
            "dataset_path": config.get("dataset_path"),
            "dataset_name": config.get("dataset_name"),
            "splits": installed_splits(config),
        }
        for key, value in expected.items():
            if actual[key] != value:
                problems.append(f"{subtask.name}: {key} is {actual[key]!r} in {subtask.yaml}, not {value!r}")
    for group in task_set.groups:
        path = root / group.yaml
        if not path.is_file():
            problems.append(f"{group.name}: {group.yaml} is not in the installed harness")
            continue
        if group.kind == "group":
            config = read_task_file(path)
            if config.get("group") != group.name or tuple(config.get("task") or ()) != group.subtasks:
                problems.append(f"{group.name}: {group.yaml} does not list the manifest's tasks in order")
        elif read_task_file(path).get("task") != group.name:
            problems.append(f"{group.name}: {group.yaml} does not define task {group.name}")
    if problems:
        raise HarnessMismatch(
            f"the installed {package} task files differ from {task_set.path}: " + "; ".join(problems)
        )


# ------------------------------------------------------------------------------------------ materialize


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

    # data.py builds on this module, so it is imported here rather than at the top.
    from backend.evaluation.data import check_mirror, dataset_revisions, mirror_file

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

    for group in task_set.groups:
        if group.kind == "group":
            config = read_task_file(root / group.yaml)
            _dump(
                out_dir / "groups" / f"{group.name}.yaml",
                config,
                f"{task_set.name}: copied from lm-eval {task_set.harness.version} {group.yaml}",
            )

    provenance = {
        "task_set": task_set.name,
        "manifest": str(task_set.path),
        "harness": {"package": task_set.harness.package, "version": task_set.harness.version},
        "run_names": list(task_set.run_names),
        "data_source": "mirror" if data_mirror is not None else "hub",
        "data_mirror": str(data_mirror) if data_mirror is not None else None,
        "dataset_revisions": {repo: revisions[repo] for repo in sorted(revisions)},
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
