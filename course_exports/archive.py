"""A streaming ZIP writer: whole courses in bounded memory, compressed on every core.

The course zip (CONTRACT 4.1) can hold many gigabytes in tens of thousands of files and
goes straight into a stream that cannot seek (an S3 multipart upload), so:

* every entry is prepared before its local header is written: small files are read and
  deflated whole, so the header carries their CRC and sizes; files larger than a chunk
  are streamed with a data descriptor (general-purpose bit 3) after their data;
* reads run in a thread pool (S3 latency is hidden by concurrency), deflate runs in a
  second pool (zlib releases the GIL, so threads use every core), and one writer, the
  calling thread, writes entries in source order, so the zip is deterministic;
* large files are cut into chunks deflated in parallel like pigz: each chunk is primed
  with the previous 32 KiB and ends on a sync flush, so their concatenation is one raw
  deflate stream; CRC and SHA-256 are computed in order by the file's reader;
* the uncompressed bytes in flight are bounded by a byte window that the writer grants in
  source order: a read is only started once the window has room, and room is only given
  back once the bytes are written, so memory stays bounded whatever the course size and
  the in-order grant can never deadlock.

ZIP64 records are written only where a size, an offset or the entry count needs them;
names are UTF-8 and flagged so (bit 11).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Queue
from typing import BinaryIO, cast

from zlib_ng import zlib_ng as zlib

from course_exports.errors import ExportError

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_LEVEL",
    "ZIP64_LIMIT",
    "ArchiveError",
    "Source",
    "WrittenEntry",
    "ZipStreamWriter",
    "is_precompressed",
    "write_entries",
]

DateTime = tuple[int, int, int, int, int, int]

ZIP64_LIMIT = 0xFFFFFFFF
_COUNT_LIMIT = 0xFFFF
_STORED = 0
_DEFLATED = 8
_FLAG_DATA_DESCRIPTOR = 0x0008
_FLAG_UTF8 = 0x0800
_VERSION_DEFAULT = 20
_VERSION_ZIP64 = 45
_MADE_BY_UNIX = 3 << 8
_REGULAR_FILE_ATTRS = 0o100644 << 16  # a regular file, rw-r--r--

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_END64_LOCATOR = struct.Struct("<IIQI")
_DESCRIPTOR = struct.Struct("<IIII")
_DESCRIPTOR64 = struct.Struct("<IIQQ")
_ZIP64_LOCAL_EXTRA = struct.Struct("<HHQQ")

# zlib-ng: the same deflate streams as zlib, made ~35% faster at level 6 (and it releases
# the GIL, so threads use both cores). Level 6 keeps the output within ~0.3% of zlib's
# default; level 5 was faster still but ~2.6% larger on course code (benchmarks/).
DEFAULT_LEVEL = 6
# Deflate must save at least 1/32 (~3%) of a file to be worth it; otherwise it is stored.
_MIN_SAVING_SHIFT = 5
# Small files are first probed on their head at level 1: a cheap way to skip deflating
# random or already-compressed data, which would cost as much as deflating text.
_SMALL_PROBE = 4096
_LARGE_PROBE = 64 * 1024
# Source code and text always deflate well: no need to probe them first.
TEXT_SUFFIXES = frozenset(
    {
        *(".c", ".cc", ".cpp", ".cs", ".go", ".h", ".hpp", ".java", ".js", ".jsx", ".kt"),
        *(".m", ".php", ".py", ".r", ".rb", ".rs", ".scala", ".sh", ".sql", ".swift", ".ts"),
        *(".tsx", ".css", ".csv", ".htm", ".html", ".ipynb", ".json", ".md", ".rst", ".svg"),
        *(".tex", ".toml", ".tsv", ".txt", ".xml", ".yaml", ".yml"),
    }
)
# Containers and media that are compressed already: stored without trying.
PRECOMPRESSED_SUFFIXES = frozenset(
    {
        *(".7z", ".bz2", ".gz", ".rar", ".tbz2", ".tgz", ".txz", ".xz", ".zip", ".zst"),
        *(".apk", ".docx", ".epub", ".jar", ".odp", ".ods", ".odt", ".pptx", ".whl", ".xlsx"),
        *(".gif", ".heic", ".jpeg", ".jpg", ".png", ".webp", ".woff", ".woff2"),
        *(".aac", ".avi", ".flac", ".m4a", ".m4v", ".mkv", ".mov", ".mp3", ".mp4", ".ogg"),
        *(".opus", ".webm"),
    }
)

# Files larger than this are streamed in chunks of this size; smaller ones are read whole.
CHUNK_BYTES = 4 * 2**20
_OUT_BUFFER = 1 << 20  # fewer, larger writes into the output (syscalls, S3 part buffers)
_BATCH_BYTES = 1 << 20  # small files are read and deflated in batches: less per-task overhead
_BATCH_FILES = 128
_ENTRY_COST = 1024  # window bytes charged per entry at least, so the entries in flight are bounded
_DEFLATE_WINDOW = 32 * 1024
RETRY_BACKOFF_S = 0.25


class ArchiveError(ExportError):
    """An entry could not be archived (unreadable, changed during the export, bad name...).

    Raised by ``write_entries`` (or a failed write), it leaves a partial zip that must be
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


