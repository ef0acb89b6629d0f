"""Every check a submission passes before it is queued, in the reference's order.

Each rejection is a SubmissionRejected naming its rule and the fix. Repositories are untrusted input:
nothing here executes or unpickles a repository file; parameters are counted from safetensors headers, and
config and tokenizer are loaded with trust_remote_code=False from a folder holding only those files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backend.domain import REPO_ID_RE, ModelType, Precision, Submission, WeightType, namespace_of
from backend.errors import (
    AlreadySubmitted,
    ModelAccessDenied,
    ModelNotFound,
    ModelSourceError,
    RevisionNotFound,
    SubmissionRejected,
)
from backend.hub.interface import ModelRevision, ModelSource
from backend.hub.model_files import has_chat_template, license_of, parameter_count, split_model_card
from backend.settings import Settings
from backend.storage.moderation import ModerationRepository
from backend.storage.requests import NewRequest, RateLimit, RequestRepository

log = logging.getLogger(__name__)

#: Files transformers needs to load a config and a tokenizer; never code, never weights.
CONFIG_AND_TOKENIZER_FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.model",
    "chat_template.jinja",
    "chat_template.json",
]
#: GPTQ size multiplier by bits, as the reference used it.
GPTQ_FACTORS = {2: 8, 3: 6, 4: 4, 8: 2}
QUANTIZED_FACTORS = {Precision.INT8: 2, Precision.INT4: 4}
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class ValidationContext:
    """What the checks read besides the submission: settings, admin lists and the queue."""

    settings: Settings
    source: ModelSource
    moderation: ModerationRepository
    requests: RequestRepository
    clock: Callable[[], datetime]

    def rate_limit(self, model: str) -> RateLimit | None:
        """The limit that applies to a model's namespace, or None for an official provider."""
        namespace = namespace_of(model)
        if self.moderation.official_providers.find([namespace]) is not None:
            return None
        window = self.settings.rate_limit_days
        return RateLimit(self.settings.rate_limit_count, self.clock() - timedelta(days=window), window)


def validate(sub: Submission, ctx: ValidationContext) -> NewRequest:
    """Run every check; return what to store, or raise SubmissionRejected for the first that fails."""
    _check_repo_id(sub.model, "repo-id", "the model")
    if sub.base_model is not None:
        _check_repo_id(sub.base_model, "repo-id", "the base model")
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
        entry = ctx.moderation.blocked_entry(candidate)
        if entry is not None:
            raise SubmissionRejected(
                "blocklist",
                f"{candidate} is blocked ({entry.key}: {entry.reason or 'no reason given'})",
                "submit another model; if you believe the block is wrong, contact the leaderboard admins",
            )

    model = _resolve(ctx.source, sub.model, sub.revision, "model")
    existing = ctx.requests.find_active(sub.model, model.sha, sub.precision)
    if existing is not None:
        raise AlreadySubmitted(sub.model, model.sha, sub.precision.value, existing.id, existing.status.value)

    base = (
        _resolve(ctx.source, sub.base_model, "main", "base model") if needs_base and sub.base_model else None
    )
    # Parameters of what will be evaluated, from safetensors headers only.
    config_repo = base if needs_base and base is not None else model
    config = _read_json(ctx.source, config_repo, "config.json") or {}
    own_params = _count_params(ctx.source, model, sub, config)
    if sub.weight_type is WeightType.ADAPTER and base is not None:
        base_params = _count_params(ctx.source, base, Submission(base.repo_id, sub.sender), config)
        params = own_params + base_params  # the adapter's own tensors plus the base, counted once
    else:
        params = own_params  # Delta weights are full size: counting the base too would double it
    _check_size(params, sub.precision, config, ctx.settings)

    loaded_config = _load_config_and_tokenizer(ctx.source, config_repo)
    if sub.weight_type is WeightType.ADAPTER and "adapter_config.json" not in model.files:
        raise SubmissionRejected(
            "adapter",
            f"no adapter_config.json in {sub.model} at {model.sha}",
            "upload the adapter with PEFT's save_pretrained/push_to_hub, which writes adapter_config.json",
        )

    card_text = ctx.source.read_text(model.repo_id, model.sha, "README.md")
    if card_text is None:
        raise SubmissionRejected(
            "model-card",
            f"{sub.model} has no model card (README.md); one of at least {ctx.settings.min_card_chars} "
            "characters is required",
            "add a README.md describing the model (training, data, intended use and limits) with YAML "
            "metadata that declares its license",
        )
    metadata, body = split_model_card(card_text)
    _check_declared_bases(metadata, ctx, sub.model)
    licence = license_of(metadata)
    if licence is None:
        raise SubmissionRejected(
            "license",
            f"the model card of {sub.model} declares no license",
            "add `license: <id>` (or `license: other` with `license_name` and `license_link`) to the YAML "
            "metadata at the top of README.md",
        )
    if len(body) < ctx.settings.min_card_chars:
        raise SubmissionRejected(
            "model-card",
            f"{sub.model} has a model card of {len(body)} characters; at least {ctx.settings.min_card_chars} "
            "are required",
            "describe the model in README.md: how it was trained, on what data, its intended use and limits",
        )

    use_chat_template = sub.use_chat_template
    if use_chat_template is None:
        use_chat_template = sub.model_type is ModelType.CHAT
    if use_chat_template:
        template_repo = model if _has_tokenizer(model) else config_repo
        tokenizer_config = ctx.source.read_text(
            template_repo.repo_id, template_repo.sha, "tokenizer_config.json"
        )
        if not has_chat_template(tokenizer_config, template_repo.files):
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
        architectures=tuple(loaded_config.get("architectures") or ()),
        license=licence,
        sender=sub.sender,
    )


