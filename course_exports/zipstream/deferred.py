"""An entry whose data comes while other entries are written, and which goes in later.

The course manifest lists every file's sha256, so it can only go into the zip after the
files; but its lines are made one by one as the files are packed. Hashing and deflating
its ~20 MB (100,000 files) after the last file held the export up for ~0.5 s on one core
while the other had nothing left to do. A :class:`DeferredEntry` hashes and deflates each
block of the data in a background thread as soon as the block is full, while the files
are still being packed (zlib-ng and hashlib release the GIL on blocks this size), keeps
the deflated bytes in an anonymous temporary file, and :meth:`DeferredEntry.write_to`
copies them into the zip through the writer's public API when the entry's turn comes.

Memory is two blocks at most: the one filling and the one being deflated.
"""

from __future__ import annotations

import hashlib
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from zlib_ng import zlib_ng as zlib

from course_exports.zipstream.compression import DEFAULT_LEVEL, RAW_DEFLATE
from course_exports.zipstream.records import DEFLATED, STORED
from course_exports.zipstream.writer import WrittenEntry, ZipStreamWriter

__all__ = ["DeferredEntry"]

_BLOCK = 1 << 20  # large enough that the thread's calls release the GIL and pay off
_COPY_PIECE = 1 << 20


class DeferredEntry:
    """One entry's data, written piece by piece, deflated in the background, and added
    to a zip in one call. Pieces come from one thread; use it as a context manager (or
    :meth:`close` it) so the thread and the temporary file go on every path."""

    def __init__(
        self, arcname: str, *, level: int = DEFAULT_LEVEL, block_bytes: int = _BLOCK
    ) -> None:
        self.arcname = arcname
        self._block_bytes = block_bytes
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        # Read by the caller only after the thread's last block is done (``write_to``).
        self._crc, self._sha, self._size, self._compressed_size = 0, hashlib.sha256(), 0, 0
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, RAW_DEFLATE) if level != 0 else None
        self._file = tempfile.TemporaryFile(prefix="course-export-")  # noqa: SIM115
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="zip-deferred")
        self._in_flight: Future[None] | None = None
        self._finished = False

    def write(self, data: bytes) -> None:
        """Append ``data`` to the entry (cheap: it is only kept until a block is full)."""
        if self._finished:
            raise ValueError(f"{self.arcname!r} was written to the zip already")
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= self._block_bytes:
            self._hand_off(last=False)

    def write_to(self, writer: ZipStreamWriter) -> WrittenEntry:
        """Finish the data and write the entry into ``writer`` (its sizes and CRC follow
        the data in a descriptor, as for any entry begun by hand)."""
        if self._finished:
            raise ValueError(f"{self.arcname!r} was written to the zip already")
        self._hand_off(last=True)
        self._finished = True
        assert self._in_flight is not None
        self._in_flight.result()
        method = STORED if self._deflate is None else DEFLATED
        writer.begin_entry(self.arcname, method, max(self._size, self._compressed_size))
        self._file.seek(0)
        while piece := self._file.read(_COPY_PIECE):
            writer.write_data(piece)
        return writer.end_entry(self._size, self._crc, self._sha.hexdigest())

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
        self._file.close()

    def __enter__(self) -> DeferredEntry:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _hand_off(self, *, last: bool) -> None:
        block = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        if self._in_flight is not None:
            # One block in the thread at a time: blocks stay in order, memory stays at two
            # blocks, and a failure there (a full disk) surfaces here, in the caller.
            self._in_flight.result()
        self._in_flight = self._thread.submit(self._absorb, block, last)

    def _absorb(self, block: bytes, last: bool) -> None:
        self._crc = zlib.crc32(block, self._crc)
        self._sha.update(block)
        self._size += len(block)
        out = block
        if self._deflate is not None:
            out = self._deflate.compress(block)
            if last:
                out += self._deflate.flush()
        self._file.write(out)
        self._compressed_size += len(out)