def _unused_open() -> BinaryIO:
    raise AssertionError("a Source with data is never opened")


@dataclass(frozen=True)
class Source:
    """One entry to write."""

    arcname: str  # path inside the zip (already made safe by the caller), '/' separated
    size: int  # expected size in bytes (from the listing)
    open: Callable[[], BinaryIO]  # opens the source for reading (called in a worker thread)
    data: bytes | None = None  # small generated entries: when set, ``open`` is unused

    @classmethod
    def of_bytes(cls, arcname: str, data: bytes) -> Source:
        return cls(arcname, len(data), _unused_open, data)


@dataclass(frozen=True)
class WrittenEntry:
    arcname: str
    size: int
    compressed_size: int
    crc32: int
    sha256: str  # of the uncompressed bytes (for the manifest)
    method: str  # "deflate" or "store"


@dataclass(frozen=True, slots=True)
class _Packed:
    """One whole entry, hashed and compressed, ready to be written."""

    arcname: str
    size: int
    crc32: int
    sha256: str
    method: int
    payload: bytes | memoryview


@dataclass(slots=True)
class _Record:
    """What the central directory needs of an entry."""

    name: bytes
    flags: int
    method: int
    crc32: int
    compressed_size: int
    size: int
    offset: int
    zip64: bool  # the local header carried a ZIP64 extra field


@dataclass(slots=True)
class _OpenEntry:
    """A streamed entry whose header is written and whose data is still coming."""

    arcname: str
    name: bytes
    method: int
    offset: int
    zip64: bool
    compressed_size: int = 0


