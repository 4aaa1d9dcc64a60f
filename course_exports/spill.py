"""Per-file records kept on disk instead of in memory.

A course can hold hundreds of thousands of files; a Python object per file (its path,
size, checksum...) costs hundreds of bytes, so 500,000 of them would cost more memory
than the whole zip pipeline. A :class:`Spill` appends records as JSON lines to an
anonymous temporary file (gone when closed, collected, or the process ends) and reads
them back by the byte span an appender was given.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

__all__ = ["Span", "Spill"]

Span = tuple[int, int]  # [start, end) byte offsets in the spill
_FLUSH_BYTES = 1 << 20  # appended bytes kept in memory before one write


class Spill:
    """An append-only file of JSON lines. Appends and reads come from one thread at a time."""

    def __init__(self) -> None:
        # Anonymous: nothing to clean up on any path out of the process.
        self._file = tempfile.TemporaryFile(prefix="course-export-")  # noqa: SIM115
        self._fd = self._file.fileno()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.size = 0  # bytes appended, including those not flushed yet

    def append(self, record: Any) -> Span:
        """Append one JSON-serialisable record; returns its span."""
        return self.append_line(json.dumps(record, ensure_ascii=False).encode())

    def append_line(self, line: bytes) -> Span:
        """Append one line already encoded (without its newline)."""
        start = self.size
        self._pending.append(line + b"\n")
        self.size += len(line) + 1
        self._pending_bytes += len(line) + 1
        if self._pending_bytes >= _FLUSH_BYTES:
            self.flush()
        return start, self.size

    def flush(self) -> None:
        if self._pending:
            view = memoryview(b"".join(self._pending))
            while view:  # a regular file takes it all, unless interrupted
                view = view[os.pwrite(self._fd, view, self.size - self._pending_bytes) :]
                self._pending_bytes = len(view)
            self._pending.clear()
            self._pending_bytes = 0

    def read(self, span: Span) -> list[Any]:
        """The records of a span (one append's or several consecutive ones')."""
        self.flush()
        start, end = span
        data = os.pread(self._fd, end - start, start)
        # One parse for the whole span: lines are JSON values, so joined by commas they
        # make a JSON array.
        return json.loads(b"[" + data.rstrip(b"\n").replace(b"\n", b",") + b"]")  # type: ignore[no-any-return]

    def close(self) -> None:
        self._file.close()
