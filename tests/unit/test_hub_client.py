"""The Hub model source translates huggingface_hub's answers and errors; nothing here reaches a network.

huggingface_hub is the outside service: its HfApi is replaced by a small fake that answers like the Hub or
raises the Hub's own exceptions, and real failures come from a closed local port and from offline mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import SafetensorsFileMetadata, TensorInfo

from backend.errors import ModelAccessDenied, ModelNotFound, ModelSourceError, RevisionNotFound
from backend.hub.hub_client import HubModelSource

SHA = "c" * 40


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "http://hub.invalid/api/models/org/m"))


class FakeApi:
    """Answers like HfApi for one repo, or raises what it is given."""

    endpoint = "http://hub.invalid"

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def _answer(self, value: Any) -> Any:
        if self.error is not None:
            raise self.error
        return value

    def model_info(self, repo_id: str, *, revision: str, timeout: float) -> ModelInfo:
        siblings = [{"rfilename": n} for n in ("model.safetensors", "config.json", "sub/x.safetensors")]
        return self._answer(ModelInfo(id=repo_id, sha=SHA, siblings=siblings, gated="manual", likes=7))

    def parse_safetensors_file_metadata(self, repo_id: str, name: str, **_: Any) -> SafetensorsFileMetadata:
        tensors = {"w": TensorInfo(dtype="F32", shape=[2, 3], data_offsets=(0, 24))}
        return self._answer(SafetensorsFileMetadata(metadata={"format": "pt"}, tensors=tensors))

    def hf_hub_download(self, repo_id: str, filename: str, **_: Any) -> str:
        return self._answer("/nonexistent")


def _source(error: Exception | None = None, api: FakeApi | None = None) -> HubModelSource:
    return HubModelSource(cache_dir=Path("/nonexistent"), api=api or FakeApi(error))  # type: ignore[arg-type]


def test_resolve_reads_sha_files_and_access_from_model_info() -> None:
    resolved = _source().resolve("org/m", "main")
    assert resolved.sha == SHA
    assert resolved.files == ("config.json", "model.safetensors", "sub/x.safetensors")
    assert (resolved.gated, resolved.private, resolved.likes) == (True, False, 7)


def test_safetensors_metadata_becomes_header_dicts_for_root_files() -> None:
    assert _source().safetensors_headers("org/m", SHA) == {
        "model.safetensors": {
            "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "__metadata__": {"format": "pt"},
        }
    }


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (GatedRepoError("gated", response=_response(403)), ModelAccessDenied),
        (RepositoryNotFoundError("missing", response=_response(404)), ModelNotFound),
        (RevisionNotFoundError("no revision", response=_response(404)), RevisionNotFound),
        (HfHubHTTPError("server error", response=_response(502)), ModelSourceError),
        (httpx2.ReadTimeout("timed out"), ModelSourceError),
    ],
)
def test_hub_errors_become_backend_errors(error: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected, match="org/m") as caught:
        _source(error).resolve("org/m", "dev")
    assert type(caught.value) is expected
    assert caught.value.__cause__ is error


def test_a_missing_file_reads_as_none_but_an_unreachable_hub_is_an_error() -> None:
    missing = RemoteEntryNotFoundError("no such file", response=_response(404))
    assert _source(missing).read_text("org/m", SHA, "tokenizer_config.json") is None
    with pytest.raises(ModelSourceError, match="org/m"):
        _source(HfHubHTTPError("boom", response=_response(500))).read_text("org/m", SHA, "config.json")


def test_a_closed_port_fails_fast_with_a_source_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # a real connection attempt, to a closed port
    source = HubModelSource(endpoint="http://127.0.0.1:9", timeout=2)
    with pytest.raises(ModelSourceError, match="org/m at revision 'main'") as caught:
        source.resolve("org/m", "main")
    assert caught.value.__cause__ is not None


def test_offline_mode_is_a_source_error_not_a_missing_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    source = HubModelSource(endpoint="http://127.0.0.1:9", cache_dir=tmp_path)
    with pytest.raises(ModelSourceError):
        source.resolve("org/m", "main")
    with pytest.raises(ModelSourceError):
        source.read_text("org/m", SHA, "config.json")
    with pytest.raises(ModelSourceError):
        source.fetch("org/m", SHA, ["*.json"])


def test_file_names_that_leave_the_repository_are_refused_before_any_request() -> None:
    with pytest.raises(ModelSourceError, match="refused"):
        _source().read_text("org/m", SHA, "../../etc/passwd")


class OpenRepoApi(FakeApi):
    """A public, ungated repository whose model card declares a license."""

    def __init__(self, card: Path) -> None:
        super().__init__()
        self.card = card

    def model_info(self, repo_id: str, *, revision: str, timeout: float) -> ModelInfo:
        return ModelInfo(id=repo_id, sha=SHA, siblings=[{"rfilename": "README.md"}], likes=12)

    def hf_hub_download(self, repo_id: str, filename: str, **_: Any) -> str:
        return str(self.card)


def test_model_status_reports_likes_availability_and_the_card_license(tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: mit\n---\n# A model\n")
    status = _source(api=OpenRepoApi(card)).model_status("org/m")
    assert (status.available, status.likes, status.license, status.reason) == (True, 12, "mit", None)


def test_a_gated_or_missing_repository_is_unavailable_but_a_failing_hub_is_an_error() -> None:
    gated = _source().model_status("org/m")
    assert (gated.available, gated.likes, gated.reason) == (False, 7, "the repository is gated")
    missing = _source(RepositoryNotFoundError("missing", response=_response(404))).model_status("org/m")
    assert not missing.available and "no public model repository" in str(missing.reason)
    with pytest.raises(ModelSourceError):
        _source(HfHubHTTPError("503 Server Error", response=_response(503))).model_status("org/m")
