"""The pinned task set: which lm-eval tasks a run evaluates, and where their data comes from.

A task set is a manifest under the repository's ``tasks/`` folder (``tasks/open_llm_v2.yaml``): the harness
package, the group a run passes to lm-eval (the reference command's ``--tasks leaderboard``), the pinned
dataset revisions and, for every subtask, the installed lm-eval task file, dataset, splits and number of
answer choices. It is the one place these facts are written: the leaderboard config takes its benchmarks'
subtasks and chance levels from it, and the harness's exact version is the project's own pin (pyproject.toml).
``backend.evaluation.materialize`` turns a task set into the task files of one run.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

import backend
from backend.domain import REPO_ID_RE, SHA_RE
from backend.errors import HarnessMismatch, TaskSetError
from backend.manifests import Fields, load_yaml

DEFAULT_TASK_SET = "open_llm_v2"
#: The distribution this project is installed as: its requirements pin the harness.
PROJECT_DISTRIBUTION = "leaderboard-backend"
#: The roles a task file gives its splits (``test_split`` ...), in the order lm-eval reads them.
SPLIT_ROLES = ("test", "validation", "training", "fewshot")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
#: Dataset config and split names: the Hub's are letters, digits, '_', '-' and '.'.
_DATA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SCORER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
_YAML_FILE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*\.ya?ml$")


@dataclass(frozen=True)
class Harness:
    """The evaluation harness: a package at the exact version the project pins."""

    package: str  # the distribution name, as pip knows it
    version: str  # exact: task code, prompts and metrics change between harness versions


@dataclass(frozen=True)
class DatasetPin:
    """A dataset repository and the commit runs read it at (None: not pinned yet)."""

    repo: str
    revision: str | None


@dataclass(frozen=True)
class Subtask:
    """One lm-eval task: the unit that has data, metrics and a chance level."""

    name: str
    group: str
    yaml: str  # relative to the installed lm_eval/tasks folder
    dataset: str
    config: str | None
    splits: tuple[tuple[str, str], ...]  # (role, split name), roles from SPLIT_ROLES
    num_choices: int  # answer choices of a multiple-choice task; 0 for a generative task
    # The project's scorer replacing the task file's process_results ("package.module:function"); None:
    # the harness's own. Re-scoring stored samples applies a change here without re-running any model.
    process_results: str | None = None

    @property
    def chance(self) -> float:
        """The score of random guessing: the lower bound of normalization (0 for generative tasks)."""
        return 1.0 / self.num_choices if self.num_choices else 0.0

    @property
    def split_names(self) -> tuple[str, ...]:
        """The dataset splits this task reads, each once."""
        return tuple(dict.fromkeys(split for _, split in self.splits))

    def split(self, role: str) -> str | None:
        return dict(self.splits).get(role)


@dataclass(frozen=True)
class Group:
    """A member of the run: a group of subtasks, or a task run on its own."""

    name: str
    kind: str  # "group" or "task"
    yaml: str
    subtasks: tuple[str, ...]


@dataclass(frozen=True)
class RunGroup:
    """The one group a run passes to lm-eval, whose members are the task set's groups in its order."""

    name: str
    yaml: str


@dataclass(frozen=True)
class TaskSet:
    name: str
    description: str
    harness: Harness
    run: RunGroup | None  # None: the groups are passed to lm-eval one by one, in manifest order
    datasets: tuple[DatasetPin, ...]
    groups: tuple[Group, ...]
    subtasks: tuple[Subtask, ...]
    # Where it was read from; not part of what it defines (two copies of one manifest are equal).
    path: Path = field(default=Path(), compare=False)

    @property
    def run_names(self) -> tuple[str, ...]:
        """The names to pass to ``lm_eval.simple_evaluate(tasks=...)``: the reference command's."""
        return (self.run.name,) if self.run is not None else tuple(g.name for g in self.groups)

    def group(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def subtask(self, name: str) -> Subtask:
        for subtask in self.subtasks:
            if subtask.name == name:
                return subtask
        raise KeyError(name)

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


# -------------------------------------------------------------------------------------- the harness pin


def project_root() -> Path:
    """The repository root: the folder holding ``backend/``, ``tasks/`` and ``pyproject.toml``."""
    return Path(backend.__file__).resolve().parents[1]


def _project_requirements() -> list[str]:
    """The project's dependencies: pyproject.toml where the source tree has it, else the installed metadata."""
    pyproject = project_root() / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise HarnessMismatch(f"pyproject.toml cannot be read to find the harness pin: {exc}") from exc
        return list(data.get("project", {}).get("dependencies", []))
    try:
        return list(importlib.metadata.requires(PROJECT_DISTRIBUTION) or [])
    except importlib.metadata.PackageNotFoundError as exc:
        raise HarnessMismatch(
            f"neither pyproject.toml nor an installed {PROJECT_DISTRIBUTION} says which harness is pinned"
        ) from exc


def pinned_version(package: str) -> str:
    """The exact version the project pins ``package`` at (``package==X`` in pyproject.toml's dependencies)."""
    wanted = canonicalize_name(package)
    for line in _project_requirements():
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) != wanted or requirement.marker is not None:
            continue
        pins = [s.version for s in requirement.specifier if s.operator == "=="]
        if len(pins) == 1 and len(requirement.specifier) == 1:
            return pins[0]
        raise HarnessMismatch(
            f"pyproject.toml requires {line!r}: a score is only reproducible with an exact pin "
            f"({package}==X.Y.Z)"
        )
    raise HarnessMismatch(f"pyproject.toml does not depend on {package}: pin it ({package}==X.Y.Z)")


