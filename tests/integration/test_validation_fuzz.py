"""Generated repositories through validation, on SQLite and PostgreSQL: every outcome is an acceptance or a
rejection whose rule the README's table names, never an exception, and the queue, the requests export and a
publish keep working after each one.

Each example is a real folder in a local model store: the tiny model (or a tiny LoRA adapter) with random
JSON (or text) for config.json, the tokenizer files and the card's metadata, and random safetensors headers,
submitted with random precision, weight type, model type and revision. Accepted requests are finished with
an evaluation, so that the publish after them writes the table and the requests export. Hand-picked
examples (the issue's cases) run first; the generated ones are derandomized, so every run sees the same.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st

from backend.app import App
from backend.domain import ModelType, Precision, Status, Submission, WeightType
from backend.errors import SubmissionRejected
from backend.hub.local_store import LocalModelStore
from backend.leaderboards.config import config_hash, load_config
from backend.leaderboards.normalize import normalize, standard_errors
from backend.modelbuilder import build_tiny_model, write_tiny_model
from backend.settings import Settings
from backend.storage.evaluations import Evaluation

#: Generated examples per database, after the hand-picked ones (about 0.2 s each, 15 s in all).
EXAMPLES = 45
ROOT = Path(__file__).parents[2]
RESULTS = ROOT / "tests" / "fixtures" / "results" / "open_llm_v2_results.json"
BASE_MODEL = "fuzz-base/tiny"
LONG_BODY = "A tiny model for tests, trained on nothing in particular. " * 5


def documented_rules() -> set[str]:
    """The rule names in the first column of the README's "What a submission must pass" table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### What a submission must pass", 1)[1].split("\n#", 1)[0]
    rules: set[str] = set()
    for line in section.splitlines():
        if line.startswith("|"):
            rules.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return rules


def test_the_readme_table_of_rules_is_parsed() -> None:
    """The fuzz test checks rejections against this set: an empty or partial parse would let any rule by."""
    rules = documented_rules()
    assert {"repo-id", "model-exists", "revision", "model-access", "safetensors", "tokenizer"} <= rules
    assert {"chat-template", "remote-code", "config", "model-card", "license", "duplicate"} <= rules


# JSON values of every kind, the awkward ones included: huge and negative integers, NaN and infinities,
# unicode (hypothesis' text is any code point, surrogates excepted), nesting.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([10**400, 2**64, 2**63, -1, 0, 4, 8])
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(
        ["LlamaForCausalLM", "llama", "gptq", "apache-2.0", "org/base", BASE_MODEL, "", "日本語"]
    )
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def nested(depth: int, inner: str = "1") -> str:
    """JSON nested ``depth`` lists deep: past a parser's recursion limit at 100,000, inside it at 500."""
    return "[" * depth + inner + "]" * depth


#: Whole-file texts: malformed JSON, JSON that is not an object, and objects nested too deep.
texts = st.text(max_size=60) | st.sampled_from(
    [
        nested(100_000),
        '{"a": ' + nested(100_000) + "}",
        '{"a": ' + nested(500) + "}",
        "{",
        "null",
        "[]",
        '"x"',
        "1" * 5000,  # an integer past Python's int-from-text limit
        "\ufeff{}",
        "\x00",
    ]
)

