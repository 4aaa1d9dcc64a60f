"""A local walk that hands its rest to a helper process lists exactly what a walk in
this process lists, in the same order, and fails and stops the same way."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_exports.storage import local_walk, open_location

# Names that test the order (a folder sorts as its name + "/": "a-b" < "a/" < "a0"),
# and what file systems allow but UTF-8 does not (a byte that decodes to a surrogate).
_NAME = st.sampled_from(["a", "a-b", "a.txt", "a0", "B", "é", "x y", "n\nl", os.fsdecode(b"\xff")])
_TREE = st.recursive(
    st.sampled_from(["file", "empty", "link", "fifo"]),
    lambda children: st.dictionaries(_NAME, children, max_size=4),
    max_leaves=25,
)


def _make(folder: Path, tree: object, outside: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    assert isinstance(tree, dict)
    for name, node in tree.items():
        path = folder / name
        if isinstance(node, dict):
            _make(path, node, outside)
        elif node == "file":
            path.write_bytes(name.encode(errors="surrogateescape") * 3)
        elif node == "empty":
            path.write_bytes(b"")
        elif node == "link":
            path.symlink_to(outside)
        else:
            os.mkfifo(path)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=st.dictionaries(_NAME, _TREE, max_size=5))
def test_a_walk_handed_off_anywhere_lists_the_same(
    tmp_path_factory: pytest.TempPathFactory, tree: dict
) -> None:
    root = tmp_path_factory.mktemp("walk")
    (root / "outside").write_text("secret")
    _make(root / "w", tree, root / "outside")
    here = list(local_walk.walk(str(root / "w"), "w", hand_off_after=10**9))
    # Key order of the whole paths, regular files only: no link, no FIFO, no folder.
    regular = sorted(
        str(p.relative_to(root))
        for p in (root / "w").rglob("*")
        if p.is_file() and not p.is_symlink()
    )
    assert [rel for rel, *_ in here] == regular
    for after in (0, 1, 3):
        assert list(local_walk.walk(str(root / "w"), "w", hand_off_after=after)) == here


def test_the_location_lists_through_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loc = open_location(str(tmp_path))
    for i in range(30):
        loc.write_bytes_atomic(b"x" * i, "w", str(i % 3), f"{i}.txt")
    here = list(loc.iter_files("w"))
    monkeypatch.setattr(local_walk, "HAND_OFF_AFTER", 2)
    assert list(loc.iter_files("w")) == here  # sizes, times and tags included
    assert [e.size for e in here] == [int(e.path.rsplit("/", 1)[1].split(".")[0]) for e in here]
    for entry in here:  # the time to the last bit, as ``os.stat`` gives it
        assert entry.mtime == datetime.fromtimestamp(os.stat(tmp_path / entry.path).st_mtime, UTC)


def _too_deep(root: Path) -> Path:
    """A folder whose path is longer than the system takes (its scandir fails)."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(24):
            os.mkdir("d" * 200, dir_fd=fd)
            inner = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    return root


def test_a_failure_in_the_helper_is_the_same_error(tmp_path: Path) -> None:
    (tmp_path / "a1.txt").write_text("1")  # before the deep folder: the helper meets it
    (tmp_path / "a2.txt").write_text("2")
    _too_deep(tmp_path)
    for after in (10**9, 1):
        with pytest.raises(OSError) as caught:
            list(local_walk.walk(str(tmp_path), "", hand_off_after=after))
        assert caught.value.errno == errno.ENAMETOOLONG


def test_a_walk_stopped_early_leaves_no_helper(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"{i:02}").mkdir()
        (tmp_path / f"{i:02}" / "f.txt").write_text("x")
    before = {child.pid for child in psutil.Process().children()}  # the session's servers
    walk = local_walk.walk(str(tmp_path), "", hand_off_after=1)
    assert [next(walk)[0] for _ in range(3)] == ["00/f.txt", "01/f.txt", "02/f.txt"]
    [helper] = [child for child in psutil.Process().children() if child.pid not in before]
    walk.close()
    assert not helper.is_running()  # killed and reaped, not left behind as a zombie


def test_the_helper_stats_by_name_what_a_whole_path_stat_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The helper stats a file by its name in its folder made the working directory: the
    # same answer as a stat of the whole path, for files, links, FIFOs, folders, a file
    # or a folder that is gone, and, above the length where a path could pass the system's
    # limit, by the whole path again.
    monkeypatch.chdir(tmp_path)  # the helper's way changes the directory: put it back
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_bytes(b"abc")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "a" / "f.txt")
    os.mkfifo(tmp_path / "a" / "fifo")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "g.txt").write_bytes(b"de")
    names = ["a/f.txt", "a/link", "a/fifo", "b", "b/g.txt", "a/gone", "gone/x", "b/g.txt"]
    by_name = local_walk._StatByName()
    for up_to in (1000, 5):
        monkeypatch.setattr(local_walk, "_BY_NAME_UP_TO", up_to)
        for name in names:
            path = str(tmp_path / name)
            assert by_name(path, name) == local_walk._stat(path, name), (up_to, name)
    found = by_name(str(tmp_path / "b" / "g.txt"), "b/g.txt")
    assert found is not None and found[1] == 2
