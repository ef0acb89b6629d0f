"""backend.paths: the one place a path is built from data, and the guard that keeps it in its root."""

from __future__ import annotations

import pytest

from backend.errors import UnsafePath
from backend.paths import inside, inside_relative, parts_of


@pytest.mark.parametrize("part", ["", ".", "..", "a/b", "a\\b", "a\x00b", "x" * 256, 7, None])
def test_a_part_that_is_not_a_plain_name_is_refused(tmp_path, part):
    with pytest.raises(UnsafePath, match="is not a plain file name"):
        inside(tmp_path, "ok", part)


@pytest.mark.parametrize("relative", ["../x", "a/../../x", "/etc/passwd", "a//..", ""])
def test_a_relative_path_with_a_dot_part_or_an_absolute_one_is_refused(tmp_path, relative):
    with pytest.raises(UnsafePath):
        inside_relative(tmp_path, relative)


def test_plain_names_build_the_path_inside_the_root(tmp_path):
    assert (
        inside(tmp_path, "org", "model_eval_request.json")
        == tmp_path.resolve() / "org" / "model_eval_request.json"
    )
    assert (
        inside_relative(tmp_path, "results/org/m/r.json")
        == tmp_path.resolve() / "results" / "org" / "m" / "r.json"
    )
    assert parts_of("details/org__m/task/x.parquet") == ("details", "org__m", "task", "x.parquet")


def test_a_link_inside_the_root_that_points_out_of_it_is_refused(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "org").symlink_to(elsewhere)
    with pytest.raises(UnsafePath, match="leads out of its folder"):
        inside(root, "org", "file.json")
    (root / "here").symlink_to(root / "sub", target_is_directory=True)
    (root / "sub").mkdir()
    assert inside(root, "here", "file.json").parent.resolve() == (root / "sub").resolve()  # inside: allowed


def test_a_root_that_is_itself_a_link_is_followed(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert inside(tmp_path / "link", "a.json") == (tmp_path / "real" / "a.json")