def _dos_time(date_time: DateTime) -> tuple[int, int]:
    year, month, day, hour, minute, second = date_time
    if year < 1980:  # DOS dates start in 1980
        year, month, day, hour, minute, second = 1980, 1, 1, 0, 0, 0
    year = min(year, 2107)
    return (
        (hour << 11) | (minute << 5) | (second // 2),
        ((year - 1980) << 9) | (month << 5) | day,
    )


def _encode_name(arcname: str) -> bytes:
    if not arcname or arcname.startswith("/") or "\\" in arcname:
        raise ArchiveError(arcname, "entry names must be relative '/'-separated paths")
    name = arcname.encode("utf-8")
    if len(name) > 0xFFFF:
        raise ArchiveError(arcname, "the entry name is too long for a zip")
    return name


def _suffix(arcname: str) -> str:
    dot = arcname.rfind(".")
    return arcname[dot:].lower() if dot > arcname.rfind("/") else ""


def is_precompressed(arcname: str) -> bool:
    """Whether the name's extension says the data is compressed already (store, don't try)."""
    return _suffix(arcname) in PRECOMPRESSED_SUFFIXES


def _saves_enough(size: int, compressed: int) -> bool:
    return compressed <= size - (size >> _MIN_SAVING_SHIFT)


def _probe_shrinks(sample: bytes | memoryview) -> bool:
    return _saves_enough(len(sample), len(zlib.compress(sample, 1, wbits=-15)))


def _deflate_or_store(
    arcname: str, data: bytes, level: int, compress: bool | None
) -> tuple[int, bytes | memoryview]:
    """Method and payload for a whole entry: deflate what shrinks, store what does not."""
    if not data or compress is False or level == 0:
        return _STORED, data
    if compress is None:
        suffix = _suffix(arcname)
        if suffix in PRECOMPRESSED_SUFFIXES:
            return _STORED, data
        if (
            suffix not in TEXT_SUFFIXES
            and len(data) > 2 * _SMALL_PROBE
            and not _probe_shrinks(memoryview(data)[:_SMALL_PROBE])
        ):
            return _STORED, data
    packed = zlib.compress(data, level, wbits=-15)
    if compress is None and not _saves_enough(len(data), len(packed)):
        return _STORED, data
    return _DEFLATED, packed


def _pack(arcname: str, data: bytes, level: int, compress: bool | None = None) -> _Packed:
    method, payload = _deflate_or_store(arcname, data, level, compress)
    return _Packed(
        arcname, len(data), zlib.crc32(data), hashlib.sha256(data).hexdigest(), method, payload
    )


def _method_name(method: int) -> str:
    return "deflate" if method == _DEFLATED else "store"


class ZipStreamWriter:
    """Writes a zip into a stream that is only ever appended to (no seek, no tell).

    Not thread-safe: one thread writes (``write_entries`` uses the calling thread). The
    caller owns ``out``: :meth:`close` flushes it but does not close it.
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
        if len(self._comment) > 0xFFFF:
            raise ValueError("the archive comment is longer than 65535 bytes")
        self._out = out
        self.level = level
        self.zip64_threshold = zip64_threshold
        self._time, self._date = _dos_time(date_time or cast(DateTime, time.localtime()[:6]))
        self._records: list[_Record] = []
        self._names: set[bytes] = set()
        self._buffer = bytearray()
        self._offset = 0  # bytes handed to the writer so far: our own tell()
        self._open_entry: _OpenEntry | None = None
        self._closed = False
        self._failed: str | None = None

    @property
    def bytes_written(self) -> int:
        return self._offset

    # -- public ----------------------------------------------------------------------

    def add_bytes(self, arcname: str, data: bytes, *, compress: bool | None = None) -> WrittenEntry:
        """Write one entry from memory; ``compress`` None lets the data decide."""
        return self._write_packed(_pack(arcname, data, self.level, compress))

    def close(self) -> int:
        """Write the central directory and end records; returns the archive's total size."""
        if self._closed:
            return self._offset
        self._check_usable()
        if self._open_entry is not None:
            raise ArchiveError(self._open_entry.arcname, "the archive was closed mid-entry")
        try:
            self._write_central_directory()
            self._flush()
            flush = getattr(self._out, "flush", None)
            if flush is not None:
                flush()
        except BaseException as exc:
            self.fail(f"closing failed: {exc!r}")
            raise
        self._closed = True
        return self._offset

    def fail(self, problem: str) -> None:
        """Mark the output as unusable (a partial zip): every later call raises."""
        if self._failed is None:
            self._failed = problem

    # -- entries ---------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise ArchiveError(
                None, f"the archive is unusable after an earlier failure: {self._failed}"
            )
        if self._closed:
            raise ArchiveError(None, "the archive is closed")

    def _claim_name(self, arcname: str) -> bytes:
        self._check_usable()
        name = _encode_name(arcname)
        if name in self._names:
            raise ArchiveError(arcname, "two entries have this name")
        self._names.add(name)
        return name

    def _write_packed(self, packed: _Packed) -> WrittenEntry:
        """A whole entry: its header carries CRC and sizes, no data descriptor needed."""
        name = self._claim_name(packed.arcname)
        csize = len(packed.payload)
        zip64 = packed.size >= self.zip64_threshold or csize >= self.zip64_threshold
        record = _Record(
            name, _FLAG_UTF8, packed.method, packed.crc32, csize, packed.size, self._offset, zip64
        )
        try:
            self._emit(self._local_header(record))
            self._emit(packed.payload)
        except BaseException as exc:
            self.fail(f"writing {packed.arcname!r} failed: {exc!r}")
            raise
        self._records.append(record)
        return WrittenEntry(
            packed.arcname,
            packed.size,
            csize,
            packed.crc32,
            packed.sha256,
            _method_name(packed.method),
        )

    def _begin_streamed(self, arcname: str, method: int, max_compressed: int) -> None:
        """Header of an entry whose CRC and sizes follow its data (bit 3).

        ZIP64 must be decided now, before the data: ``max_compressed`` bounds the entry's
        compressed and uncompressed sizes.
        """
        name = self._claim_name(arcname)
        if self._open_entry is not None:
            raise ArchiveError(arcname, "an entry is already being written")
        zip64 = max_compressed >= self.zip64_threshold
        header = _Record(
            name, _FLAG_UTF8 | _FLAG_DATA_DESCRIPTOR, method, 0, 0, 0, self._offset, zip64
        )
        self._open_entry = _OpenEntry(arcname, name, method, self._offset, zip64)
        self._emit(self._local_header(header))

    def _write_streamed(self, data: bytes | memoryview) -> None:
        assert self._open_entry is not None
        self._open_entry.compressed_size += len(data)
        self._emit(data)

    def _end_streamed(self, size: int, crc32: int, sha256: str) -> WrittenEntry:
        entry = self._open_entry
        assert entry is not None
        csize = entry.compressed_size
        if not entry.zip64 and max(size, csize) >= ZIP64_LIMIT:
            # Only reachable if deflate outgrew its bound: a reader would misparse the descriptor.
            raise ArchiveError(entry.arcname, "the entry outgrew the size declared in its header")
        if entry.zip64:
            self._emit(_DESCRIPTOR64.pack(0x08074B50, crc32, csize, size))
        else:
            self._emit(_DESCRIPTOR.pack(0x08074B50, crc32, csize, size))
        self._records.append(
            _Record(
                entry.name,
                _FLAG_UTF8 | _FLAG_DATA_DESCRIPTOR,
                entry.method,
                crc32,
                csize,
                size,
                entry.offset,
                entry.zip64,
            )
        )
        self._open_entry = None
        return WrittenEntry(entry.arcname, size, csize, crc32, sha256, _method_name(entry.method))

    # -- records ---------------------------------------------------------------------

    def _local_header(self, record: _Record) -> bytes:
        extra = b""
        csize, size, version = record.compressed_size, record.size, _VERSION_DEFAULT
        if record.zip64:
            # In a local header the ZIP64 field must hold both sizes (zeros when streamed).
            extra = _ZIP64_LOCAL_EXTRA.pack(1, 16, size, csize)
            csize = size = ZIP64_LIMIT
            version = _VERSION_ZIP64
        return (
            _LOCAL.pack(
                0x04034B50,
                version,
                record.flags,
                record.method,
                self._time,
                self._date,
                record.crc32,
                csize,
                size,
                len(record.name),
                len(extra),
            )
            + record.name
            + extra
        )

    def _central_header(self, record: _Record) -> bytes:
        limit = self.zip64_threshold
        fields: list[int] = []
        size, csize, offset = record.size, record.compressed_size, record.offset
        if record.zip64 or size >= limit:
            fields.append(size)
            size = ZIP64_LIMIT
        if record.zip64 or csize >= limit:
            fields.append(csize)
            csize = ZIP64_LIMIT
        if offset >= limit:
            fields.append(offset)
            offset = ZIP64_LIMIT
        extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        version = _VERSION_ZIP64 if fields else _VERSION_DEFAULT
        return (
            _CENTRAL.pack(
                0x02014B50,
                _MADE_BY_UNIX | version,
                version,
                record.flags,
                record.method,
                self._time,
                self._date,
                record.crc32,
                csize,
                size,
                len(record.name),
                len(extra),
                0,
                0,
                0,
                _REGULAR_FILE_ATTRS,
                offset,
            )
            + record.name
            + extra
        )

    def _write_central_directory(self) -> None:
        start = self._offset
        for record in self._records:
            self._emit(self._central_header(record))
        count, cd_size, limit = len(self._records), self._offset - start, self.zip64_threshold
        needs64 = count >= _COUNT_LIMIT or cd_size >= limit or start >= limit
        if needs64:
            end64 = self._offset
            self._emit(
                _END64.pack(
                    0x06064B50,
                    44,
                    _MADE_BY_UNIX | _VERSION_ZIP64,
                    _VERSION_ZIP64,
                    0,
                    0,
                    count,
                    count,
                    cd_size,
                    start,
                )
            )
            self._emit(_END64_LOCATOR.pack(0x07064B50, 0, end64, 1))
        small_count = min(count, _COUNT_LIMIT)
        self._emit(
            _END.pack(
                0x06054B50,
                0,
                0,
                small_count,
                small_count,
                ZIP64_LIMIT if cd_size >= limit else cd_size,
                ZIP64_LIMIT if start >= limit else start,
                len(self._comment),
            )
            + self._comment
        )

    # -- output ----------------------------------------------------------------------

    def _emit(self, data: bytes | memoryview) -> None:
        self._offset += len(data)
        if len(data) >= _OUT_BUFFER:
            self._flush()
            self._write_out(data)
            return
        self._buffer += data
        if len(self._buffer) >= _OUT_BUFFER:
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


