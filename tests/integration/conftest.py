from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.app import App
from backend.domain import ModelType, Precision, WeightType
from backend.settings import Settings
from backend.storage.requests import NewRequest


class Clock:
    """A clock the test moves by hand: lease expiry without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(database_url: str, clock: Clock) -> Iterator[App]:
    application = App.open(Settings(database_url=database_url, lease_seconds=60, max_attempts=3))
    application.clock = clock
    yield application
    application.close()


@pytest.fixture
def judged_app(database_url: str, clock: Clock, tmp_path: Path) -> Iterator[App]:
    """An app whose deployment also serves the judged leaderboard alpaca_eval_2."""
    settings = Settings(database_url=database_url, judged="alpaca_eval_2", work_dir=tmp_path / "work")
    application = App.open(settings)
    application.clock = clock
    yield application
    application.close()


def new_request(
    model: str = "org/model",
    sha: str = "a" * 40,
    precision: Precision = Precision.BFLOAT16,
    sender: str = "alice",
) -> NewRequest:
    return NewRequest(
        model=model,
        revision="main",
        sha=sha,
        precision=precision,
        weight_type=WeightType.ORIGINAL,
        model_type=ModelType.PRETRAINED,
        base_model=None,
        use_chat_template=False,
        params_b=0.000336,
        architectures=("LlamaForCausalLM",),
        license="apache-2.0",
        sender=sender,
    )
