"""Reading sources for the pipeline: whole or in chunks, with retries, size-checked."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

from course_exports.zipstream.writer import ArchiveError

__all__ = ["RETRY_BACKOFF_S", "Cancelled", "ChunkReader", "Reader", "Source", "check_size"]

RETRY_BACKOFF_S = 0.25


def _unused_open() -> BinaryIO:
    raise AssertionError("a Source with data is never opened")


class ReadFailedError(ArchiveError):
    """A file kept failing to read (timeouts, resets, 5xx from S3): the storage, not the
    file, is the problem, so the whole step may be tried again later (``transient``)."""

    transient = True

    def __init__(self, arcname: str | None, problem: str) -> None:
        super().__init__(arcname, problem)
        self.reason = "the storage service did not answer in time; please request the export again"


class Source(NamedTuple):
    """One entry to write: where it goes in the zip and how to read it.

    ``open`` and ``read`` are called in worker threads, and again after a failure (a
    file streamed in chunks is reopened, then seeks or skips to where it stopped).
    """

    arcname: str  # path inside the zip (already made safe by the caller), '/' separated
    size: int  # expected size in bytes (from the listing)
    open: Callable[[], BinaryIO]
    data: bytes | None = None  # small generated entries: when set, nothing is read
    # Optional: the whole file in one call (at least ``size + 1`` bytes if it has them,
    # so growth shows), cheaper than open/read/close for files read whole.
    read: Callable[[], bytes] | None = None
    # Optional: a path by which any process of this machine can read the file (storage's
    # ``shared_path``): packer processes then read small files themselves.
    shared_path: str | None = None

    @classmethod
    def of_bytes(cls, arcname: str, data: bytes) -> Source:
        return cls(arcname, len(data), _unused_open, data)


class Cancelled(Exception):
    """Another part of the pipeline failed: stop quietly."""


def check_size(source: Source, actual: int, *, grew: bool = False) -> None:
    if actual != source.size or grew:
        seen = f"more than {source.size}" if grew or actual > source.size else str(actual)
        raise ArchiveError(
            source.arcname,
            f"the listing said {source.size} bytes but {seen} were read: "
            "the file changed during the export",
        )


def read_upto(fh: BinaryIO, limit: int) -> bytes:
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


class Reader:
    """Reads sources with retries; shared by the read tasks of one pipeline."""

    def __init__(self, attempts: int, cancelled: threading.Event) -> None:
        self._attempts = attempts
        self._cancelled = cancelled

    def check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled

    def backoff(self, source: Source, attempt: int, exc: OSError) -> None:
        """Sleep before attempt ``attempt + 1``, or raise if the attempts are spent.

        A missing file will not come back; any other OSError (timeouts, resets, throttling
        surfaced by the storage client) may pass.
        """
        if isinstance(exc, FileNotFoundError):
            raise ArchiveError(source.arcname, "the file disappeared during the export") from exc
        if attempt >= self._attempts:
            raise ReadFailedError(
                source.arcname, f"reading failed {attempt} times; last error: {exc!r}"
            ) from exc
        if self._cancelled.wait(RETRY_BACKOFF_S * 2 ** (attempt - 1)):
            raise Cancelled

    def read_whole(self, source: Source) -> bytes:
        if source.data is not None:
            return source.data
        attempt = 0
        while True:
            attempt += 1
            try:
                if source.read is not None:
                    data = source.read()
                else:
                    with source.open() as fh:
                        data = read_upto(fh, source.size + 1)  # one more byte: did it grow?
                break
            except OSError as exc:
                self.backoff(source, attempt, exc)
        if len(data) != source.size:
            check_size(source, len(data))
        return data


class ChunkReader:
    """Reads one large file chunk by chunk, resuming at the failed offset on errors.

    Earlier chunks may be in the output already, so a failed read cannot restart the
    file: it reopens it and seeks (or skips) to where it stopped.
    """

    def __init__(self, reader: Reader, source: Source) -> None:
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
                data = read_upto(self._fh, length)
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
