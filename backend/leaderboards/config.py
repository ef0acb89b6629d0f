"""A leaderboard is a config: the YAML file that says how a leaderboard scores what its task set runs.

``leaderboard_configs/<name>.yaml`` names its task set (``tasks/<name>.yaml``: the harness, the datasets, every
subtask with its number of answer choices) and declares every benchmark over one of the task set's groups
(its display name, metrics, how raw scores aggregate and how the normalized score is formed), the average
column and the run settings. A benchmark's subtasks and chance levels are the task set's own, never written
twice. Normalization and the published columns are driven by it, so a second leaderboard is another file.

Loading is strict: unknown fields, duplicate keys, wrong types and inconsistent declarations (a group no
benchmark scores, a benchmark over a group the task set does not run) are refused with a
LeaderboardConfigError that names the file and the field.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import backend
from backend.errors import LeaderboardConfigError
from backend.evaluation.tasks import Harness, Subtask, TaskSet, load_task_set
from backend.judged.config import JudgedConfig, is_judged, judged_config_hash, parse_judged_config
from backend.manifests import Fields, describe, load_yaml

SCHEMA_VERSION = 2
DEFAULT_LEADERBOARD = "open_llm_v2"
#: Where bare leaderboard names are looked up: leaderboard_configs/ at the repository root.
CONFIG_DIR = Path(backend.__file__).parents[1] / "leaderboard_configs"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
#: An arena's config (backend.arena.config reads it): not a table of evaluated models.
ARENA_KIND = "arena"
# lm-eval task, group and metric names: letters, digits, '_', '-', '.'; never ',' (it separates the filter).
_TASK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class Aggregation(enum.StrEnum):
    """How a benchmark's subtask scores combine into one score."""

    SAMPLE_WEIGHTED = "sample_weighted"  # weighted by evaluated samples (n-samples), as lm-eval groups do
    MEAN = "mean"  # plain mean: every subtask counts the same


class Normalization(enum.StrEnum):
    """Where chance-level normalization is applied."""

    PER_SUBTASK = "per_subtask"  # normalize each subtask with its own chance level, then aggregate
    AGGREGATE = (
        "aggregate"  # aggregate the raw scores, then normalize (every subtask shares one chance level)
    )


class ChatTemplate(enum.StrEnum):
    """When the model's chat template is applied."""

    FROM_REQUEST = "from_request"  # the submitter's choice ("use chat template" on the request)
    ALWAYS = "always"
    NEVER = "never"


@dataclass(frozen=True)
class Benchmark:
    """One published benchmark: two columns, "<display> Raw" (a fraction) and "<display>" (0..100)."""

    key: str
    display: str
    task: str  # the task set's group (or task) whose subtasks this benchmark scores
    metrics: tuple[str, ...]  # a task's raw score is the mean of these metrics
    filter: str  # the lm-eval filter the metrics are read under ("metric,filter" keys)
    subtasks: tuple[Subtask, ...]  # the task set's, in its order
    aggregate: Aggregation
    normalize: Normalization

    @property
    def raw_column(self) -> str:
        return f"{self.display} Raw"

    @property
    def column(self) -> str:
        return self.display

    @property
    def raw_stderr_column(self) -> str:
        return f"{self.display} Raw stderr"

    @property
    def stderr_column(self) -> str:
        return f"{self.display} stderr"

    @property
    def is_group(self) -> bool:
        """True when `task` is an lm-eval group over the subtasks, False when it is the one leaf task."""
        return not (len(self.subtasks) == 1 and self.subtasks[0].name == self.task)


@dataclass(frozen=True)
class Average:
    column: str
    method: str = "mean"  # plain mean of the normalized benchmark scores (the only method so far)

    @property
    def stderr_column(self) -> str:
        return f"{self.column} stderr"


@dataclass(frozen=True)
class Seeds:
    random: int
    numpy: int
    torch: int
    fewshot: int

    def as_harness_arg(self) -> str:
        """The value of lm-eval's --seed: "random,numpy,torch,fewshot"."""
        return f"{self.random},{self.numpy},{self.torch},{self.fewshot}"


