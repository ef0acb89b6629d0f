"""The one interface through which the backend reads model repositories.

Two implementations: ``HubModelSource`` (huggingface_hub, production) and ``LocalModelStore`` (a folder in
the Hugging Face hub cache layout, for air-gapped clusters and for tests). Validation only ever talks to
this interface, and never executes or unpickles anything from a repository: it reads JSON, text and
safetensors headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class ModelRevision:
    """A repository frozen at one commit."""

    repo_id: str
    sha: str  # full 40-hex commit sha
    files: tuple[str, ...]  # every file path in the repository at that commit, relative to its root
    gated: bool = False
    private: bool = False
    likes: int = 0


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

    def read_text(self, repo_id: str, sha: str, filename: str) -> str | None:
        """The text of one file at a commit, or None when the file does not exist."""
        ...

    def safetensors_headers(self, repo_id: str, sha: str) -> dict[str, SafetensorsHeader]:
        """The header of every ``*.safetensors`` file at a commit (file name -> header), read without
        reading any weights. Raises ModelSourceError with the file name when a header is malformed."""
        ...

    def fetch(self, repo_id: str, sha: str, patterns: list[str]) -> Path:
        """A local folder holding the files at a commit that match the glob ``patterns`` (and only those,
        for the Hub), so that transformers can load config and tokenizer from disk with no network."""
        ...
