"""Every check a submission passes before it is queued, in the reference's order.

Each rejection is a SubmissionRejected naming its rule and the fix. Repositories are untrusted input:
nothing here executes or unpickles a repository file. Every file read has a size limit and is parsed once
into a typed record (backend/hub/repo_records.py); parameters are counted from safetensors headers; config
and tokenizer are loaded with trust_remote_code=False from a temporary folder holding copies of only the
files transformers needs. Messages name repositories and revisions, never a folder of the server.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

from backend.domain import (
    REPO_ID_RULE,
    REVISION_RULE,
    ModelType,
    Precision,
    Submission,
    WeightType,
    is_repo_id,
    is_revision,
    namespace_of,
    preview,
)
from backend.errors import (
    AlreadySubmitted,
    ModelAccessDenied,
    ModelNotFound,
    RepoFileInvalid,
    RepoFileRefused,
    RevisionNotFound,
    SubmissionRejected,
)
from backend.hub.interface import ModelRevision, ModelSource, read_text
from backend.hub.model_files import has_template_file, parameter_count
from backend.hub.repo_records import (
    MAX_CARD_BYTES,
    MAX_CONFIG_BYTES,
    ModelCard,
    ModelConfig,
    TokenizerConfig,
    loadable_limit,
)
from backend.services.redact import strip_server_paths
from backend.settings import Settings
from backend.storage.moderation import ModerationRepository
from backend.storage.requests import NewRequest, RateLimit, RequestRepository

log = logging.getLogger(__name__)

#: GPTQ size multiplier by bits, as the reference used it.
GPTQ_FACTORS = {2: 8, 3: 6, 4: 4, 8: 2}
QUANTIZED_FACTORS = {Precision.INT8: 2, Precision.INT4: 4}
ADAPTER_WEIGHTS = "adapter_model.safetensors"
REPO_FILES_FIX = (
    "make every file validation reads (configs, tokenizer files, the model card, safetensors weights) a "
    "regular file of the repository within its size limit, with no link leaving the repository"
)

#: transformers imports its config, tokenizer and model modules lazily on first use, and a first use racing
#: another one sees a half-imported module ("no attribute 'AutoConfig'"). Import and loading hold this lock.
_TRANSFORMERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ValidationContext:
    """What the checks read besides the submission: settings, admin lists and the queue."""

    settings: Settings
    source: ModelSource
    moderation: ModerationRepository
    requests: RequestRepository
    clock: Callable[[], datetime]
    rate_limits: bool = True  # off for imported requests: they were submitted in the past

    def rate_limit(self, model: str) -> RateLimit | None:
        """The limit that applies to a model's namespace, or None for an official provider (or when
        limits are off)."""
        if not self.rate_limits:
            return None
        namespace = namespace_of(model)
        if self.moderation.official_providers.find([namespace]) is not None:
            return None
        window = self.settings.rate_limit_days
        return RateLimit(self.settings.rate_limit_count, self.clock() - timedelta(days=window), window)


def validate(sub: Submission, ctx: ValidationContext) -> NewRequest:
    """Run every check; return what to store, or raise SubmissionRejected for the first that fails."""
    _check_repo_id(sub.model, "the model")
    if sub.base_model is not None:
        _check_repo_id(sub.base_model, "the base model")
    if not is_revision(sub.revision):
        raise SubmissionRejected(
            "revision",
            f"the revision {preview(sub.revision)} is not a branch, tag or commit name",
            f"pass --revision with {REVISION_RULE}",
        )
    if sub.model_type is None:
        raise SubmissionRejected(
            "model-type",
            "no model type was chosen",
            "pass --model-type with one of: " + ", ".join(m.value for m in ModelType),
        )
    needs_base = sub.weight_type in (WeightType.DELTA, WeightType.ADAPTER)
    if needs_base and sub.base_model is None:
        raise SubmissionRejected(
            "base-model",
            f"{sub.weight_type} weights are applied to a base model, and none was given",
            "pass --base-model ORG/NAME with the model the weights were trained from",
        )

    limit = ctx.rate_limit(sub.model)
    if limit is not None:  # an early answer; the insert checks again under a lock
        ctx.requests.check_rate_limit(namespace_of(sub.model), limit)

    for candidate in filter(None, (sub.model, sub.base_model)):
        _check_not_blocked(candidate, ctx, f"{candidate} is blocked")

    model = _resolve(ctx.source, sub.model, sub.revision, "model")
    existing = ctx.requests.find_active(sub.model, model.sha, sub.precision)
    if existing is not None:
        raise AlreadySubmitted(sub.model, model.sha, sub.precision.value, existing.id, existing.status.value)

    base = (
        _resolve(ctx.source, sub.base_model, "main", "base model") if needs_base and sub.base_model else None
    )
    # Parameters of what will be evaluated, from safetensors headers only.
    config_repo = base if needs_base and base is not None else model
    config = _read_config(ctx.source, config_repo)
    _require_weights(model, sub.weight_type)
    gptq_bits = _gptq_bits(config, config_repo) if sub.precision is Precision.GPTQ else None
    own_params = _count_params(ctx.source, model, sub.weight_type, gptq_bits)
    if sub.weight_type is WeightType.ADAPTER and base is not None:
        _require_weights(base, WeightType.ORIGINAL)
        base_params = _count_params(ctx.source, base, WeightType.ORIGINAL, gptq_bits)
        params = own_params + base_params  # the adapter's own tensors plus the base, counted once
    else:
        params = own_params  # Delta weights are full size: counting the base too would double it
    _check_size(params, sub.precision, gptq_bits, ctx.settings)

    if config is None:
        raise SubmissionRejected(
            "config",
            f"no config.json in {config_repo.repo_id} at {config_repo.sha}",
            "push the config.json that save_pretrained writes",
        )
    _load_config_and_tokenizer(ctx.source, config_repo, config)
    if sub.weight_type is WeightType.ADAPTER and "adapter_config.json" not in model.files:
        raise SubmissionRejected(
            "adapter",
            f"no adapter_config.json in {sub.model} at {model.sha}",
            "upload the adapter with PEFT's save_pretrained/push_to_hub, which writes adapter_config.json",
        )

    card = _read_card(ctx.source, model)
    if card is None:
        raise SubmissionRejected(
            "model-card",
            f"{sub.model} has no model card (README.md); one of at least {ctx.settings.min_card_chars} "
            "characters is required",
            "add a README.md describing the model (training, data, intended use and limits) with YAML "
            "metadata that declares its license",
        )
    for declared in card.base_models:  # what the model was built from: blocked bases stay blocked
        _check_not_blocked(
            declared, ctx, f"{sub.model}'s model card declares base_model {declared}, which is blocked"
        )
    if card.license is None:
        raise SubmissionRejected(
            "license",
            f"the model card of {sub.model} declares no license",
            "add `license: <id>` (or `license: other` with `license_name` and `license_link`) to the YAML "
            "metadata at the top of README.md",
        )
    if len(card.body) < ctx.settings.min_card_chars:
        raise SubmissionRejected(
            "model-card",
            f"{sub.model} has a model card of {len(card.body)} characters; at least {ctx.settings.min_card_chars} "
            "are required",
            "describe the model in README.md: how it was trained, on what data, its intended use and limits",
        )

    use_chat_template = sub.use_chat_template
    if use_chat_template is None:
        use_chat_template = sub.model_type is ModelType.CHAT
    if use_chat_template:
        template_repo = model if _has_tokenizer(model) else config_repo
        if not _has_chat_template(ctx.source, template_repo):
            raise SubmissionRejected(
                "chat-template",
                f"evaluation with a chat template was asked for, but {template_repo.repo_id} has none",
                "add a `chat_template` to tokenizer_config.json (or a chat_template.jinja file), or submit "
                "with --no-chat-template",
            )

    return NewRequest(
        model=sub.model,
        revision=sub.revision,
        sha=model.sha,
        precision=sub.precision,
        weight_type=sub.weight_type,
        model_type=sub.model_type,
        base_model=sub.base_model,
        use_chat_template=use_chat_template,
        params_b=params / 1e9,
        architectures=config.architectures,
        license=card.license,
        sender=sub.sender,
    )


def _check_repo_id(value: str, what: str) -> None:
    if not is_repo_id(value):
        raise SubmissionRejected(
            "repo-id", f"{what} id {preview(value)} is not a Hub repository id", f"give it as {REPO_ID_RULE}"
        )


def _check_not_blocked(candidate: str, ctx: ValidationContext, problem: str) -> None:
    entry = ctx.moderation.blocked_entry(candidate)
    if entry is not None:
        raise SubmissionRejected(
            "blocklist",
            f"{problem} ({entry.key}: {entry.reason or 'no reason given'})",
            "submit another model; if you believe the block is wrong, contact the leaderboard admins",
        )


def _rule_of(filename: str) -> str:
    """The rule under which a repository file's problems fall."""
    if filename.endswith(".safetensors"):
        return "safetensors"
    if filename == "README.md":
        return "model-card"
    if filename == "adapter_config.json":
        return "adapter"
    if filename in ("config.json", "generation_config.json"):
        return "config"
    return "tokenizer"


