"""A streaming ZIP writer: whole courses in bounded memory, compressed on every core.

The course zip (CONTRACT 4.1) can hold many gigabytes in hundreds of thousands of files
and goes straight into a stream that cannot seek (an S3 multipart upload). The package,
one concern a module:

* :mod:`.records` — the byte format: named record layouts as pure functions;
* :mod:`.compression` — store or deflate, decided cheaply per entry; parallel deflate;
* :mod:`.writer` — :class:`ZipStreamWriter`, appending entries (whole, or compressed by
  the caller) and the central directory, in O(1) memory;
* :mod:`.deferred` — :class:`DeferredEntry`: an entry made while others are written
  (the manifest), hashed and deflated in the background, added later in one call;
* :mod:`.reading` — :class:`Source` and reads with retries and size checks;
* :mod:`.pipeline` — :func:`stream_entries`: read, deflate and write many sources in
  order on every core within a window of bytes in flight, through the writer's public API;
* :mod:`.processes` — packer processes for batches of tiny files, whose hashing and
  deflating would otherwise hold the GIL.

ZIP64 records are written only where a size, an offset or the entry count needs them;
names are UTF-8 and flagged so (bit 11).
"""

from course_exports.zipstream.compression import DEFAULT_LEVEL, is_precompressed
from course_exports.zipstream.deferred import DeferredEntry
from course_exports.zipstream.pipeline import CHUNK_BYTES, stream_entries, write_entries
from course_exports.zipstream.processes import SMALL_AVERAGE_BYTES
from course_exports.zipstream.reading import Source
from course_exports.zipstream.records import ZIP64_LIMIT
from course_exports.zipstream.writer import ArchiveError, WrittenEntry, ZipStreamWriter

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_LEVEL",
    "SMALL_AVERAGE_BYTES",
    "ZIP64_LIMIT",
    "ArchiveError",
    "DeferredEntry",
    "Source",
    "WrittenEntry",
    "ZipStreamWriter",
    "is_precompressed",
    "stream_entries",
    "write_entries",
]
