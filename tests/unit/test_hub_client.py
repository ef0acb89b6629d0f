"""The Hub model source translates huggingface_hub's answers and errors; nothing here reaches a network.

huggingface_hub is the outside service: its HfApi is replaced by a small fake that answers like the Hub or
raises the Hub's own exceptions, and real failures come from a closed local port and from offline mode.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import httpx2
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SafetensorsParsingError,
)
from huggingface_hub.hf_api import ModelInfo, RepoFile, RepoFolder
from huggingface_hub.utils import SafetensorsFileMetadata, TensorInfo

from backend.errors import (
    InvalidInput,
    ModelAccessDenied,
    ModelNotFound,
    ModelSourceError,
    RepoFileInvalid,
    RepoFileRefused,
    RevisionNotFound,
)
from backend.hub.hub_client import HubModelSource

SHA = "c" * 40


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "http://hub.invalid/api/models/org/m"))


class FakeApi:
    """Answers like HfApi for one repo, or raises what it is given."""

    endpoint = "http://hub.invalid"

    def __init__(self, error: Exception | None = None, files: dict[str, bytes] | None = None) -> None:
        self.error = error
        self.files = files or {}
        self.downloaded: list[str] = []
        self.cache = Path(tempfile.mkdtemp(prefix="fake-hub-cache-"))

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

    def get_paths_info(self, repo_id: str, paths: list[str], **_: Any) -> list[RepoFile | RepoFolder]:
        """Like the Hub: only the paths that exist, each with its size."""
        found: list[RepoFile | RepoFolder] = [
            RepoFile(path=p, size=len(self.files[p]), oid="0" * 40) for p in paths if p in self.files
        ]
        return self._answer(found)

    def hf_hub_download(self, repo_id: str, filename: str, **_: Any) -> str:
        self._answer(None)
        self.downloaded.append(filename)
        path = self.cache / filename
        path.write_bytes(self.files[filename])
        return str(path)


def _source(
    error: Exception | None = None, files: dict[str, bytes] | None = None, api: FakeApi | None = None
) -> HubModelSource:
    return HubModelSource(cache_dir=Path("/nonexistent"), api=api or FakeApi(error, files))  # type: ignore[arg-type]


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
    assert (
        _source(files={"config.json": b"{}"}).read_bytes("org/m", SHA, "tokenizer_config.json", 100) is None
    )
    with pytest.raises(ModelSourceError, match="org/m"):
        _source(HfHubHTTPError("boom", response=_response(500))).read_bytes("org/m", SHA, "config.json", 100)


def test_a_file_within_its_limit_is_downloaded_and_read() -> None:
    source = _source(files={"config.json": b'{"a": 1}'})
    assert source.read_bytes("org/m", SHA, "config.json", 8) == b'{"a": 1}'


def test_a_file_over_its_limit_is_refused_before_it_is_downloaded() -> None:
    api = FakeApi(None, {"config.json": b"x" * 101})
    source = _source(api=api)
    with pytest.raises(RepoFileRefused, match="101 bytes, above the 100-byte limit") as caught:
        source.read_bytes("org/m", SHA, "config.json", 100)
    assert caught.value.filename == "config.json"
    assert api.downloaded == []


def test_a_malformed_safetensors_header_on_the_hub_is_an_invalid_file_not_an_outage() -> None:
    class Malformed(FakeApi):
        def parse_safetensors_file_metadata(self, *_: Any, **__: Any) -> SafetensorsFileMetadata:
            raise SafetensorsParsingError("header too big")

    source = _source(api=Malformed())
    with pytest.raises(RepoFileInvalid, match=r"model\.safetensors") as caught:
        source.safetensors_headers("org/m", SHA)
    assert caught.value.filename == "model.safetensors"


def test_a_header_the_hub_parses_is_still_checked() -> None:
    class HugeShape(FakeApi):
        def parse_safetensors_file_metadata(self, *_: Any, **__: Any) -> SafetensorsFileMetadata:
            tensors = {"w": TensorInfo(dtype="F32", shape=[10**400], data_offsets=(0, 4 * 10**400))}
            return SafetensorsFileMetadata(metadata={}, tensors=tensors)

    source = _source(api=HugeShape())
    with pytest.raises(RepoFileInvalid, match="no valid shape"):
        source.safetensors_headers("org/m", SHA)


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
        source.read_bytes("org/m", SHA, "config.json", 100)


def test_file_names_that_leave_the_repository_are_refused_before_any_request() -> None:
    with pytest.raises(InvalidInput, match="refused"):
        _source().read_bytes("org/m", SHA, "../../etc/passwd", 100)


class OpenRepoApi(FakeApi):
    """A public, ungated repository whose model card declares a license."""

    def __init__(self, card: bytes) -> None:
        super().__init__(files={"README.md": card})

    def model_info(self, repo_id: str, *, revision: str, timeout: float) -> ModelInfo:
        return ModelInfo(id=repo_id, sha=SHA, siblings=[{"rfilename": "README.md"}], likes=12)


def test_model_status_reports_likes_availability_and_the_card_license() -> None:
    status = _source(api=OpenRepoApi(b"---\nlicense: mit\n---\n# A model\n")).model_status("org/m")
    assert (status.available, status.likes, status.license, status.reason) == (True, 12, "mit", None)


@pytest.mark.parametrize(
    "card",
    [b"---\nlicense: mit\nbase_model: 42\n---\n# A model\n", b"x" * (2**20 + 1)],
    ids=["invalid", "huge"],
)
def test_a_card_that_cannot_be_read_gives_no_license_but_the_model_stays_available(card: bytes) -> None:
    status = _source(api=OpenRepoApi(card)).model_status("org/m")
    assert (status.available, status.license) == (True, None)


def test_a_gated_or_missing_repository_is_unavailable_but_a_failing_hub_is_an_error() -> None:
    gated = _source().model_status("org/m")
    assert (gated.available, gated.likes, gated.reason) == (False, 7, "the repository is gated")
    missing = _source(RepositoryNotFoundError("missing", response=_response(404))).model_status("org/m")
    assert not missing.available and "no public model repository" in str(missing.reason)
    with pytest.raises(ModelSourceError):
        _source(HfHubHTTPError("503 Server Error", response=_response(503))).model_status("org/m")