def _check_repo_id(value: str, rule: str, what: str) -> None:
    if not REPO_ID_RE.match(value):
        raise SubmissionRejected(
            rule,
            f"{what} id '{value}' is not a Hub repository id",
            "give it as ORG/NAME (letters, digits, '-', '_' and '.'; no '--' or '..'), as in the model's Hub URL",
        )


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
            f"the {what} {repo_id} has no revision '{revision}' ({exc.message})",
            "pass --revision with an existing branch, tag or full commit sha",
        ) from exc
    except ModelAccessDenied as exc:
        raise SubmissionRejected(
            "model-access",
            f"the {what} {repo_id} is gated or private",
            "make the repository public and ungated: the leaderboard evaluates public models only",
        ) from exc
    if resolved.gated or resolved.private:
        raise SubmissionRejected(
            "model-access",
            f"the {what} {repo_id} is {'gated' if resolved.gated else 'private'}",
            "make the repository public and ungated: the leaderboard evaluates public models only",
        )
    return resolved


def _read_json(source: ModelSource, repo: ModelRevision, filename: str) -> dict[str, Any] | None:
    text = source.read_text(repo.repo_id, repo.sha, filename)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubmissionRejected(
            "config",
            f"{filename} of {repo.repo_id} at {repo.sha} is not valid JSON ({exc.msg}, line {exc.lineno})",
            f"fix {filename} so that it parses as JSON",
        ) from exc
    if not isinstance(value, dict):
        raise SubmissionRejected(
            "config", f"{filename} of {repo.repo_id} is not a JSON object", f"fix {filename}"
        )
    return value


def _check_declared_bases(metadata: dict[str, Any], ctx: ValidationContext, model: str) -> None:
    """The card's `base_model` metadata names what the model was built from: blocked bases stay blocked."""
    declared = metadata.get("base_model") or []
    for base in [declared] if isinstance(declared, str) else declared:
        entry = ctx.moderation.blocked_entry(str(base)) if isinstance(base, str) else None
        if entry is not None:
            raise SubmissionRejected(
                "blocklist",
                f"{model}'s model card declares base_model {base}, which is blocked ({entry.reason or 'no reason'})",
                "submit a model built on another base; if the block is wrong, contact the leaderboard admins",
            )


