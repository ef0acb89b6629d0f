"""Every submission rule, each broken by a real tiny model repository in the local model store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backend.app import App
from backend.domain import ModelType, Precision, Status, Submission, WeightType
from backend.errors import SubmissionRejected
from backend.hub.local_store import LocalModelStore
from backend.hub.model_files import parameter_count
from backend.modelbuilder import build_tiny_model, write_tiny_model
from backend.settings import Settings

from .conftest import new_request

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
    # A repo whose card declares a blocked base model but is otherwise a complete model.
    full = tmp_path_factory.mktemp("declares-blocked-base")
    write_tiny_model(full)
    readme = (full / "README.md").read_text()
    (full / "README.md").write_text(readme.replace("---\n", "---\nbase_model: evil/base\n", 1))
    store.add_snapshot("bad/declares-blocked-base", full)
    return store


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
    return caught.value


def assert_rule(error: SubmissionRejected, rule: str, *phrases: str) -> None:
    assert error.rule == rule, error.message
    assert f"rejected by rule '{rule}'" in error.message
    assert "Fix: " in error.message
    for phrase in phrases:
        assert phrase in error.message


def test_a_good_model_is_accepted_with_its_revision_frozen_to_the_commit(app, model_store):
    request = submit(app, "good/tiny", revision="main", model_type=ModelType.CHAT)
    sha = model_store.resolve("good/tiny", "main").sha
    assert request.sha == sha and request.revision == "main"
    assert request.status is Status.PENDING and request.votes == 1
    assert request.use_chat_template is True  # on by default for chat models
    assert request.architectures == ("LlamaForCausalLM",)
    assert request.license == "apache-2.0"
    headers = model_store.safetensors_headers("good/tiny", sha)
    assert request.params_b == pytest.approx(parameter_count(headers) / 1e9)
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
    sha = model_store.resolve("good/tiny", "main").sha
    dense = parameter_count(model_store.safetensors_headers("good/tiny", sha))
    # Packed int32 weights count 8 parameters each; scales and zeros add a little on top.
    assert dense <= request.params_b * 1e9 < dense * 1.1


def test_gptq_precision_needs_a_gptq_repository(app):
    assert_rule(rejected(app, "good/tiny", precision=Precision.GPTQ), "precision", "quantization_config")


def test_models_needing_remote_code_are_refused(app):
    assert_rule(rejected(app, "bad/remote-code"), "remote-code", "never runs code from model repositories")


def test_config_must_load(app):
    assert_rule(rejected(app, "bad/broken-config"), "config", "config.json", "not valid JSON")


def test_tokenizer_must_load(app):
    assert_rule(
        rejected(app, "bad/broken-tokenizer"), "tokenizer", "tokenizer of bad/broken-tokenizer does not load"
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
    adapter_sha = model_store.resolve("good/adapter", "main").sha
    base_sha = model_store.resolve("good/tiny", "main").sha
    adapter = parameter_count(model_store.safetensors_headers("good/adapter", adapter_sha))
    base = parameter_count(model_store.safetensors_headers("good/tiny", base_sha))
    assert 0 < adapter < base
    assert request.params_b == pytest.approx((adapter + base) / 1e9)  # not base counted twice


def test_adapter_without_adapter_config_is_refused(app):
    error = rejected(app, "bad/adapter-no-config", weight_type=WeightType.ADAPTER, base_model="good/tiny")
    assert_rule(error, "adapter", "adapter_config.json")


def test_delta_weights_are_counted_once_and_the_base_is_checked(app, model_store):
    request = submit(app, "good/delta", weight_type=WeightType.DELTA, base_model="good/tiny")
    sha = model_store.resolve("good/delta", "main").sha
    assert request.params_b == pytest.approx(
        parameter_count(model_store.safetensors_headers("good/delta", sha)) / 1e9
    )
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
    assert_rule(rejected(app, "bad/declares-blocked-base"), "blocklist", "declares base_model evil/base")
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