#: Every field of config.json validation reads, and some transformers reads while loading it.
CONFIG_FIELDS = [
    "architectures",
    "model_type",
    "quantization_config",
    "auto_map",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "torch_dtype",
    "rope_scaling",
    "tie_word_embeddings",
]
quantization = st.fixed_dictionaries(
    {"quant_method": st.sampled_from(["gptq", "GPTQ", "awq", 7]) | json_values},
    optional={"bits": st.sampled_from([2, 3, 4, 8, 5, True, [4], {"a": 1}, "4", 10**400]) | json_values},
)
config_values = (
    json_values
    | st.lists(st.text(max_size=30), max_size=3)
    | st.sampled_from([nested(500), "LlamaForCausalLM", ["LlamaForCausalLM"], "x" * 1000])
    | quantization
)
config_edits = st.dictionaries(st.sampled_from(CONFIG_FIELDS), config_values, max_size=3)
chat_templates = (
    json_values
    | st.sampled_from(["{{ messages }}", "  ", "{% for %}", "{{ raise_exception('no') }}"])
    | st.just([{"name": "default", "template": "t"}])
    | st.lists(st.dictionaries(st.sampled_from(["name", "template"]), json_values), max_size=2)
)
card_metadata = st.fixed_dictionaries(
    {},
    optional={
        "license": st.sampled_from(["mit", "apache-2.0", "other", "x" * 101, "mit\nbsd", "ライセンス"])
        | json_values,
        "license_name": json_values,
        "license_link": json_values,
        "base_model": st.sampled_from([BASE_MODEL, "evil/base", [BASE_MODEL, "a/b"], ["x"] * 101])
        | json_values,
        "tags": json_values,
    },
)

DTYPE_BITS = {"F32": 32, "F16": 16, "BF16": 16, "I32": 32, "F4": 4, "F6_E2M3": 6, "BOOL": 8, "U64": 64}
DTYPES = [*DTYPE_BITS, "Q9", "", "f32"]


@st.composite
def consistent_tensors(draw: st.DrawFn) -> dict[str, Any]:
    """A tensor entry whose data_offsets span exactly its shape: the header is valid, the size anything."""
    dtype = draw(st.sampled_from(sorted(DTYPE_BITS)))
    shape = draw(st.lists(st.integers(min_value=0, max_value=10**7), max_size=3))
    begin = draw(st.integers(min_value=0, max_value=2**20))
    return {
        "dtype": dtype,
        "shape": shape,
        "data_offsets": [begin, begin + math.prod(shape) * DTYPE_BITS[dtype] // 8],
    }


random_tensors = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(DTYPES) | json_values,
        "shape": st.lists(st.integers(min_value=-2, max_value=2**66) | st.sampled_from([10**400]), max_size=3)
        | json_values,
        "data_offsets": st.lists(st.integers(min_value=-1, max_value=2**66), min_size=2, max_size=2)
        | json_values,
    },
)
safetensors_headers = st.dictionaries(
    st.text(max_size=10) | st.just("__metadata__"),
    consistent_tensors() | random_tensors | json_values,
    max_size=3,
)


def safetensors_file(header: bytes, length: int | None = None) -> bytes:
    """A safetensors file: the little-endian u64 header length (given, or the true one), then the header."""
    return struct.pack("<Q", len(header) if length is None else length) + header


@dataclass
class Repo:
    """What one generated repository changes of the tiny model (None: left as built)."""

    adapter: bool = False  # built as a LoRA adapter of BASE_MODEL (no config.json of its own)
    config: dict[str, Any] | str | None = None  # edits to config.json, or its whole text
    delete: list[str] = field(default_factory=list)
    tokenizer_config: str | None = None  # the whole text of tokenizer_config.json
    chat_template: Any = None  # else: tokenizer_config.json's chat_template set to this
    tokenizer_json: str | None = None
    special_tokens: str | None = None
    card: str | None = None
    safetensors: bytes | None = None  # model-extra.safetensors


def card(metadata: dict[str, Any], body: str = LONG_BODY) -> str:
    front = yaml.safe_dump(metadata, allow_unicode=True) if metadata else ""
    return f"---\n{front}---\n\n{body}\n"


#: What a generated repository may change of the tiny model; each example changes a few of them, so that
#: both acceptances and the later rules are reached.
ASPECTS = [
    "config",
    "delete",
    "chat_template",
    "tokenizer_config",
    "tokenizer_json",
    "special_tokens",
    "card",
    "safetensors",
]


