"""Packing batches of small files in other processes.

hashlib and zlib keep the GIL for buffers under 2 KiB, so deflate threads cannot share out
the hashing and deflating of tiny files: for a course of 100,000 files of about 1 KB that
is ~29 µs a file under the GIL, more than all the rest of the main process's work on a
file (~18 µs). Once a course has shown many small files, their batches go to packer
processes instead, and the main process only writes records. Files that any process of
this machine can read by path (local storage) are read by the packer too: reading them
in the main process (system calls, hand-offs between its threads, the bytes pickled
again) cost about as much as all of its own work on a tiny file. A packer that cannot
read one of a batch's files exactly as listed answers None, and the main process reads
that batch itself, with its retries and its errors that name the file.

A packer is a ``python`` running :func:`serve` on pipes, not a
``multiprocessing`` pool: a spawned pool re-imports the caller's ``__main__`` (all of
Prefect for a flow run, or a user's unguarded script, which then fails), and forking a
process full of threads is unsafe. It imports only this package, so it starts in a
fraction of a second, which about :data:`AFTER_SMALL_FILES` small files pay back: small
courses never start one. Batches and results are length-prefixed pickles, in order (one
reader thread a packer completes the futures first in, first out); a packed batch comes
back as columns (:class:`_Columns`). A packer holds at most :data:`QUEUED_BATCHES`
batches, and its pipes hold a packed batch: neither process ever waits on a full pipe
while the other has work for it. The packed entries are the same bytes either way: the
zip does not depend on where a batch was packed.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from itertools import accumulate
from operator import attrgetter
from typing import IO, NamedTuple

from course_exports.local_files import enlarge_pipe, read_listed
from course_exports.zipstream.compression import PackedEntry, pack

#: A batch whose files average less than this goes to a packer process (above it hashing
#: and deflating release the GIL, and threads do as well without the copy to a process).
SMALL_AVERAGE_BYTES = 4096
#: Small files seen before packer processes are started.
AFTER_SMALL_FILES = 10_000
#: Batches a packer holds (queued or being packed) before the pipeline waits for one to
#: come back: ~50 ms of a packer's work on tiny files, so it never idles, while the
#: pipeline's thread writes finished batches instead of blocking on a full pipe.
QUEUED_BATCHES = 8
#: A frame on the pipes: the length of the pickle that follows.
_FRAME = struct.Struct("<Q")


def pack_named(arcnames: list[str], blobs: list[bytes], level: int) -> list[PackedEntry]:
    """Hash and deflate a batch (in a thread, or in a packer process)."""
    return [pack(name, data, level) for name, data in zip(arcnames, blobs, strict=True)]


def pack_files(
    arcnames: list[str], paths: list[str], sizes: list[int], level: int
) -> list[PackedEntry] | None:
    """Read a batch by path, hash and deflate it; None if a file is not as listed (gone,
    unreadable, another size): the caller reads the batch itself and says what is wrong."""
    blobs = read_listed(paths, sizes)
    return None if blobs is None else pack_named(arcnames, blobs, level)


class _Columns(NamedTuple):
    """A packed batch as it crosses the pipe: a few lists and two blobs, not a pickled
    object per entry (the packer pickles less, the export process unpickles less)."""

    arcnames: list[str]
    sizes: list[int]
    crc32s: list[int]
    sha256s: str  # the hex digests back to back, as pack() made them
    methods: bytes  # one byte each
    ends: list[int]  # where each payload ends in ``payloads``
    payloads: bytes


_HEX_DIGEST = 64


def _to_columns(entries: list[PackedEntry]) -> _Columns:
    return _Columns(
        [entry.arcname for entry in entries],
        [entry.size for entry in entries],
        [entry.crc32 for entry in entries],
        "".join(entry.sha256 for entry in entries),
        bytes(entry.method for entry in entries),
        list(accumulate(len(entry.payload) for entry in entries)),
        b"".join(entry.payload for entry in entries),
    )


class PackedColumns:
    """A batch a packer process packed: its entries come out as it is iterated, in the
    thread that iterates it (the pipeline's writer). Made in the thread that reads the
    packer's pipe, which must do as little as it can: per-file work there cost the
    export process ~5x what the same work costs in the writer's thread (the two threads
    hand the GIL back and forth; measured ~9 µs against ~1.6 µs a file)."""

    __slots__ = ("_columns",)

    def __init__(self, columns: _Columns) -> None:
        self._columns = columns

    def __iter__(self) -> Iterator[PackedEntry]:
        columns = self._columns
        view = memoryview(columns.payloads)  # payloads are views into one blob: no copies
        digests = columns.sha256s
        rows = zip(
            columns.arcnames, columns.sizes, columns.crc32s, columns.methods, columns.ends,
            strict=True,
        )  # fmt: skip
        start = 0
        for index, (arcname, size, crc32, method, end) in enumerate(rows):
            digest = digests[index * _HEX_DIGEST : (index + 1) * _HEX_DIGEST]
            yield PackedEntry(arcname, size, crc32, digest, method, view[start:end])
            start = end


#: What packing a batch gives: its entries, or None for "read it yourself".
Packed = list[PackedEntry] | PackedColumns | None


#: The kinds of batch a packer takes, by the name each frame carries.
_READ, _BY_PATH = "read", "by path"
_PACKERS: dict[str, Callable[..., list[PackedEntry] | None]] = {
    _READ: pack_named,
    _BY_PATH: pack_files,
}


def default_workers() -> int:
    """One process fewer than the cores: the main process keeps one busy itself."""
    return max(1, (os.cpu_count() or 2) - 1)


class PackerDiedError(RuntimeError):
    """A packer process ended before answering (killed, out of memory)."""


def _write_frame(out: IO[bytes], payload: bytes) -> None:
    out.write(_FRAME.pack(len(payload)))
    out.write(payload)
    out.flush()


def _read_frame(source: IO[bytes]) -> bytes | None:
    head = source.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    payload = source.read(size)
    return payload if len(payload) == size else None


class PackerProcess:
    """One packer process: batches go in, packed entries come back in the same order."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", f"import {__name__} as p; p.serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for pipe in (self._process.stdin, self._process.stdout):
            enlarge_pipe(pipe)
        self._waiting: deque[Future[Packed]] = deque()
        self._lock = threading.Lock()  # a batch's frame and its future go in together
        self._reader = threading.Thread(target=self._read_results, daemon=True)
        self._reader.start()

    def submit(self, arcnames: list[str], blobs: list[bytes], level: int) -> Future[Packed]:
        """Pack a batch read already (never answers None)."""
        return self._send(_READ, (arcnames, blobs, level))

    def submit_paths(
        self, arcnames: list[str], paths: list[str], sizes: list[int], level: int
    ) -> Future[Packed]:
        """Read and pack a batch of files by path (see :func:`pack_files`)."""
        return self._send(_BY_PATH, (arcnames, paths, sizes, level))

    @property
    def queued(self) -> int:
        """Batches sent and not answered yet."""
        return len(self._waiting)

    def _send(self, kind: str, arguments: tuple[object, ...]) -> Future[Packed]:
        future: Future[Packed] = Future()
        payload = pickle.dumps((kind, arguments), protocol=pickle.HIGHEST_PROTOCOL)
        assert self._process.stdin is not None
        with self._lock:
            self._waiting.append(future)
            try:
                _write_frame(self._process.stdin, payload)
            except (BrokenPipeError, ValueError):  # dead, or closed by shutdown
                self._waiting.remove(future)
                future.set_exception(PackerDiedError("the packer process is gone"))
        return future

    def _read_results(self) -> None:
        assert self._process.stdout is not None
        while (payload := _read_frame(self._process.stdout)) is not None:
            future = self._waiting.popleft()
            result = pickle.loads(payload)
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(None if result is None else PackedColumns(result))
        problem = PackerDiedError(f"the packer process ended (exit {self._process.poll()})")
        while self._waiting:
            self._waiting.popleft().set_exception(problem)

    def shutdown(self, *, cancel: bool) -> None:
        """End the process: after its batches (closing its input), or at once."""
        if cancel:
            self._process.kill()
        elif self._process.stdin is not None:
            with self._lock:
                self._process.stdin.close()
        self._process.wait()
        self._reader.join()


