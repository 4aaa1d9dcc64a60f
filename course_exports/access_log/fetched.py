"""Parquet read from the few byte ranges fetched for it, not from the store's file.

On S3 every read of a file object is a request (obstore's seekable reader adds a HEAD
and reads ahead). A footer check needs only the end of a file, and an export from the
copy only the footer and the course's row groups, checked against the index first. So
exactly those bytes are fetched (the storage's ``read_tail`` and ``read_range``: one
request each) into a :class:`FetchedFile`, which serves them at their offsets and
refuses any other read (pyarrow reads footers from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from course_exports.storage import Location, SizedReader

#: The end of a file fetched for its footer: pyarrow's own first footer read, which
#: holds the whole footer of any but very wide or very long files.
FOOTER_READ_BYTES = 64 * 2**10
_MAGIC = b"PAR1"
_TRAILER = 8  # the footer's length (4 bytes, little-endian) and the magic


class UnfetchedReadError(OSError):
    """A reader asked for bytes that were not fetched."""


class FetchedFile(SizedReader):
    """A read-only file of ``size`` bytes of which only ``pieces`` (offset, bytes) are
    known. A read must lie inside the known bytes (pieces that touch join); any other
    read raises :class:`UnfetchedReadError` (an OSError) rather than invent bytes."""

    def __init__(self, size: int, pieces: Sequence[tuple[int, bytes]]) -> None:
        super().__init__(size, "a fetched file")
        joined: list[tuple[int, bytes]] = []
        for offset, data in sorted((o, d) for o, d in pieces if d):
            end = joined[-1][0] + len(joined[-1][1]) if joined else -1
            if offset <= end:  # adjacent or overlapping: bytes of the same file
                joined[-1] = (joined[-1][0], joined[-1][1] + data[end - offset :])
            else:
                joined.append((offset, data))
        self._pieces = [(offset, memoryview(data)) for offset, data in joined]

    def readinto(self, out: Any) -> int:
        start = self._position
        n = max(0, min(len(out), self._size - start))
        if n == 0:
            return 0
        for offset, data in self._pieces:
            if offset <= start and start + n <= offset + len(data):
                out[:n] = data[start - offset : start - offset + n]
                self._position += n
                return n
        raise UnfetchedReadError(f"bytes {start} to {start + n} were not fetched")


def fetch_footer(store: Location, path: str) -> FetchedFile:
    """The end of the file at ``path`` (relative), enough for pyarrow to read its footer:
    one request, or two when the footer is longer than :data:`FOOTER_READ_BYTES` (the
    second fetches exactly the rest). What is not a parquet file is left for pyarrow to
    refuse with its own message."""
    tail, size = store.read_tail(path, FOOTER_READ_BYTES)
    pieces = [(size - len(tail), tail)]
    if len(tail) >= _TRAILER and tail[-4:] == _MAGIC:
        wanted = min(int.from_bytes(tail[-8:-4], "little") + _TRAILER, size)
        if wanted > len(tail):
            start = size - wanted
            pieces.append((start, store.read_range(path, start, size - len(tail))))
    return FetchedFile(size, pieces)
