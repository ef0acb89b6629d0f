"""Every submission rule, each broken by a real tiny model repository in the local model store."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from safetensors import safe_open

from backend.app import App
from backend.domain import ModelType, Precision, Status, Submission, WeightType
from backend.errors import SubmissionRejected
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model, write_tiny_model
from backend.settings import Settings
from tests.commands import clean_env

from .conftest import new_request

MIB = 2**20

REPOS = {
    "good/tiny": {},
    "good/tiny-no-template": {"chat_template": False},
    "good/gptq-4bit": {"gptq_bits": 4},
    "good/adapter": {"adapter_of": "good/tiny"},
    "good/delta": {"seed": 7},
    "bad/no-safetensors": {"safetensors": False},
    "bad/too-big": {"declared_params": 101_000_000_000},
    "bad/remote-code": {"remote_code": True},
    "bad/no-license": {"license": None},
    "bad/short-card": {"card_body": "A tiny model. Nothing more to say."},
    "bad/no-card": {"card_body": None},
    "bad/broken-config": {"extra_files": {"config.json": "{not json"}},
    "bad/broken-tokenizer": {"extra_files": {"tokenizer.json": '{"version": "1.0", "model": 42}'}},
    "bad/built-on-blocked": {"adapter_of": "evil/base", "extra_files": {"config.json": "{}"}},
    "evil/base": {},
}


def _safetensors(header: dict) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _edit_card_metadata(folder: Path, line: str) -> None:
    readme = (folder / "README.md").read_text()
    (folder / "README.md").write_text(readme.replace("---\n", f"---\n{line}\n", 1))


def _set_gptq_bits(bits: object) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config["quantization_config"]["bits"] = bits
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def _grow(name: str, size: int) -> Callable[[Path], None]:
    """The file made ``size`` bytes long, sparse: a hole costs no disk and no time to copy."""
    return lambda folder: os.truncate(folder / name, size)


#: Repositories made from a tiny model (its options) by an edit of its files.
VARIANTS: dict[str, tuple[dict, Callable[[Path], None]]] = {
    "bad/architectures-junk": ({}, lambda f: _edit_config(f, architectures=[1, {}, None])),
    "bad/architectures-string": ({}, lambda f: _edit_config(f, architectures="LlamaForCausalLM")),
    "bad/deep-config": ({}, lambda f: (f / "config.json").write_text("[" * 100_000 + "]" * 100_000)),
    "bad/huge-shape": (
        {},
        lambda f: (f / "model-2.safetensors").write_bytes(
            _safetensors({"w": {"dtype": "F32", "shape": [10**400], "data_offsets": [0, 4 * 10**400]}})
        ),
    ),
    "bad/unknown-dtype": (
        {},
        lambda f: (f / "model-2.safetensors").write_bytes(
            _safetensors({"w": {"dtype": "Q9", "shape": [10**400], "data_offsets": [0, 4]}})
        ),
    ),
    "bad/gptq-bits-list": ({"gptq_bits": 4}, _set_gptq_bits([4])),
    "bad/gptq-bits-dict": ({"gptq_bits": 4}, _set_gptq_bits({"bits": 4})),
    "bad/card-base-number": ({}, lambda f: _edit_card_metadata(f, "base_model: 42")),
    "bad/card-base-true": ({}, lambda f: _edit_card_metadata(f, "base_model: true")),
    "bad/big-config": ({}, _grow("config.json", 9 * MIB)),
    "bad/big-tokenizer": ({}, _grow("tokenizer.json", 65 * MIB)),
    "bad/big-card": ({}, _grow("README.md", MIB + 1)),
    "declares-blocked/base": ({}, lambda f: _edit_card_metadata(f, "base_model: evil/base")),
}


def _link_outside(store: LocalModelStore, repo_id: str, name: str, outside: Path) -> None:
    """Replace a file of the repo's snapshot by a link to a copy of it outside the store."""
    snapshot = _snapshot(store, repo_id)
    outside.mkdir(parents=True, exist_ok=True)
    shutil.copy(snapshot / name, outside / name)
    (snapshot / name).unlink()
    (snapshot / name).symlink_to(outside / name)