# ---------------------------------------------------------------------------------------------- loading


def tasks_folder() -> Path:
    """The repository's ``tasks/`` folder, found next to the ``backend`` package."""
    return project_root() / "tasks"


def resolve_task_set_path(
    name_or_path: str | Path = DEFAULT_TASK_SET, relative_to: Path | None = None
) -> Path:
    """A task set name (``open_llm_v2`` -> ``tasks/open_llm_v2.yaml``) or a path to a manifest (relative
    paths are taken from ``relative_to``, the folder of the file that names it, when given)."""
    text = str(name_or_path)
    if _NAME.match(text):
        path = tasks_folder() / f"{text}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in tasks_folder().glob("*.yaml"))
            raise TaskSetError(f"no task set named {text!r}: known task sets are {known}")
        return path
    path = Path(text).expanduser()
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    if not path.is_file():
        raise TaskSetError(f"task set manifest {path} does not exist")
    return path


def load_task_set(name_or_path: str | Path = DEFAULT_TASK_SET, relative_to: Path | None = None) -> TaskSet:
    """Read and validate a task set manifest (see ``tasks/open_llm_v2.yaml`` for the format)."""
    path = resolve_task_set_path(name_or_path, relative_to)
    return parse_task_set(load_yaml(path, TaskSetError, "task set"), path)


