"""A large file's reader task alone: its messages, in order, and what it does when the
file is not as listed."""

from __future__ import annotations

import hashlib
import io
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

from zipkit import noise, text

from course_exports.zipstream import ArchiveError
from course_exports.zipstream.reading import Reader, Source
from course_exports.zipstream.records import DEFLATED, STORED
from course_exports.zipstream.streamed import End, Failed, Start, Streamed, read_streamed

CHUNK = 64 * 1024


def _run(arcname: str, data: bytes, *, listed: int | None = None) -> list[object]:
    """Read ``data`` (listed as ``listed`` bytes) in chunks, every chunk granted at once;
    the messages with the deflated chunks' futures resolved."""
    size = len(data) if listed is None else listed
    costs = [min(CHUNK, size - start) for start in range(0, size, CHUNK)]
    item = Streamed(Source(arcname, size, lambda: io.BytesIO(data)), costs)
    item.permits.release(len(costs))
    with ThreadPoolExecutor(2) as pool:
        read_streamed(Reader(1, threading.Event()), pool, item, 6)
        messages: list[object] = []
        while not item.messages.empty():
            message = item.messages.get()
            messages.append(message.result() if isinstance(message, Future) else message)
    return messages


def test_a_compressible_file_comes_as_one_deflate_stream_then_its_checksums() -> None:
    data = text(5 * CHUNK + 123)
    start, *chunks, end = _run("c/big.log", data)
    assert start == Start(DEFLATED)
    assert len(chunks) == 6
    # The chunks concatenate into one raw deflate stream: each was primed with the last.
    assert zlib.decompress(b"".join(chunks), -15) == data  # type: ignore[arg-type]
    assert end == End(len(data), zlib.crc32(data), hashlib.sha256(data).hexdigest())


def test_random_bytes_and_archives_are_stored_as_read() -> None:
    for name, data in (("c/big.bin", noise(3 * CHUNK)), ("c/big.zip", text(3 * CHUNK))):
        start, *chunks, end = _run(name, data)
        assert start == Start(STORED)
        assert b"".join(chunks) == data  # type: ignore[arg-type]
        assert isinstance(end, End) and end.size == len(data)


def test_a_file_that_shrank_or_grew_ends_in_failure_naming_it() -> None:
    for listed, actual in ((3 * CHUNK, 3 * CHUNK - 10), (3 * CHUNK, 3 * CHUNK + 1)):
        *_, failed = _run("c/changing.log", text(actual), listed=listed)
        assert isinstance(failed, Failed)
        assert isinstance(failed.error, ArchiveError)
        assert "c/changing.log" in str(failed.error)
        assert "changed during the export" in str(failed.error)