def _as_hub_cache(store: LocalModelStore, repo_id: str) -> None:
    """Every file of the snapshot moved into the repo's blobs/ and linked back, as `hf download` leaves it."""
    snapshot = _snapshot(store, repo_id)
    blobs = snapshot.parent.parent / "blobs"
    blobs.mkdir()
    for index, path in enumerate(sorted(p for p in snapshot.iterdir() if p.is_file())):
        blob = blobs / f"blob{index}"
        path.rename(blob)
        path.symlink_to(os.path.relpath(blob, snapshot))


def _snapshot(store: LocalModelStore, repo_id: str) -> Path:
    """A repo's main snapshot, found from the layout itself (not through the code under test)."""
    folder = store.root / ("models--" + repo_id.replace("/", "--"))
    return folder / "snapshots" / (folder / "refs" / "main").read_text().strip()


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStore:
    store = LocalModelStore(tmp_path_factory.mktemp("model-store"))
    for repo_id, options in REPOS.items():
        build_tiny_model(store, repo_id, **options)
    # An adapter whose adapter_config.json is missing.
    scratch = tmp_path_factory.mktemp("adapter-without-config")
    write_tiny_model(scratch, adapter_of="good/tiny")
    (scratch / "adapter_config.json").unlink()
    store.add_snapshot("bad/adapter-no-config", scratch)
    for repo_id, (options, edit) in VARIANTS.items():
        folder = tmp_path_factory.mktemp(repo_id.replace("/", "-"))
        write_tiny_model(folder, **options)
        edit(folder)
        store.add_snapshot(repo_id, folder)
    # Links: outside the store, into another repository of the store, and the Hub cache's own blobs/.
    outside = tmp_path_factory.mktemp("outside-the-store")
    for repo_id, name in LINKED.items():
        build_tiny_model(store, repo_id)
        _link_outside(store, repo_id, name, outside / repo_id.replace("/", "-"))
    build_tiny_model(store, "bad/link-other-repo", seed=3)
    (_snapshot(store, "bad/link-other-repo") / "config.json").unlink()
    (_snapshot(store, "bad/link-other-repo") / "config.json").symlink_to(
        _snapshot(store, "good/tiny") / "config.json"
    )
    build_tiny_model(store, "good/hub-cache-links", seed=5)
    _as_hub_cache(store, "good/hub-cache-links")
    return store


#: Repositories whose one file is a link to a copy outside the store.
LINKED = {
    "bad/link-tokenizer": "tokenizer.json",
    "bad/link-tokenizer-config": "tokenizer_config.json",
    "bad/link-card": "README.md",
    "bad/link-weights": "model.safetensors",
    "bad/link-generation-config": "generation_config.json",
}


@pytest.fixture
def app(database_url: str, model_store: LocalModelStore, clock) -> Iterator[App]:
    application = App.open(Settings(database_url=database_url, model_store=model_store.root))
    application.clock = clock
    yield application
    application.close()


def submit(app: App, model: str, **fields) -> object:
    fields.setdefault("model_type", ModelType.FINE_TUNED)
    return app.submissions.submit(Submission(model=model, sender=fields.pop("sender", "alice"), **fields))


def rejected(app: App, model: str, **fields) -> SubmissionRejected:
    with pytest.raises(SubmissionRejected) as caught:
        submit(app, model, **fields)
    assert_no_server_path(app, caught.value.message)
    return caught.value


def assert_no_server_path(app: App, message: str) -> None:
    """No folder of the server in a message to a submitter: not the store, not a temporary folder."""
    assert str(app.settings.model_store) not in message, message
    assert "leaderboard-validation-" not in message and "/tmp/" not in message, message


def assert_rule(error: SubmissionRejected, rule: str, *phrases: str) -> None:
    assert error.rule == rule, error.message
    assert f"rejected by rule '{rule}'" in error.message
    assert "Fix: " in error.message
    for phrase in phrases:
        assert phrase in error.message