def one_of_mostly(usual: Any, *others: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` about four times in five, else one of ``others`` (one_of alone would favour ``others``)."""
    return st.sampled_from([True] * 4 + [False]).flatmap(
        lambda keep: st.just(usual) if keep else st.one_of(*others)
    )


@st.composite
def repos(draw: st.DrawFn, adapter: bool) -> Repo:
    repo = Repo(adapter=adapter)
    fuzzed = {aspect for aspect in ASPECTS if draw(st.sampled_from([True, False, False, False, False]))}
    if "config" in fuzzed:
        repo.config = draw(config_edits | texts)
    if "delete" in fuzzed:
        repo.delete = [
            draw(st.sampled_from(["config.json", "tokenizer.json", "tokenizer_config.json", "README.md"]))
        ]
    if "chat_template" in fuzzed:
        repo.chat_template = draw(chat_templates)
    if "tokenizer_config" in fuzzed:
        repo.tokenizer_config = draw(texts | json_values.map(json.dumps))
    if "tokenizer_json" in fuzzed:
        repo.tokenizer_json = draw(texts | json_values.map(json.dumps))
    if "special_tokens" in fuzzed:
        repo.special_tokens = draw(texts | json_values.map(json.dumps))
    if "card" in fuzzed:
        metadata = {"license": "apache-2.0"} | draw(card_metadata)
        body = draw(one_of_mostly(LONG_BODY, st.just("Short."), st.text(max_size=300)))
        repo.card = draw(st.just(card(metadata, body)) | texts)
    if "safetensors" in fuzzed:
        header = draw(safetensors_headers.map(lambda h: json.dumps(h).encode()) | st.binary(max_size=40))
        length = draw(one_of_mostly(None, st.sampled_from([0, 2**63, 2**64 - 1, len(header) + 1])))
        repo.safetensors = safetensors_file(header, length) if draw(st.booleans()) else header
    return repo


def fields(**changes: Any) -> dict[str, Any]:
    """The submission's fields besides the model: a valid pretrained bfloat16 submission, changed."""
    return {
        "precision": Precision.BFLOAT16,
        "weight_type": WeightType.ORIGINAL,
        "model_type": ModelType.PRETRAINED,
        "use_chat_template": None,
        "revision": "main",
        "base_model": None,
    } | changes


NASTY_IDS = st.sampled_from(["missing/base", "not an id", "x/y.git", "a--b/c", "ok/name\n", "日本/語"])


@st.composite
def cases(draw: st.DrawFn) -> tuple[Repo, dict[str, Any]]:
    """A generated repository and the submission of it: mostly well-formed fields, so that most examples
    reach the repository's files, with every kind of bad field now and then."""
    weight_type = draw(st.sampled_from([WeightType.ORIGINAL] * 3 + [WeightType.DELTA, WeightType.ADAPTER]))
    needs_base = weight_type is not WeightType.ORIGINAL
    submission = fields(
        precision=draw(st.sampled_from(list(Precision))),
        weight_type=weight_type,
        model_type=draw(one_of_mostly(ModelType.PRETRAINED, st.sampled_from([*ModelType, None]))),
        use_chat_template=draw(st.sampled_from([None, True, False])),
        revision=draw(
            one_of_mostly(
                "main",
                st.sampled_from(["0" * 40, "refs/pr/1", "../main", "main.lock", "b" * 10_000]),
                st.text(max_size=300),
            )
        ),
        base_model=draw(one_of_mostly(BASE_MODEL if needs_base else None, NASTY_IDS, st.just(BASE_MODEL))),
    )
    adapter = draw(one_of_mostly(weight_type is WeightType.ADAPTER, st.booleans()))
    return draw(repos(adapter)), submission


def write_repo(templates: dict[bool, Path], folder: Path, repo: Repo) -> None:
    shutil.copytree(templates[repo.adapter], folder)
    config_path = folder / "config.json"
    if isinstance(repo.config, str):
        config_path.write_text(repo.config, encoding="utf-8")
    elif repo.config is not None:
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        config.update(repo.config)
        config_path.write_text(json.dumps(config), encoding="utf-8")
    if repo.tokenizer_config is not None:
        (folder / "tokenizer_config.json").write_text(repo.tokenizer_config, encoding="utf-8")
    elif repo.chat_template is not None:
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        tokenizer_config["chat_template"] = repo.chat_template
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    if repo.tokenizer_json is not None:
        (folder / "tokenizer.json").write_text(repo.tokenizer_json, encoding="utf-8")
    if repo.special_tokens is not None:
        (folder / "special_tokens_map.json").write_text(repo.special_tokens, encoding="utf-8")
    if repo.card is not None:
        (folder / "README.md").write_text(repo.card, encoding="utf-8")
    if repo.safetensors is not None:
        (folder / "model-extra.safetensors").write_bytes(repo.safetensors)
    for name in repo.delete:
        (folder / name).unlink(missing_ok=True)


def finish_with_an_evaluation(app: App, clock: Any, request_id: int, folder: Path) -> None:
    """Take an accepted request through the queue and store a realistic evaluation (no harness run)."""
    claimed = app.queue.claim("fuzz-worker")
    assert claimed is not None and claimed.id == request_id
    config = load_config("open_llm_v2")
    results = json.loads(RESULTS.read_text())
    clock.advance(60)
    app.evaluations.store_and_finish(
        Evaluation(
            request_id=request_id,
            leaderboard=config.name,
            config_hash=config_hash(config),
            scores=normalize(results, config),
            stderrs=standard_errors(results, config),
            results=results,
            provenance={"leaderboard": config.name, "samples_files": []},
            artifacts=str(folder),
            attempt=1,
            worker_id="fuzz-worker",
            started_at=clock() - timedelta(seconds=30),
            finished_at=clock(),
            duration_seconds=30.0,
        ),
        clock(),
    )


def _file(header: dict[str, Any]) -> bytes:
    return safetensors_file(json.dumps(header).encode())


#: The issue's cases (items 5 and 7) and their neighbours, run before the generated examples.
HAND_PICKED = [
    (Repo(), fields()),  # the tiny model as built: accepted
    (Repo(adapter=True), fields(weight_type=WeightType.ADAPTER, base_model=BASE_MODEL)),  # accepted
    (Repo(config={"architectures": [1, {}, None]}), fields()),
    (Repo(config={"architectures": "LlamaForCausalLM"}), fields()),
    (Repo(config={"model_type": 42}), fields()),
    (Repo(config=nested(100_000)), fields()),
    (Repo(config={"rope_scaling": json.loads(nested(500))}), fields()),
    (
        Repo(config={"quantization_config": {"quant_method": "gptq", "bits": [4]}}),
        fields(precision=Precision.GPTQ),
    ),
    (
        Repo(config={"quantization_config": {"quant_method": "gptq", "bits": {"a": 1}}}),
        fields(precision=Precision.GPTQ),
    ),
    (Repo(config={"quantization_config": "gptq"}), fields(precision=Precision.GPTQ)),
    (Repo(card=card({"license": "mit", "base_model": 42})), fields()),
    (Repo(card=card({"license": "mit", "base_model": True})), fields()),
    (Repo(card=card({"license": ["ライセンス", 42], "base_model": [BASE_MODEL, None]})), fields()),
    (Repo(card=card({"license": {"id": "mit"}})), fields()),
    (Repo(safetensors=_file({"w": {"dtype": "F32", "shape": [10**400], "data_offsets": [0, 4]}})), fields()),
    (Repo(safetensors=_file({"w": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 4]}})), fields()),
    (
        Repo(
            safetensors=_file({"w": {"dtype": "F32", "shape": [10**6] * 3, "data_offsets": [0, 4 * 10**18]}})
        ),
        fields(),
    ),
    (Repo(safetensors=safetensors_file(b"{}", 2**64 - 1)), fields()),
    (Repo(tokenizer_config=json.dumps({"chat_template": 42})), fields(model_type=ModelType.CHAT)),
    (Repo(tokenizer_config=nested(100_000)), fields(model_type=ModelType.CHAT)),
    (Repo(tokenizer_json=json.dumps({"version": "1.0", "model": 42})), fields()),
    (Repo(special_tokens=json.dumps({"bos_token": [1, {}], "eos_token": 10**400})), fields()),
    (Repo(tokenizer_config="{}"), fields(model_type=ModelType.CHAT)),  # no chat template
    (Repo(), fields(weight_type=WeightType.DELTA, base_model="x/y.git")),
    (Repo(), fields(weight_type=WeightType.DELTA, base_model="missing/base")),
    (Repo(), fields(revision="b" * 10_000)),
    (Repo(), fields(revision="main\x00")),
]


@pytest.mark.slow
def test_generated_repositories_are_accepted_or_rejected_by_a_rule_and_nothing_breaks(
    database_url: str, tmp_path: Path, clock: Any
) -> None:
    rules = documented_rules()
    templates = {False: tmp_path / "template", True: tmp_path / "template-adapter"}
    write_tiny_model(templates[False])
    write_tiny_model(templates[True], adapter_of=BASE_MODEL)
    store = LocalModelStore(tmp_path / "store")
    build_tiny_model(store, BASE_MODEL)
    results = tmp_path / "results"
    app = App.open(Settings(database_url=database_url, model_store=store.root, results=str(results)))
    app.clock = clock
    outcomes: dict[str, int] = {}
    numbers = iter(range(10**6))
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        # No shrinking: a failure reports the example as generated, at once (shrinking takes many minutes).
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(case=cases())
    def one_submission(case: tuple[Repo, dict[str, Any]]) -> None:
        repo, submission = case
        number = next(numbers)
        model = f"fuzz-{number}/model"  # a namespace each: the weekly limit is not what is tested
        folder = tmp_path / "scratch" / str(number)
        note(f"{model}: {repr(repo)[:3000]} submitted with {repr(submission)[:1000]}")
        write_repo(templates, folder, repo)
        store.add_snapshot(model, folder)
        try:
            request = app.submissions.submit(Submission(model=model, sender="fuzzer", **submission))
        except SubmissionRejected as exc:
            assert exc.rule in rules, f"rule {exc.rule!r} is not in the README's table: {exc.message}"
            assert f"rejected by rule '{exc.rule}'" in exc.message and "Fix: " in exc.message, exc.message
            assert len(exc.message) < 2000, exc.message
            assert str(tmp_path) not in exc.message and "/tmp/" not in exc.message, exc.message
            outcomes[exc.rule] = outcomes.get(exc.rule, 0) + 1
        else:
            assert request.model == model and len(request.sha) == 40
            assert all(isinstance(a, str) for a in request.architectures), request.architectures
            outcomes["accepted"] = outcomes.get("accepted", 0) + 1
            finish_with_an_evaluation(app, clock, request.id, folder)
        # The service keeps working for everyone after each submission: the queue lists every stored
        # request (each accepted one, finished), the export writes them all, a publish delivers.
        accepted = outcomes.get("accepted", 0)
        listed = app.queue.page(status=None, limit=500)
        assert len(listed) == accepted and all(r.status is Status.FINISHED for r in listed)
        export = tmp_path / "export" / str(number)
        assert app.requests_export.export(export) == (accepted, accepted)  # each with its submitter's vote
        records = [json.loads(path.read_text()) for path in export.rglob("*.json")]
        assert sorted(r["model"] for r in records) == sorted(r.model for r in listed)
        assert all(isinstance(r["architectures"], str) for r in records)
        report = app.publish_results()
        assert report.outbox == 0
        shutil.rmtree(folder)

    for case in reversed(HAND_PICKED):  # hypothesis runs the last applied first
        one_submission = example(case=case)(one_submission)
    try:
        one_submission()
    finally:
        app.close()
    # The examples reach both sides: acceptances, and rejections by many rules.
    assert outcomes.get("accepted", 0) >= 2, outcomes
    assert len(outcomes) >= 8, outcomes
    assert (results / "README.md").is_file()
    assert sum(outcomes.values()) == len(HAND_PICKED) + EXAMPLES, outcomes
    print(f"{sum(outcomes.values())} submissions in {time.monotonic() - started:.0f} s: {outcomes}")
