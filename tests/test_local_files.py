"""Reading listed files whole: exactly as listed, or None for the caller's careful read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from course_exports.local_files import read_listed


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def tree(tmp_path: Path) -> list[tuple[str, bytes]]:
    files = []
    for i in range(30):
        folder = tmp_path / f"w{i % 4}" / ("src" if i % 3 else "")
        folder.mkdir(parents=True, exist_ok=True)
        data = os.urandom(i * 37)
        (folder / f"f{i}.bin").write_bytes(data)
        files.append((str(folder / f"f{i}.bin"), data))
    return files


def test_files_from_many_folders_come_back_in_order(tree: list[tuple[str, bytes]]) -> None:
    before = _open_fds()
    blobs = read_listed([p for p, _ in tree], [len(d) for _, d in tree])
    assert blobs == [d for _, d in tree]
    assert _open_fds() == before  # every folder and file closed


def test_relative_and_root_level_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.txt").write_bytes(b"abc")
    monkeypatch.chdir(tmp_path)
    assert read_listed(["a.txt", "./a.txt", str(tmp_path / "a.txt")], [3, 3, 3]) == [b"abc"] * 3


@pytest.mark.parametrize("change", ["grew", "shrank", "gone", "folder", "dir"])
def test_a_file_not_as_listed_gives_none(
    tree: list[tuple[str, bytes]], tmp_path: Path, change: str
) -> None:
    paths, sizes = [p for p, _ in tree], [len(d) for _, d in tree]
    target = Path(paths[7])
    if change == "grew":
        target.write_bytes(tree[7][1] + b"x")
    elif change == "shrank":
        target.write_bytes(tree[7][1][:-1])
    elif change == "gone":
        target.unlink()
    elif change == "folder":
        paths[7] = str(tmp_path / "no-such-folder" / "f7.bin")
    else:
        target.unlink()
        target.mkdir()
    before = _open_fds()
    assert read_listed(paths, sizes) is None
    assert _open_fds() == before
