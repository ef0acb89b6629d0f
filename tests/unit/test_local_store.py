"""The local model store: the Hub cache layout, read like the Hub, and safe against hostile file names."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from backend.errors import (
    InvalidInput,
    ModelNotFound,
    ModelSourceError,
    RepoFileInvalid,
    RepoFileRefused,
    RevisionNotFound,
)
from backend.hub.factory import model_source_from_settings
from backend.hub.hub_client import HubModelSource
from backend.hub.local_store import LocalModelStore, file_digest

LIMIT = 1_000_000

SHA_A = "a" * 40


def _folder(tmp_path: Path, files: dict[str, str | bytes], name: str = "src") -> Path:
    folder = tmp_path / name
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return folder


@pytest.fixture
def store(tmp_path: Path) -> LocalModelStore:
    return LocalModelStore(tmp_path / "store")


def test_a_snapshot_resolves_by_branch_full_sha_and_short_sha(tmp_path: Path, store: LocalModelStore) -> None:
    source = _folder(tmp_path, {"config.json": "{}", "sub/dir/b.txt": "b", "README.md": "card"})
    sha = store.add_snapshot("org/model", source)
    assert len(sha) == 40
    assert (store.root / "models--org--model" / "refs" / "main").read_text() == sha
    for revision in ("main", sha, sha[:7]):
        resolved = store.resolve("org/model", revision)
        assert resolved.sha == sha
        assert resolved.files == ("README.md", "config.json", "sub/dir/b.txt")
        assert (resolved.gated, resolved.private, resolved.likes) == (False, False, 0)


def test_the_sha_depends_on_the_files_only(tmp_path: Path) -> None:
    one = LocalModelStore(tmp_path / "one").add_snapshot(
        "org/m", _folder(tmp_path, {"a": "1", "b/c": "2"}, "x")
    )
    two = LocalModelStore(tmp_path / "two").add_snapshot(
        "org/m", _folder(tmp_path, {"b/c": "2", "a": "1"}, "y")
    )
    changed = LocalModelStore(tmp_path / "two").add_snapshot(
        "org/m", _folder(tmp_path, {"a": "1", "b/c": "3"}, "z")
    )
    renamed = LocalModelStore(tmp_path / "two").add_snapshot(
        "org/m", _folder(tmp_path, {"a": "1", "b/d": "2"}, "w")
    )
    assert one == two
    assert len({one, changed, renamed}) == 3


def test_branches_move_and_old_commits_stay(tmp_path: Path, store: LocalModelStore) -> None:
    first = store.add_snapshot("org/m", _folder(tmp_path, {"a": "1"}, "x"))
    second = store.add_snapshot("org/m", _folder(tmp_path, {"a": "2"}, "y"))
    tagged = store.add_snapshot("org/m", _folder(tmp_path, {"a": "1"}, "z"), branch="v1.0")
    assert tagged == first
    assert store.resolve("org/m", "main").sha == second
    assert store.resolve("org/m", "v1.0").sha == first
    assert store.resolve("org/m", first).sha == first


def test_an_unknown_repository_is_model_not_found(store: LocalModelStore) -> None:
    with pytest.raises(ModelNotFound, match="org/absent"):
        store.resolve("org/absent", "main")


@pytest.mark.parametrize("repo_id", ["../etc", "org/../x", "a/b/c", "org--x/y", "", "org/", "gpt2"])
def test_an_invalid_repository_id_is_model_not_found(store: LocalModelStore, repo_id: str) -> None:
    with pytest.raises(ModelNotFound, match="not a valid repository id"):
        store.resolve(repo_id, "main")


def test_an_unknown_revision_names_the_revisions_that_exist(tmp_path: Path, store: LocalModelStore) -> None:
    sha = store.add_snapshot("org/m", _folder(tmp_path, {"a": "1"}))
    for revision in (
        "dev",
        "0" * 40,
        "0123456",
        "../../refs/main",
        "/etc/passwd",
        "",
        "x\x00y",
        "b" * 10_000,
    ):
        with pytest.raises(RevisionNotFound) as caught:
            store.resolve("org/m", revision)
        assert "main" in caught.value.message and sha in caught.value.message
        assert len(caught.value.message) < 300  # a long revision is not echoed whole


def test_an_ambiguous_short_sha_is_refused(store: LocalModelStore) -> None:
    for sha in ("abcdef0" + "1" * 33, "abcdef0" + "2" * 33):
        (store.repo_dir("org/m") / "snapshots" / sha).mkdir(parents=True)
    with pytest.raises(RevisionNotFound, match="ambiguous"):
        store.resolve("org/m", "abcdef0")


def test_a_ref_to_a_missing_snapshot_is_a_store_error(store: LocalModelStore) -> None:
    refs = store.repo_dir("org/m") / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(SHA_A)
    with pytest.raises(ModelSourceError, match="inconsistent"):
        store.resolve("org/m", "main")


def test_read_bytes_of_present_and_absent_files(tmp_path: Path, store: LocalModelStore) -> None:
    sha = store.add_snapshot("org/m", _folder(tmp_path, {"config.json": '{"a": 1}', "d/x.txt": b"\xffok"}))
    assert store.read_bytes("org/m", sha, "config.json", LIMIT) == b'{"a": 1}'
    assert store.read_bytes("org/m", sha, "d/x.txt", LIMIT) == b"\xffok"
    assert store.read_bytes("org/m", sha, "missing.json", LIMIT) is None
    assert store.read_bytes("org/m", sha, "d", LIMIT) is None
    with pytest.raises(RevisionNotFound):
        store.read_bytes("org/m", SHA_A, "config.json", LIMIT)
    with pytest.raises(RevisionNotFound):
        store.read_bytes(
            "org/m", "main", "config.json", LIMIT
        )  # only commits, never branches, past resolve()


def test_a_file_over_its_limit_is_refused_unread(tmp_path: Path, store: LocalModelStore) -> None:
    source = _folder(tmp_path, {"config.json": "{}"})
    os.truncate(source / "config.json", 2**40)  # a terabyte of hole: reading it whole would never end
    sha = store.add_snapshot("org/m", source)
    with pytest.raises(RepoFileRefused, match=r"1,099,511,627,776 bytes, above the 1,000,000-byte limit"):
        store.read_bytes("org/m", sha, "config.json", LIMIT)


@pytest.mark.parametrize(
    "name", ["../refs/main", "../../../secret", "/etc/passwd", "a/../../x", "a\\..\\x", ""]
)
def test_file_names_that_leave_the_repository_are_refused(
    tmp_path: Path, store: LocalModelStore, name: str
) -> None:
    sha = store.add_snapshot("org/m", _folder(tmp_path, {"a": "1"}))
    with pytest.raises(InvalidInput, match="refused"):
        store.read_bytes("org/m", sha, name, LIMIT)


def _hub_cache_repo(store: LocalModelStore) -> Path:
    """org/m in the layout `hf download` writes: a snapshot of links into blobs/, and refs/main."""
    repo = store.repo_dir("org/m")
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "123abc").write_text('{"model_type": "llama"}')
    snapshot = repo / "snapshots" / SHA_A
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").symlink_to("../../blobs/123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA_A + "\n")
    return snapshot


def test_the_hub_cache_layout_with_blobs_and_symlinks_is_read(store: LocalModelStore) -> None:
    _hub_cache_repo(store)
    assert store.resolve("org/m", "main").files == ("config.json",)
    assert store.read_bytes("org/m", SHA_A, "config.json", LIMIT) == b'{"model_type": "llama"}'


@pytest.mark.parametrize(
    "link",
    [
        "tokenizer.json",  # a file
        "sub/vocab.json",  # a file in a folder
        "folder",  # a folder: whatever is under it would be read
        "dangling.json",  # to an outside path that does not exist (yet)
    ],
)
def test_a_snapshot_with_a_link_leaving_the_repository_does_not_resolve(
    tmp_path: Path, store: LocalModelStore, link: str
) -> None:
    snapshot = _hub_cache_repo(store)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"secret": true}')
    target = {"folder": outside, "dangling.json": outside / "absent"}.get(link, outside / "secret.json")
    (snapshot / link).parent.mkdir(parents=True, exist_ok=True)
    (snapshot / link).symlink_to(target)
    with pytest.raises(RepoFileRefused, match="link that leaves the repository") as caught:
        store.resolve("org/m", "main")
    assert caught.value.filename == link
    assert str(tmp_path) not in caught.value.message


def test_a_link_into_another_repository_of_the_store_is_refused(store: LocalModelStore) -> None:
    snapshot = _hub_cache_repo(store)
    other = store.repo_dir("org/other") / "snapshots" / SHA_A
    other.mkdir(parents=True)
    (other / "tokenizer.json").write_text("{}")
    (snapshot / "tokenizer.json").symlink_to(other / "tokenizer.json")
    with pytest.raises(RepoFileRefused):
        store.resolve("org/m", "main")


def test_reading_a_link_leaving_the_repository_is_refused(tmp_path: Path, store: LocalModelStore) -> None:
    """A link made after resolve() (or read by sha without it) is refused when read, for every reader."""
    snapshot = _hub_cache_repo(store)
    (tmp_path / "secret").write_text("do not read")
    (snapshot / "leak.txt").symlink_to(tmp_path / "secret")
    (snapshot / "model.safetensors").symlink_to(tmp_path / "secret")
    with pytest.raises(RepoFileRefused, match="leaves the repository"):
        store.read_bytes("org/m", SHA_A, "leak.txt", LIMIT)
    with pytest.raises(RepoFileRefused, match="leaves the repository"):
        store.safetensors_headers("org/m", SHA_A)


def test_messages_name_repositories_never_the_store_folder(tmp_path: Path, store: LocalModelStore) -> None:
    sha = store.add_snapshot("org/m", _folder(tmp_path, {"a": "1"}))
    (store.repo_dir("org/m") / "refs" / "broken").write_text("f" * 40)
    errors = []
    for call in (
        lambda: store.resolve("org/absent", "main"),
        lambda: store.resolve("org/m", "dev"),
        lambda: store.resolve("org/m", "broken"),
        lambda: store.read_bytes("org/m", "0" * 40, "a", LIMIT),
    ):
        with pytest.raises(ModelSourceError) as caught:
            call()
        errors.append(caught.value.message)
    assert all(str(store.root) not in m and str(tmp_path) not in m for m in errors), errors
    assert "org/absent" in errors[0] and "'dev'" in errors[1] and sha in errors[1]


def test_huggingface_hub_reads_the_store_offline_by_repo_id(tmp_path: Path, store: LocalModelStore) -> None:
    from huggingface_hub import try_to_load_from_cache

    sha = store.add_snapshot("org/m", _folder(tmp_path, {"config.json": "{}"}))
    found = try_to_load_from_cache("org/m", "config.json", cache_dir=store.root, revision="main")
    assert found == str(store.root / "models--org--m" / "snapshots" / sha / "config.json")


def test_safetensors_headers_of_root_files_only(tmp_path: Path, store: LocalModelStore) -> None:
    source = _folder(tmp_path, {"sub/x.safetensors": b"not even a header", "config.json": "{}"})
    save_file({"w": np.zeros((3, 4), np.float32)}, source / "model-00001-of-00002.safetensors")
    save_file({"v": np.zeros(7, np.float16)}, source / "model-00002-of-00002.safetensors")
    sha = store.add_snapshot("org/m", source)
    headers = store.safetensors_headers("org/m", sha)
    assert sorted(headers) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert headers["model-00001-of-00002.safetensors"]["w"]["shape"] == [3, 4]


def test_a_malformed_safetensors_header_names_the_file(tmp_path: Path, store: LocalModelStore) -> None:
    sha = store.add_snapshot("org/m", _folder(tmp_path, {"model.safetensors": b"\xff" * 64}))
    with pytest.raises(RepoFileInvalid, match=r"model\.safetensors"):
        store.safetensors_headers("org/m", sha)


def test_sparse_files_stay_sparse_and_digest_like_their_dense_copy(
    tmp_path: Path, store: LocalModelStore
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    sparse = source / "big.bin"
    sparse.write_bytes(b"head")
    os.truncate(sparse, 200 * 2**30)  # 200 GiB of hole
    sha = store.add_snapshot("org/m", source)
    copied = store.repo_dir("org/m") / "snapshots" / sha / "big.bin"
    assert copied.stat().st_size == 200 * 2**30
    assert copied.stat().st_blocks * 512 < 2**20
    with copied.open("rb") as file:
        assert file.read(4) == b"head"

    small_sparse, dense = tmp_path / "s.bin", tmp_path / "d.bin"
    small_sparse.write_bytes(b"x")
    os.truncate(small_sparse, 20 * 2**20 + 5)
    dense.write_bytes(b"x" + bytes(20 * 2**20 + 4))
    assert file_digest(small_sparse) == file_digest(dense)


def test_the_factory_prefers_a_configured_local_store(tmp_path: Path) -> None:
    local = model_source_from_settings(tmp_path / "store")
    assert isinstance(local, LocalModelStore) and local.root == tmp_path / "store"
    assert isinstance(model_source_from_settings(None, hf_token=None, cache_dir=tmp_path), HubModelSource)


def test_repositories_are_listed_and_a_snapshot_has_its_folder(
    tmp_path: Path, store: LocalModelStore
) -> None:
    sha = store.add_snapshot("org-b/model.v2", _folder(tmp_path, {"config.json": "{}"}))
    store.add_snapshot("org-a/model", _folder(tmp_path, {"config.json": "{}"}, "other"))
    (store.root / "models--org--not--a--repo").mkdir()  # no repository's folder
    (store.root / "datasets--org--data").mkdir()
    (store.root / "models--org--file").write_text("not a folder")
    assert store.repositories() == ["org-a/model", "org-b/model.v2"]
    assert (store.snapshot_dir("org-b/model.v2", sha) / "config.json").is_file()
    with pytest.raises(RevisionNotFound):
        store.snapshot_dir("org-b/model.v2", SHA_A)
    assert LocalModelStore(tmp_path / "absent").repositories() == []