def stored_parameters(store: LocalModelStore, repo_id: str, packed_bits: int | None = None) -> int:
    """The parameters a repo's root safetensors files hold, as safetensors itself reads them (the code under
    test is not asked): the product of each tensor's shape, summed; with ``packed_bits``, GPTQ's packed
    int32 tensors count 32 // bits each."""
    total = 0
    for path in sorted(_snapshot(store, repo_id).glob("*.safetensors")):
        with safe_open(path, framework="numpy") as weights:
            for name in weights.keys():  # noqa: SIM118 (safe_open is not a dict)
                tensor = weights.get_slice(name)
                count = math.prod(tensor.get_shape())
                if packed_bits and tensor.get_dtype() == "I32":
                    count *= 32 // packed_bits
                total += count
    return total


def test_a_good_model_is_accepted_with_its_revision_frozen_to_the_commit(app, model_store):
    request = submit(app, "good/tiny", revision="main", model_type=ModelType.CHAT)
    sha = model_store.resolve("good/tiny", "main").sha
    assert request.sha == sha and request.revision == "main"
    assert request.status is Status.PENDING and request.votes == 1
    assert request.use_chat_template is True  # on by default for chat models
    assert request.architectures == ("LlamaForCausalLM",)
    assert request.license == "apache-2.0"
    assert request.params_b == pytest.approx(stored_parameters(model_store, "good/tiny") / 1e9)
    # The same commit, given by its sha, is a duplicate; the rule names the existing request.
    error = rejected(app, "good/tiny", revision=sha, model_type=ModelType.CHAT)
    assert_rule(error, "duplicate", f"already submitted as request {request.id} (PENDING)")


@pytest.mark.parametrize(
    "model", ["no-namespace", "org/bad name", "org/a--b", "-org/name", "org/name/extra", ""]
)
def test_repo_id_syntax(app, model):
    assert_rule(rejected(app, model), "repo-id", "is not a Hub repository id", "ORG/NAME")


def test_model_type_must_be_chosen(app):
    assert_rule(rejected(app, "good/tiny", model_type=None), "model-type", "--model-type")


def test_model_must_exist(app):
    assert_rule(rejected(app, "nobody/nothing"), "model-exists", "nobody/nothing")


def test_revision_must_exist(app):
    assert_rule(
        rejected(app, "good/tiny", revision="no-such-branch"), "revision", "no-such-branch", "--revision"
    )


def test_safetensors_weights_are_required(app):
    assert_rule(
        rejected(app, "bad/no-safetensors"), "safetensors", "no safetensors weights", "safe_serialization"
    )


def test_size_limit_depends_on_precision(app):
    error = rejected(app, "bad/too-big", precision=Precision.BFLOAT16)
    assert_rule(error, "size-limit", "101.0B parameters", "100B limit for bfloat16")
    # 8bit allows 140B x 2: the same repository passes.
    request = submit(app, "bad/too-big", precision=Precision.INT8)
    assert request.params_b == pytest.approx(101.0)


def test_gptq_parameters_are_unpacked_by_bits(app, model_store):
    request = submit(app, "good/gptq-4bit", precision=Precision.GPTQ)
    dense = stored_parameters(model_store, "good/tiny")
    # Packed int32 weights count 8 parameters each; scales and zeros add a little on top.
    assert request.params_b * 1e9 == stored_parameters(model_store, "good/gptq-4bit", packed_bits=4)
    assert dense <= request.params_b * 1e9 < dense * 1.1


def test_gptq_precision_needs_a_gptq_repository(app):
    assert_rule(rejected(app, "good/tiny", precision=Precision.GPTQ), "precision", "quantization_config")


def test_models_needing_remote_code_are_refused(app):
    assert_rule(rejected(app, "bad/remote-code"), "remote-code", "never runs code from model repositories")


def test_config_must_load(app):
    assert_rule(rejected(app, "bad/broken-config"), "config", "config.json", "not valid JSON")


def test_tokenizer_must_load(app):
    assert_rule(
        rejected(app, "bad/broken-tokenizer"),
        "tokenizer",
        "tokenizer of bad/broken-tokenizer at",
        "does not load",
    )


def test_license_is_required(app):
    assert_rule(rejected(app, "bad/no-license"), "license", "declares no license", "license: <id>")


@pytest.mark.parametrize(
    "model, phrase",
    [
        ("bad/short-card", "a model card of 34 characters; at least 200 are required"),
        ("bad/no-card", "no model card (README.md); one of at least 200"),
    ],
)
def test_model_card_must_be_long_enough(app, model, phrase):
    assert_rule(rejected(app, model), "model-card", phrase)