def parse_task_set(data: Any, path: Path) -> TaskSet:
    """Validate an already-parsed manifest (``path`` names it in messages)."""
    f = Fields(str(path), TaskSetError)
    top = f.mapping(data, "", ("name", "harness", "datasets", "groups", "tasks"), ("description", "run"))
    package = f.string(
        top["harness"], "harness", _PACKAGE, "a package name (its version is pyproject.toml's pin)"
    )
    harness = Harness(package, pinned_version(package))

    run = None
    if top.get("run") is not None:
        r = f.mapping(top["run"], "run", ("name", "yaml"))
        run = RunGroup(
            f.string(r["name"], "run.name", _NAME, "a group name"), _yaml_path(f, r["yaml"], "run.yaml")
        )

    datasets_raw = top["datasets"]
    if not isinstance(datasets_raw, dict) or not datasets_raw:
        raise f.fail("datasets", "must map each dataset repository to {revision: <sha or null>}")
    pins = []
    for repo, entry in datasets_raw.items():
        if not isinstance(repo, str) or not REPO_ID_RE.match(repo):
            raise f.fail("datasets", f"has an invalid repository id {repo!r}")
        d = f.mapping(entry, f"datasets.{repo}", ("revision",))
        revision = d["revision"]
        if revision is not None and (not isinstance(revision, str) or not SHA_RE.match(revision)):
            raise f.fail(
                f"datasets.{repo}.revision", f"must be a 40-character commit sha or null, not {revision!r}"
            )
        pins.append(DatasetPin(repo, revision))

    subtasks: list[Subtask] = []
    for index, entry in enumerate(f.items(top["tasks"], "tasks")):
        where = f"tasks[{index}]"
        t = f.mapping(
            entry,
            where,
            ("name", "group", "yaml", "dataset", "config", "splits", "num_choices"),
            ("process_results",),
        )
        name = f.string(t["name"], f"{where}.name", _NAME, "a task name")
        if any(s.name == name for s in subtasks):
            raise f.fail(f"{where}.name", f"repeats task {name!r}")
        dataset = f.string(t["dataset"], f"{where}.dataset", REPO_ID_RE, "a dataset repository id")
        if dataset not in datasets_raw:
            raise f.fail(f"{where}.dataset", f"names {dataset!r}, which is not listed under 'datasets'")
        splits_raw = t["splits"]
        if not isinstance(splits_raw, dict) or not splits_raw:
            raise f.fail(f"{where}.splits", f"must map roles ({', '.join(SPLIT_ROLES)}) to split names")
        for role, split in splits_raw.items():
            if role not in SPLIT_ROLES:
                raise f.fail(f"{where}.splits", f"has an unknown role {role!r}: use {', '.join(SPLIT_ROLES)}")
            f.string(split, f"{where}.splits.{role}", _DATA_NAME, "a split name")
        num_choices = f.integer(t["num_choices"], f"{where}.num_choices", 0)
        if num_choices == 1:
            raise f.fail(
                f"{where}.num_choices", "must be 0 (generative) or at least 2 (multiple choice), got 1"
            )
        subtasks.append(
            Subtask(
                name=name,
                group=f.string(t["group"], f"{where}.group", _NAME, "a group name"),
                yaml=_yaml_path(f, t["yaml"], f"{where}.yaml"),
                dataset=dataset,
                config=f.optional_string(t["config"], f"{where}.config", _DATA_NAME, "a dataset config name"),
                splits=tuple((role, splits_raw[role]) for role in SPLIT_ROLES if role in splits_raw),
                num_choices=num_choices,
                process_results=f.optional_string(
                    t.get("process_results"), f"{where}.process_results", _SCORER, "package.module:function"
                ),
            )
        )

    groups: list[Group] = []
    for index, entry in enumerate(f.items(top["groups"], "groups")):
        where = f"groups[{index}]"
        g = f.mapping(entry, where, ("name", "kind", "yaml"))
        name = f.string(g["name"], f"{where}.name", _NAME, "a group name")
        if any(group.name == name for group in groups):
            raise f.fail(f"{where}.name", f"repeats group {name!r}")
        kind = g["kind"]
        if kind not in ("group", "task"):
            raise f.fail(f"{where}.kind", f"must be 'group' or 'task', not {kind!r}")
        members = tuple(s.name for s in subtasks if s.group == name)
        if not members:
            raise f.fail(f"{where}.name", f"has no tasks: give some task 'group: {name}'")
        if kind == "task" and members != (name,):
            raise f.fail(
                f"{where}.kind", f"is 'task', so exactly one task named {name!r} must have 'group: {name}'"
            )
        groups.append(Group(name, kind, _yaml_path(f, g["yaml"], f"{where}.yaml"), members))
    group_names = {g.name for g in groups}
    for index, subtask in enumerate(subtasks):
        if subtask.group not in group_names:
            raise f.fail(
                f"tasks[{index}].group", f"names {subtask.group!r}, which is not listed under 'groups'"
            )

    return TaskSet(
        name=f.string(top["name"], "name", _NAME, "a task set name"),
        description=str(top.get("description") or ""),
        harness=harness,
        run=run,
        datasets=tuple(pins),
        groups=tuple(groups),
        subtasks=tuple(subtasks),
        path=path.resolve(),
    )


def _yaml_path(f: Fields, value: Any, where: str) -> str:
    """A task file path relative to the installed lm_eval/tasks folder; never absolute, never '..'."""
    text = f.string(value, where, _YAML_FILE, "a relative path to a task file (.yaml)")
    if ".." in text.split("/"):
        raise f.fail(where, f"{text!r} must stay inside the harness's tasks folder")
    return text


def write_revisions(task_set: TaskSet, revisions: Mapping[str, str]) -> TaskSet:
    """Write dataset revisions into the manifest file (comments kept); return the re-read task set."""
    for repo, sha in revisions.items():
        if not SHA_RE.match(sha):
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
        raise HarnessMismatch("lm-eval is not installed: install the version the project pins")
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
    """Refuse to run when the installed lm-eval or its task files differ from what the task set says."""
    package = task_set.harness.package
    try:
        installed = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise HarnessMismatch(
            f"{package} is not installed; install {package}=={task_set.harness.version}"
        ) from exc
    if installed != task_set.harness.version:
        raise HarnessMismatch(
            f"the project pins {package} {task_set.harness.version} but {installed} is installed: "
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
    if task_set.run is not None:
        path = root / task_set.run.yaml
        members = tuple(g.name for g in task_set.groups)
        if not path.is_file():
            problems.append(f"{task_set.run.name}: {task_set.run.yaml} is not in the installed harness")
        else:
            config = read_task_file(path)
            if config.get("group") != task_set.run.name or tuple(config.get("task") or ()) != members:
                problems.append(
                    f"{task_set.run.name}: {task_set.run.yaml} does not list the manifest's groups in order "
                    f"(it lists {config.get('task')!r}); the order decides GPQA's option shuffle"
                )
    if problems:
        raise HarnessMismatch(
            f"the installed {package} task files differ from {task_set.path.name}: " + "; ".join(problems)
        )
