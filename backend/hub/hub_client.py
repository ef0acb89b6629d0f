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
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SafetensorsParsingError,
)
from huggingface_hub.utils import SafetensorsFileMetadata

from backend.errors import ModelAccessDenied, ModelNotFound, ModelSourceError, RevisionNotFound
from backend.hub.interface import ModelRevision, ModelStatus, status_from_revision, unavailable
from backend.hub.model_files import repo_relative_path, validate_safetensors_header

T = TypeVar("T")


@contextmanager
def _translated(repo_id: str, revision: str, what: str) -> Iterator[None]:
    """Turn huggingface_hub's errors into ours; the order matters (GatedRepoError is a RepositoryNotFound)."""
    where = f"{repo_id} at revision {revision!r}"
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
    except SafetensorsParsingError as exc:
        raise ModelSourceError(f"malformed safetensors header in {where}: {exc}") from exc
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

    def read_text(self, repo_id: str, sha: str, filename: str) -> str | None:
        """Download one file into the cache and read it; None when the commit has no such file."""
        repo_relative_path(filename)
        try:
            path = self._call(
                repo_id,
                sha,
                f"download {filename}",
                lambda: self._api.hf_hub_download(repo_id, filename, revision=sha, cache_dir=self._cache_dir),
            )
        except ModelSourceError as exc:
            if isinstance(exc.__cause__, RemoteEntryNotFoundError):
                return None
            raise
        return Path(str(path)).read_text(encoding="utf-8", errors="replace")

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
        except (TypeError, AttributeError) as exc:  # a header shaped unlike huggingface_hub expects
            raise SafetensorsParsingError(f"{name}: unexpected header structure ({exc})") from exc

    def fetch(self, repo_id: str, sha: str, patterns: list[str]) -> Path:
        """Download only the files matching ``patterns`` at ``sha`` into the cache; return their folder."""
        folder = self._call(
            repo_id,
            sha,
            "download files",
            lambda: self._api.snapshot_download(
                repo_id, revision=sha, allow_patterns=patterns, cache_dir=self._cache_dir
            ),
        )
        return Path(str(folder))
