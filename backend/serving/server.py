"""The model endpoint from the settings, served with uvicorn (`leaderboard serve-models`)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from fastapi import FastAPI

from backend import asgi
from backend.errors import ConfigurationError
from backend.hub.local_store import LocalModelStore
from backend.serving.app import create_serving_app
from backend.serving.models import Catalog, ModelPool
from backend.serving.protocol import Limits, error_json
from backend.settings import Settings


def model_names(value: str | Sequence[str]) -> list[str]:
    """Model names from a comma-separated setting or repeated options (each may hold commas too)."""
    parts = [value] if isinstance(value, str) else list(value)
    return [name.strip() for part in parts for name in part.split(",") if name.strip()]


def serving_app(settings: Settings, models: Sequence[str] = ()) -> tuple[FastAPI, Catalog]:
    """The app over ``models`` (default: LEADERBOARD_SERVE_MODELS, or every model of the store)."""
    if settings.model_store is None:
        raise ConfigurationError(
            "the model endpoint serves models of a local model store: set LEADERBOARD_MODEL_STORE to a folder "
            "in the Hugging Face hub cache layout"
        )
    if not settings.model_store.is_dir():
        raise ConfigurationError(f"LEADERBOARD_MODEL_STORE is {str(settings.model_store)!r}, not a folder")
    store = LocalModelStore(settings.model_store)
    catalog = Catalog(store, model_names(models) or model_names(settings.serve_models))
    pool = ModelPool(store, settings.serve_max_loaded_models, settings.serve_device)
    limits = Limits(
        max_messages=settings.serve_max_messages,
        max_prompt_chars=settings.serve_max_prompt_chars,
        max_tokens=settings.serve_max_tokens,
    )
    key = settings.serve_api_key.get_secret_value() if settings.serve_api_key else None
    app = create_serving_app(catalog, pool, limits, api_key=key, max_pending=settings.serve_max_pending)
    return app, catalog


def run(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` until the process is stopped, an unparsable request answered in OpenAI's error shape."""
    unparsable = json.dumps(error_json(400, asgi.UNPARSABLE, "invalid_http")).encode()
    asgi.serve(app, host, port, unparsable=unparsable)