def test_chat_template_is_required_when_asked_for(app):
    error = rejected(app, "good/tiny-no-template", use_chat_template=True)
    assert_rule(error, "chat-template", "--no-chat-template")
    assert_rule(rejected(app, "good/tiny-no-template", model_type=ModelType.CHAT), "chat-template")
    request = submit(app, "good/tiny-no-template", model_type=ModelType.CHAT, use_chat_template=False)
    assert request.use_chat_template is False


def test_adapter_needs_a_base_model_and_counts_it_once(app, model_store):
    error = rejected(app, "good/adapter", weight_type=WeightType.ADAPTER)
    assert_rule(error, "base-model", "--base-model")
    request = submit(app, "good/adapter", weight_type=WeightType.ADAPTER, base_model="good/tiny")
    adapter = stored_parameters(model_store, "good/adapter")
    base = stored_parameters(model_store, "good/tiny")
    assert 0 < adapter < base
    assert request.params_b == pytest.approx((adapter + base) / 1e9)  # not base counted twice


def test_adapter_without_adapter_config_is_refused(app):
    error = rejected(app, "bad/adapter-no-config", weight_type=WeightType.ADAPTER, base_model="good/tiny")
    assert_rule(error, "adapter", "adapter_config.json")


def test_delta_weights_are_counted_once_and_the_base_is_checked(app, model_store):
    request = submit(app, "good/delta", weight_type=WeightType.DELTA, base_model="good/tiny")
    assert request.params_b == pytest.approx(stored_parameters(model_store, "good/delta") / 1e9)
    other = {"weight_type": WeightType.DELTA, "precision": Precision.FLOAT16}
    assert_rule(rejected(app, "good/delta", base_model="bad/remote-code", **other), "remote-code")
    error = rejected(app, "good/delta", base_model="nobody/base", **other)
    assert_rule(error, "model-exists", "base model nobody/base")


def test_blocklist_covers_the_model_its_namespace_and_its_base(app):
    app.admin.block("good/tiny", "admin", "benchmark contamination")
    assert_rule(rejected(app, "good/tiny"), "blocklist", "good/tiny is blocked", "benchmark contamination")
    app.admin.unblock("good/tiny")
    app.admin.block("evil/*", "admin", "abuse")
    error = rejected(app, "good/adapter", weight_type=WeightType.ADAPTER, base_model="evil/base")
    assert_rule(error, "blocklist", "evil/base is blocked (evil/*: abuse)")
    # A base model declared only in the model card is caught too.
    assert_rule(rejected(app, "declares-blocked/base"), "blocklist", "declares base_model evil/base")
    submit(app, "good/tiny")


def test_rate_limit_per_namespace_with_official_providers_exempt(app, clock):
    for i in range(5):
        app.requests.create(new_request(model=f"good/other-{i}"), clock(), None)
        clock.advance(60)
    error = rejected(app, "good/tiny")
    assert_rule(
        error,
        "rate-limit",
        "namespace 'good' already has 5 submissions in the last 7 days (limit 5)",
        "wait until 2026-01-08 12:00:00 UTC",  # the first of the five, plus the window
    )
    clock.advance(timedelta(days=7).total_seconds() - 5 * 60 + 30)  # the oldest one leaves the window
    request = submit(app, "good/tiny")
    assert request.status is Status.PENDING
    assert_rule(rejected(app, "good/tiny-no-template"), "rate-limit")
    app.admin.add_official_provider("good", "admin")
    assert submit(app, "good/tiny-no-template").status is Status.PENDING


def test_rejected_submissions_store_nothing(app):
    rejected(app, "bad/no-license")
    assert app.requests.all() == []
    assert app.vote_repository.all_votes() == []


def test_model_store_folder_layout_is_the_hub_cache(model_store):
    folder: Path = model_store.root / "models--good--tiny"
    sha = (folder / "refs" / "main").read_text().strip()
    assert (folder / "snapshots" / sha / "config.json").is_file()
    assert shutil.which("true")  # sanity: the store holds plain files, readable by transformers offline