class SmallFilePacker:
    """Decides, batch by batch, whether a packer process packs it; owns those processes."""

    def __init__(
        self, workers: int, after_files: int = AFTER_SMALL_FILES, small_files_ahead: int = 0
    ) -> None:
        self._workers = workers
        # A caller that knows as many small files are coming (a course's plan) has them
        # packed in processes from the first: threads pack the first ``after_files`` at
        # about half a packer's rate (measured on 100,000 tiny files: 0.1-0.8 s).
        self._after = 0 if small_files_ahead >= after_files else after_files
        self._seen = 0
        self._processes: list[PackerProcess] = []

    def busy(self) -> bool:
        """Every packer holds :data:`QUEUED_BATCHES`: the pipeline packs at most one batch
        itself meanwhile and starts no other until it has written one that came back
        (there is always one in flight then)."""
        return bool(self._processes) and all(
            process.queued >= QUEUED_BATCHES for process in self._processes
        )

    def packer_for(self, files: int, size: int) -> PackerProcess | None:
        """The packer for a batch of ``files`` files of ``size`` bytes in all, or None when
        threads should pack it. Called from one thread (the pipeline's)."""
        if self._workers < 1 or size >= files * SMALL_AVERAGE_BYTES:
            return None
        self._seen += files
        if self._seen < self._after:
            return None
        if not self._processes:
            self._processes = [PackerProcess() for _ in range(self._workers)]
        return min(self._processes, key=attrgetter("queued"))  # the first of the least busy

    def shutdown(self, *, cancel: bool = False) -> None:
        for process in self._processes:
            process.shutdown(cancel=cancel)
        self._processes = []


def serve(source: IO[bytes] | None = None, out: IO[bytes] | None = None) -> None:
    """The packer's loop: a batch in, its entries (or the exception) out, until EOF."""
    source = source or sys.stdin.buffer
    out = out or sys.stdout.buffer
    while (payload := _read_frame(source)) is not None:
        kind, arguments = pickle.loads(payload)
        try:
            packed = _PACKERS[kind](*arguments)
            result: object = None if packed is None else _to_columns(packed)
        except Exception as exc:
            result = exc
        _write_frame(out, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
