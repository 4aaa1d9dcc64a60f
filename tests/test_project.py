"""Import Project: the workspace lands whole under its project, or nothing changes.

How a hostile or damaged archive is refused is in ``test_export_reader.py``; this file
is about what an import writes: paths restored from the manifest, the copy that
``project.json`` commits, and an earlier copy that survives a failed re-import.
"""

from __future__ import annotations

import errno
import json
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
from importkit import (
    GOOD,
    STACK,
    TOP,
    archive,
    build,
    entry,
    good_files,
    import_,
    nothing_imported,
    publish,
    reserve,
    run,
    snapshot,
    workspace_files,
)

from course_exports.errors import InputError, NotFoundError
from course_exports.export_records import ExportRecord
from course_exports.project import ImportLimits, UnsafeArchiveError
from course_exports.storage import LocalLocation, Location, open_location


@pytest.fixture
def exports(tmp_path: Path) -> Location:
    return open_location(str(tmp_path / "exports"))


def test_good_archive_round_trip(exports: Location) -> None:
    project = run(exports, archive(good_files()))
    assert workspace_files(project) == GOOD
    root = Path(project.project_url)
    stored = json.loads((root / "project.json").read_text())
    assert stored["stack"] == STACK and stored["workspace"] == project.workspace
    assert project.files == 3 and project.workspace_url == str(root / project.workspace)
    assert sorted(p.name for p in root.iterdir()) == sorted(["project.json", project.workspace])


def test_names_are_restored_from_the_manifest(exports: Location) -> None:
    data = b"x = 1\n"
    project = run(
        exports,
        archive(
            [("workspaces/Loops/ana/a_b.py", data)],
            [entry("workspaces/Loops/ana/a_b.py", data, source="a:b.py")],
        ),
    )
    assert workspace_files(project) == {"a:b.py": data}


@pytest.mark.parametrize(
    "source", ["../../etc/cron.d/evil", "/etc/passwd", "a/../../x", "C:/evil", "a\\..\\b", ""]
)
def test_zip_slip_through_the_manifest_is_refused(exports: Location, source: str) -> None:
    data = b"boom"
    made = archive(
        [("workspaces/Loops/ana/x", data)],
        [entry("workspaces/Loops/ana/x", data, source=source)],
    )
    with pytest.raises(UnsafeArchiveError, match="unsafe"):
        run(exports, made)
    assert nothing_imported(exports)


@pytest.mark.parametrize("name", ["../evil.txt", "/abs.txt"])
def test_escaping_entry_names_are_refused(exports: Location, name: str) -> None:
    def add(zf: zipfile.ZipFile) -> None:
        zf.writestr(zipfile.ZipInfo(name), b"x")

    with pytest.raises(UnsafeArchiveError):
        run(exports, archive(good_files(), tweak=add))
    assert nothing_imported(exports)


