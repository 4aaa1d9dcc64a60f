"""The storage interface: what the code above asks of a folder or a bucket prefix.

A :class:`Location` is a root (``./var/lake``, ``s3://bucket/prefix``) opened once;
every operation names an object by parts relative to that root (``("courses", 7,
"course.json")``), so the same code runs on both backends and never branches on which
one it has. Listings are streamed :class:`Entry` tuples, never a dict per object.
"""

from __future__ import annotations

import errno
import io
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from course_exports.errors import ExportError

if TYPE_CHECKING:
    from course_exports.storage.download import Download

Part = str | int


class Entry(NamedTuple):
    """One object of a listing: its path relative to the location's root, its size, its
    modification time, and a tag that changes when its content does (the ETag on S3;
    a stamp of mtime, size and inode on a local disk)."""

    path: str
    size: int
    mtime: datetime
    etag: str | None


class PendingUpload(NamedTuple):
    """A multipart upload that was started and neither completed nor aborted."""

    path: str  # relative to the root
    upload_id: str
    initiated: datetime


class ObjectTooLargeError(ExportError):
    """A bounded read found more bytes than the caller accepts."""

    def __init__(self, url: str, size: int, limit: int) -> None:
        super().__init__(f"{url}: {size} bytes, more than the {limit} accepted")
        self.url = url
        self.size = size
        self.limit = limit


class ObjectChangedError(OSError):
    """An object was replaced while it was being read: what was read so far belongs to
    another version. Reading it again from the start is safe (an I/O error, so callers
    retry it like one; whoever checks the bytes checks the new version)."""

    def __init__(self, url: str) -> None:
        super().__init__(errno.ESTALE, f"{url}: replaced while it was being read")
        self.url = url


class SizedReader(io.RawIOBase):
    """A read-only file of a known size that keeps its own position: seeking is
    arithmetic, never I/O. A subclass reads at ``_position`` in ``readinto`` and moves it
    on; ``name`` says whose file it is in errors."""

    def __init__(self, size: int, name: str) -> None:
        super().__init__()
        self._size = size
        self._position = 0
        self._name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, f"{self._name}: seek before the start")
        self._position = base + offset
        return self._position


def join(*parts: Part) -> str:
    """Parts joined with ``/`` (parts are trusted names, never empty, ``.`` or ``..``)."""
    if len(parts) == 1:
        # One relative path, as listings give them and the zip asks for 100,000 tiny
        # files by: left as it is, without the per-part work below.
        path = parts[0]
        if type(path) is str and path and path[0] != "/" and path[-1] != "/":
            return path
    return "/".join(str(p).strip("/") for p in parts if str(p) not in ("", "/"))


def validate_tail(n: int) -> None:
    if n <= 0:
        raise ValueError(f"a tail read needs a positive length, got {n}")


def validate_range(start: int, end: int) -> None:
    if not 0 <= start < end:
        raise ValueError(f"not a byte range: {start} to {end}")


def validate_ranges(ranges: Sequence[tuple[str, int, int]]) -> None:
    for _, start, end in ranges:
        validate_range(start, end)


def read_or_error(
    read: Callable[[str, int, int], bytes], path: str, start: int, end: int
) -> bytes | Exception:
    try:
        return read(path, start, end)
    except Exception as exc:  # handed to the caller with the others' bytes
        return exc


