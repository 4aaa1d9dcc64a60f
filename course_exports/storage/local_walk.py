"""Walking a local folder tree in key order, here or, for a large tree, in a helper process.

A listing is one ``lstat`` per file, and on this kind of VM the system call is CPU:
100,000 workspace files cost ~0.55 s of it, ~0.7 s with the walk's own Python, all on
the export process's core while the other core waits for the plan (a thread would not
help: every ``lstat`` gives the GIL back and waits to retake it). So a walk starts here
and, once it has found :data:`HAND_OFF_AFTER` files, hands what is left of it (from the
next folder on) to a helper process running this very file with no imports but the
standard library's, which stats and sends back ``(path, size, mtime, inode)`` records
while this process reads them: ~2.2 µs a file here instead of ~7 (the helper's ~6 run
on the other core; it stats each file by name in its folder, :class:`_StatByName`).
Small listings (a day's log, an export's folder) never start one.

Both sides walk with the same code, so the order is the same: key order, as S3 lists (a
folder sorts as its name + "/"), links and other non-regular files left out (a link in
a workspace could point anywhere on this machine), a file gone while listing skipped.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
from typing import IO

#: Files found in this process before the rest of a walk goes to a helper process. The
#: helper takes ~40 ms to start, and each file it lists then costs this process ~5 µs
#: less: it pays from ~8,000 files on, so only a tree larger than this starts one.
HAND_OFF_AFTER = 10_000
_SEP = b"\0"  # the one byte no path can hold
_DIR, _FILE = b"D", b"F"
_READ_BLOCK = 1 << 20


#: A folder still to walk or a file still to stat: its sort key (a folder's name + "/"),
#: whether it is a folder, its path, and its path relative to the walk's root. Plain
#: tuples: a named one costs a Python-level call per file.
Work = tuple[str, bool, str, str]
#: A file found: its relative path, size, modification time in ns and inode.
Found = tuple[str, int, int, int]


def _children(folder: str, rel: str) -> list[Work]:
    """A folder's entries in key order, reversed (the walk pops from the end)."""
    try:
        with os.scandir(folder) as it:
            items = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []
    prefix = f"{rel}/" if rel else ""
    works = [
        (item.name + "/", True, item.path, prefix + item.name)
        if item.is_dir(follow_symlinks=False)
        else (item.name, False, item.path, prefix + item.name)
        for item in items
    ]
    works.sort(reverse=True)  # by key: names are unique in a folder
    return works


def _stat(path: str, rel: str) -> Found | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:  # removed while listing
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return rel, st.st_size, st.st_mtime_ns, st.st_ino


class _StatByName:
    """The helper's stat: by name, in the file's folder made the working directory. The
    kernel then looks up one name instead of every folder on the way, and the stats are
    most of a walk (~30% less CPU a stat here). A process of its own may move its working
    directory; the export process may not (its threads share it). A path too long to
    stat whole is still stat'ed whole, so it fails here as it fails in the export process."""

    def __init__(self) -> None:
        self._cwd: str | None = None

    def __call__(self, path: str, rel: str) -> Found | None:
        folder, _, name = path.rpartition("/")
        if not folder or len(path) > _BY_NAME_UP_TO:
            return _stat(path, rel)
        if folder != self._cwd:
            self._cwd = None
            try:
                os.chdir(folder)
            except FileNotFoundError:  # the folder removed while listing
                return None
            self._cwd = folder
        return _stat(name, rel)


#: Longest path (in characters) stat'ed by name: any path under it is under the system's
#: limit in bytes (4,096 on Linux; a character is at most 4 bytes of UTF-8).
_BY_NAME_UP_TO = 1000


def walk(
    folder: str, rel: str, *, hand_off_after: int | None = None
) -> Generator[Found, None, None]:
    """Every regular file under ``folder``, in key order (``rel`` prefixes their paths);
    past ``hand_off_after`` files (default :data:`HAND_OFF_AFTER`), from a helper."""
    if hand_off_after is None:
        hand_off_after = HAND_OFF_AFTER
    yield from _walk([_children(folder, rel)], hand_off_after)


