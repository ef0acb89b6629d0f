"""The model source in production: the Hugging Face Hub, through huggingface_hub.

Every huggingface_hub and HTTP error is translated here into the backend's errors, naming the repository and
revision, so nothing above this module knows about huggingface_hub. Weights are never downloaded to read
metadata: safetensors headers come from HTTP range requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    DisabledRepoError,
    GatedRepoError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SafetensorsParsingError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import SafetensorsFileMetadata

from backend.domain import preview
from backend.errors import (
    ModelAccessDenied,
    ModelNotFound,
    ModelSourceError,
    RepoFileInvalid,
    RevisionNotFound,
)
from backend.hub.interface import ModelRevision, ModelStatus, status_from_revision, unavailable
from backend.hub.model_files import repo_relative_path, too_large, validate_safetensors_header

T = TypeVar("T")


@contextmanager
def _translated(repo_id: str, revision: str, what: str) -> Iterator[None]:
    """Turn huggingface_hub's errors into ours; the order matters (GatedRepoError is a RepositoryNotFound)."""
    where = f"{repo_id} at revision {preview(revision)}"
    try:
        yield
    except GatedRepoError as exc:
        raise ModelAccessDenied(f"{repo_id} is gated: only public, ungated models can be evaluated") from exc
    except DisabledRepoError as exc:
        raise ModelAccessDenied(f"{repo_id} has been disabled on the Hub") from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFound(f"no public model repository {repo_id!r} on the Hub") from exc
    except RevisionNotFoundError as exc:
        raise RevisionNotFound(f"{repo_id} has no branch, tag or commit {revision!r}") from exc
    except HFValidationError as exc:
        raise ModelNotFound(f"{repo_id!r} is not a valid repository id ({exc})") from exc
    except (httpx2.HTTPError, OSError) as exc:  # HfHubHTTPError, timeouts, refused connections, offline mode
        raise ModelSourceError(f"the Hub could not {what} for {where}: {exc}") from exc


class HubModelSource:
    """ModelSource over the Hugging Face Hub (or any endpoint speaking its API)."""

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        cache_dir: Path | None = None,
        timeout: float = 10.0,
        api: HfApi | None = None,
    ) -> None:
        """``api``: the huggingface_hub client to ask (default: one for ``endpoint`` and ``token``)."""
        self._api = api or HfApi(endpoint=endpoint, token=token)
        self._cache_dir = cache_dir
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"HubModelSource(endpoint={self._api.endpoint!r})"

    def _call(self, repo_id: str, revision: str, what: str, function: Callable[[], T]) -> T:
        with _translated(repo_id, revision, what):
            return function()

    def resolve(self, repo_id: str, revision: str) -> ModelRevision:
        """One model_info call: the commit sha, the file list, and whether the repo is gated or private."""
        info = self._call(
            repo_id,
            revision,
            "describe the model",
            lambda: self._api.model_info(repo_id, revision=revision, timeout=self._timeout),
        )
        if not info.sha:
            raise ModelSourceError(f"the Hub gave no commit sha for {repo_id} at revision {revision!r}")
        return ModelRevision(
            repo_id=repo_id,
            sha=info.sha,
            files=tuple(sorted(s.rfilename for s in info.siblings or [])),
            gated=bool(info.gated),
            private=bool(info.private),
            likes=info.likes or 0,
        )

    def model_status(self, repo_id: str) -> ModelStatus:
        """Likes and access from model_info on the default branch, the license from its model card; a
        repository that is gone, gated or disabled is unavailable (the Hub failing is an error)."""
        try:
            revision = self.resolve(repo_id, "main")
        except (ModelNotFound, ModelAccessDenied, RevisionNotFound) as exc:
            return unavailable(repo_id, exc.message)
        return status_from_revision(self, revision)

    def read_bytes(self, repo_id: str, sha: str, filename: str, max_bytes: int) -> bytes | None:
        """Ask the file's size first; download it into the cache only when it is within ``max_bytes``."""
        repo_relative_path(filename)
        infos = self._call(
            repo_id,
            sha,
            f"describe {filename}",
            lambda: self._api.get_paths_info(repo_id, [filename], revision=sha, repo_type="model"),
        )
        info = next((i for i in infos if isinstance(i, RepoFile) and i.path == filename), None)
        if info is None:
            return None
        if info.size > max_bytes:
            raise too_large(filename, info.size, max_bytes)
        path = self._call(
            repo_id,
            sha,
            f"download {filename}",
            lambda: self._api.hf_hub_download(repo_id, filename, revision=sha, cache_dir=self._cache_dir),
        )
        try:
            with open(str(path), "rb") as file:
                data = file.read(max_bytes + 1)
        except OSError as exc:
            raise ModelSourceError(
                f"the Hub cache could not give {filename} of {repo_id}: {exc.strerror}"
            ) from exc
        if len(data) > max_bytes:
            raise too_large(filename, len(data), max_bytes)
        return data

    def safetensors_headers(self, repo_id: str, sha: str) -> dict[str, dict[str, Any]]:
        """Headers of the root ``*.safetensors`` files, each read with range requests (no weights)."""
        files = [f for f in self.resolve(repo_id, sha).files if "/" not in f and f.endswith(".safetensors")]
        headers = {}
        for name in files:
            parsed = self._call(
                repo_id, sha, f"read the header of {name}", partial(self._header, repo_id, sha, name)
            )
            header: dict[str, Any] = {
                tensor: {
                    "dtype": info.dtype,
                    "shape": list(info.shape),
                    "data_offsets": list(info.data_offsets),
                }
                for tensor, info in parsed.tensors.items()
            }
            if parsed.metadata:
                header["__metadata__"] = parsed.metadata
            headers[name] = validate_safetensors_header(header, name)
        return headers

    def _header(self, repo_id: str, sha: str, name: str) -> SafetensorsFileMetadata:
        try:
            return self._api.parse_safetensors_file_metadata(
                repo_id, name, revision=sha, timeout=self._timeout
            )
        except (SafetensorsParsingError, TypeError, AttributeError) as exc:  # malformed, or shaped unlike
            # huggingface_hub expects
            raise RepoFileInvalid(
                name,
                f"malformed safetensors header ({exc})",
                "re-upload the weights with save_pretrained(..., safe_serialization=True)",
            ) from exc
