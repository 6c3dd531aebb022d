"""``qd_tasks.folder_swap.replace_folder``: the one routine that replaces a folder as a whole,
with faults injected at each step (the write, the first rename, the second rename)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qd_tasks import folder_swap
from qd_tasks.folder_swap import check_folder_target, replace_folder


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> text of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def old_folder(tmp_path: Path) -> Path:
    target = tmp_path / "dir"
    (target / "sub").mkdir(parents=True)
    (target / "a.txt").write_text("old a")
    (target / "sub" / "b.txt").write_text("old b")
    return target


def write_new(folder: Path) -> str:
    (folder / "new.txt").write_text("new")
    return "returned"


def test_replaces_the_whole_folder_and_leaves_no_sibling(tmp_path):
    target = old_folder(tmp_path)
    assert replace_folder(target, write_new) == "returned"
    assert tree(target) == {"new.txt": "new"}  # no old file mixed in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]
    assert replace_folder(tmp_path / "new" / "deeper", write_new) == "returned"  # missing parents are made
    assert tree(tmp_path / "new") == {"deeper/new.txt": "new"}


@pytest.mark.parametrize("error", [RuntimeError("write failed"), KeyboardInterrupt()])
def test_a_failing_write_leaves_the_folder_as_it_was(tmp_path, error):
    target = old_folder(tmp_path)
    before = tree(target)

    def half_written(folder):
        (folder / "a.txt").write_text("half")
        raise error

    with pytest.raises(type(error)):
        replace_folder(target, half_written)
    assert tree(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


@pytest.mark.parametrize("failing", [1, 2])
def test_a_failing_rename_restores_the_old_folder(tmp_path, monkeypatch, failing):
    """Rename 1 moves DIR aside, rename 2 moves the staged folder to DIR: either failing leaves DIR
    with its old contents and no hidden sibling."""
    target = old_folder(tmp_path)
    before = tree(target)
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == failing:
            raise OSError("injected rename failure")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="injected rename failure"):
        replace_folder(target, write_new)
    monkeypatch.setattr(os, "rename", real_rename)
    assert tree(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["dir"]
    assert calls[0][0] == "dir" and calls[0][1].startswith(".old-dir-")  # the order the test relies on
    if failing == 2:
        assert calls[1][0].startswith(".tmp-dir-") and calls[1][1] == "dir"
        assert calls[2] == (calls[0][1], "dir")  # the restore


def test_a_failed_restore_says_where_the_old_contents_are(tmp_path, monkeypatch):
    target = old_folder(tmp_path)
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append(src)
        if len(calls) >= 2:
            raise OSError("injected")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError) as error:
        replace_folder(target, write_new)
    aside = next(p for p in tmp_path.iterdir() if p.name.startswith(folder_swap.OLD_PREFIX))
    assert f"its old contents are in {aside}" in str(error.value)
    assert tree(aside) == {"a.txt": "old a", "sub/b.txt": "old b"}


def test_a_link_is_followed_and_stays_a_link(tmp_path):
    real = old_folder(tmp_path / "store")
    links = tmp_path / "links"
    links.mkdir()
    (links / "dir").symlink_to(real)
    replace_folder(links / "dir", write_new)
    assert (links / "dir").is_symlink() and os.readlink(links / "dir") == str(real)
    assert tree(real) == {"new.txt": "new"}
    assert sorted(p.name for p in links.iterdir()) == ["dir"] and sorted(p.name for p in real.parent.iterdir()) == ["dir"]
    (links / "dangling").symlink_to(tmp_path / "store" / "later")  # a link to a folder not made yet: made there
    replace_folder(links / "dangling", write_new)
    assert (links / "dangling").is_symlink() and tree(tmp_path / "store" / "later") == {"new.txt": "new"}


def test_refuses_a_file_and_any_overlap_with_an_input(tmp_path):
    target = old_folder(tmp_path)
    source = target / "sub"
    (tmp_path / "file").write_text("x")
    outside = tmp_path / "elsewhere" / "input.csv"

    def refusal(folder, inputs):
        with pytest.raises(ValueError) as error:
            replace_folder(folder, write_new, inputs, what=f"out={folder}")
        return str(error.value)

    assert refusal(tmp_path / "file", []) == f"out={tmp_path / 'file'} is an existing file; allowed: a folder"
    assert refusal(target, [source]) == f"out={target} holds the input {source}; allowed: a folder outside the inputs"
    assert refusal(target, [target]) == f"out={target} holds the input {target}; allowed: a folder outside the inputs"
    assert refusal(source, [target]) == f"out={source} is inside the input {target}; allowed: a folder outside the inputs"
    link = tmp_path / "link"
    link.symlink_to(target)
    assert "holds the input" in refusal(link, [source])  # through a link too
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "model").symlink_to(outside.parent)
    assert "holds the input" in refusal(tmp_path / "links", [tmp_path / "links" / "model"])  # would delete the link
    assert "holds the input" in refusal(tmp_path / "x" / "..", [source])  # tmp_path itself, written another way
    assert tree(target) == {"a.txt": "old a", "sub/b.txt": "old b"} and (tmp_path / "file").read_text() == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert check_folder_target(target, [outside, tmp_path / "dirx"]) == target  # a sibling sharing a name prefix is no overlap
