"""Read, deflate and write many sources in order, on every core, in bounded memory.

* Small files are read whole in batches (fewer hand-offs between threads), deflated as
  a batch in a second pool (zlib-ng releases the GIL, so threads use every core), and
  written whole: their headers carry CRC and sizes.
* Files larger than a chunk are read chunk by chunk by one reader task; the chunks are
  deflated in parallel like pigz and written with a data descriptor (:mod:`.streamed`).
* Uncompressed bytes in flight are bounded by a window that the writer grants in source
  order: a read only starts once the window has room, and room only comes back once the
  bytes are written, so memory stays bounded whatever the course size and the in-order
  grant can never deadlock.
* One writer, the calling thread, writes entries in source order (a deterministic zip),
  through the writer's public API only.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from course_exports.heap import fewer_collections
from course_exports.zipstream.compression import max_deflated_size
from course_exports.zipstream.processes import (
    AFTER_SMALL_FILES,
    Packed,
    SmallFilePacker,
    default_workers,
    pack_files,
    pack_named,
)
from course_exports.zipstream.reading import Reader, Source
from course_exports.zipstream.streamed import (
    End,
    Failed,
    Start,
    Streamed,
    StreamMessage,
    read_streamed,
)
from course_exports.zipstream.writer import ArchiveError, WrittenEntry, ZipStreamWriter

__all__ = ["CHUNK_BYTES", "stream_entries", "write_entries"]

# Files larger than this are streamed in chunks of this size; smaller ones are read whole.
CHUNK_BYTES = 4 * 2**20
_BATCH_BYTES = 1 << 20  # small files are read and deflated in batches: less per-task overhead
_BATCH_FILES = 128
#: Batches this process packs itself (in its threads) while every packer process is full,
#: instead of waiting: on 2 cores a packer is the busier process (~50 µs a tiny file
#: against ~35 µs of the export process's own), and the rest of the export process's core
#: takes a batch. Measured on 100,000 tiny files: 5.38 s against 5.77 s on average (five
#: alternating pairs, none slower). One: more would take the writer's GIL and core.
_OWN_BATCHES = 1
_ENTRY_COST = 1024  # window bytes charged per entry at least, so the entries in flight are bounded


@dataclass(frozen=True)
class _Options:
    level: int
    chunk_bytes: int


@dataclass(eq=False)
class _Batch:
    """Consecutive small sources, read by one task and deflated by one task."""

    sources: list[Source]
    cost: int
    future: Future[Future[Packed]] | None = None
    own: bool = False  # packed by this process while every packer was full


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


#: Hands a batch (names, bytes, level) to whoever packs it: a thread or a packer process.
_Submit = Callable[[list[str], list[bytes], int], Future[Packed]]


def _read_batch(
    reader: Reader, submit: _Submit, sources: list[Source], level: int
) -> Future[Packed]:
    blobs = [reader.read_whole(source) for source in sources]
    reader.check_cancelled()
    return submit([source.arcname for source in sources], blobs, level)


class _Pipeline:
    """Reads, deflates and writes sources in order, within a window of bytes in flight."""

    def __init__(
        self,
        writer: ZipStreamWriter,
        *,
        read_workers: int,
        compress_workers: int,
        window_bytes: int,
        read_attempts: int,
        options: _Options,
        on_progress: Callable[[int, int], None] | None,
        small_files: SmallFilePacker,
    ) -> None:
        self._writer = writer
        self._options = options
        self._window = window_bytes
        self._batch_bytes = max(64 * 1024, min(_BATCH_BYTES, window_bytes // (2 * read_workers)))
        self._on_progress = on_progress
        self._cancelled = threading.Event()
        self._reader = Reader(read_attempts, self._cancelled)
        self._read_pool = ThreadPoolExecutor(read_workers, thread_name_prefix="zip-read")
        self._pack_pool = ThreadPoolExecutor(compress_workers, thread_name_prefix="zip-deflate")
        self._small_files = small_files
        self._pending: deque[_Batch | Streamed] = deque()
        self._granting: Streamed | None = None
        self.in_flight = 0
        self._own_batches = 0
        self._files_done = 0
        self._bytes_done = 0
        self._last_progress = time.monotonic()

    def run(self, sources: Iterable[Source]) -> Iterator[WrittenEntry]:
        # Several objects a file, alive for milliseconds: see heap.fewer_collections.
        with fewer_collections():
            yield from self._run(sources)

    def _run(self, sources: Iterable[Source]) -> Iterator[WrittenEntry]:
        upcoming = _Peekable(sources)
        try:
            self._fill(upcoming)
            while self._pending:
                item = self._pending.popleft()
                if isinstance(item, _Batch):
                    yield from self._write_batch(item)
                else:
                    yield self._write_large(item, upcoming)
                del item  # its buffers are out of the window now: free them before reading more
                self._fill(upcoming)
            self._progress(final=True)
        except BaseException as exc:  # GeneratorExit too: a consumer that stops early
            self._writer.fail(f"{type(exc).__name__}: {exc}")
            self._small_files.shutdown(cancel=True)
            raise
        finally:
            self._cancelled.set()
            self._read_pool.shutdown(wait=True, cancel_futures=True)
            self._pack_pool.shutdown(wait=True, cancel_futures=True)
            self._small_files.shutdown()

    def _pack_in_threads(
        self, arcnames: list[str], blobs: list[bytes], level: int
    ) -> Future[Packed]:
        return self._pack_pool.submit(pack_named, arcnames, blobs, level)

    # -- dispatch --------------------------------------------------------------------

    def _is_large(self, source: Source) -> bool:
        return source.data is None and source.size > self._options.chunk_bytes

    def _has_room(self, cost: int) -> bool:
        # One item may exceed the window on its own; otherwise nothing could ever start.
        return self.in_flight == 0 or self.in_flight + cost <= self._window

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
        # Once per file: the checks are written out here rather than called (100,000
        # tiny files make every call per file show).
        # While every packer is full, this process packs a batch itself (_OWN_BATCHES).
        own = self._small_files.busy()
        if own and self._own_batches >= _OWN_BATCHES:
            return False  # no batch starts (small or not) until one in flight is written
        batch: list[Source] = []
        cost = 0
        chunk_bytes, batch_bytes = self._options.chunk_bytes, self._batch_bytes
        room = self._window - self.in_flight
        while len(batch) < _BATCH_FILES and (source := upcoming.peek()) is not None:
            size = source.size
            if source.data is None and size > chunk_bytes:
                break  # a large file: streamed on its own
            _validate(source)
            entry_cost = size if size > _ENTRY_COST else _ENTRY_COST
            if batch and cost + entry_cost > batch_bytes:
                break
            if cost + entry_cost > room and (batch or self.in_flight):
                break  # no room in the window (an item may exceed it alone when idle)
            batch.append(upcoming.pop())
            cost += entry_cost
        if not batch:
            return False
        self.in_flight += cost
        item = _Batch(batch, cost, own=own)
        self._own_batches += own
        level = self._options.level
        packer = None
        if not own:
            packer = self._small_files.packer_for(len(batch), sum(s.size for s in batch))
        # Files any process can read by path are read by the packer itself (or, for a
        # batch of this process's own, the same way in a thread).
        paths = [s.shared_path for s in batch if s.shared_path is not None and s.data is None]
        if (packer is not None or own) and len(paths) == len(batch):
            arcnames, sizes = [s.arcname for s in batch], [s.size for s in batch]
            if packer is not None:
                packed = packer.submit_paths(arcnames, paths, sizes, level)
            else:
                packed = self._pack_pool.submit(pack_files, arcnames, paths, sizes, level)
            item.future = _resolved(packed)
        else:
            submit = packer.submit if packer is not None else self._pack_in_threads
            item.future = self._read_pool.submit(_read_batch, self._reader, submit, batch, level)
        self._pending.append(item)
        return True

    def _start_large(self, source: Source) -> None:
        chunk = self._options.chunk_bytes
        costs = [min(chunk, source.size - start) for start in range(0, source.size, chunk)]
        item = Streamed(source, costs)
        self._read_pool.submit(
            read_streamed, self._reader, self._pack_pool, item, self._options.level
        )
        self._pending.append(item)
        self._granting = item

    def _grant_chunk(self, item: Streamed) -> bool:
        cost = item.chunk_costs[item.granted]
        if not self._has_room(cost):
            return False
        self.in_flight += cost
        item.granted += 1
        item.permits.release()
        if item.granted == len(item.chunk_costs):
            self._granting = None
        return True

    # -- writing ---------------------------------------------------------------------

    def _write_batch(self, item: _Batch) -> list[WrittenEntry]:
        assert item.future is not None
        packed = item.future.result().result()
        if packed is None:  # a packer could not read a file as listed: read here, and say why
            packed = _read_batch(
                self._reader, self._pack_in_threads, item.sources, self._options.level
            ).result()
            assert packed is not None
        entries = self._writer.add_packed_all(packed)
        self._own_batches -= item.own
        self.in_flight -= item.cost
        self._files_done += len(entries)
        self._bytes_done += sum(e.size for e in entries)
        self._progress()
        return entries

    def _write_large(self, item: Streamed, upcoming: _Peekable) -> WrittenEntry:
        source, chunks = item.source, len(item.chunk_costs)
        start = self._receive(item)
        if not isinstance(start, Start):
            raise AssertionError(f"unexpected message {start!r}")
        self._writer.begin_entry(
            source.arcname, start.method, max_deflated_size(source.size, chunks)
        )
        for cost in item.chunk_costs:
            message = self._receive(item)
            if isinstance(message, Future):
                message = message.result()
            if not isinstance(message, bytes | memoryview):
                raise AssertionError(f"unexpected message {message!r}")
            self._writer.write_data(message)
            del message  # let the chunk go before more reads start
            self.in_flight -= cost
            self._bytes_done += cost
            self._progress()
            self._fill(upcoming)  # room was given back: keep the readers busy
        end = self._receive(item)
        if not isinstance(end, End):
            raise AssertionError(f"unexpected message {end!r}")
        self._files_done += 1
        return self._writer.end_entry(end.size, end.crc32, end.sha256)

    @staticmethod
    def _receive(item: Streamed) -> StreamMessage:
        message = item.messages.get()
        if isinstance(message, Failed):
            raise message.error
        return message

    def _progress(self, *, final: bool = False) -> None:
        if self._on_progress is None:
            return
        now = time.monotonic()
        if final or now - self._last_progress >= 0.5:
            self._last_progress = now
            self._on_progress(self._files_done, self._bytes_done)


def _resolved(future: Future[Packed]) -> Future[Future[Packed]]:
    """A batch handed to a packer without a read task, in the shape of one that had it."""
    outer: Future[Future[Packed]] = Future()
    outer.set_result(future)
    return outer


def _validate(source: Source) -> None:
    if source.size < 0:
        raise ArchiveError(source.arcname, f"negative size {source.size}")
    if source.data is not None and len(source.data) != source.size:
        raise ArchiveError(
            source.arcname, f"size says {source.size} bytes but data has {len(source.data)}"
        )


def stream_entries(
    writer: ZipStreamWriter,
    sources: Iterable[Source],
    *,
    read_workers: int = 16,
    compress_workers: int = 2,
    window_bytes: int = 64 * 2**20,
    chunk_bytes: int = CHUNK_BYTES,
    read_attempts: int = 3,
    on_progress: Callable[[int, int], None] | None = None,
    small_file_processes: int | None = None,
    processes_after_files: int | None = None,
    small_files_ahead: int = 0,
) -> Iterator[WrittenEntry]:
    """Write ``sources`` into ``writer`` in order, yielding each entry once written.

    Reads run in ``read_workers`` threads and deflate in ``compress_workers`` threads;
    at most ``window_bytes`` uncompressed bytes (plus one oversized entry) are in flight.
    Files larger than ``chunk_bytes`` are streamed in chunks. A read failing with an
    OSError is retried ``read_attempts`` times in all, with backoff. Any failure raises
    (an :class:`ArchiveError` for unreadable or changed files) and leaves the writer
    unusable: the output is a partial zip to discard. So does closing the generator
    before its end. ``on_progress(files, bytes)`` is called from the consuming thread at
    most every 0.5 s and once at the end. Batches of small files go to
    ``small_file_processes`` packer processes (default: one fewer than the cores; 0: never)
    once ``processes_after_files`` small files were seen (see ``processes``), or from the
    first if the caller expects ``small_files_ahead`` files in batches averaging under
    ``SMALL_AVERAGE_BYTES`` and that is as many.
    """
    if read_workers < 1 or compress_workers < 1 or read_attempts < 1:
        raise ValueError("read_workers, compress_workers and read_attempts must be >= 1")
    if chunk_bytes < 1 or window_bytes < chunk_bytes:
        raise ValueError("chunk_bytes must be >= 1 and window_bytes >= chunk_bytes")
    writer.check_usable()
    pipeline = _Pipeline(
        writer,
        read_workers=read_workers,
        compress_workers=compress_workers,
        window_bytes=window_bytes,
        read_attempts=read_attempts,
        options=_Options(writer.level, chunk_bytes),
        on_progress=on_progress,
        small_files=SmallFilePacker(
            default_workers() if small_file_processes is None else small_file_processes,
            AFTER_SMALL_FILES if processes_after_files is None else processes_after_files,
            small_files_ahead,
        ),
    )
    return pipeline.run(sources)


def write_entries(
    writer: ZipStreamWriter, sources: Iterable[Source], **options: Any
) -> list[WrittenEntry]:
    """:func:`stream_entries`, all at once: the entries in source order."""
    return list(stream_entries(writer, sources, **options))
