"""A leaderboard is a config: the YAML file that says what the leaderboard runs and how its scores are formed.

``leaderboard_configs/<name>.yaml`` declares the harness (package and exact version), the task set, every
benchmark (the lm-eval task or group, its metrics, its subtasks with their number of answer choices, how raw
scores aggregate and how the normalized score is formed), the average column and the run settings.
Normalization and the published columns are driven by it, so a second leaderboard is another YAML file.

Loading is strict: unknown fields, duplicate keys, wrong types and inconsistent declarations are refused
with a LeaderboardConfigError that names the file and the field.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

import backend
from backend.errors import LeaderboardError

SCHEMA_VERSION = 1
DEFAULT_LEADERBOARD = "open_llm_v2"
#: Where bare leaderboard names are looked up: leaderboard_configs/ at the repository root.
CONFIG_DIR = Path(backend.__file__).parents[1] / "leaderboard_configs"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
# lm-eval task, group and metric names: letters, digits, '_', '-', '.'; never ',' (it separates the filter).
_TASK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_EXACT_VERSION = re.compile(r"^\d+(\.\d+)*([.\-+]?[A-Za-z0-9.]+)?$")


class LeaderboardConfigError(LeaderboardError):
    """A leaderboard config is missing or invalid: the message names the file and the field; fix the YAML
    (leaderboard_configs/open_llm_v2.yaml shows every field)."""

    http_status = 500
    code = "leaderboard_config"


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
class Subtask:
    """One lm-eval task whose score is part of a benchmark."""

    task: str
    num_choices: int  # answer choices of a multiple-choice task; 0 for a generative task

    @property
    def chance(self) -> float:
        """The score of random guessing: the lower bound of normalization (0 for generative tasks)."""
        return 1.0 / self.num_choices if self.num_choices else 0.0


@dataclass(frozen=True)
class Benchmark:
    """One published benchmark: two columns, "<display> Raw" (a fraction) and "<display>" (0..100)."""

    key: str
    display: str
    task: str  # the lm-eval task or group the harness is asked to run
    metrics: tuple[str, ...]  # a task's raw score is the mean of these metrics
    filter: str  # the lm-eval filter the metrics are read under ("metric,filter" keys)
    subtasks: tuple[Subtask, ...]
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
        return not (len(self.subtasks) == 1 and self.subtasks[0].task == self.task)


@dataclass(frozen=True)
class Harness:
    package: str  # the distribution name, as pip knows it
    version: str  # an exact version: results are only comparable within one harness version

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


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
    max_length: int  # a cap: the context length is min(model's maximum, this)
    batch_size: str  # "auto" or a number, as lm-eval's --batch_size takes it
    max_batch_size: int  # the largest batch "auto" may pick
    log_samples: bool  # keep per-sample outputs (re-scoring without re-running, task hashes)

    def max_length_for(self, model_max_length: int | None) -> int:
        """The context length to evaluate with: min(model maximum, cap); the cap when the model's is unknown."""
        if model_max_length is None or model_max_length <= 0:
            return self.max_length
        return min(model_max_length, self.max_length)

    def use_chat_template(self, requested: bool) -> bool:
        """Whether to apply the chat template to a request that asked for it (`requested`) or not."""
        if self.chat_template is ChatTemplate.FROM_REQUEST:
            return requested
        return self.chat_template is ChatTemplate.ALWAYS


