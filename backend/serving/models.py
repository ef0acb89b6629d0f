"""Which models are served, and loading them from the local model store.

A model is named ``ORG/NAME`` (its main branch, or the revision the server was started with) or
``ORG/NAME@REVISION`` (a branch, tag or commit of a served repository). Each request resolves the revision
to a commit, so a moved branch serves its new commit. Models load on first use with transformers'
AutoModelForCausalLM and AutoTokenizer from the commit's folder: trust_remote_code=False always, safetensors
weights only, nothing downloaded. The last few loaded stay loaded (an LRU); each has a lock, because a model
and its tokenizer must not serve two requests at once.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.domain import is_repo_id, is_revision, preview
from backend.errors import (
    ChatRequestInvalid,
    ConfigurationError,
    ModelNotFound,
    ModelNotServable,
    NoChatTemplate,
)
from backend.hub.local_store import LocalModelStore
from backend.serving.tokens import TokenText

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A name clients use and the repository and revision it serves."""

    id: str
    repo_id: str
    revision: str


def parse_model_name(name: str) -> tuple[str, str | None]:
    """``ORG/NAME`` or ``ORG/NAME@REVISION`` -> (repo id, revision or None); ModelNotFound when neither."""
    repo_id, _, revision = name.partition("@")
    if not is_repo_id(repo_id) or (revision and not is_revision(revision)):
        raise ModelNotFound(f"the model {preview(name)} is not ORG/NAME or ORG/NAME@REVISION")
    return repo_id, revision or None


class Catalog:
    """The served models: those named (each checked to exist at its revision), or else every repository of
    the store with a main branch."""

    def __init__(self, store: LocalModelStore, names: Sequence[str] = ()) -> None:
        self.store = store
        self._named: dict[str, ServedModel] = {}
        for name in names:
            repo_id, revision = parse_model_name(name)
            store.resolve(repo_id, revision or "main")  # ModelNotFound, RevisionNotFound: fail at start
            self._named[repo_id] = ServedModel(name, repo_id, revision or "main")

    def served(self) -> list[ServedModel]:
        if self._named:
            return list(self._named.values())
        found = []
        for repo_id in self.store.repositories():
            if (self.store.repo_dir(repo_id) / "refs" / "main").is_file():
                found.append(ServedModel(repo_id, repo_id, "main"))
        return found

    def find(self, name: str) -> ServedModel:
        """The repository and revision a request's ``model`` names; ModelNotFound when it is not served."""
        repo_id, revision = parse_model_name(name)
        served = self._named.get(repo_id) if self._named else ServedModel(repo_id, repo_id, "main")
        if served is None or not self.store.repo_dir(repo_id).is_dir():
            raise ModelNotFound(f"the model {name!r} is not served here: GET /v1/models lists those that are")
        return ServedModel(name, repo_id, revision or served.revision)

    def created(self, model: ServedModel) -> int:
        """When the served revision last changed (the ref's time), for /v1/models' ``created``."""
        try:
            return int((self.store.repo_dir(model.repo_id) / "refs" / model.revision).stat().st_mtime)
        except (OSError, ValueError):
            return 0


@dataclass
class LoadedModel:
    """A model and its tokenizer in memory, with what generation needs to know of them."""

    repo_id: str
    sha: str
    model: Any
    tokenizer: Any
    device: str
    eos_ids: frozenset[int]
    context_length: int
    token_text: TokenText
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: What the model's forward calls its KV cache: ``cache`` in transformers 5.24+, ``past_key_values`` before.
    cache_keyword: str = "past_key_values"

    def step(self, inputs: Any, cache: Any) -> tuple[Any, Any]:
        """One forward pass over ``inputs`` (token ids, batch of one) after ``cache``: the last position's
        logits (float32) and the grown cache."""
        out = self.model(input_ids=inputs, use_cache=True, **{self.cache_keyword: cache})
        return out.logits[0, -1].float(), getattr(out, self.cache_keyword)

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The prompt's token ids (``chat_prompt_ids``). Callers hold the lock (a tokenizer must not be used
        by two threads at once)."""
        return chat_prompt_ids(self.tokenizer, messages, self.repo_id, self.sha)

    @classmethod
    def of(cls, repo_id: str, sha: str, model: Any, tokenizer: Any, device: str) -> LoadedModel:
        """A model and tokenizer in memory (loaded and placed on ``device``), with what generation reads
        of them."""
        return cls(
            repo_id=repo_id,
            sha=sha,
            model=model,
            tokenizer=tokenizer,
            device=device,
            eos_ids=_eos_ids(model, tokenizer),
            context_length=_context_length(model, tokenizer),
            token_text=TokenText(tokenizer),
            cache_keyword="cache"
            if "cache" in inspect.signature(model.forward).parameters
            else "past_key_values",
        )


def chat_prompt_ids(tokenizer: Any, messages: Sequence[dict[str, str]], repo_id: str, sha: str) -> list[int]:
    """The prompt's token ids: the messages through the tokenizer's chat template, with the assistant's turn
    opened (the text tokenized without adding special tokens: the template writes those)."""
    if not tokenizer.chat_template:
        raise NoChatTemplate(
            f"{repo_id} at {sha} has no chat template: serve a chat model, or add a "
            "chat_template to its tokenizer_config.json"
        )
    import jinja2

    try:
        text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    except jinja2.TemplateSyntaxError as exc:
        raise ModelNotServable(
            f"the chat template of {repo_id} at {sha} is not valid Jinja: {exc.message}"
        ) from exc
    except Exception as exc:  # the template's raise_exception, or an error in what it does
        raise ChatRequestInvalid(
            f"the chat template of {repo_id} refused the messages: {preview(str(exc), 300)}",
            param="messages",
        ) from exc
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def pick_device(setting: str) -> str:
    """auto: cuda when available, else cpu; or cpu, cuda, cuda:N (refused when there is no such GPU)."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cpu":
        return setting
    if setting.startswith("cuda"):
        index = setting.partition(":")[2]
        if setting == "cuda" or (index.isdigit() and setting == f"cuda:{int(index)}"):
            if torch.cuda.is_available() and int(index or 0) < torch.cuda.device_count():
                return setting
            raise ConfigurationError(
                f"LEADERBOARD_SERVE_DEVICE is {setting!r}, but this machine has no such GPU"
            )
    raise ConfigurationError(f"LEADERBOARD_SERVE_DEVICE is {preview(setting)}: use auto, cpu, cuda or cuda:N")