@contextmanager
def _file_rules(repo: ModelRevision) -> Iterator[None]:
    """Reading a repository's files: a refused or invalid file becomes the rule it breaks."""
    try:
        yield
    except RepoFileRefused as exc:
        raise SubmissionRejected(
            "repo-files",
            f"{exc.filename} in {repo.repo_id} at {repo.sha} is refused: {exc.problem}",
            REPO_FILES_FIX,
        ) from exc
    except RepoFileInvalid as exc:
        raise SubmissionRejected(
            _rule_of(exc.filename),
            f"{exc.filename} of {repo.repo_id} at {repo.sha} is not valid: {exc.problem}",
            exc.fix,
        ) from exc


def _resolve(source: ModelSource, repo_id: str, revision: str, what: str) -> ModelRevision:
    try:
        resolved = source.resolve(repo_id, revision)
    except ModelNotFound as exc:
        raise SubmissionRejected(
            "model-exists",
            f"the {what} {repo_id} was not found ({exc.message})",
            "check the id on the Hub; the repository must exist and be public",
        ) from exc
    except RevisionNotFound as exc:
        raise SubmissionRejected(
            "revision",
            f"the {what} {repo_id} has no revision {preview(revision)} ({exc.message})",
            "pass --revision with an existing branch, tag or full commit sha",
        ) from exc
    except ModelAccessDenied as exc:
        raise SubmissionRejected(
            "model-access",
            f"the {what} {repo_id} is gated or private",
            "make the repository public and ungated: the leaderboard evaluates public models only",
        ) from exc
    except RepoFileRefused as exc:
        raise SubmissionRejected(
            "repo-files",
            f"{exc.filename} in the {what} {repo_id} at {preview(revision)} is refused: {exc.problem}",
            REPO_FILES_FIX,
        ) from exc
    if resolved.gated or resolved.private:
        raise SubmissionRejected(
            "model-access",
            f"the {what} {repo_id} is {'gated' if resolved.gated else 'private'}",
            "make the repository public and ungated: the leaderboard evaluates public models only",
        )
    return resolved