class Location(ABC):
    """A storage root. Paths given to and returned by its methods are relative to it."""

    #: The URL it was opened from (``s3://bucket/prefix`` or an absolute local path).
    url: str
    #: The root as the backend names it (see :meth:`path`).
    root: str
    #: How many reads of small objects are worth running at once.
    parallel_reads: int

    # -- names ---------------------------------------------------------------------------

    def url_for(self, *parts: Part) -> str:
        """The URL of ``parts``, for messages and records (``s3://…`` or a local path)."""
        rel = join(*parts)
        return f"{self.url}/{rel}" if rel else self.url

    # -- reads -------------------------------------------------------------------------

    @abstractmethod
    def exists(self, *parts: Part) -> bool:
        """Whether an object (a file) is stored at ``parts``."""

    @abstractmethod
    def read_bytes(self, *parts: Part, max_bytes: int | None = None) -> bytes:
        """The whole object; FileNotFoundError if absent; ObjectTooLargeError when it
        holds more than ``max_bytes`` (checked before its body is read)."""

    @abstractmethod
    def read_file(self, path: str, size: int) -> bytes:
        """An object whose size a listing gave, read whole in one call (one GET on S3).
        At most ``size + 1`` bytes are asked for locally, so a file that grew shows it."""

    def shared_path(self, path: str) -> str | None:
        """A path by which any process of this machine reads ``path`` (the zip's packer
        processes read small files themselves), or None where reads go through a client."""
        return None

    @abstractmethod
    def open_read(self, *parts: Part) -> BinaryIO:
        """A sequential stream of the object (one GET on S3, read as it is consumed)."""

    @abstractmethod
    def open_seekable(self, *parts: Part) -> BinaryIO:
        """A seekable file of the object (ranged GETs on S3), for formats read from the
        end or out of order (zip directories, parquet footers). It reads the version
        that was there when it was opened (an open file locally, where writes replace
        files; ``If-Match`` on S3), or raises ObjectChangedError."""

    @abstractmethod
    def read_tail(self, path: str, n: int) -> tuple[bytes, int]:
        """The last ``n`` bytes of an object (all of it when it is shorter) and its total
        size, in one request (a suffix-range GET on S3, no HEAD): formats read from the
        end (parquet footers). FileNotFoundError if absent; ValueError unless ``n > 0``."""

    @abstractmethod
    def read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of an object in one request (a ranged
        GET on S3); fewer, maybe none, where the object ends sooner. FileNotFoundError
        if absent; ValueError unless ``0 <= start < end``."""

    def read_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes | Exception]:
        """Each ``(path, start, end)`` as :meth:`read_range` reads it, in order: its bytes,
        or the exception that read raised (an object gone since its listing is one
        caller's problem, not every read's). One after another here, where a read hardly
        waits (threads only add their hand-offs); concurrently where reads wait on the
        network. ValueError, before any read, unless every range is ``0 <= start < end``."""
        validate_ranges(ranges)
        return [read_or_error(self.read_range, *item) for item in ranges]

    @abstractmethod
    def read_many(self, paths: Iterable[str]) -> list[bytes]:
        """The objects at ``paths`` (relative), in that order, fetched concurrently."""

    @abstractmethod
    def scan_sources(self, paths: list[str]) -> list[str] | list[bytes]:
        """What a Polars or Arrow scan of ``paths`` reads: the local files' paths, or
        the remote objects' bytes (fetched concurrently)."""

    # -- listings ----------------------------------------------------------------------

    @abstractmethod
    def iter_files(self, *parts: Part) -> Iterator[Entry]:
        """Every object under the folder ``parts`` (recursively) as a stream: pages are
        fetched as the caller consumes them. Empty if it is absent. In no promised order
        (AWS lists in key order, SeaweedFS folder by folder): sort if it matters."""

    def iter_sizes(self, *parts: Part) -> Iterator[tuple[str, int]]:
        """``(path, size)`` of every object under ``parts``, as :meth:`iter_files` lists
        them: for listings of many files that need nothing else (a course's workspaces),
        where a backend can skip making the rest of an entry."""
        for entry in self.iter_files(*parts):
            yield entry.path, entry.size

    def iter_tags(self, *parts: Part) -> Iterator[tuple[str, int, str | None]]:
        """``(path, size, content tag)`` of every object under ``parts``, as
        :meth:`iter_files` lists them without the time: what tells a rewritten file apart,
        for the access log's listing, which every access export makes."""
        for entry in self.iter_files(*parts):
            yield entry.path, entry.size, entry.etag

    @abstractmethod
    def list_names(self, *parts: Part) -> list[str]:
        """The names directly in the folder ``parts`` (objects and subfolders), sorted;
        none if it is absent. On S3 a subfolder is a common prefix of keys."""

    # -- writes ------------------------------------------------------------------------

    @abstractmethod
    def write_bytes_atomic(self, data: bytes, *parts: Part) -> None:
        """Write a small object so readers see the old or the new content, never half."""

    @abstractmethod
    def write_many(self, items: Mapping[str, bytes]) -> None:
        """Bulk load: write many small objects at once (relative path -> content),
        concurrently on S3. Not synced one by one on a disk: for data generated in bulk,
        never for what a reader trusts as soon as the call returns."""

    @abstractmethod
    def create_exclusive(self, data: bytes, *parts: Part) -> bool:
        """Write the object only if nothing is stored at ``parts`` yet, atomically
        (local: hard link of a finished file; S3: PUT with ``If-None-Match: *``).
        True if this call created it, False if it was there already."""

    @abstractmethod
    def open_write(
        self, *parts: Part, part_bytes: int = 16 * 2**20
    ) -> AbstractContextManager[BinaryIO]:
        """``with loc.open_write(...) as out:`` streams an object. It appears under its
        name only when the block ends without an exception; an exception leaves nothing
        (S3: the multipart upload is aborted; local: the temporary file is removed)."""

    # -- deletes -----------------------------------------------------------------------

    @abstractmethod
    def delete(self, *parts: Part) -> None:
        """Remove one object; nothing happens if it is absent."""

    @abstractmethod
    def delete_many(self, paths: Iterable[str]) -> None:
        """Remove these objects (relative paths), in bulk requests; absent ones are fine."""

    def delete_tree(self, *parts: Part) -> int:
        """Remove every object under the folder ``parts``; returns how many."""
        count = 0
        batch: list[str] = []
        for entry in self.iter_files(*parts):
            batch.append(entry.path)
            if len(batch) == 1000:
                self.delete_many(batch)
                count += len(batch)
                batch = []
        self.delete_many(batch)
        self._prune(*parts)
        return count + len(batch)

    def _prune(self, *parts: Part) -> None:
        """Drop empty folders left at and above ``parts`` (only local disks have them)."""
        return None

    # -- multipart uploads -------------------------------------------------------------

    @abstractmethod
    def pending_uploads(self, *parts: Part) -> Iterator[PendingUpload]:
        """Multipart uploads under ``parts`` that were never completed (S3 only)."""

    @abstractmethod
    def abort_upload(self, path: str, upload_id: str) -> None:
        """Abort the upload ``upload_id`` to ``path`` (its parts stop being stored);
        one that is gone already is fine."""

    # -- downloads ---------------------------------------------------------------------

    @abstractmethod
    def download(
        self, *parts: Part, content_disposition: str, content_type: str, expires_s: int
    ) -> Download | None:
        """How a browser gets the object, or None when it is not there: a presigned URL
        valid ``expires_s`` that makes S3 answer with these headers, or the local file."""

    # -- backend names -----------------------------------------------------------------

    def path(self, *parts: Part) -> str:
        """The backend's own name of ``parts`` (an absolute local path, or
        ``bucket/key``): what the purge's models and the access-log partitions hold."""
        rel = join(*parts)
        return posixpath.join(self.root, rel) if rel else self.root

    def url_of(self, path: str) -> str:
        """The URL of a backend name (see :meth:`path`)."""
        return self.url_for(self.relative(path))

    def relative(self, path: str) -> str:
        """A backend name (see :meth:`path`) relative to the root; ValueError if it lies
        outside."""
        rel = posixpath.relpath(path, self.root)
        if rel == ".." or rel.startswith("../"):
            raise ValueError(f"{path} is outside {self.root}")
        return "" if rel == "." else rel
