"""A file larger than a chunk: read in order by one task, deflated in parallel chunks.

The reader computes CRC and SHA-256 in order and hands the writer, through the file's
queue, its method, then each chunk (deflated chunks as futures of a shared pool: pigz's
way, each primed with the previous 32 KiB and ended on a sync flush, so they concatenate
into one raw deflate stream), then its size and checksums. It reads a chunk only when
the pipeline's window grants it one (``permits``), in source order.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Queue

from zlib_ng import zlib_ng as zlib

from course_exports.zipstream.compression import deflate_chunk, primer_of, streamed_method
from course_exports.zipstream.reading import ChunkReader, Reader, Source, check_size
from course_exports.zipstream.records import DEFLATED, STORED

__all__ = ["End", "Failed", "Start", "StreamMessage", "Streamed", "read_streamed"]


@dataclass(frozen=True)
class Start:
    """The file's first chunk is read: its method (deflate or store) is decided."""

    method: int


@dataclass(frozen=True)
class End:
    """Every chunk is read: the file's size and checksums, for its data descriptor."""

    size: int
    crc32: int
    sha256: str


@dataclass(frozen=True)
class Failed:
    """The reader stopped: the pipeline raises this."""

    error: BaseException


StreamMessage = Start | End | Failed | Future[bytes] | bytes | memoryview


@dataclass(eq=False)
class Streamed:
    """A file larger than a chunk: one reader task, chunks deflated in parallel."""

    source: Source
    chunk_costs: list[int]
    granted: int = 0
    permits: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    messages: Queue[StreamMessage] = field(default_factory=Queue)


def read_streamed(reader: Reader, pool: ThreadPoolExecutor, item: Streamed, level: int) -> None:
    """The reader task of a large file: messages go to the writer through ``item.messages``."""
    source, chunks = item.source, len(item.chunk_costs)
    crc, sha = 0, hashlib.sha256()
    primer: bytes | None = None
    method = STORED
    files = ChunkReader(reader, source)
    try:
        for index, cost in enumerate(item.chunk_costs):
            while not item.permits.acquire(timeout=0.2):  # the window grants chunks in order
                reader.check_cancelled()
            data = files.read(cost)
            if len(data) != cost:
                check_size(source, files.offset)
            crc = zlib.crc32(data, crc)
            sha.update(data)
            last = index == chunks - 1
            if last and files.read(1):
                check_size(source, files.offset, grew=True)
            if index == 0:
                method = streamed_method(source.arcname, data, level)
                item.messages.put(Start(method))
            if method == DEFLATED:
                item.messages.put(pool.submit(deflate_chunk, data, primer, level, last))
                primer = primer_of(data)
            else:
                item.messages.put(data)
        item.messages.put(End(files.offset, crc, sha.hexdigest()))
    except BaseException as exc:
        item.messages.put(Failed(exc))
    finally:
        files.close()
