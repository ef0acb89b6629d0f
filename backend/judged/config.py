"""A judged leaderboard is a config: which instructions, whose reference outputs, how the evaluated model
generates, which judge compares the two, and what is published.

``leaderboard_configs/<name>.yaml`` with ``kind: judged``. The instruction set and the reference outputs are
Hub datasets pinned by revision (the data mirror carries them for air-gapped runs), the length-controlled
win rate's table (AlpacaEval's df_gamed.csv) a file of a Hub dataset. The judge is either an
OpenAI-compatible endpoint (AlpacaEval 2's weighted gpt4_turbo annotator: base URL, model and key are the
deployment's LEADERBOARD_JUDGE_* settings) or a local judge model pinned by revision that runs in the
evaluation job (PandaLM). Loading is as strict as a benchmark leaderboard's: unknown fields, duplicate keys
and wrong types are refused with a LeaderboardConfigError that names the file and the field.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend.errors import LeaderboardConfigError
from backend.manifests import Fields, describe, load_yaml

SCHEMA_VERSION = 1
KIND = "judged"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
#: The metrics AlpacaEval publishes, by its names (backend.judged.metrics computes them).
METRICS = (
    "length_controlled_winrate",
    "lc_standard_error",
    "win_rate",
    "standard_error",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_total",
    "discrete_win_rate",
    "avg_length",
)
MAX_STOP_SEQUENCES = 16
#: Why a request is not evaluated on a judged leaderboard: the rule and the fix.
JUDGED_NEEDS_CHAT_TEMPLATE = (
    "rule judged-chat-template: a judged leaderboard compares chat answers, so it evaluates only models "
    "submitted with their chat template; submit the model with its chat template (a chat_template in "
    "tokenizer_config.json) to be evaluated on it"
)


class JudgeKind(enum.StrEnum):
    """Where the judge runs."""

    ENDPOINT = "endpoint"  # an OpenAI-compatible chat endpoint (a hosted model, or an on-premise vLLM server)
    LOCAL = "local"  # a Hub causal LM pinned by revision, loaded in the evaluation job (local slots or Slurm)


class JudgePrompt(enum.StrEnum):
    """The judge's prompt and how its answer is read (tasks/judges/<name>.txt)."""

    WEIGHTED_ALPACA_EVAL_GPT4_TURBO = "weighted_alpaca_eval_gpt4_turbo"  # one token, preference from logprobs
    PANDALM = "pandalm"  # "1", "2" or "Tie" on the first line, both orders judged


@dataclass(frozen=True)
class DatasetRef:
    """One split of one config of a Hub dataset, pinned by commit (None: not pinned yet; a mirror's
    revision is recorded instead)."""

    repo: str
    config: str | None
    split: str
    revision: str | None


@dataclass(frozen=True)
class InstructionSet:
    dataset: DatasetRef
    instruction_field: str  # the column holding the instruction
    dataset_field: str | None  # the column naming each instruction's source set (AlpacaEval's "dataset")


@dataclass(frozen=True)
class ReferenceOutputs:
    """One model's outputs to the same instructions, in the same order: output_1 of every judgement."""

    dataset: DatasetRef
    generator: str  # the reference model's name, generator_1 of every annotation
    output_field: str
    instruction_field: str


@dataclass(frozen=True)
class Generation:
    """How the evaluated model answers: its chat template (required), greedy, pinned."""

    max_new_tokens: int
    stop: tuple[str, ...]
    seed: int
    batch_size: int
    temperature: float = 0.0  # greedy: the only decoding a judged leaderboard accepts

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stop": list(self.stop)}


@dataclass(frozen=True)
class Judge:
    kind: JudgeKind
    prompt: JudgePrompt
    annotator: str  # the annotator's name in annotations.json and the results (AlpacaEval's)
    model: str  # the endpoint's model name, or the local judge's Hub repository
    revision: str | None  # the local judge's commit (None for an endpoint: its model name is its identity)
    max_new_tokens: int
    temperature: float
    top_logprobs: int | None  # endpoint judges that read the labels' logprobs
    both_orders: bool  # judge each pair in both orders (PandaLM's rule for position bias)


@dataclass(frozen=True)
class GlmTable:
    """AlpacaEval's df_gamed.csv: instruction difficulties and gamed baselines, a file of a Hub dataset."""

    repo: str
    filename: str
    revision: str | None


@dataclass(frozen=True)
class Scoring:
    length_controlled: str  # length_controlled_v1 when the table is at hand, else the fallback (recorded)
    glm_table: GlmTable | None
    sort: str  # the column the table is ranked by