#: transformers' lazy module is not thread-safe on first use: two models loading at once in worker threads
#: of a fresh process got "module 'transformers' has no attribute 'AutoTokenizer'".
_FIRST_USE = threading.Lock()


def quiet_transformers() -> Any:
    """transformers, imported with its advisories, info logs and progress bars off, and the classes a load
    uses resolved, in one thread at a time."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    with _FIRST_USE:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        transformers.AutoTokenizer, transformers.AutoModelForCausalLM  # noqa: B018 (resolved now)
    return transformers


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every id that ends a turn: the generation config's (one or a list) and the tokenizer's."""
    ids: set[int] = set()
    generation = getattr(model, "generation_config", None)
    for value in (getattr(generation, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids |= {v for v in value if isinstance(v, int)}
    return frozenset(ids)


def _context_length(model: Any, tokenizer: Any) -> int:
    """The longest sequence (prompt and completion) the model takes: its config's, or the tokenizer's when
    that is smaller and real (transformers writes a huge placeholder when it knows none)."""
    config = model.config
    length = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < length:
        length = declared
    return int(length)


def load_model(store: LocalModelStore, repo_id: str, sha: str, device: str) -> LoadedModel:
    """Load one commit of a repository with transformers: never remote code, safetensors weights only."""
    revision = store.resolve(repo_id, sha)  # refuses a snapshot with a link that leaves the repository
    root_files = {name for name in revision.files if "/" not in name}
    if "config.json" not in root_files:
        raise ModelNotServable(f"{repo_id} at {sha} has no config.json: only full models are served")
    if "adapter_config.json" in root_files:  # transformers would load its base model from elsewhere
        raise ModelNotServable(
            f"{repo_id} at {sha} is an adapter: merge it into its base model (peft's merge_and_unload) to serve it"
        )
    if not any(name.endswith(".safetensors") for name in root_files):
        raise ModelNotServable(
            f"{repo_id} at {sha} has no safetensors weights: convert them (transformers' save_pretrained "
            "with safe_serialization) to serve it"
        )
    folder = store.snapshot_dir(repo_id, sha)
    transformers = quiet_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(folder), trust_remote_code=False, local_files_only=True
        )
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(folder), trust_remote_code=False, use_safetensors=True, local_files_only=True, dtype="auto"
        )
    except Exception as exc:  # transformers raises ValueError, OSError, KeyError... for what it cannot load
        raise ModelNotServable(
            f"{repo_id} at {sha} does not load with transformers {transformers.__version__} and "
            f"trust_remote_code=False: {_first_line(exc, folder, store.root, repo_id)}"
        ) from exc
    model.to(device)
    model.eval()
    log.info("model loaded", extra={"model": repo_id, "sha": sha, "device": device})
    return LoadedModel.of(repo_id, sha, model, tokenizer, device)


def _first_line(exc: BaseException, folder: Path, root: Path, repo_id: str) -> str:
    """An error's first line with the server's folders named by the repository instead."""
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    for shown in sorted({str(folder), os.path.realpath(folder), str(root), os.path.realpath(root)}, key=len)[
        ::-1
    ]:
        text = text.replace(shown, repo_id)
    return text[:300]


class ModelPool:
    """Loaded models by (repository, commit), the least recently used unloaded past ``max_loaded``. A model
    loads once however many requests ask for it meanwhile, and its load holds up no other model."""

    def __init__(self, store: LocalModelStore, max_loaded: int = 2, device: str = "auto") -> None:
        self.store = store
        self.max_loaded = max_loaded
        self.device = pick_device(device)
        self._loaded: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def _cached(self, key: tuple[str, str]) -> LoadedModel | None:
        """The loaded model, now the most recently used; callers hold ``_lock``."""
        loaded = self._loaded.get(key)
        if loaded is not None:
            self._loaded.move_to_end(key)
        return loaded

    def get(self, model: ServedModel) -> LoadedModel:
        """The loaded model at the revision's current commit, loaded now when it is not (seconds to minutes:
        call from a worker thread)."""
        sha = self.store.resolve(model.repo_id, model.revision).sha
        key = (model.repo_id, sha)
        with self._lock:
            loaded = self._cached(key)
            if loaded is not None:
                return loaded
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                loaded = self._cached(key)
            if loaded is not None:  # another request loaded it while this one waited
                return loaded
            try:
                loaded = load_model(self.store, model.repo_id, sha, self.device)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self._loaded[key] = loaded
                while len(self._loaded) > self.max_loaded:
                    (repo_id, old_sha), _ = self._loaded.popitem(last=False)
                    log.info("model unloaded", extra={"model": repo_id, "sha": old_sha})
            return loaded

    def loaded(self) -> list[tuple[str, str]]:
        """(repository, commit) of the loaded models, the least recently used first."""
        with self._lock:
            return list(self._loaded)