def _read_config(source: ModelSource, repo: ModelRevision) -> ModelConfig | None:
    with _file_rules(repo):
        text = read_text(source, repo, "config.json", MAX_CONFIG_BYTES)
        return None if text is None else ModelConfig.parse(text)


def _read_card(source: ModelSource, repo: ModelRevision) -> ModelCard | None:
    with _file_rules(repo):
        text = read_text(source, repo, "README.md", MAX_CARD_BYTES)
        return None if text is None else ModelCard.parse(text)


def _has_chat_template(source: ModelSource, repo: ModelRevision) -> bool:
    if has_template_file(repo.files):
        return True
    with _file_rules(repo):
        text = read_text(source, repo, "tokenizer_config.json", MAX_CONFIG_BYTES)
        return text is not None and TokenizerConfig.parse(text).has_chat_template


def _require_weights(repo: ModelRevision, weight_type: WeightType) -> None:
    if weight_type is WeightType.ADAPTER:
        if ADAPTER_WEIGHTS not in repo.files:
            raise SubmissionRejected(
                "safetensors",
                f"no {ADAPTER_WEIGHTS} in {repo.repo_id} at {repo.sha}",
                "save the adapter with PEFT's save_pretrained(safe_serialization=True)",
            )
    elif not any(f.endswith(".safetensors") for f in repo.files):
        raise SubmissionRejected(
            "safetensors",
            f"no safetensors weights in {repo.repo_id} at {repo.sha}",
            "convert the weights: load the model and call save_pretrained(..., safe_serialization=True), "
            "then push the *.safetensors files",
        )


def _count_params(
    source: ModelSource, repo: ModelRevision, weight_type: WeightType, gptq_bits: int | None
) -> int:
    with _file_rules(repo):
        headers = source.safetensors_headers(repo.repo_id, repo.sha)
    if weight_type is WeightType.ADAPTER:
        headers = {name: h for name, h in headers.items() if name.endswith(ADAPTER_WEIGHTS)}
    return parameter_count(headers, gptq_bits=gptq_bits)