# -- the parallel pipeline -------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    level: int
    read_attempts: int
    chunk_bytes: int


@dataclass(eq=False)
class _Batch:
    """Consecutive small sources, read by one task and deflated by one task."""

    sources: list[Source]
    cost: int
    future: Future[Future[list[_Packed]]] | None = None


@dataclass(frozen=True)
class _Start:
    method: int


@dataclass(frozen=True)
class _End:
    size: int
    crc32: int
    sha256: str


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_StreamMessage = _Start | _End | _Failed | Future[bytes] | bytes | memoryview


@dataclass(eq=False)
class _Streamed:
    """A file larger than a chunk: one reader task, chunks deflated in parallel."""

    source: Source
    chunk_costs: list[int]
    granted: int = 0
    permits: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    messages: Queue[_StreamMessage] = field(default_factory=Queue)


class _Peekable:
    def __init__(self, items: Iterable[Source]) -> None:
        self._items: Iterator[Source] = iter(items)
        self._next: Source | None = None
        self._done = False

    def peek(self) -> Source | None:
        if self._next is None and not self._done:
            self._next = next(self._items, None)
            self._done = self._next is None
        return self._next

    def pop(self) -> Source:
        item = self.peek()
        assert item is not None
        self._next = None
        return item


def _read_upto(fh: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes: fewer only at the end of the file (raw streams read short)."""
    data = fh.read(limit)
    if len(data) >= limit or not data or isinstance(fh, io.BufferedIOBase):
        return data  # a buffered stream reads short only at the end: no second call needed
    parts = [data]
    got = len(data)
    while got < limit:
        more = fh.read(limit - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class _Reader:
    """Reads sources with retries; shared by the read tasks of one ``write_entries``."""

    def __init__(self, options: _Options, cancelled: threading.Event) -> None:
        self._options = options
        self._cancelled = cancelled

    def check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise _Cancelled

    def backoff(self, source: Source, attempt: int, exc: OSError) -> None:
        """Sleep before attempt ``attempt + 1``, or raise if the attempts are spent.

        A missing file will not come back; any other OSError (timeouts, resets, throttling
        surfaced by s3fs) may pass.
        """
        if isinstance(exc, FileNotFoundError):
            raise ArchiveError(source.arcname, "the file disappeared during the export") from exc
        if attempt >= self._options.read_attempts:
            raise ArchiveError(
                source.arcname, f"reading failed {attempt} times; last error: {exc!r}"
            ) from exc
        if self._cancelled.wait(RETRY_BACKOFF_S * 2 ** (attempt - 1)):
            raise _Cancelled

    def read_whole(self, source: Source) -> bytes:
        if source.data is not None:
            return source.data
        attempt = 0
        while True:
            attempt += 1
            self.check_cancelled()
            try:
                with source.open() as fh:
                    data = _read_upto(fh, source.size + 1)  # one more byte: did it grow?
                break
            except OSError as exc:
                self.backoff(source, attempt, exc)
        _check_size(source, len(data))
        return data


class _Cancelled(Exception):
    """Another part of the pipeline failed: stop quietly."""


def _check_size(source: Source, actual: int, *, grew: bool = False) -> None:
    if actual != source.size or grew:
        seen = f"more than {source.size}" if grew or actual > source.size else str(actual)
        raise ArchiveError(
            source.arcname,
            f"the listing said {source.size} bytes but {seen} were read: "
            "the file changed during the export",
        )


def _read_batch(
    reader: _Reader, pool: ThreadPoolExecutor, sources: list[Source], level: int
) -> Future[list[_Packed]]:
    blobs = [reader.read_whole(source) for source in sources]
    reader.check_cancelled()
    return pool.submit(_pack_batch, sources, blobs, level)


def _pack_batch(sources: list[Source], blobs: list[bytes], level: int) -> list[_Packed]:
    return [_pack(s.arcname, data, level) for s, data in zip(sources, blobs, strict=True)]


def _deflate_chunk(data: bytes, primer: bytes | None, level: int, last: bool) -> bytes:
    """One piece of a raw deflate stream; pieces concatenate into one stream (pigz)."""
    if primer:
        # The decoder has these bytes in its window already: matches may reach back.
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=primer)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    head = compressor.compress(data)
    tail = compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return head + tail if head else tail


def _streamed_method(arcname: str, head: bytes, level: int) -> int:
    if level == 0 or is_precompressed(arcname):
        return _STORED
    return _DEFLATED if _probe_shrinks(memoryview(head)[:_LARGE_PROBE]) else _STORED


def _max_compressed(size: int, chunks: int) -> int:
    # Above zlib's deflateBound for every chunk plus the sync-flush markers.
    return size + (size >> 11) + 64 * (chunks + 1)


class _ChunkReader:
    """Reads one large file chunk by chunk, resuming at the failed offset on errors.

    Earlier chunks may be in the output already, so a failed read cannot restart the
    file: it reopens it and seeks (or skips) to where it stopped.
    """

    def __init__(self, reader: _Reader, source: Source) -> None:
        self._reader = reader
        self._source = source
        self._fh: BinaryIO | None = None
        self.offset = 0

    def read(self, length: int) -> bytes:
        attempt = 0
        while True:
            attempt += 1
            self._reader.check_cancelled()
            try:
                if self._fh is None:
                    self._fh = self._reopen()
                data = _read_upto(self._fh, length)
                break
            except OSError as exc:
                self.close()
                self._reader.backoff(self._source, attempt, exc)
        self.offset += len(data)
        return data

    def _reopen(self) -> BinaryIO:
        fh = self._source.open()
        if self.offset:
            if fh.seekable():
                fh.seek(self.offset)
            else:
                skipped = 0
                while skipped < self.offset:
                    piece = fh.read(min(self.offset - skipped, 1 << 20))
                    if not piece:
                        break
                    skipped += len(piece)
        return fh

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            with contextlib.suppress(OSError):  # a failed close loses nothing we need
                fh.close()


def _read_streamed(
    reader: _Reader, pool: ThreadPoolExecutor, item: _Streamed, options: _Options
) -> None:
    """The reader task of a large file: messages go to the writer through ``item.messages``."""
    source, chunks = item.source, len(item.chunk_costs)
    crc, sha = 0, hashlib.sha256()
    primer: bytes | None = None
    method = _STORED
    files = _ChunkReader(reader, source)
    try:
        for index, cost in enumerate(item.chunk_costs):
            while not item.permits.acquire(timeout=0.2):  # the window grants chunks in order
                reader.check_cancelled()
            data = files.read(cost)
            if len(data) != cost:
                _check_size(source, files.offset)
            crc = zlib.crc32(data, crc)
            sha.update(data)
            last = index == chunks - 1
            if last and files.read(1):
                _check_size(source, files.offset, grew=True)
            if index == 0:
                method = _streamed_method(source.arcname, data, options.level)
                item.messages.put(_Start(method))
            if method == _DEFLATED:
                item.messages.put(pool.submit(_deflate_chunk, data, primer, options.level, last))
                primer = data[-_DEFLATE_WINDOW:]
            else:
                item.messages.put(data)
        item.messages.put(_End(files.offset, crc, sha.hexdigest()))
    except BaseException as exc:
        item.messages.put(_Failed(exc))
    finally:
        files.close()


class _Pipeline:
    """Reads, deflates and writes sources in order, within a window of bytes in flight."""

    def __init__(
        self,
        writer: ZipStreamWriter,
        *,
        read_workers: int,
        compress_workers: int,
        window_bytes: int,
        options: _Options,
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self._writer = writer
        self._options = options
        self._window = window_bytes
        self._batch_bytes = max(64 * 1024, min(_BATCH_BYTES, window_bytes // (2 * read_workers)))
        self._on_progress = on_progress
        self._cancelled = threading.Event()
        self._reader = _Reader(options, self._cancelled)
        self._read_pool = ThreadPoolExecutor(read_workers, thread_name_prefix="zip-read")
        self._pack_pool = ThreadPoolExecutor(compress_workers, thread_name_prefix="zip-deflate")
        self._pending: deque[_Batch | _Streamed] = deque()
        self._granting: _Streamed | None = None
        self.in_flight = 0
        self.peak_in_flight = 0
        self._files_done = 0
        self._bytes_done = 0
        self._last_progress = time.monotonic()

    def run(self, sources: Iterable[Source]) -> list[WrittenEntry]:
        upcoming = _Peekable(sources)
        written: list[WrittenEntry] = []
        try:
            self._fill(upcoming)
            while self._pending:
                item = self._pending.popleft()
                if isinstance(item, _Batch):
                    written.extend(self._write_batch(item))
                else:
                    written.append(self._write_large(item, upcoming))
                del item  # its buffers are out of the window now: free them before reading more
                self._fill(upcoming)
            self._progress(final=True)
            return written
        except BaseException as exc:
            self._writer.fail(f"{type(exc).__name__}: {exc}")
            self._cancelled.set()
            raise
        finally:
            self._read_pool.shutdown(wait=True, cancel_futures=True)
            self._pack_pool.shutdown(wait=True, cancel_futures=True)

    # -- dispatch --------------------------------------------------------------------

    def _is_large(self, source: Source) -> bool:
        return source.data is None and source.size > self._options.chunk_bytes

    def _has_room(self, cost: int) -> bool:
        # One item may exceed the window on its own; otherwise nothing could ever start.
        return self.in_flight == 0 or self.in_flight + cost <= self._window

    def _take(self, cost: int) -> None:
        self.in_flight += cost
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _fill(self, upcoming: _Peekable) -> None:
        """Start reads in source order while the window has room (the only place reads start)."""
        while True:
            if self._granting is not None:
                if not self._grant_chunk(self._granting):
                    return
                continue
            source = upcoming.peek()
            if source is None:
                return
            _validate(source)
            if self._is_large(source):
                self._start_large(upcoming.pop())
            elif not self._start_batch(upcoming):
                return

    def _start_batch(self, upcoming: _Peekable) -> bool:
        batch: list[Source] = []
        cost = 0
        while (source := upcoming.peek()) is not None and not self._is_large(source):
            _validate(source)
            entry_cost = max(source.size, _ENTRY_COST)
            if batch and (cost + entry_cost > self._batch_bytes or len(batch) >= _BATCH_FILES):
                break
            if not self._has_room(cost + entry_cost):
                break
            batch.append(upcoming.pop())
            cost += entry_cost
        if not batch:
            return False
        self._take(cost)
        item = _Batch(batch, cost)
        item.future = self._read_pool.submit(
            _read_batch, self._reader, self._pack_pool, batch, self._options.level
        )
        self._pending.append(item)
        return True

    def _start_large(self, source: Source) -> None:
        chunk = self._options.chunk_bytes
        costs = [min(chunk, source.size - start) for start in range(0, source.size, chunk)]
        item = _Streamed(source, costs)
        self._read_pool.submit(_read_streamed, self._reader, self._pack_pool, item, self._options)
        self._pending.append(item)
        self._granting = item

    def _grant_chunk(self, item: _Streamed) -> bool:
        cost = item.chunk_costs[item.granted]
        if not self._has_room(cost):
            return False
        self._take(cost)
        item.granted += 1
        item.permits.release()
        if item.granted == len(item.chunk_costs):
            self._granting = None
        return True

    # -- writing ---------------------------------------------------------------------

    def _write_batch(self, item: _Batch) -> list[WrittenEntry]:
        assert item.future is not None
        packed = item.future.result().result()
        entries = [self._writer._write_packed(p) for p in packed]
        self.in_flight -= item.cost
        self._files_done += len(entries)
        self._bytes_done += sum(e.size for e in entries)
        self._progress()
        return entries

    def _write_large(self, item: _Streamed, upcoming: _Peekable) -> WrittenEntry:
        source, chunks = item.source, len(item.chunk_costs)
        start = self._receive(item)
        if not isinstance(start, _Start):
            raise AssertionError(f"unexpected message {start!r}")
        self._writer._begin_streamed(
            source.arcname, start.method, _max_compressed(source.size, chunks)
        )
        for cost in item.chunk_costs:
            message = self._receive(item)
            if isinstance(message, Future):
                message = message.result()
            if not isinstance(message, bytes | memoryview):
                raise AssertionError(f"unexpected message {message!r}")
            self._writer._write_streamed(message)
            del message  # let the chunk go before more reads start
            self.in_flight -= cost
            self._bytes_done += cost
            self._progress()
            self._fill(upcoming)  # room was given back: keep the readers busy
        end = self._receive(item)
        if not isinstance(end, _End):
            raise AssertionError(f"unexpected message {end!r}")
        self._files_done += 1
        return self._writer._end_streamed(end.size, end.crc32, end.sha256)

    @staticmethod
    def _receive(item: _Streamed) -> _StreamMessage:
        message = item.messages.get()
        if isinstance(message, _Failed):
            raise message.error
        return message

    def _progress(self, *, final: bool = False) -> None:
        if self._on_progress is None:
            return
        now = time.monotonic()
        if final or now - self._last_progress >= 0.5:
            self._last_progress = now
            self._on_progress(self._files_done, self._bytes_done)


def _validate(source: Source) -> None:
    if source.size < 0:
        raise ArchiveError(source.arcname, f"negative size {source.size}")
    if source.data is not None and len(source.data) != source.size:
        raise ArchiveError(
            source.arcname, f"size says {source.size} bytes but data has {len(source.data)}"
        )


def write_entries(
    writer: ZipStreamWriter,
    sources: Iterable[Source],
    *,
    read_workers: int = 16,
    compress_workers: int = 2,
    window_bytes: int = 64 * 2**20,
    chunk_bytes: int = CHUNK_BYTES,
    read_attempts: int = 3,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[WrittenEntry]:
    """Write ``sources`` into ``writer`` in order; returns their entries in the same order.

    Reads run in ``read_workers`` threads and deflate in ``compress_workers`` threads;
    at most ``window_bytes`` uncompressed bytes (plus one oversized entry) are in flight.
    Files larger than ``chunk_bytes`` are streamed in chunks. A read failing with an
    OSError is retried ``read_attempts`` times in all, with backoff. Any failure raises
    (an :class:`ArchiveError` for unreadable or changed files) and leaves the writer
    unusable: the output is a partial zip to discard. ``on_progress(files, bytes)`` is
    called from this thread at most every 0.5 s and once at the end.
    """
    if read_workers < 1 or compress_workers < 1 or read_attempts < 1:
        raise ValueError("read_workers, compress_workers and read_attempts must be >= 1")
    if chunk_bytes < 1 or window_bytes < chunk_bytes:
        raise ValueError("chunk_bytes must be >= 1 and window_bytes >= chunk_bytes")
    writer._check_usable()
    pipeline = _Pipeline(
        writer,
        read_workers=read_workers,
        compress_workers=compress_workers,
        window_bytes=window_bytes,
        options=_Options(writer.level, read_attempts, chunk_bytes),
        on_progress=on_progress,
    )
    return pipeline.run(sources)