@dataclass(frozen=True)
class JudgedConfig:
    name: str
    title: str
    instructions: InstructionSet
    reference: ReferenceOutputs
    generation: Generation
    judge: Judge
    scoring: Scoring
    columns: tuple[str, ...]  # the published metric columns, in order, with AlpacaEval's names
    schema_version: int = SCHEMA_VERSION
    kind: str = KIND
    source: str = field(default="", compare=False)

    @property
    def datasets(self) -> tuple[DatasetRef, ...]:
        """Every dataset split the leaderboard reads (what the data mirror must carry)."""
        return (self.instructions.dataset, self.reference.dataset)


def judged_config_hash(config: JudgedConfig) -> str:
    """sha256 (hex) of the parsed config: changes with anything that changes what runs or how it scores."""
    data = asdict(config)
    data.pop("source", None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def is_judged(data: Any) -> bool:
    """Whether a parsed leaderboard YAML document declares a judged leaderboard."""
    return isinstance(data, dict) and data.get("kind") == KIND


def parse_judged_config(data: Any, source: str = "<config>") -> JudgedConfig:
    f = Fields(source, LeaderboardConfigError)
    top = f.mapping(
        data,
        "",
        ("schema_version", "kind", "name", "instructions", "reference", "generation", "judge", "scoring"),
        ("title", "columns"),
    )
    if top["schema_version"] != SCHEMA_VERSION or isinstance(top["schema_version"], bool):
        raise f.fail("schema_version", f"must be {SCHEMA_VERSION} for a judged leaderboard")
    if top["kind"] != KIND:
        raise f.fail("kind", f"must be {KIND}")
    name = f.string(top["name"], "name", _NAME, "a name (lowercase letters, digits, '_')")
    title = f.string(top["title"], "title") if "title" in top else name

    i = f.mapping(top["instructions"], "instructions", ("dataset", "instruction_field"), ("dataset_field",))
    instructions = InstructionSet(
        dataset=_dataset(f, i["dataset"], "instructions.dataset"),
        instruction_field=f.string(
            i["instruction_field"], "instructions.instruction_field", _FIELD, "a column"
        ),
        dataset_field=(
            f.string(i["dataset_field"], "instructions.dataset_field", _FIELD, "a column")
            if i.get("dataset_field") is not None
            else None
        ),
    )
    r = f.mapping(
        top["reference"], "reference", ("dataset", "generator", "output_field"), ("instruction_field",)
    )
    reference = ReferenceOutputs(
        dataset=_dataset(f, r["dataset"], "reference.dataset"),
        generator=f.string(r["generator"], "reference.generator"),
        output_field=f.string(r["output_field"], "reference.output_field", _FIELD, "a column"),
        instruction_field=f.string(
            r.get("instruction_field", instructions.instruction_field), "reference.instruction_field", _FIELD
        ),
    )
    generation = _generation(f, top["generation"])
    judge = _judge(f, top["judge"])
    scoring = _scoring(f, top["scoring"])
    columns = _columns(f, top.get("columns", list(METRICS)))
    if scoring.sort not in columns:
        raise f.fail("scoring.sort", f"'{scoring.sort}' is not a published column ({', '.join(columns)})")
    return JudgedConfig(
        name=name,
        title=title,
        instructions=instructions,
        reference=reference,
        generation=generation,
        judge=judge,
        scoring=scoring,
        columns=columns,
        source=source,
    )


def load_judged_config(path: Path) -> JudgedConfig:
    return parse_judged_config(load_yaml(path, LeaderboardConfigError, "leaderboard config"), str(path))


def _revision(f: Fields, value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA.match(value):
        raise f.fail(where, f"must be a 40-character commit sha or null, got {describe(value)}")
    return value


def _dataset(f: Fields, value: Any, where: str) -> DatasetRef:
    d = f.mapping(value, where, ("repo", "split", "revision"), ("config",))
    return DatasetRef(
        repo=f.string(d["repo"], f"{where}.repo", _REPO, "a Hub dataset id (owner/name)"),
        config=f.optional_string(d.get("config"), f"{where}.config", _FILE, "a dataset config name"),
        split=f.string(d["split"], f"{where}.split", _FILE, "a split name"),
        revision=_revision(f, d["revision"], f"{where}.revision"),
    )


def _number(f: Fields, value: Any, where: str, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise f.fail(where, f"must be a number from {low} to {high}, got {describe(value)}")
    return float(value)


def _generation(f: Fields, value: Any) -> Generation:
    g = f.mapping(
        value,
        "generation",
        ("chat_template", "max_new_tokens", "seed"),
        ("stop", "temperature", "batch_size"),
    )
    if g["chat_template"] != "required":
        raise f.fail(
            "generation.chat_template",
            "must be required: a judged leaderboard compares chat answers, so every model answers through "
            "its chat template",
        )
    if g.get("temperature", 0) != 0:
        raise f.fail(
            "generation.temperature", "must be 0 (greedy): a judged leaderboard's outputs are pinned"
        )
    stop = g.get("stop") or []
    if not isinstance(stop, list) or len(stop) > MAX_STOP_SEQUENCES:
        raise f.fail("generation.stop", f"must be a list of at most {MAX_STOP_SEQUENCES} strings")
    stops = []
    for k, s in enumerate(stop):
        if not isinstance(s, str) or not s or len(s) > 64:
            raise f.fail(
                f"generation.stop[{k}]", f"must be a string of 1 to 64 characters, got {describe(s)}"
            )
        stops.append(s)
    return Generation(
        max_new_tokens=f.integer(g["max_new_tokens"], "generation.max_new_tokens", 1),
        stop=tuple(stops),
        seed=f.integer(g["seed"], "generation.seed", 0),
        batch_size=f.integer(g.get("batch_size", 8), "generation.batch_size", 1),
    )


def _judge(f: Fields, value: Any) -> Judge:
    j = f.mapping(
        value,
        "judge",
        ("kind", "prompt", "annotator", "model", "max_new_tokens"),
        ("revision", "temperature", "top_logprobs", "both_orders"),
    )
    kind = f.choice(j["kind"], "judge.kind", JudgeKind)
    prompt = f.choice(j["prompt"], "judge.prompt", JudgePrompt)
    revision = _revision(f, j.get("revision"), "judge.revision")
    if kind is JudgeKind.LOCAL:
        model = f.string(j["model"], "judge.model", _REPO, "a Hub model id (owner/name)")
    else:
        model = f.string(j["model"], "judge.model")
        if revision is not None:
            raise f.fail(
                "judge.revision", "an endpoint judge has no revision: its model name is its identity"
            )
    top_logprobs = j.get("top_logprobs")
    if top_logprobs is not None:
        top_logprobs = f.integer(top_logprobs, "judge.top_logprobs", 1)
        if top_logprobs > 20:
            raise f.fail("judge.top_logprobs", "must be at most 20 (OpenAI's limit)")
    if prompt is JudgePrompt.WEIGHTED_ALPACA_EVAL_GPT4_TURBO and (
        kind is not JudgeKind.ENDPOINT or not top_logprobs
    ):
        raise f.fail(
            "judge", "the weighted gpt4_turbo prompt reads logprobs: kind endpoint with top_logprobs"
        )
    both = f.boolean(j.get("both_orders", prompt is JudgePrompt.PANDALM), "judge.both_orders")
    return Judge(
        kind=kind,
        prompt=prompt,
        annotator=f.string(j["annotator"], "judge.annotator", _FILE, "an annotator name"),
        model=model,
        revision=revision,
        max_new_tokens=f.integer(j["max_new_tokens"], "judge.max_new_tokens", 1),
        temperature=_number(f, j.get("temperature", 0), "judge.temperature", 0, 2),
        top_logprobs=top_logprobs,
        both_orders=both,
    )


def _scoring(f: Fields, value: Any) -> Scoring:
    s = f.mapping(value, "scoring", ("length_controlled", "sort"), ("glm_table",))
    from backend.judged.glm import GLM_MINIMAL, GLM_V1

    glm = s["length_controlled"]
    if glm not in (GLM_V1, GLM_MINIMAL):
        raise f.fail("scoring.length_controlled", f"must be {GLM_V1} or {GLM_MINIMAL}, got {describe(glm)}")
    table = None
    if s.get("glm_table") is not None:
        t = f.mapping(s["glm_table"], "scoring.glm_table", ("repo", "filename", "revision"))
        table = GlmTable(
            repo=f.string(t["repo"], "scoring.glm_table.repo", _REPO, "a Hub dataset id (owner/name)"),
            filename=f.string(t["filename"], "scoring.glm_table.filename", _FILE, "a file name"),
            revision=_revision(f, t["revision"], "scoring.glm_table.revision"),
        )
    if glm == GLM_V1 and table is None:
        raise f.fail("scoring.glm_table", f"{GLM_V1} needs its table (AlpacaEval's df_gamed.csv)")
    return Scoring(length_controlled=glm, glm_table=table, sort=f.string(s["sort"], "scoring.sort"))


def _columns(f: Fields, value: Any) -> tuple[str, ...]:
    items = f.items(value, "columns")
    for k, c in enumerate(items):
        if c not in METRICS:
            raise f.fail(
                f"columns[{k}]", f"must be one of AlpacaEval's metrics ({', '.join(METRICS)}), got {c!r}"
            )
    if len(set(items)) != len(items):
        raise f.fail("columns", "lists a column twice")
    return tuple(items)
