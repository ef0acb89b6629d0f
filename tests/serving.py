"""What the model endpoint's tests share: a store of real tiny models and a pool loading them (fixtures a
test module binds: ``store, pool = serving.store, serving.pool``), transformers' own answers to compare
with (computed without our code), a live server in a thread, and a real server that fails on purpose."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.serving.models import ModelPool

#: The store's repositories and the options they are built with.
REPOS: dict[str, dict[str, Any]] = {
    "good/tiny": {},
    "good/other": {"seed": 5},
    "good/no-template": {"chat_template": False},
    "bad/no-safetensors": {"safetensors": False},
    "bad/remote-code": {"remote_code": True},
    "bad/adapter": {"adapter_of": "good/tiny"},
    "bad/adapter-with-config": {"adapter_of": "good/tiny", "extra_files": {"config.json": "{}"}},
}

CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "If a train leaves the station at nine o'clock, when does it arrive?"},
]


def build_store(root: Path) -> LocalModelStore:
    store = LocalModelStore(root)
    for repo_id, options in REPOS.items():
        build_tiny_model(store, repo_id, **options)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStore:
    return build_store(tmp_path_factory.mktemp("serving-store"))


@pytest.fixture(scope="module")
def pool(store: LocalModelStore) -> ModelPool:
    return ModelPool(store, max_loaded=2, device="cpu")


def snapshot(store: LocalModelStore, repo_id: str) -> Path:
    return store.snapshot_dir(repo_id, store.resolve(repo_id, "main").sha)


@dataclass(frozen=True)
class Reference:
    """transformers' greedy answer to a chat, computed here: its tokens, text and each token's logprob
    (log_softmax of the logits of one forward pass over prompt and answer)."""

    prompt: list[int]
    tokens: list[int]
    text: str
    logprobs: list[float]
    top: list[list[tuple[int, float]]]  # per position, the 5 likeliest (id, logprob)
    tokenizer: Any


def reference(
    store: LocalModelStore, repo_id: str, messages: list[dict[str, str]], max_new_tokens: int
) -> Reference:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = snapshot(store, repo_id)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        ids = torch.tensor([prompt])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        tokens = [t for t in out[0, len(prompt) :].tolist() if t != tokenizer.eos_token_id]
        logits = model(torch.tensor([prompt + tokens])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)[len(prompt) - 1 : -1]
    chosen = [float(logprobs[i, t]) for i, t in enumerate(tokens)]
    values, indices = torch.topk(logprobs, 5, dim=-1)
    top = [list(zip(i.tolist(), v.tolist(), strict=True)) for v, i in zip(values, indices, strict=True)]
    return Reference(
        prompt, tokens, tokenizer.decode(tokens, skip_special_tokens=True), chosen, top, tokenizer
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live(app: ASGIApp) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 in a thread until the block ends; its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class Flaky:
    """A real ASGI server's failures: the first ``failures`` requests (all of them when None) get ``status``
    with an OpenAI error body and Retry-After ``retry_after``; the rest go to ``app``."""

    def __init__(
        self, app: ASGIApp | None, failures: int | None, status: int = 503, retry_after: str | None = None
    ) -> None:
        self.app, self.failures, self.status, self.retry_after = app, failures, status, retry_after
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.app is None:
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]  # startup or shutdown
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            assert self.app is not None
            await self.app(scope, receive, send)
            return
        self.requests += 1
        if self.app is not None and self.failures is not None and self.requests > self.failures:
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "error": {
                    "message": "overloaded, try later",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if self.retry_after is not None:
            headers.append((b"retry-after", self.retry_after.encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def build_leaning_judge(
    store: LocalModelStore,
    folder: Path,
    repo_id: str,
    tokens: tuple[str, str] = ("m", "M"),
    opposed: bool = False,
) -> None:
    """The tiny model with every output row zero but those of ``tokens``. Close to each other (the
    default): where the last hidden state leans their way both lead the top logprobs (a weighted
    preference strictly between 1 and 2), elsewhere neither is among them (no verdict). ``opposed``: one
    row the other's negative, so that greedy decoding always answers one of the two (a verdict every time)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from backend.modelbuilder import write_tiny_model

    write_tiny_model(folder)
    vocab = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    weights = load_file(folder / "model.safetensors")
    head = np.zeros_like(weights["lm_head.weight"])
    rng = np.random.default_rng(3)
    direction = rng.normal(0, 1, head.shape[1]).astype(head.dtype)
    head[vocab["m"]] = direction
    head[vocab["M"]] = direction + rng.normal(0, 0.3, head.shape[1]).astype(head.dtype)
    weights["lm_head.weight"] = head
    save_file(weights, folder / "model.safetensors", {"format": "pt"})
    store.add_snapshot(repo_id, folder)