def test_symbolic_links_are_refused(exports: Location) -> None:
    def add(zf: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo(f"{TOP}/workspaces/Loops/ana/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")

    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        run(exports, archive(good_files(), tweak=add))
    assert nothing_imported(exports)


def test_zip_bombs_are_refused(exports: Location) -> None:
    zeros = b"\0" * (4 * 2**20)
    bomb = archive([(f"workspaces/Loops/ana/z{i}", zeros) for i in range(8)])
    with pytest.raises(UnsafeArchiveError, match="out of proportion"):
        run(exports, bomb, limits=ImportLimits(max_ratio=100))
    with pytest.raises(UnsafeArchiveError, match="out of proportion"):
        run(exports, bomb, limits=ImportLimits(max_total_bytes=16 * 2**20))
    with pytest.raises(UnsafeArchiveError, match="entries"):
        run(exports, bomb, limits=ImportLimits(max_entries=5))
    assert nothing_imported(exports)


def test_tampered_file_is_refused_and_the_partial_import_removed(exports: Location) -> None:
    files = good_files()
    entries = [entry(n, d) for n, d in files]
    entries[-1]["sha256"] = "0" * 64  # the last file no longer matches
    with pytest.raises(UnsafeArchiveError, match="does not match the manifest"):
        run(exports, archive(files, entries))
    assert nothing_imported(exports)


def test_missing_workspace_and_missing_stack(exports: Location) -> None:
    with pytest.raises(NotFoundError, match="student 10"):
        run(exports, archive(good_files()), student_id=10)
    no_stack = archive(good_files(), stack=None)
    with pytest.raises(InputError, match="choose one"):
        run(exports, no_stack)
    assert run(exports, no_stack, stack="java-21").stack == {"id": "java-21", "name": "java-21"}


# -- item 8: a re-import replaces the earlier copy only once the new one is complete ----------


class FailingLocation(LocalLocation):
    """The real local folder, except that the n-th file opened for writing fails (a full
    disk, a dropped connection): a fault injected in the middle of an import."""

    def __init__(self, root: str, fail_at: int) -> None:
        super().__init__(root)
        self.fail_at = fail_at
        self.writes = 0

    def open_write(self, *parts: Any, part_bytes: int = 16 * 2**20) -> Any:
        self.writes += 1
        if self.writes == self.fail_at:
            raise OSError(errno.ENOSPC, "No space left on device (injected)", self.url_for(*parts))
        return super().open_write(*parts, part_bytes=part_bytes)


def imported_once(exports: Location) -> tuple[ExportRecord, Path, dict[str, bytes]]:
    record = reserve(exports)
    record = publish(exports, record, build(record.export_id, good_files()))
    project = import_(exports, record)
    root = Path(project.project_url)
    return record, root, snapshot(root)


def test_a_reimport_failing_midway_keeps_the_earlier_copy(exports: Location) -> None:
    record, root, before = imported_once(exports)
    flaky = FailingLocation(exports.root, fail_at=2)
    with pytest.raises(OSError, match="injected"):
        import_(flaky, record, stack="java-21")
    assert flaky.writes == 2  # one file of the new copy was written before the failure
    assert snapshot(root) == before  # the earlier project, byte for byte, and nothing else


def test_a_refused_reimport_keeps_the_earlier_copy(exports: Location) -> None:
    record, root, before = imported_once(exports)
    files = good_files()
    entries = [entry(n, d) for n, d in files]
    entries[-1]["sha256"] = "0" * 64
    Path(record.file_url).write_bytes(build(record.export_id, files, entries))
    with pytest.raises(UnsafeArchiveError):
        import_(exports, record, stack="java-21")
    assert snapshot(root) == before


def test_a_reimport_replaces_the_copy_and_clears_what_crashed_imports_left(
    exports: Location,
) -> None:
    record, root, _ = imported_once(exports)
    first = json.loads((root / "project.json").read_text())["workspace"]
    crashed = root / "workspace-20200101T000000Z-deadbeef"  # a crash years ago
    running = root / "workspace-29990101T000000Z-cafef00d"  # another import, still writing
    legacy = root / "workspace"  # the layout before copies were versioned
    for folder in (crashed, running, legacy):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "f.txt").write_bytes(b"left over")
    (root / "notes.txt").write_bytes(b"not ours to judge")
    again = import_(exports, record, stack="java-21")
    assert again.project_id == root.name and again.stack["id"] == "java-21"
    assert again.workspace != first
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["project.json", again.workspace, running.name, "notes.txt"]
    )
    assert workspace_files(again) == GOOD


def test_a_project_of_the_first_layout_is_replaced(exports: Location) -> None:
    record, root, _ = imported_once(exports)
    stored = json.loads((root / "project.json").read_text())
    (root / stored.pop("workspace")).rename(root / "workspace")
    (root / "project.json").write_text(json.dumps(stored))
    again = import_(exports, record)
    assert sorted(p.name for p in root.iterdir()) == sorted(["project.json", again.workspace])


class FailingCommit(LocalLocation):
    """Real storage whose atomic writes fail: the commit itself does not happen."""

    def write_bytes_atomic(self, data: bytes, *parts: str | int) -> None:
        raise OSError(errno.EIO, "I/O error (injected)")


def test_a_reimport_failing_at_the_commit_keeps_the_earlier_copy(exports: Location) -> None:
    record, root, before = imported_once(exports)
    with pytest.raises(OSError, match="injected"):
        import_(FailingCommit(exports.root), record, stack="java-21")
    assert snapshot(root) == before  # the staged copy, complete but uncommitted, is gone


@pytest.mark.parametrize("damage", [b"{not json", b"{}" + b" " * (2**20)])
def test_an_unreadable_project_json_does_not_stop_a_reimport(
    exports: Location, damage: bytes
) -> None:
    record, root, _ = imported_once(exports)
    (root / "project.json").write_bytes(damage)
    again = import_(exports, record)
    assert workspace_files(again) == GOOD
    # the copy it no longer knows about is left until stale (it cannot tell it from a
    # copy another import is writing), then removed like any crashed import's
    assert len([p for p in root.iterdir() if p.name.startswith("workspace-")]) == 2