@pytest.mark.parametrize(
    ("model", "fields", "rule", "phrase"),
    [
        ("bad/architectures-junk", {}, "config", "architectures [1, {}, None] is not a list of model class"),
        ("bad/architectures-string", {}, "config", "architectures 'LlamaForCausalLM' is not a list"),
        ("bad/deep-config", {}, "config", "config.json of bad/deep-config at"),
        ("bad/huge-shape", {}, "safetensors", "model-2.safetensors of bad/huge-shape at"),
        ("bad/unknown-dtype", {}, "safetensors", "dtype 'Q9', which safetensors does not define"),
        ("bad/gptq-bits-list", {"precision": Precision.GPTQ}, "config", "quantization_config.bits [4]"),
        (
            "bad/gptq-bits-dict",
            {"precision": Precision.GPTQ},
            "config",
            "quantization_config.bits {'bits': 4}",
        ),
        ("bad/card-base-number", {}, "model-card", "base_model 42 in the metadata"),
        ("bad/card-base-true", {}, "model-card", "base_model True in the metadata"),
        ("good/tiny", {"revision": "b" * 10_000}, "revision", "is not a branch, tag or commit name"),
        ("good/tiny", {"revision": "main\x00"}, "revision", "is not a branch, tag or commit name"),
    ],
)
def test_every_field_read_from_a_repository_is_checked_against_its_type(app, model, fields, rule, phrase):
    """Each of these was a traceback (RecursionError, OverflowError, TypeError, OSError) or, for the
    architectures, an accepted request that broke the queue's export for everyone."""
    error = rejected(app, model, **fields)
    assert_rule(error, rule, phrase)
    assert len(error.message) < 1000  # nothing from the repository is echoed whole
    assert app.requests.all() == []


@pytest.mark.parametrize(
    ("model", "phrase"),
    [
        ("bad/big-config", "config.json in bad/big-config at"),
        ("bad/big-tokenizer", "tokenizer.json in bad/big-tokenizer at"),
        ("bad/big-card", "README.md in bad/big-card at"),
    ],
)
def test_files_over_their_size_limit_are_refused(app, model, phrase):
    assert_rule(rejected(app, model), "repo-files", phrase, "bytes, above the", "within its size limit")


@pytest.mark.parametrize("model", [*LINKED, "bad/link-other-repo"])
def test_links_leaving_the_repository_are_refused_with_a_rule(app, model):
    """Before: a tokenizer linked outside was read and accepted; other links were a 503 'source unavailable'."""
    error = rejected(app, model)
    assert_rule(error, "repo-files", f"in the model {model}", "link that leaves the repository")


def test_links_into_the_repositorys_own_blobs_are_the_hub_cache_layout(app, model_store):
    request = submit(app, "good/hub-cache-links")
    assert request.params_b == pytest.approx(stored_parameters(model_store, "good/hub-cache-links") / 1e9)


def test_a_rejected_bad_config_leaves_the_queue_export_and_publish_working(app, tmp_path, clock):
    """Before: bad/architectures-junk was accepted with architectures (1, {}, None), and `requests export`
    failed for everyone afterwards (TypeError: sequence item 0: expected str instance, int found)."""
    rejected(app, "bad/architectures-junk")
    rejected(app, "bad/architectures-string")
    good = submit(app, "good/tiny")
    assert [r.id for r in app.queue.page()] == [good.id]
    assert app.requests_export.export(tmp_path / "export") == (1, 1)
    assert app.publish_results().published == 0


@pytest.mark.slow
def test_the_first_submissions_to_a_fresh_process_do_not_race_on_importing_transformers(
    model_store, database_url, tmp_path
):
    """Before: 17 of 20 concurrent submissions to a fresh server were refused with "module 'transformers'
    has no attribute 'AutoConfig'", blamed on their config. A subprocess is a fresh import state."""
    models = [f"race-{i}/tiny" for i in range(CONCURRENT)]  # one namespace each: no rate limit
    for index, model in enumerate(models):
        build_tiny_model(model_store, model, seed=100 + index)
    env = clean_env(LEADERBOARD_DATABASE_URL=database_url, LEADERBOARD_MODEL_STORE=str(model_store.root))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.concurrent_submissions", *models],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout)
    assert outcomes == {model: "accepted" for model in models}


CONCURRENT = 20
ROOT = Path(__file__).parents[2]
