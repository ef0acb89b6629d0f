"""Where results are published, behind one interface: a local folder (the embedded default) or a Hub
dataset, written in one atomic commit per publish."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from backend.errors import ConfigurationError, PublishFailed, UnsafePath
from backend.paths import inside_relative, parts_of
from backend.publish.files import write_atomic
from backend.retry import Backoff

log = logging.getLogger(__name__)

HUB_PREFIX = "hf://datasets/"


class Target(Protocol):
    key: str  # recorded in the publications table: which target a row was published to

    def put(self, files: dict[str, bytes], message: str) -> list[str]:
        """Deliver every file (path relative to the target -> content) at once; the paths that changed.
        Raises PublishFailed, having changed nothing it can take back."""

    def read(self, path: str) -> bytes | None:
        """A published file's content, or None when it is not there."""


class LocalFolderTarget:
    """A folder: each file written through a temp file and a rename; unchanged files are not touched."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.key = str(self.folder)

    def put(self, files: dict[str, bytes], message: str) -> list[str]:
        try:
            paths = {path: inside_relative(self.folder, path) for path in files}  # all checked, then written
            return [path for path, data in files.items() if write_atomic(paths[path], data)]
        except UnsafePath as exc:
            raise PublishFailed(f"refused to write outside {self.key}: {exc.message}") from exc
        except OSError as exc:
            raise PublishFailed(f"cannot write to {self.folder}: {exc}") from exc

    def read(self, path: str) -> bytes | None:
        file = inside_relative(self.folder, path)
        return file.read_bytes() if file.is_file() else None


#: Transient Hub failures (connection errors, timeouts, 429, 5xx) are retried with exponential backoff.
DEFAULT_RETRY = Backoff(attempts=4, base_s=2.0, max_s=60.0)


def is_transient(exc: Exception) -> bool:
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status is None or status in (408, 429) or status >= 500
    return isinstance(exc, httpx2.TransportError | ConnectionError | TimeoutError)


class HubDatasetTarget:
    """A Hub dataset repository: ONE commit per publish carrying every changed file."""

    def __init__(
        self,
        repo_id: str,
        endpoint: str | None = None,
        token: str | None = None,
        retry: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from huggingface_hub import HfApi

        self.repo_id = repo_id
        self.key = f"{HUB_PREFIX}{repo_id}"
        self.endpoint = endpoint
        self.api = HfApi(endpoint=endpoint, token=token)
        self.retry = retry or DEFAULT_RETRY
        self.sleep = sleep

    def put(self, files: dict[str, bytes], message: str) -> list[str]:
        from huggingface_hub import CommitOperationAdd

        try:
            for path in files:
                parts_of(path)
        except UnsafePath as exc:
            raise PublishFailed(f"refused to commit to {self.key}: {exc.message}") from exc
        operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=data) for p, data in files.items()]
        for attempt in range(1, self.retry.attempts + 1):
            try:
                self.api.create_commit(self.repo_id, operations, commit_message=message, repo_type="dataset")
                return sorted(files)
            except Exception as exc:  # translated at the edge: Hub and network errors
                if not is_transient(exc) or attempt == self.retry.attempts:
                    raise PublishFailed(
                        f"commit to {self.key} on {self.api.endpoint} failed after {attempt} attempt(s): "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                delay = self.retry.delay(attempt)
                log.warning(
                    "hub commit failed, retrying",
                    extra={"target": self.key, "attempt": attempt, "delay_s": delay, "error": str(exc)},
                )
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, path: str) -> bytes | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            local = hf_hub_download(
                self.repo_id, path, repo_type="dataset", endpoint=self.api.endpoint, token=self.api.token
            )
        except EntryNotFoundError:
            return None
        except Exception as exc:
            raise PublishFailed(f"cannot download {path} from {self.key}: {exc}") from exc
        return Path(local).read_bytes()


def target_from_setting(
    results: str, endpoint: str | None = None, token: str | None = None, retry: Backoff | None = None
) -> Target:
    """LEADERBOARD_RESULTS: a local folder, or hf://datasets/ORG/NAME."""
    if results.startswith("hf://"):
        repo_id = results.removeprefix(HUB_PREFIX)
        if not results.startswith(HUB_PREFIX) or repo_id.count("/") != 1:
            raise ConfigurationError(
                f"LEADERBOARD_RESULTS '{results}' is not hf://datasets/ORG/NAME nor a local folder"
            )
        return HubDatasetTarget(repo_id, endpoint=endpoint, token=token, retry=retry)
    return LocalFolderTarget(Path(results))