@dataclass(frozen=True)
class RunSettings:
    num_fewshot: int | None  # None: as each lm-eval task defines it
    chat_template: ChatTemplate
    fewshot_as_multiturn: bool  # few-shot examples as chat turns, whenever the chat template is applied
    seeds: Seeds
    max_length: int | None  # None: the harness's own (the model's maximum); a number caps it (a deviation)
    batch_size: str  # "auto" or a number, as lm-eval's --batch_size takes it
    max_batch_size: int  # the largest batch "auto" may pick
    log_samples: bool  # keep per-sample outputs (re-scoring without re-running, task hashes)

    def max_length_for(self, model_max_length: int) -> int | None:
        """The context length to pass the harness: None (it reads the model's own) without a cap, else
        min(model maximum, cap)."""
        if self.max_length is None:
            return None
        return min(model_max_length, self.max_length) if model_max_length > 0 else self.max_length

    def use_chat_template(self, requested: bool) -> bool:
        """Whether to apply the chat template to a request that asked for it (`requested`) or not."""
        if self.chat_template is ChatTemplate.FROM_REQUEST:
            return requested
        return self.chat_template is ChatTemplate.ALWAYS

    def deviations(self) -> dict[str, Any]:
        """The settings that differ from the reference's published command, by name (recorded with every
        result): `lm_eval --model hf --model_args pretrained=...,revision=...,dtype=... --tasks leaderboard
        --batch_size auto --apply_chat_template --fewshot_as_multiturn --log_samples` with lm-eval's defaults
        for everything it does not pass (seeds 0,1234,1234,1234, max_batch_size 64, no context cap)."""
        differ = {}
        for f in fields(self):
            ours, theirs = getattr(self, f.name), getattr(REFERENCE_RUN, f.name)
            if ours != theirs:
                differ[f.name] = asdict(ours) if isinstance(ours, Seeds) else ours
        return differ


#: The reference's command, as run settings (see RunSettings.deviations).
REFERENCE_RUN = RunSettings(
    num_fewshot=None,
    chat_template=ChatTemplate.FROM_REQUEST,
    fewshot_as_multiturn=True,
    seeds=Seeds(random=0, numpy=1234, torch=1234, fewshot=1234),
    max_length=None,
    batch_size="auto",
    max_batch_size=64,
    log_samples=True,
)


@dataclass(frozen=True)
class LeaderboardConfig:
    name: str
    title: str
    tasks: TaskSet  # what runs: the harness, datasets and subtasks
    benchmarks: tuple[Benchmark, ...]  # in display order (the table's, not the order lm-eval runs them)
    average: Average
    run: RunSettings
    schema_version: int = SCHEMA_VERSION
    # Where it was read from, for messages; not part of the leaderboard's identity (nor of its hash).
    source: str = field(default="", compare=False)

    @property
    def harness(self) -> Harness:
        return self.tasks.harness

    @property
    def task_set(self) -> str:
        return self.tasks.name

    def benchmark(self, key: str) -> Benchmark:
        for b in self.benchmarks:
            if b.key == key:
                return b
        raise KeyError(key)


#: Either kind of leaderboard: benchmarks run by the harness, or a judge's comparisons with a reference.
AnyConfig = LeaderboardConfig | JudgedConfig


def columns(config: LeaderboardConfig) -> list[str]:
    """The published score columns in order: "<display> Raw", "<display>" per benchmark, then the average."""
    names: list[str] = []
    for b in config.benchmarks:
        names += [b.raw_column, b.column]
    return [*names, config.average.column]


def stderr_columns(config: LeaderboardConfig) -> list[str]:
    """The standard-error columns in order: "<display> Raw stderr", "<display> stderr" per benchmark, then
    "<average column> stderr"."""
    names: list[str] = []
    for b in config.benchmarks:
        names += [b.raw_stderr_column, b.stderr_column]
    return [*names, config.average.stderr_column]