def _count_params(source: ModelSource, repo: ModelRevision, sub: Submission, config: dict[str, Any]) -> int:
    if sub.weight_type is WeightType.ADAPTER:
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
    try:
        headers = source.safetensors_headers(repo.repo_id, repo.sha)
    except ModelSourceError as exc:
        raise SubmissionRejected(
            "safetensors",
            f"the safetensors files of {repo.repo_id} at {repo.sha} cannot be read ({exc.message})",
            "re-upload the weights with save_pretrained(..., safe_serialization=True)",
        ) from exc
    if sub.weight_type is WeightType.ADAPTER:
        headers = {name: h for name, h in headers.items() if name.endswith(ADAPTER_WEIGHTS)}
    bits = _gptq_bits(config, repo) if sub.precision is Precision.GPTQ else None
    return parameter_count(headers, gptq_bits=bits)


def _gptq_bits(config: dict[str, Any], repo: ModelRevision) -> int:
    quantization = config.get("quantization_config") or {}
    if not isinstance(quantization, dict) or str(quantization.get("quant_method", "")).lower() != "gptq":
        raise SubmissionRejected(
            "precision",
            f"GPTQ precision was chosen, but {repo.repo_id}'s config.json has no GPTQ quantization_config",
            "submit the GPTQ-quantized repository, or choose float16/bfloat16/8bit/4bit for full weights",
        )
    bits = quantization.get("bits", 4)
    if bits not in GPTQ_FACTORS:
        raise SubmissionRejected(
            "precision",
            f"GPTQ with {bits} bits is not supported",
            f"use GPTQ weights with one of {sorted(GPTQ_FACTORS)} bits",
        )
    return int(bits)


def _check_size(params: int, precision: Precision, config: dict[str, Any], settings: Settings) -> None:
    if precision in (Precision.FLOAT16, Precision.BFLOAT16):
        limit_b = settings.max_params_b
    elif precision is Precision.GPTQ:
        bits = (config.get("quantization_config") or {}).get("bits", 4)
        limit_b = settings.max_params_b_quantized * GPTQ_FACTORS.get(bits, 1)
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


def _load_config_and_tokenizer(source: ModelSource, repo: ModelRevision) -> dict[str, Any]:
    """Load config and tokenizer the way the harness will, with trust_remote_code=False."""
    raw = _read_json(source, repo, "config.json")
    if raw is None:
        raise SubmissionRejected(
            "config",
            f"no config.json in {repo.repo_id} at {repo.sha}",
            "push the config.json that save_pretrained writes",
        )
    folder = source.fetch(repo.repo_id, repo.sha, CONFIG_AND_TOKENIZER_FILES)
    # Only configs and tokenizers are loaded here: transformers' advice that torch is missing is noise.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    needs_code = "auto_map" in raw
    try:
        transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:  # transformers raises ValueError, KeyError, OSError... for bad configs
        if needs_code or "trust_remote_code" in str(exc):
            raise SubmissionRejected(
                "remote-code",
                f"{repo.repo_id} needs custom code to load (model_type '{raw.get('model_type')}' with auto_map), "
                "and the leaderboard never runs code from model repositories",
                "make the model loadable by a transformers release without trust_remote_code (an architecture "
                "transformers ships), then submit again",
            ) from exc
        raise SubmissionRejected(
            "config",
            f"the config of {repo.repo_id} does not load with transformers {transformers.__version__}: "
            f"{_first_line(exc)}",
            "make sure AutoConfig.from_pretrained(repo) works with trust_remote_code=False",
        ) from exc
    try:
        transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:
        raise SubmissionRejected(
            "tokenizer",
            f"the tokenizer of {repo.repo_id} does not load with transformers {transformers.__version__}: "
            f"{_first_line(exc)}",
            "push the tokenizer files (tokenizer.json, tokenizer_config.json) and make sure "
            "AutoTokenizer.from_pretrained(repo) works with trust_remote_code=False",
        ) from exc
    return raw


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
