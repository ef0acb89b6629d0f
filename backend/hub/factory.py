"""Chooses the model source from settings: a local model store when one is configured, else the Hub."""

from __future__ import annotations

from pathlib import Path

from backend.hub.interface import ModelSource
from backend.hub.local_store import LocalModelStore


def model_source_from_settings(
    model_store: Path | None, hf_token: str | None = None, cache_dir: Path | None = None
) -> ModelSource:
    """A configured local store wins, so an air-gapped cluster never tries to reach the Hub."""
    if model_store is not None:
        return LocalModelStore(Path(model_store))
    from backend.hub.hub_client import HubModelSource  # huggingface_hub is only imported when used

    return HubModelSource(token=hf_token, cache_dir=cache_dir)
