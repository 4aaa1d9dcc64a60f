"""A ZIP writer into a stream that is only ever appended to (no seek, no tell).

Entries go in one of three ways, all public:

* :meth:`ZipStreamWriter.add_bytes` / :meth:`~ZipStreamWriter.add_packed`: a whole
  entry already in memory (its header carries CRC and sizes);
* :meth:`~ZipStreamWriter.begin_entry`, :meth:`~ZipStreamWriter.write_data`,
  :meth:`~ZipStreamWriter.end_entry`: an entry whose data the caller compresses (the
  parallel pipeline's large files, :class:`~.deferred.DeferredEntry`'s manifest); CRC
  and sizes follow in a data descriptor.

Memory does not grow with the number of entries beyond a 64-bit hash of each name
(duplicate names are refused): each entry's central-directory header is rendered when
the entry ends and spooled to a temporary file, copied out at :meth:`close`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple, cast

from course_exports.errors import ExportError
from course_exports.zipstream import records
from course_exports.zipstream.compression import (
    DEFAULT_LEVEL,
    PackedEntry,
    method_name,
    pack,
)
from course_exports.zipstream.records import (
    DEFLATED,
    FLAG_DATA_DESCRIPTOR,
    FLAG_UTF8,
    STORED,
    ZIP64_LIMIT,
    DateTime,
    EntryRecord,
)

__all__ = ["ArchiveError", "WrittenEntry", "ZipStreamWriter"]

_OUT_BUFFER = 1 << 20  # fewer, larger writes into the output (syscalls, S3 part buffers)
_DIRECTORY_IN_MEMORY = 1 << 20  # central directory headers gathered before a write to disk
_COPY_PIECE = 1 << 20
_SMALL_ENTRY = 64 * 1024  # header and data joined into one write below this
_METHOD_NAMES = {DEFLATED: method_name(DEFLATED), STORED: method_name(STORED)}


class ArchiveError(ExportError):
    """An entry could not be archived (unreadable, changed during the export, bad name...).

    Raised by the pipeline (or a failed write), it leaves a partial zip that must be
    discarded: the writer refuses further use.
    """

    def __init__(self, arcname: str | None, problem: str) -> None:
        where = f"zip entry {arcname!r}" if arcname is not None else "zip archive"
        super().__init__(
            f"{where}: {problem}",
            reason="the course files could not be packed into the archive; please try again",
        )
        self.arcname = arcname
        self.problem = problem


class WrittenEntry(NamedTuple):
    arcname: str
    size: int
    compressed_size: int
    crc32: int
    sha256: str  # of the uncompressed bytes (for the manifest)
    method: str  # "deflate" or "store"


@dataclass(slots=True)
class _OpenEntry:
    """A streamed entry whose header is written and whose data is still coming."""

    arcname: str
    record: EntryRecord


class ZipStreamWriter:
    """Writes a zip into ``out``, which only needs ``write`` (and maybe ``flush``).

    Not thread-safe: one thread writes. The caller owns ``out``: :meth:`close` flushes
    it but does not close it. After any failure the writer refuses further use: the
    output is a partial zip to discard.
    """

    def __init__(
        self,
        out: BinaryIO,
        *,
        level: int = DEFAULT_LEVEL,
        zip64_threshold: int = ZIP64_LIMIT,
        comment: str = "",
        date_time: DateTime | None = None,
    ) -> None:
        if not -1 <= level <= 9:
            raise ValueError(f"level must be -1..9, not {level}")
        if not 0 < zip64_threshold <= ZIP64_LIMIT:
            raise ValueError("zip64_threshold must be in 1..0xFFFFFFFF")
        self._comment = comment.encode("utf-8")
        if len(self._comment) > records.NAME_LIMIT:
            raise ValueError("the archive comment is longer than 65535 bytes")
        self._out = out
        self.level = level
        self.zip64_threshold = zip64_threshold
        self._time, self._date = records.dos_date_time(
            date_time or cast(DateTime, time.localtime()[:6])
        )
        # The central directory: headers gather in memory, then go to an anonymous file
        # (closed by close() or fail(); a writer dropped half-way leaves it to the GC).
        self._directory = tempfile.TemporaryFile(prefix="zip-directory-")  # noqa: SIM115
        self._directory_pending = bytearray()
        self._directory_size = 0
        self._count = 0
        # 64-bit hashes, not the names: a set of 500,000 names would cost ~75 MB. Two
        # different names share a hash with odds of ~1e-8 at that count (a false refusal).
        self._names: set[int] = set()
        self._buffer = bytearray()
        self._offset = 0  # bytes handed to the writer so far: our own tell()
        self._open: _OpenEntry | None = None
        self._closed = False
        self._failed: str | None = None

    @property
    def bytes_written(self) -> int:
        return self._offset

    @property
    def entry_count(self) -> int:
        return self._count

    # -- whole entries -----------------------------------------------------------------

    def add_bytes(self, arcname: str, data: bytes, *, compress: bool | None = None) -> WrittenEntry:
        """Write one entry from memory; ``compress`` None lets the data decide."""
        return self.add_packed(pack(arcname, data, self.level, compress))

    def add_packed(self, packed: PackedEntry) -> WrittenEntry:
        """Write an entry hashed and compressed already (by :func:`compression.pack`)."""
        # Called once per file (100,000 tiny files: every call here shows), so it does
        # its work in few calls: one write of header and data, the directory inline.
        arcname, size, crc32, sha256, method, payload = packed
        name = self._claim_name(arcname)
        csize = len(payload)
        threshold = self.zip64_threshold
        record = EntryRecord(
            name, FLAG_UTF8, method, crc32, csize, size, self._offset,
            size >= threshold or csize >= threshold,
        )  # fmt: skip
        try:
            header = records.local_header(record, self._time, self._date)
            if csize < _SMALL_ENTRY:
                self._emit(header + payload)
            else:
                self._emit(header)
                self._emit(payload)
            self._add_to_directory(record)
        except BaseException as exc:
            self.fail(f"writing {arcname!r} failed: {exc!r}")
            raise
        return WrittenEntry(arcname, size, csize, crc32, sha256, _METHOD_NAMES[method])

    def add_packed_all(self, packed: Iterable[PackedEntry]) -> list[WrittenEntry]:
        """:meth:`add_packed` for each of ``packed``, in order: the same bytes, written in
        one piece. A batch of small files (what the pipeline's packers return) costs here
        ~2 µs an entry instead of ~3.5: the headers are packed from locals and joined, and
        the directory takes the batch's headers at once. An entry that needs ZIP64 (or
        anything else out of the ordinary) goes through :meth:`add_packed`."""
        written: list[WrittenEntry] = []
        pieces: list[bytes | bytearray | memoryview] = []
        directory: list[bytes] = []
        offset, threshold = self._offset, self.zip64_threshold
        time_, date = self._time, self._date
        local_entry, central_entry = records.pack_local_header, records.pack_central_header
        try:
            for entry in packed:
                arcname, size, crc32, sha256, method, payload = entry
                csize = len(payload)
                if max(size, csize, offset) >= threshold:  # ZIP64 fields: the general way
                    self._flush_batch(pieces, directory, offset)
                    written.append(self.add_packed(entry))
                    offset = self._offset
                    continue
                try:
                    name = self._claim_name(arcname)
                except ArchiveError:  # refused: the entries before it go out, as one by one
                    self._flush_batch(pieces, directory, offset)
                    raise
                pieces += (
                    local_entry(name, FLAG_UTF8, method, crc32, csize, size, time_, date),
                    payload,
                )
                directory.append(
                    central_entry(name, FLAG_UTF8, method, crc32, csize, size, offset, time_, date)
                )
                offset += records.LOCAL.size + len(name) + csize
                written.append(
                    WrittenEntry(arcname, size, csize, crc32, sha256, _METHOD_NAMES[method])
                )
                if offset - self._offset >= _OUT_BUFFER:  # large entries: no big joined copy
                    self._flush_batch(pieces, directory, offset)
            self._flush_batch(pieces, directory, offset)
        except ArchiveError:
            raise  # a refused name: the writer is still as it was after the entries before
        except BaseException as exc:
            self.fail(f"writing a batch of entries failed: {exc!r}")
            raise
        return written

    def _flush_batch(
        self, pieces: list[bytes | bytearray | memoryview], directory: list[bytes], end: int
    ) -> None:
        """Write what :meth:`add_packed_all` gathered (ending at offset ``end``)."""
        if not directory:
            return
        self._emit(b"".join(pieces))
        assert self._offset == end, "a batch's offsets went astray"
        headers = b"".join(directory)
        self._directory_pending += headers
        self._directory_size += len(headers)
        self._count += len(directory)
        pieces.clear()
        directory.clear()
        if len(self._directory_pending) >= _DIRECTORY_IN_MEMORY:
            self._spill_directory()

    # -- streamed entries --------------------------------------------------------------

    def begin_entry(self, arcname: str, method: int, max_size: int) -> None:
        """Write the header of an entry whose CRC and sizes follow its data.

        ZIP64 is decided now, before the data: ``max_size`` bounds the entry's
        compressed and uncompressed sizes.
        """
        if self._open is not None:
            raise ArchiveError(arcname, "an entry is already being written")
        name = self._claim_name(arcname)
        record = EntryRecord(
            name, FLAG_UTF8 | FLAG_DATA_DESCRIPTOR, method, 0, 0, 0, self._offset,
            max_size >= self.zip64_threshold,
        )  # fmt: skip
        self._open = _OpenEntry(arcname, record)
        self._guarded(records.local_header(record, self._time, self._date))

    def write_data(self, data: bytes | memoryview) -> None:
        """Append (already compressed) data to the entry begun last."""
        if self._open is None:
            raise ArchiveError(None, "no entry is being written")
        self._open.record.compressed_size += len(data)
        self._guarded(data)

    def end_entry(self, size: int, crc32: int, sha256: str) -> WrittenEntry:
        """Finish the entry begun last with its uncompressed size, CRC and SHA-256."""
        entry = self._open
        if entry is None:
            raise ArchiveError(None, "no entry is being written")
        record = entry.record
        if not record.zip64 and max(size, record.compressed_size) >= ZIP64_LIMIT:
            # Its header promised 4-byte sizes: a reader would misparse the descriptor.
            self.fail("an entry outgrew its header")
            raise ArchiveError(entry.arcname, "the entry outgrew the size declared in its header")
        record.size, record.crc32 = size, crc32
        self._guarded(records.data_descriptor(crc32, record.compressed_size, size, record.zip64))
        self._add_to_directory(record)
        self._open = None
        return WrittenEntry(
            entry.arcname, size, record.compressed_size, crc32, sha256, method_name(record.method)
        )

    # -- the end -----------------------------------------------------------------------

    def close(self) -> int:
        """Write the central directory and end records; returns the archive's total size."""
        if self._closed:
            return self._offset
        self.check_usable()
        if self._open is not None:
            raise ArchiveError(self._open.arcname, "the archive was closed mid-entry")
        try:
            start = self._offset
            self._spill_directory()
            self._directory.seek(0)
            while piece := self._directory.read(_COPY_PIECE):
                self._emit(piece)
            self._emit(
                records.end_records(
                    self._count, start, self._directory_size, self._comment, self.zip64_threshold
                )
            )
            self._flush()
            flush = getattr(self._out, "flush", None)
            if flush is not None:
                flush()
        except BaseException as exc:
            self.fail(f"closing failed: {exc!r}")
            raise
        self._closed = True
        self._directory.close()
        return self._offset

    def fail(self, problem: str) -> None:
        """Mark the output as unusable (a partial zip): every later call raises."""
        if self._failed is None:
            self._failed = problem
            self._directory.close()

    def check_usable(self) -> None:
        if self._failed is not None:
            raise ArchiveError(
                None, f"the archive is unusable after an earlier failure: {self._failed}"
            )
        if self._closed:
            raise ArchiveError(None, "the archive is closed")

    # -- internals ---------------------------------------------------------------------

    def _claim_name(self, arcname: str) -> bytes:
        if self._failed is not None or self._closed:
            self.check_usable()
        try:
            name = records.encode_name(arcname)
        except ValueError as exc:
            raise ArchiveError(arcname, str(exc)) from None
        key = hash(name)
        names = self._names
        if key in names:
            raise ArchiveError(arcname, "two entries have this name")
        names.add(key)
        return name

    def _add_to_directory(self, record: EntryRecord) -> None:
        header = records.central_header(record, self._time, self._date, self.zip64_threshold)
        self._directory_pending += header
        self._directory_size += len(header)
        self._count += 1
        if len(self._directory_pending) >= _DIRECTORY_IN_MEMORY:
            self._spill_directory()

    def _spill_directory(self) -> None:
        self._directory.write(self._directory_pending)
        self._directory_pending = bytearray()

    def _guarded(self, data: bytes | memoryview) -> None:
        try:
            self._emit(data)
        except BaseException as exc:
            self.fail(f"writing failed: {exc!r}")
            raise

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        self._offset += size
        if size >= _OUT_BUFFER:
            self._flush()
            self._write_out(data)
            return
        buffer = self._buffer
        buffer += data
        if len(buffer) >= _OUT_BUFFER:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            # A fresh buffer rather than clearing: ``out`` may keep a reference to what it got.
            data, self._buffer = self._buffer, bytearray()
            self._write_out(data)

    def _write_out(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = self._out.write(view)
            if written is None or written >= len(view):  # buffered streams write it all
                return
            view = view[written:]
