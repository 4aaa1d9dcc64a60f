"""The local-folder backend of :class:`~course_exports.storage.base.Location`."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import posixpath
import stat
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import BinaryIO

from course_exports.local_files import read_whole
from course_exports.storage import local_walk
from course_exports.storage.base import (
    Entry,
    Location,
    ObjectTooLargeError,
    Part,
    PendingUpload,
    join,
    validate_range,
    validate_tail,
)
from course_exports.storage.download import Download, FileDownload
from course_exports.text import one_line

log = logging.getLogger(__name__)


def content_tag(size: int, mtime_ns: int, inode: int) -> str:
    """A local file's stand-in for an ETag: changes when it is rewritten or replaced."""
    return f"{mtime_ns:x}-{size:x}-{inode:x}"


class LocalLocation(Location):
    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or "/"
        self.url = self.root
        self._prefix = self.root if self.root == "/" else self.root + "/"

    def __repr__(self) -> str:
        return f"LocalLocation({self.root!r})"

    def _abs(self, *parts: Part) -> str:
        rel = join(*parts)
        if rel and rel[0] != "/":  # the usual case: what posixpath.join gives, cheaper
            return self._prefix + rel
        return posixpath.join(self.root, rel) if rel else self.root

    #: How many reads are worth running at once: local reads hardly wait, and every thread costs a malloc arena.
    parallel_reads = 4

    # -- reads -------------------------------------------------------------------------

    def exists(self, *parts: Part) -> bool:
        return os.path.isfile(self._abs(*parts))

    def read_bytes(self, *parts: Part, max_bytes: int | None = None) -> bytes:
        with open(self._abs(*parts), "rb") as fh:
            if max_bytes is None:
                return fh.read()
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(max_bytes + 1)  # the file may have grown since fstat
            if max(size, len(data)) > max_bytes:
                raise ObjectTooLargeError(self.url_for(*parts), max(size, len(data)), max_bytes)
            return data

    def read_file(self, path: str, size: int) -> bytes:
        return read_whole(self._abs(path), size)

    def shared_path(self, path: str) -> str | None:
        return self._abs(path)

    def open_read(self, *parts: Part) -> BinaryIO:
        # Unbuffered: the reader asks for the whole file (or a chunk) at once, and
        # open()'s buffer costs more than it saves; 500,000 files add up.
        return io.FileIO(self._abs(*parts), "r")  # type: ignore[return-value]

    def open_seekable(self, *parts: Part) -> BinaryIO:
        return open(self._abs(*parts), "rb")

    def read_tail(self, path: str, n: int) -> tuple[bytes, int]:
        validate_tail(n)
        with open(self._abs(path), "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - n))
            return fh.read(min(n, size)), size

    def read_range(self, path: str, start: int, end: int) -> bytes:
        validate_range(start, end)
        with open(self._abs(path), "rb") as fh:
            fh.seek(start)
            return fh.read(end - start)

    def read_many(self, paths: Iterable[str]) -> list[bytes]:
        return [self.read_bytes(p) for p in paths]

    def scan_sources(self, paths: list[str]) -> list[str]:
        return [self._abs(p) for p in paths]

    # -- listings ----------------------------------------------------------------------

    def iter_files(self, *parts: Part) -> Iterator[Entry]:
        # Once per file below (100,000 tiny files, or a log of hourly files listed by
        # every export): lookups hoisted.
        from_timestamp, second = datetime.fromtimestamp, 10**9
        for rel, size, mtime_ns, inode in local_walk.walk(self._abs(*parts), join(*parts)):
            # ``st_mtime`` exactly as CPython makes it from the seconds and nanoseconds.
            mtime = from_timestamp(mtime_ns // second + (mtime_ns % second) * 1e-9, UTC)
            yield Entry(rel, size, mtime, content_tag(size, mtime_ns, inode))

    def iter_tags(self, *parts: Part) -> Iterator[tuple[str, int, str | None]]:
        # The hourly log's 4,320 files in every access export: the time iter_files makes
        # of each is a third of the listing's CPU.
        for rel, size, mtime_ns, inode in local_walk.walk(self._abs(*parts), join(*parts)):
            yield rel, size, content_tag(size, mtime_ns, inode)

    def iter_sizes(self, *parts: Part) -> Iterator[tuple[str, int]]:
        # A time and a tag made for each of 100,000 files cost ~3.5 µs a file, a third of
        # the export process's work on listing a course of tiny files.
        for rel, size, _, _ in local_walk.walk(self._abs(*parts), join(*parts)):
            yield rel, size

    def list_names(self, *parts: Part) -> list[str]:
        try:
            return sorted(os.listdir(self._abs(*parts)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    # -- writes ------------------------------------------------------------------------

    def _temp_beside(self, target: str) -> str:
        parent = posixpath.dirname(target)
        os.makedirs(parent, exist_ok=True)
        return posixpath.join(parent, f".{posixpath.basename(target)}.{uuid.uuid4().hex}.tmp")

    def _write_temp(self, target: str, data: bytes) -> str:
        tmp = self._temp_beside(target)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def write_bytes_atomic(self, data: bytes, *parts: Part) -> None:
        target = self._abs(*parts)
        os.replace(self._write_temp(target, data), target)

    def write_many(self, items: Mapping[str, bytes]) -> None:
        made: set[str] = set()
        for rel, data in items.items():
            target = self._abs(rel)
            parent = posixpath.dirname(target)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            with open(target, "wb") as fh:
                fh.write(data)

    def create_exclusive(self, data: bytes, *parts: Part) -> bool:
        target = self._abs(*parts)
        tmp = self._write_temp(target, data)
        try:
            os.link(tmp, target)  # fails if the target exists; readers never see half
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    @contextlib.contextmanager
    def open_write(self, *parts: Part, part_bytes: int = 16 * 2**20) -> Iterator[BinaryIO]:
        target = self._abs(*parts)
        tmp = self._temp_beside(target)
        try:
            with open(tmp, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # -- deletes -----------------------------------------------------------------------

    def delete(self, *parts: Part) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._abs(*parts))

    def delete_many(self, paths: Iterable[str]) -> None:
        for path in paths:
            self.delete(path)

    def _prune(self, *parts: Part) -> None:
        # The emptied folders, deepest first, then the empty ones above: a folder left
        # behind would still look like an export (or a course) to a listing of names.
        top = self._abs(*parts)
        for folder, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        parent = posixpath.dirname(top)
        while parent != self.root and parent.startswith(self.root + "/"):
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = posixpath.dirname(parent)

    # -- multipart uploads (none on a disk) ----------------------------------------------

    def pending_uploads(self, *parts: Part) -> Iterator[PendingUpload]:
        return iter(())

    def abort_upload(self, path: str, upload_id: str) -> None:
        return None

    # -- downloads ---------------------------------------------------------------------

    def download(
        self, *parts: Part, content_disposition: str, content_type: str, expires_s: int
    ) -> Download | None:
        """The regular file inside the real root (a symlink must not lead out of it)."""
        root = os.path.realpath(self.root)
        real = os.path.realpath(self._abs(*parts))
        if os.path.commonpath([root, real]) != root:
            log.warning("%s lies outside the root %s: not handed out", one_line(real), root)
            return None
        try:
            st = os.stat(real)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return FileDownload(st.st_size, real, st)