@dataclass(frozen=True)
class LeaderboardConfig:
    name: str
    title: str
    harness: Harness
    task_set: str  # names tasks/<task_set>.yaml: pinned datasets and task files
    benchmarks: tuple[Benchmark, ...]
    average: Average
    run: RunSettings
    schema_version: int = SCHEMA_VERSION
    # Where it was read from, for messages; not part of the leaderboard's identity (nor of its hash).
    source: str = field(default="", compare=False)

    @property
    def harness_tasks(self) -> tuple[str, ...]:
        """The lm-eval task and group names to run, in published order."""
        return tuple(b.task for b in self.benchmarks)

    def benchmark(self, key: str) -> Benchmark:
        for b in self.benchmarks:
            if b.key == key:
                return b
        raise KeyError(key)


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
    """sha256 (hex) of a canonical serialization of the parsed config.

    Stable across key order, whitespace, comments and defaults written out or left implicit; changes with
    anything that changes what is run or how it is scored. The file location is not part of it.
    """
    data = asdict(config)
    data.pop("source", None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def available_configs() -> list[str]:
    """The bare names load_config accepts."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []


def load_config(name_or_path: str | Path = DEFAULT_LEADERBOARD) -> LeaderboardConfig:
    """Load and validate a leaderboard config.

    A bare name (no '/' and no .yaml/.yml suffix) is leaderboard_configs/<name>.yaml at the repository root;
    anything else is a path, read as is.
    """
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
            raise LeaderboardConfigError(
                f"no leaderboard config named '{text}': expected {path} (available: {known})"
            )
    else:
        path = Path(name_or_path)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LeaderboardConfigError(f"{path}: cannot read the leaderboard config: {exc}") from exc
    try:
        data = yaml.load(raw, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise LeaderboardConfigError(f"{path}: not valid YAML: {exc}") from exc
    config = parse_config(data, source=str(path))
    if bare and config.name != text:
        raise LeaderboardConfigError(
            f"{path}: field 'name': is '{config.name}', but the file is named '{text}'"
        )
    return config


# --- parsing --------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            continue  # construct_mapping refuses it with its own message
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class _Ctx:
    source: str

    def error(self, where: str, problem: str) -> LeaderboardConfigError:
        return LeaderboardConfigError(f"{self.source}: field '{where}': {problem}")

    def mapping(
        self, value: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where or "(top level)", f"must be a mapping, got {_kind(value)}")
        prefix = f"{where}." if where else ""
        for key in value:
            if key not in required and key not in optional:
                expected = ", ".join([*required, *optional])
                raise self.error(f"{prefix}{key}", f"unknown field (expected: {expected})")
        for key in required:
            if key not in value:
                raise self.error(f"{prefix}{key}", "is required")
        return value

    def string(self, value: Any, where: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(value, str):
            hint = " (quote it)" if isinstance(value, int | float) and not isinstance(value, bool) else ""
            raise self.error(where, f"must be a string{hint}, got {_kind(value)}")
        if not value.strip() or value != value.strip():
            raise self.error(where, f"must be a non-empty string without surrounding spaces, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.error(where, f"{value!r} is not {what or 'valid'}")
        return value

    def integer(self, value: Any, where: str, minimum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(where, f"must be an integer, got {_kind(value)}")
        if value < minimum:
            raise self.error(where, f"must be >= {minimum}, got {value}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(where, f"must be true or false, got {_kind(value)}")
        return value

    def choice(self, value: Any, where: str, enum_type: type[enum.StrEnum]) -> Any:
        allowed = [m.value for m in enum_type]
        if value not in allowed:
            raise self.error(where, f"must be one of {', '.join(allowed)}; got {value!r}")
        return enum_type(value)

    def items(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise self.error(where, f"must be a non-empty list, got {_kind(value)}")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def parse_config(data: Any, source: str = "<config>") -> LeaderboardConfig:
    """Validate an already-parsed YAML document (`source` names it in messages)."""
    ctx = _Ctx(source)
    top = ctx.mapping(
        data,
        "",
        ("schema_version", "name", "harness", "task_set", "benchmarks", "average", "run"),
        ("title",),
    )
    if top["schema_version"] != SCHEMA_VERSION or isinstance(top["schema_version"], bool):
        raise ctx.error("schema_version", f"must be {SCHEMA_VERSION}, got {top['schema_version']!r}")
    name = ctx.string(top["name"], "name", _NAME, "a name (lowercase letters, digits, '_')")
    title = ctx.string(top["title"], "title") if "title" in top else name

    h = ctx.mapping(top["harness"], "harness", ("package", "version"))
    harness = Harness(
        package=ctx.string(h["package"], "harness.package", _TASK, "a package name"),
        version=ctx.string(
            h["version"], "harness.version", _EXACT_VERSION, 'an exact version such as "0.4.13" (no ranges)'
        ),
    )
    task_set = ctx.string(top["task_set"], "task_set", _NAME, "a task set name (tasks/<name>.yaml)")

    benchmarks = tuple(
        _parse_benchmark(ctx, item, f"benchmarks[{i}]")
        for i, item in enumerate(ctx.items(top["benchmarks"], "benchmarks"))
    )
    a = ctx.mapping(top["average"], "average", ("column",), ("method",))
    average = Average(column=ctx.string(a["column"], "average.column"))
    if "method" in a and a["method"] != "mean":
        raise ctx.error(
            "average.method", f"must be mean (the plain mean of the normalized scores), got {a['method']!r}"
        )

    config = LeaderboardConfig(
        name=name,
        title=title,
        harness=harness,
        task_set=task_set,
        benchmarks=benchmarks,
        average=average,
        run=_parse_run(ctx, top["run"]),
        source=source,
    )
    _check_unique(ctx, config)
    return config


def _parse_benchmark(ctx: _Ctx, value: Any, where: str) -> Benchmark:
    if isinstance(value, dict) and isinstance(value.get("key"), str) and _NAME.match(value["key"]):
        where = f"{where} ({value['key']})"  # name the benchmark in every message about it
    b = ctx.mapping(
        value,
        where,
        ("key", "display", "task", "metrics", "normalize"),
        ("filter", "subtasks", "num_choices", "aggregate"),
    )
    key = ctx.string(b["key"], f"{where}.key", _NAME, "a key (lowercase letters, digits, '_')")
    display = ctx.string(b["display"], f"{where}.display")
    task = ctx.string(b["task"], f"{where}.task", _TASK, "an lm-eval task or group name")
    metrics = tuple(
        ctx.string(m, f"{where}.metrics[{i}]", _TASK, "an lm-eval metric name")
        for i, m in enumerate(ctx.items(b["metrics"], f"{where}.metrics"))
    )
    if len(set(metrics)) != len(metrics):
        raise ctx.error(f"{where}.metrics", "lists a metric twice")
    for i, m in enumerate(metrics):
        if m.endswith("_stderr"):
            raise ctx.error(f"{where}.metrics[{i}]", "name the metric, not its standard error")
    filter_ = ctx.string(b.get("filter", "none"), f"{where}.filter", _TASK, "an lm-eval filter name")
    normalize = ctx.choice(b["normalize"], f"{where}.normalize", Normalization)

    if ("subtasks" in b) == ("num_choices" in b):
        raise ctx.error(
            where,
            "give either 'subtasks' (the tasks of a group, each with num_choices) or 'num_choices' "
            "(when the task is a single lm-eval task)",
        )
    if "num_choices" in b:
        subtasks: tuple[Subtask, ...] = (
            Subtask(task, _num_choices(ctx, b["num_choices"], f"{where}.num_choices")),
        )
        aggregate = ctx.choice(
            b.get("aggregate", Aggregation.SAMPLE_WEIGHTED.value), f"{where}.aggregate", Aggregation
        )
    else:
        if "aggregate" not in b:
            raise ctx.error(f"{where}.aggregate", "is required with subtasks (sample_weighted or mean)")
        aggregate = ctx.choice(b["aggregate"], f"{where}.aggregate", Aggregation)
        parsed = []
        for i, item in enumerate(ctx.items(b["subtasks"], f"{where}.subtasks")):
            sub_where = f"{where}.subtasks[{i}]"
            s = ctx.mapping(item, sub_where, ("task", "num_choices"))
            sub_task = ctx.string(s["task"], f"{sub_where}.task", _TASK, "an lm-eval task name")
            if sub_task == task:
                raise ctx.error(
                    f"{sub_where}.task",
                    f"'{task}' is the benchmark's own task: for a single task give num_choices instead of subtasks",
                )
            parsed.append(Subtask(sub_task, _num_choices(ctx, s["num_choices"], f"{sub_where}.num_choices")))
        subtasks = tuple(parsed)
        if normalize is Normalization.AGGREGATE and len({s.num_choices for s in subtasks}) > 1:
            raise ctx.error(
                f"{where}.normalize",
                "'aggregate' needs one chance level, but the subtasks have different num_choices: "
                "use per_subtask",
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


def _num_choices(ctx: _Ctx, value: Any, where: str) -> int:
    n = ctx.integer(value, where, 0)
    if n == 1:
        raise ctx.error(where, "must be 0 (generative) or at least 2 (multiple choice), got 1")
    return n


def _parse_run(ctx: _Ctx, value: Any) -> RunSettings:
    r = ctx.mapping(
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
        num_fewshot = ctx.integer(r["num_fewshot"], "run.num_fewshot", 0)
    else:
        raise ctx.error(
            "run.num_fewshot", f"must be task_default or an integer, got {_kind(r['num_fewshot'])}"
        )
    s = ctx.mapping(r["seeds"], "run.seeds", ("random", "numpy", "torch", "fewshot"))
    seeds = Seeds(
        **{k: ctx.integer(s[k], f"run.seeds.{k}", 0) for k in ("random", "numpy", "torch", "fewshot")}
    )
    batch = r["batch_size"]
    if isinstance(batch, int) and not isinstance(batch, bool):
        batch_size = str(ctx.integer(batch, "run.batch_size", 1))
    elif batch == "auto":
        batch_size = "auto"
    else:
        raise ctx.error("run.batch_size", f"must be auto or a positive integer, got {_kind(batch)}")
    return RunSettings(
        num_fewshot=num_fewshot,
        chat_template=ctx.choice(r["chat_template"], "run.chat_template", ChatTemplate),
        fewshot_as_multiturn=ctx.boolean(r["fewshot_as_multiturn"], "run.fewshot_as_multiturn"),
        seeds=seeds,
        max_length=ctx.integer(r["max_length"], "run.max_length", 1),
        batch_size=batch_size,
        max_batch_size=ctx.integer(r["max_batch_size"], "run.max_batch_size", 1),
        log_samples=ctx.boolean(r["log_samples"], "run.log_samples"),
    )


def _check_unique(ctx: _Ctx, config: LeaderboardConfig) -> None:
    keys: set[str] = set()
    tasks: dict[str, str] = {}
    published: set[str] = set()
    for i, b in enumerate(config.benchmarks):
        where = f"benchmarks[{i}] ({b.key})"
        if b.key in keys:
            raise ctx.error(f"{where}.key", f"'{b.key}' is used by another benchmark")
        keys.add(b.key)
        for name in [b.task, *(s.task for s in b.subtasks if s.task != b.task)]:
            if name in tasks:
                other = "this benchmark" if tasks[name] == b.key else f"benchmark '{tasks[name]}'"
                raise ctx.error(where, f"task '{name}' is listed twice (already part of {other})")
            tasks[name] = b.key
        for column in (b.raw_column, b.column):
            if column in published:
                raise ctx.error(f"{where}.display", f"column '{column}' would be published twice")
            published.add(column)
    if config.average.column in published:
        raise ctx.error("average.column", f"column '{config.average.column}' is also a benchmark column")
