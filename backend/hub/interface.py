"""The one interface through which the backend reads model repositories.

Two implementations: ``HubModelSource`` (huggingface_hub, production) and ``LocalModelStore`` (a folder in
the Hugging Face hub cache layout, for air-gapped clusters and for tests). Validation only ever talks to
this interface, and never executes or unpickles anything from a repository: it reads JSON, text and
safetensors headers, each file within a size limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from backend.errors import RepoFileInvalid, RepoFileRefused


@dataclass(frozen=True)
class ModelRevision:
    """A repository frozen at one commit."""

    repo_id: str
    sha: str  # full 40-hex commit sha
    files: tuple[str, ...]  # every file path in the repository at that commit, relative to its root
    gated: bool = False
    private: bool = False
    likes: int = 0


@dataclass(frozen=True)
class ModelStatus:
    """What the leaderboard shows about a model repository beyond its evaluation, refreshed over time."""

    repo_id: str
    available: bool  # the repository exists, is public and readable
    likes: int
    license: str | None  # declared by the model card of the default branch
    reason: str | None = None  # why it is not available


#: A parsed safetensors header: tensor name -> {"dtype": "F32", "shape": [..], "data_offsets": [a, b]},
#: plus an optional "__metadata__" entry of strings.
SafetensorsHeader = dict[str, Any]


class ModelSource(Protocol):
    """Read-only access to model repositories."""

    def resolve(self, repo_id: str, revision: str) -> ModelRevision:
        """Freeze ``revision`` (a branch, tag or commit sha) to a commit.

        Raises ModelNotFound (no such repo), RevisionNotFound (no such revision), ModelAccessDenied (gated
        or private and not readable) or ModelSourceError (the source could not answer).
        """
        ...

    def read_bytes(self, repo_id: str, sha: str, filename: str, max_bytes: int) -> bytes | None:
        """The content of one file at a commit, or None when the file does not exist.

        Never reads more than ``max_bytes``: a bigger file is RepoFileRefused, as is (in a local store) a
        file that is not a regular file inside the repository.
        """
        ...

    def safetensors_headers(self, repo_id: str, sha: str) -> dict[str, SafetensorsHeader]:
        """The header of every ``*.safetensors`` file at a commit (file name -> header), read without
        reading any weights. Raises RepoFileInvalid with the file name when a header is malformed."""
        ...

    def model_status(self, repo_id: str) -> ModelStatus:
        """Availability, likes and license of a repository now. A repository that is gone, gated or private
        is reported unavailable; raises ModelSourceError only when the source could not answer."""
        ...


def read_text(source: ModelSource, revision: ModelRevision, filename: str, max_bytes: int) -> str | None:
    """A file at a resolved revision as text (undecodable bytes replaced), or None when it is absent."""
    data = source.read_bytes(revision.repo_id, revision.sha, filename, max_bytes)
    return None if data is None else data.decode("utf-8", errors="replace")


def status_from_revision(source: ModelSource, revision: ModelRevision) -> ModelStatus:
    """The status of a repository from its resolved default branch: likes and access from the revision, the
    license from its model card (none when the card is absent, refused or invalid)."""
    from backend.hub.repo_records import MAX_CARD_BYTES, ModelCard

    if revision.gated or revision.private:
        why = "gated" if revision.gated else "private"
        return ModelStatus(revision.repo_id, False, revision.likes, None, f"the repository is {why}")
    try:
        card = read_text(source, revision, "README.md", MAX_CARD_BYTES)
        license_id = ModelCard.parse(card).license if card else None
    except (RepoFileRefused, RepoFileInvalid):
        license_id = None
    return ModelStatus(revision.repo_id, True, revision.likes, license_id)


def unavailable(repo_id: str, reason: str) -> ModelStatus:
    return ModelStatus(repo_id, False, 0, None, reason)
