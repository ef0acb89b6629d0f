"""A model source over a folder in the Hugging Face hub cache layout, for air-gapped clusters and tests.

The layout is what ``hf download`` writes and what transformers and lm-eval read offline by repo id:
``<root>/models--ORG--NAME/refs/<branch or tag>`` holds a commit sha and
``<root>/models--ORG--NAME/snapshots/<sha>/`` holds the files (real files, or symlinks into ``blobs/``).
So a store can be handed to the evaluation harness as HF_HUB_CACHE unchanged.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from backend.domain import is_repo_id, is_revision, is_sha, preview
from backend.errors import ModelNotFound, ModelSourceError, RepoFileRefused, RevisionNotFound
from backend.hub.interface import ModelRevision, ModelStatus, status_from_revision, unavailable
from backend.hub.model_files import parse_safetensors_header, repo_relative_path, too_large

_SHORT_SHA = re.compile(r"[0-9a-f]{7,39}")
#: A ref file holds a sha and a newline; anything longer is not a ref.
_MAX_REF_BYTES = 128

#: Files are digested in chunks so that chunks in holes of sparse files need not be read.
_CHUNK = 8 * 1024 * 1024


def repo_folder_name(repo_id: str) -> str:
    """The cache folder of a repo, as huggingface_hub names it."""
    return "models--" + repo_id.replace("/", "--")


def _data_regions(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The (begin, end) byte ranges of a file that may hold data; holes of sparse files are skipped."""
    if not hasattr(os, "SEEK_DATA"):
        yield 0, size
        return
    position = 0
    while position < size:
        try:
            begin = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            raise
        end = min(os.lseek(fd, begin, os.SEEK_HOLE), size)
        yield begin, end
        position = end


def file_digest(path: Path) -> str:
    """A content digest that costs nothing for holes: sha256 over the sha256 of each 8 MiB chunk.

    It depends on the bytes only (a hole digests like the zeros it reads as), so a 150B-parameter sparse
    test file is digested in a moment and still the same as a dense copy would be.
    """
    digest = hashlib.sha256()
    size = path.stat().st_size
    zero_chunk = hashlib.sha256(bytes(_CHUNK)).digest()
    with open(path, "rb") as file:
        regions = list(_data_regions(file.fileno(), size))
        region = 0
        for begin in range(0, size, _CHUNK):
            end = min(begin + _CHUNK, size)
            while region < len(regions) and regions[region][1] <= begin:
                region += 1
            if region < len(regions) and regions[region][0] < end:
                file.seek(begin)
                digest.update(hashlib.sha256(file.read(end - begin)).digest())
            elif end - begin == _CHUNK:
                digest.update(zero_chunk)
            else:
                digest.update(hashlib.sha256(bytes(end - begin)).digest())
    return digest.hexdigest()


def _copy_sparse(source: Path, target: Path) -> None:
    """Copy a file, keeping holes as holes (a plain copy would write every zero of a sparse file)."""
    size = source.stat().st_size
    with open(source, "rb") as src, open(target, "wb") as dst:
        for begin, end in _data_regions(src.fileno(), size):
            src.seek(begin)
            dst.seek(begin)
            position = begin
            while position < end:
                block = src.read(min(_CHUNK, end - position))
                if not block:
                    break
                dst.write(block)
                position += len(block)
        dst.truncate(size)


def _files_under(folder: Path) -> list[str]:
    """Sorted relative paths of the regular files (or symlinks to them) under a folder."""
    found = []
    for directory, _, names in os.walk(folder):
        for name in names:
            path = Path(directory, name)
            if path.is_file():
                found.append(path.relative_to(folder).as_posix())
    return sorted(found)


def _link_leaving(snapshot: Path, repo: Path) -> str | None:
    """The first entry of a snapshot (file or folder, dangling or not) that is a link resolving outside the
    repository folder, as a path relative to the snapshot; None when every link stays inside."""
    for directory, folders, names in os.walk(snapshot):
        for name in sorted(folders + names):
            path = Path(directory, name)
            if path.is_symlink() and not _inside(path, repo):
                return path.relative_to(snapshot).as_posix()
    return None


def _inside(path: Path, repo: Path) -> bool:
    """Whether ``path``, its links followed, stays inside the (resolved) repository folder."""
    return Path(os.path.realpath(path)).is_relative_to(repo)