def _gptq_bits(config: ModelConfig | None, repo: ModelRevision) -> int:
    quantization = config.quantization if config is not None else None
    if quantization is None or quantization.method != "gptq":
        raise SubmissionRejected(
            "precision",
            f"GPTQ precision was chosen, but {repo.repo_id}'s config.json has no GPTQ quantization_config",
            "submit the GPTQ-quantized repository, or choose float16/bfloat16/8bit/4bit for full weights",
        )
    bits = 4 if quantization.bits is None else quantization.bits
    if bits not in GPTQ_FACTORS:
        raise SubmissionRejected(
            "precision",
            f"GPTQ with {bits} bits is not supported",
            f"use GPTQ weights with one of {sorted(GPTQ_FACTORS)} bits",
        )
    return bits


def _check_size(params: int, precision: Precision, gptq_bits: int | None, settings: Settings) -> None:
    if precision in (Precision.FLOAT16, Precision.BFLOAT16):
        limit_b = settings.max_params_b
    elif precision is Precision.GPTQ:
        limit_b = settings.max_params_b_quantized * GPTQ_FACTORS.get(gptq_bits or 4, 1)
    else:
        limit_b = settings.max_params_b_quantized * QUANTIZED_FACTORS[precision]
    if params / 1e9 > limit_b:
        raise SubmissionRejected(
            "size-limit",
            f"the model has {params / 1e9:.1f}B parameters, above the {limit_b:g}B limit for {precision}",
            "submit a smaller model, or a quantized precision (8bit, 4bit, GPTQ), whose limits are higher",
        )


def _has_tokenizer(repo: ModelRevision) -> bool:
    return any(f in repo.files for f in ("tokenizer.json", "tokenizer_config.json"))


def _transformers() -> ModuleType:
    """transformers, imported on first use (it takes seconds); callers hold _TRANSFORMERS_LOCK."""
    # Only configs and tokenizers are loaded here: transformers' advice that torch is missing is noise.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def _load_config_and_tokenizer(source: ModelSource, repo: ModelRevision, config: ModelConfig) -> None:
    """Load config and tokenizer the way the harness will, with trust_remote_code=False, from a temporary
    folder holding copies of the root files transformers may open (each checked and within its limit)."""
    with tempfile.TemporaryDirectory(prefix="leaderboard-validation-") as scratch:
        folder = Path(scratch)
        with _file_rules(repo):
            for name in repo.files:
                limit = loadable_limit(name)
                data = None if limit is None else source.read_bytes(repo.repo_id, repo.sha, name, limit)
                if data is not None:
                    (folder / name).write_bytes(data)
        with _TRANSFORMERS_LOCK:
            _load_with_transformers(_transformers(), folder, repo, config)


def _load_with_transformers(
    transformers: ModuleType, folder: Path, repo: ModelRevision, config: ModelConfig
) -> None:
    version = transformers.__version__
    try:
        transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:  # transformers raises ValueError, KeyError, OSError... for bad configs
        if config.needs_remote_code or "trust_remote_code" in str(exc):
            raise SubmissionRejected(
                "remote-code",
                f"{repo.repo_id} needs custom code to load (model_type {preview(config.model_type)} with "
                "auto_map), and the leaderboard never runs code from model repositories",
                "make the model loadable by a transformers release without trust_remote_code (an architecture "
                "transformers ships), then submit again",
            ) from exc
        raise SubmissionRejected(
            "config",
            f"the config of {repo.repo_id} at {repo.sha} does not load with transformers {version}: "
            f"{_first_line(exc, folder, repo)}",
            "make sure AutoConfig.from_pretrained(repo) works with trust_remote_code=False",
        ) from exc
    try:
        transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:
        raise SubmissionRejected(
            "tokenizer",
            f"the tokenizer of {repo.repo_id} at {repo.sha} does not load with transformers {version}: "
            f"{_first_line(exc, folder, repo)}",
            "push the tokenizer files (tokenizer.json, tokenizer_config.json) and make sure "
            "AutoTokenizer.from_pretrained(repo) works with trust_remote_code=False",
        ) from exc


def _first_line(exc: BaseException, folder: Path, repo: ModelRevision) -> str:
    """The first line of an error from transformers, with the folder it loaded from shown as the repo."""
    text = str(exc).strip() or type(exc).__name__
    for shown in {os.path.realpath(folder), str(folder)}:
        text = text.replace(shown, repo.repo_id)
    return strip_server_paths(text.splitlines()[0])[:300]