def _walk(
    stack: list[list[Work]],
    hand_off_after: int | None,
    stat_file: Callable[[str, str], Found | None] = _stat,
) -> Iterator[Found]:
    """The walk of what ``stack`` holds (each level reversed, innermost last); past
    ``hand_off_after`` files the rest goes to a helper (None: never, as in the helper)."""
    found = 0
    while stack:
        pending = stack[-1]
        if not pending:
            stack.pop()
            continue
        work = pending.pop()
        if work[1]:
            if hand_off_after is not None and found >= hand_off_after:
                pending.append(work)
                # What is left, in walk order: the innermost folder's rest first.
                yield from _elsewhere([w for level in reversed(stack) for w in reversed(level)])
                return
            stack.append(_children(work[2], work[3]))
        elif (entry := stat_file(work[2], work[3])) is not None:
            found += 1
            yield entry


def _elsewhere(works: list[Work]) -> Iterator[Found]:
    """The rest of a walk, done by a helper process: this file run as a script."""
    # Imported here: the helper runs this file with the standard library only.
    from course_exports.local_files import enlarge_pipe

    helper = subprocess.Popen(
        [sys.executable, "-I", "-S", __file__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert helper.stdin is not None and helper.stdout is not None and helper.stderr is not None
    enlarge_pipe(helper.stdout)  # the helper runs ahead instead of waiting on each read
    with helper, helper.stderr:
        try:
            helper.stdin.write(_SEP.join(_encode(w) for w in works))
            helper.stdin.close()
            yield from _read_found(helper.stdout)
            problem = helper.stderr.read()  # a few bytes on failure; stdout is done
        except BaseException:  # the caller stopped early, or reading failed
            helper.kill()
            raise
    if helper.returncode != 0:
        # The helper's OSError, rebuilt: the same errno gives the same subclass here.
        errno, strerror, filename = [*problem.split(_SEP), b"", b"", b""][:3]
        if errno.isdigit():
            raise OSError(int(errno), os.fsdecode(strerror), os.fsdecode(filename))
        raise OSError(f"listing a local folder failed: {problem.decode(errors='replace')}")


def _encode(work: Work) -> bytes:
    _, is_dir, path, rel = work
    return _SEP.join((_DIR if is_dir else _FILE, os.fsencode(path), os.fsencode(rel)))


def _read_found(source: IO[bytes]) -> Iterator[Found]:
    rest = b""
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    while block := source.read1(_READ_BLOCK):  # type: ignore[attr-defined]  # what has come
        fields = (rest + block).split(_SEP)
        whole = len(fields) - 1 - (len(fields) - 1) % 4  # complete records of 4 fields
        rest = _SEP.join(fields[whole:])
        for i in range(0, whole, 4):
            rel, size, mtime, inode = fields[i : i + 4]
            yield rel.decode(encoding, errors), int(size), int(mtime), int(inode)
    if rest:
        raise OSError("listing a local folder failed: the helper's answer was cut short")


def _serve() -> None:
    """The helper: walk what stdin names, write a record per file to stdout."""
    fields = sys.stdin.buffer.read().split(_SEP)
    works = [
        (
            "",
            fields[i] == _DIR,
            os.path.abspath(os.fsdecode(fields[i + 1])),  # before any change of directory
            os.fsdecode(fields[i + 2]),
        )
        for i in range(0, len(fields) - 2, 3)
    ]  # in walk order already: their keys are not needed
    out = sys.stdout.buffer
    buffer: list[bytes] = []
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    failure: OSError | None = None
    try:
        for rel, size, mtime, inode in _walk([works[::-1]], None, _StatByName()):
            buffer.append(b"%s\0%d\0%d\0%d\0" % (rel.encode(encoding, errors), size, mtime, inode))
            if len(buffer) >= 1000:
                out.write(b"".join(buffer))
                buffer.clear()
    except OSError as exc:  # unreadable folder: sent after what was found before it
        failure = exc
    out.write(b"".join(buffer))
    out.flush()
    if failure is not None:  # what it was, for the caller to raise
        names = (str(failure.errno), failure.strerror or "", str(failure.filename or ""))
        sys.stderr.buffer.write(_SEP.join(os.fsencode(name) for name in names))
        sys.exit(2)


if __name__ == "__main__":
    _serve()