def config_hash(config: LeaderboardConfig) -> str:
    """sha256 (hex) of a canonical serialization of the parsed config and its task set.

    Stable across key order, whitespace, comments and defaults written out or left implicit; changes with
    anything that changes what is run or how it is scored (the harness version, a dataset revision, a
    subtask, a setting). The files' locations are not part of it.
    """
    data = asdict(config)
    data.pop("source", None)
    data["tasks"].pop("path", None)
    for benchmark in data["benchmarks"]:  # the task set holds them; the benchmark names its group
        benchmark["subtasks"] = [s["name"] for s in benchmark["subtasks"]]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def available_configs() -> list[str]:
    """The bare names load_config accepts."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []


def load_config(
    name_or_path: str | Path = DEFAULT_LEADERBOARD, task_set: TaskSet | None = None
) -> LeaderboardConfig:
    """Load and validate a leaderboard config and the task set it names.

    A bare name (no '/' and no .yaml/.yml suffix) is leaderboard_configs/<name>.yaml at the repository root;
    anything else is a path, read as is. ``task_set``, when given, replaces the one the file names (a
    re-score with a changed scorer, say); the config is checked against it the same way.
    """
    path, bare, data = read_config(name_or_path)
    if is_judged(data):
        raise LeaderboardConfigError(
            f"{path} is a judged leaderboard (kind: judged): it has no task set to run with the harness"
        )
    config = parse_config(data, source=str(path), task_set=task_set, folder=path.parent)
    check_config_name(path, bare, config.name)
    return config


def load_leaderboard(name_or_path: str | Path = DEFAULT_LEADERBOARD) -> AnyConfig:
    """Load any kind of leaderboard config: a benchmark one (LeaderboardConfig) or a judged one
    (``kind: judged``, JudgedConfig). Bare names and paths as in load_config."""
    path, bare, data = read_config(name_or_path)
    config: AnyConfig
    if isinstance(data, dict) and data.get("kind") == ARENA_KIND:
        raise LeaderboardConfigError(
            f"{path}: an arena (kind: arena) is not a table of evaluated models: serve it with LEADERBOARD_ARENA"
        )
    if is_judged(data):
        config = parse_judged_config(data, source=str(path))
    else:
        config = parse_config(data, source=str(path), folder=path.parent)
    check_config_name(path, bare, config.name)
    return config


def load_judged(name_or_path: str | Path) -> JudgedConfig:
    """A judged leaderboard config (``kind: judged``); LeaderboardConfigError for any other kind."""
    config = load_leaderboard(name_or_path)
    if not isinstance(config, JudgedConfig):
        raise LeaderboardConfigError(f"{config.source}: not a judged leaderboard (kind: judged)")
    return config


def any_config_hash(config: AnyConfig) -> str:
    return judged_config_hash(config) if isinstance(config, JudgedConfig) else config_hash(config)


def read_config(name_or_path: str | Path) -> tuple[Path, bool, Any]:
    """(path, whether it was a bare name, the parsed YAML) of a config by bare name or path."""
    text = str(name_or_path)
    bare = isinstance(name_or_path, str) and "/" not in text and not text.endswith((".yaml", ".yml"))
    if bare:
        if not _NAME.match(text):
            raise LeaderboardConfigError(
                f"'{text}' is not a leaderboard name (lowercase letters, digits, '_') nor a path to a .yaml file"
            )
        path = CONFIG_DIR / f"{text}.yaml"
        if not path.is_file():
            known = ", ".join(available_configs()) or "none"
            raise LeaderboardConfigError(f"no leaderboard config named '{text}' (available: {known})")
    else:
        path = Path(name_or_path)
    return path, bare, load_yaml(path, LeaderboardConfigError, "leaderboard config")


def check_config_name(path: Path, bare: bool, name: str) -> None:
    if bare and name != path.stem:
        raise LeaderboardConfigError(
            f"{path}: field 'name': is '{name}', but the file is named '{path.stem}'"
        )


# --- parsing --------------------------------------------------------------------------------------------


def parse_config(
    data: Any, source: str = "<config>", task_set: TaskSet | None = None, folder: Path | None = None
) -> LeaderboardConfig:
    """Validate an already-parsed YAML document (`source` names it in messages) against its task set:
    ``task_set``, or the one its ``task_set`` field names (a name in tasks/, or a path relative to
    ``folder``)."""
    f = Fields(source, LeaderboardConfigError)
    top = f.mapping(
        data, "", ("schema_version", "name", "task_set", "benchmarks", "average", "run"), ("title",)
    )
    if top["schema_version"] != SCHEMA_VERSION or isinstance(top["schema_version"], bool):
        raise f.fail(
            "schema_version",
            f"must be {SCHEMA_VERSION}, got {top['schema_version']!r} (version 2 takes subtasks, chance levels "
            "and the harness from the task set)",
        )
    name = f.string(top["name"], "name", _NAME, "a name (lowercase letters, digits, '_')")
    title = f.string(top["title"], "title") if "title" in top else name
    named = f.string(top["task_set"], "task_set")
    if task_set is None:
        task_set = load_task_set(named, relative_to=folder)

    benchmarks = tuple(
        _parse_benchmark(f, item, f"benchmarks[{i}]", task_set)
        for i, item in enumerate(f.items(top["benchmarks"], "benchmarks"))
    )
    a = f.mapping(top["average"], "average", ("column",), ("method",))
    average = Average(column=f.string(a["column"], "average.column"))
    if "method" in a and a["method"] != "mean":
        raise f.fail(
            "average.method", f"must be mean (the plain mean of the normalized scores), got {a['method']!r}"
        )

    config = LeaderboardConfig(
        name=name,
        title=title,
        tasks=task_set,
        benchmarks=benchmarks,
        average=average,
        run=_parse_run(f, top["run"]),
        source=source,
    )
    _check_coverage(f, config)
    return config


def _parse_benchmark(f: Fields, value: Any, where: str, task_set: TaskSet) -> Benchmark:
    if isinstance(value, dict) and isinstance(value.get("key"), str) and _NAME.match(value["key"]):
        where = f"{where} ({value['key']})"  # name the benchmark in every message about it
    b = f.mapping(value, where, ("key", "display", "task", "metrics", "normalize"), ("filter", "aggregate"))
    key = f.string(b["key"], f"{where}.key", _NAME, "a key (lowercase letters, digits, '_')")
    display = f.string(b["display"], f"{where}.display")
    task = f.string(b["task"], f"{where}.task", _TASK, "an lm-eval task or group name")
    try:
        group = task_set.group(task)
    except KeyError:
        known = ", ".join(g.name for g in task_set.groups)
        raise f.fail(
            f"{where}.task", f"'{task}' is not a group of task set {task_set.name} (its groups: {known})"
        ) from None
    subtasks = tuple(task_set.subtask(s) for s in group.subtasks)
    metrics = tuple(
        f.string(m, f"{where}.metrics[{i}]", _TASK, "an lm-eval metric name")
        for i, m in enumerate(f.items(b["metrics"], f"{where}.metrics"))
    )
    if len(set(metrics)) != len(metrics):
        raise f.fail(f"{where}.metrics", "lists a metric twice")
    for i, m in enumerate(metrics):
        if m.endswith("_stderr"):
            raise f.fail(f"{where}.metrics[{i}]", "name the metric, not its standard error")
    filter_ = f.string(b.get("filter", "none"), f"{where}.filter", _TASK, "an lm-eval filter name")
    normalize = f.choice(b["normalize"], f"{where}.normalize", Normalization)
    if "aggregate" in b:
        aggregate = f.choice(b["aggregate"], f"{where}.aggregate", Aggregation)
    elif len(subtasks) == 1:
        aggregate = Aggregation.SAMPLE_WEIGHTED  # one task: nothing to aggregate
    else:
        raise f.fail(
            f"{where}.aggregate",
            f"is required: {task} has {len(subtasks)} subtasks (sample_weighted or mean)",
        )
    if normalize is Normalization.AGGREGATE and len({s.num_choices for s in subtasks}) > 1:
        raise f.fail(
            f"{where}.normalize",
            "'aggregate' needs one chance level, but the subtasks have different num_choices: use per_subtask",
        )
    return Benchmark(
        key=key,
        display=display,
        task=task,
        metrics=metrics,
        filter=filter_,
        subtasks=subtasks,
        aggregate=aggregate,
        normalize=normalize,
    )


def _parse_run(f: Fields, value: Any) -> RunSettings:
    r = f.mapping(
        value,
        "run",
        (
            "num_fewshot",
            "chat_template",
            "fewshot_as_multiturn",
            "seeds",
            "max_length",
            "batch_size",
            "max_batch_size",
            "log_samples",
        ),
    )
    if r["num_fewshot"] == "task_default":
        num_fewshot = None
    elif isinstance(r["num_fewshot"], int) and not isinstance(r["num_fewshot"], bool):
        num_fewshot = f.integer(r["num_fewshot"], "run.num_fewshot", 0)
    else:
        raise f.fail(
            "run.num_fewshot", f"must be task_default or an integer, got {describe(r['num_fewshot'])}"
        )
    s = f.mapping(r["seeds"], "run.seeds", ("random", "numpy", "torch", "fewshot"))
    seeds = Seeds(
        **{k: f.integer(s[k], f"run.seeds.{k}", 0) for k in ("random", "numpy", "torch", "fewshot")}
    )
    batch = r["batch_size"]
    if isinstance(batch, int) and not isinstance(batch, bool):
        batch_size = str(f.integer(batch, "run.batch_size", 1))
    elif batch == "auto":
        batch_size = "auto"
    else:
        raise f.fail("run.batch_size", f"must be auto or a positive integer, got {describe(batch)}")
    max_length = None if r["max_length"] is None else f.integer(r["max_length"], "run.max_length", 1)
    return RunSettings(
        num_fewshot=num_fewshot,
        chat_template=f.choice(r["chat_template"], "run.chat_template", ChatTemplate),
        fewshot_as_multiturn=f.boolean(r["fewshot_as_multiturn"], "run.fewshot_as_multiturn"),
        seeds=seeds,
        max_length=max_length,
        batch_size=batch_size,
        max_batch_size=f.integer(r["max_batch_size"], "run.max_batch_size", 1),
        log_samples=f.boolean(r["log_samples"], "run.log_samples"),
    )


def _check_coverage(f: Fields, config: LeaderboardConfig) -> None:
    """Every group the task set runs is scored by exactly one benchmark; keys and columns are unique."""
    keys: set[str] = set()
    scored: dict[str, str] = {}
    published: set[str] = set()
    for i, b in enumerate(config.benchmarks):
        where = f"benchmarks[{i}] ({b.key})"
        if b.key in keys:
            raise f.fail(f"{where}.key", f"'{b.key}' is used by another benchmark")
        keys.add(b.key)
        if b.task in scored:
            raise f.fail(f"{where}.task", f"'{b.task}' is already scored by benchmark '{scored[b.task]}'")
        scored[b.task] = b.key
        for column in (b.raw_column, b.column):
            if column in published:
                raise f.fail(f"{where}.display", f"column '{column}' would be published twice")
            published.add(column)
    if config.average.column in published:
        raise f.fail("average.column", f"column '{config.average.column}' is also a benchmark column")
    unscored = [g.name for g in config.tasks.groups if g.name not in scored]
    if unscored:
        raise f.fail(
            "benchmarks",
            f"task set {config.tasks.name} runs {', '.join(unscored)}, which no benchmark scores: add a benchmark "
            "for each (or remove the group from the task set)",
        )