class LocalModelStore:
    """ModelSource over a hub-cache-layout folder. Repos are never gated or private and have no likes.

    Every file it reads or lists stays inside its repository's folder: links into the repository's own
    ``blobs/`` are the layout's normal case, a link anywhere else is refused (RepoFileRefused). Messages name
    repositories and revisions, never the store's folders.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalModelStore({str(self.root)!r})"

    def repo_dir(self, repo_id: str) -> Path:
        """The folder of a repo in the store (it may not exist)."""
        if not is_repo_id(repo_id):
            raise ModelNotFound(f"{preview(repo_id)} is not a valid repository id (ORG/NAME)")
        return self.root / repo_folder_name(repo_id)

    def repositories(self) -> list[str]:
        """The repository ids (ORG/NAME) of the store, sorted; a folder whose name is no repository's is skipped."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            repo_id = "/".join(folder.name.split("--")[1:])
            if folder.is_dir() and is_repo_id(repo_id) and repo_folder_name(repo_id) == folder.name:
                found.append(repo_id)
        return sorted(found)

    def snapshot_dir(self, repo_id: str, sha: str) -> Path:
        """The folder of a commit's files, for a loader that reads them itself (transformers); resolve the
        revision first, which refuses a snapshot holding a link that leaves the repository."""
        return self._snapshot_dir(repo_id, sha)

    def _existing_repo_dir(self, repo_id: str) -> Path:
        folder = self.repo_dir(repo_id)
        if not folder.is_dir():
            raise ModelNotFound(f"no model repository {repo_id!r} in the local model store")
        return folder

    def _snapshot_dir(self, repo_id: str, sha: str) -> Path:
        folder = self._existing_repo_dir(repo_id)
        snapshot = folder / "snapshots" / sha
        if not is_sha(sha) or not snapshot.is_dir():
            raise RevisionNotFound(f"{repo_id} has no commit {preview(sha)} in the local model store")
        return snapshot

    def _refs(self, folder: Path) -> list[str]:
        refs = folder / "refs"
        return [] if not refs.is_dir() else _files_under(refs)

    def _snapshots(self, folder: Path) -> list[str]:
        snapshots = folder / "snapshots"
        if not snapshots.is_dir():
            return []
        return sorted(p.name for p in snapshots.iterdir() if p.is_dir() and is_sha(p.name))

    def _ref(self, repo_id: str, folder: Path, revision: str) -> str | None:
        """The sha a branch or tag points to, or None when there is no such ref (or no ref can be so named)."""
        if not is_revision(revision):
            return None
        ref = folder / "refs" / revision
        if not ref.is_file():
            return None
        if not _inside(ref, folder.resolve()):
            raise RepoFileRefused(f"refs/{revision}", "it is a link that leaves the repository's folder")
        try:
            with open(ref, "rb") as file:
                return file.read(_MAX_REF_BYTES).decode("utf-8", errors="replace").strip()
        except OSError as exc:
            raise ModelSourceError(
                f"the local model store could not read {repo_id} ref {revision!r}: {exc.strerror}"
            ) from exc

    def resolve(self, repo_id: str, revision: str) -> ModelRevision:
        """Freeze a branch, tag, full sha or unambiguous short sha (7+ hex digits) to a snapshot.

        A snapshot holding a link that leaves the repository's folder is refused (RepoFileRefused): whatever
        later reads the snapshot (validation, transformers, the harness) reads only the repository's files.
        """
        folder = self._existing_repo_dir(repo_id)
        snapshots = self._snapshots(folder)
        sha = self._ref(repo_id, folder, revision)
        if sha is not None and sha not in snapshots:
            raise ModelSourceError(
                f"the local model store is inconsistent: {repo_id} ref {revision!r} points to commit "
                f"{preview(sha)}, which has no snapshot"
            )
        if sha is None and revision in snapshots:
            sha = revision
        if sha is None and isinstance(revision, str) and _SHORT_SHA.fullmatch(revision):
            matches = [s for s in snapshots if s.startswith(revision)]
            if len(matches) > 1:
                raise RevisionNotFound(
                    f"{repo_id}: the short commit {revision!r} is ambiguous ({', '.join(matches)}); "
                    "give the full 40-character sha"
                )
            sha = matches[0] if matches else None
        if sha is None:
            refs = ", ".join(self._refs(folder)) or "none"
            commits = ", ".join(snapshots) or "none"
            raise RevisionNotFound(
                f"{repo_id} has no revision {preview(revision)} in the local model store; "
                f"branches and tags: {refs}; commits: {commits}"
            )
        snapshot = folder / "snapshots" / sha
        leaving = _link_leaving(snapshot, folder.resolve())
        if leaving is not None:
            raise RepoFileRefused(leaving, "it is a link that leaves the repository")
        return ModelRevision(repo_id=repo_id, sha=sha, files=tuple(_files_under(snapshot)))

    def model_status(self, repo_id: str) -> ModelStatus:
        """Available while the repository's folder has a main branch; never any likes."""
        try:
            revision = self.resolve(repo_id, "main")
        except (ModelNotFound, RevisionNotFound, RepoFileRefused) as exc:
            return unavailable(repo_id, exc.message)
        return status_from_revision(self, revision)

    @contextmanager
    def _open(self, repo_id: str, sha: str, filename: str) -> Iterator[BinaryIO | None]:
        """A file of a snapshot opened for reading, or None when it is absent; only regular files that stay
        inside the repository's folder are opened (checked on the opened file, so a swap cannot slip in)."""
        relative = repo_relative_path(filename)
        snapshot = self._snapshot_dir(repo_id, sha)
        path = snapshot.joinpath(*relative.parts)
        if not path.is_file():
            yield None
            return
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(snapshot.parent.parent.resolve()):
            raise RepoFileRefused(filename, "it is a link that leaves the repository")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise ModelSourceError(
                f"the local model store could not read {filename} of {repo_id} at {sha}: {exc.strerror}"
            ) from exc
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RepoFileRefused(filename, "it is not a regular file")
            try:
                yield file
            except OSError as exc:
                raise ModelSourceError(
                    f"the local model store could not read {filename} of {repo_id} at {sha}: {exc.strerror}"
                ) from exc

    def read_bytes(self, repo_id: str, sha: str, filename: str, max_bytes: int) -> bytes | None:
        """The bytes of a file in a snapshot, or None when it is absent; never more than ``max_bytes`` read."""
        with self._open(repo_id, sha, filename) as file:
            if file is None:
                return None
            size = os.fstat(file.fileno()).st_size
            if size > max_bytes:
                raise too_large(filename, size, max_bytes)
            data = file.read(max_bytes + 1)
            if len(data) > max_bytes:  # it grew since fstat
                raise too_large(filename, len(data), max_bytes)
            return data

    def safetensors_headers(self, repo_id: str, sha: str) -> dict[str, dict[str, Any]]:
        """Headers of the ``*.safetensors`` files at the repository root, the ones transformers loads."""
        snapshot = self._snapshot_dir(repo_id, sha)
        headers = {}
        for name in _files_under(snapshot):
            if "/" not in name and name.endswith(".safetensors"):
                with self._open(repo_id, sha, name) as file:
                    if file is not None:
                        headers[name] = parse_safetensors_header(file, name)
        return headers

    def add_snapshot(self, repo_id: str, source_dir: Path, branch: str = "main") -> str:
        """Copy a folder of files in as a snapshot and point ``refs/<branch>`` at it; return its sha.

        The sha is the sha1 of the sorted (relative path, content digest) pairs, so the same files always
        make the same commit. Sparse files stay sparse.
        """
        folder = self.repo_dir(repo_id)
        ref = folder / "refs" / Path(*repo_relative_path(branch, "branch name").parts)
        names = _files_under(Path(source_dir))
        commit = hashlib.sha1(usedforsecurity=False)
        for name in names:
            commit.update(f"{name}\0{file_digest(Path(source_dir, name))}\n".encode())
        sha = commit.hexdigest()
        snapshot = folder / "snapshots" / sha
        if not snapshot.is_dir():
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=snapshot.parent))
            staging.chmod(
                0o755
            )  # mkdtemp's 0700 would hide the snapshot from an evaluator running as another user
            try:
                for name in names:
                    target = staging / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _copy_sparse(Path(source_dir, name), target)
                staging.rename(snapshot)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(sha, encoding="utf-8")
        return sha
