"""Store or deflate: what each entry's bytes are worth compressing, decided cheaply.

Deflating data that does not shrink (random bytes, images, archives) costs as much CPU
as deflating text and saves nothing, and lakes mislabel files both ways. So:

* names that say "compressed already" (.png, .zip, .jpg...) are stored without a look;
* otherwise the head of the data decides: ASCII-only text is deflated at once (random
  bytes are never ASCII), anything else is deflated at level 1 on a small sample first
  and stored if that sample does not shrink;
* a deflated entry that saved less than 1/32 is stored after all.

A file read whole (up to a chunk, 4 MiB) is deflated by libdeflate in one call: on real
code and data it takes 0.6-0.9x zlib-ng's CPU at the same level, and its output is no
larger (benchmarks/deflate_codecs.py, README). Larger files are deflated in independent
chunks that concatenate into one raw deflate stream (as pigz does), so several cores
share one file; that needs a stream primed with the previous chunk's window, which
zlib-ng has and libdeflate does not.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from zlib_ng import zlib_ng as zlib

from course_exports.zipstream import libdeflate
from course_exports.zipstream.records import DEFLATED, STORED

__all__ = [
    "DEFAULT_LEVEL",
    "PRECOMPRESSED_SUFFIXES",
    "RAW_DEFLATE",
    "PackedEntry",
    "deflate_chunk",
    "is_precompressed",
    "max_deflated_size",
    "method_name",
    "pack",
    "streamed_method",
]

# Level 6, as zip tools default to. On real code and data libdeflate's output is up to
# 0.8% smaller than zlib's (zlib-ng's up to 1.3% larger); on our generator's repetitive
# text it is 1.7-3.6% larger. Level 5 is faster but 3.6-6.2% larger on that text
# (benchmarks/deflate_codecs.py). Both libraries release the GIL, so threads share cores.
DEFAULT_LEVEL = 6
# Deflate must save at least 1/32 (~3%) of a file to be worth it; otherwise it is stored.
_MIN_SAVING_SHIFT = 5
# Below this, a file is deflated without a probe: the probe would cost about as much.
_PROBE_FROM = 2 * 4096
_SMALL_PROBE = 4096
_LARGE_PROBE = 64 * 1024
_ASCII_SAMPLE = 4096
_DEFLATE_WINDOW = 32 * 1024
RAW_DEFLATE = -15  # zlib wbits for raw deflate (no zlib header): what a zip holds
# libdeflate stores inputs this short as they are (a few dozen bytes at level 6), where
# zlib-ng still shrinks them: "a" * 20 is 5 bytes deflated.
_LIBDEFLATE_FROM = 64
# Files below this are deflated at level 1 (greedy matching) whatever the level: on them
# lazy matching finds little (level 1's output is 0.8-1.5% larger than level 6's on the
# installed packages', the stdlib's and the tiny mix's files under 2 KiB; 2.5-3.6% from
# 2 to 4 KiB) and costs 1.2-1.5x the CPU (14-21 µs a file against 21-25 µs), which a
# course of 100,000 tiny files pays on its critical path (benchmarks/deflate_codecs.py).
SMALL_FILE_BYTES = 2048
_SMALL_FILE_LEVEL = 1

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


class PackedEntry(NamedTuple):
    """One whole entry, hashed and compressed, ready to be written."""

    arcname: str
    size: int
    crc32: int
    sha256: str
    method: int
    payload: bytes | bytearray | memoryview


def _suffix(arcname: str) -> str:
    dot = arcname.rfind(".")
    return arcname[dot:].lower() if dot > arcname.rfind("/") else ""


def is_precompressed(arcname: str) -> bool:
    """Whether the name's extension says the data is compressed already (store, don't try)."""
    return _suffix(arcname) in PRECOMPRESSED_SUFFIXES


def _saves_enough(size: int, compressed: int) -> bool:
    # At least one byte: under 32 bytes 1/32 rounds to none, and a deflated entry no
    # smaller than its data only costs its reader an inflate.
    return compressed <= size - max(1, size >> _MIN_SAVING_SHIFT)


def _worth_deflating(data: bytes | memoryview, probe: int) -> bool:
    """Whether ``data`` (a file's head) looks compressible: ASCII text always is; other
    bytes are tried at level 1 on a sample."""
    head = data[:_ASCII_SAMPLE]
    if bytes(head).isascii() if isinstance(head, memoryview) else head.isascii():
        return True
    sample = data[:probe]
    return _saves_enough(len(sample), len(zlib.compress(sample, 1, wbits=RAW_DEFLATE)))


def method_name(method: int) -> str:
    return "deflate" if method == DEFLATED else "store"


def _try_deflate(arcname: str, data: bytes, level: int, compress: bool | None) -> bool:
    if not data or level == 0 or compress is False:
        return False
    if compress:
        return True
    if is_precompressed(arcname):
        return False
    return len(data) <= _PROBE_FROM or _worth_deflating(data, _SMALL_PROBE)


def pack(arcname: str, data: bytes, level: int, compress: bool | None = None) -> PackedEntry:
    """Hash ``data`` and deflate it if that is worth it (``compress`` forces either way)."""
    method = STORED
    payload: bytes | bytearray = data
    if _try_deflate(arcname, data, level, compress):
        packed = _deflate_whole(data, level)
        if compress or _saves_enough(len(data), len(packed)):
            method, payload = DEFLATED, packed
    return PackedEntry(
        arcname, len(data), zlib.crc32(data), hashlib.sha256(data).hexdigest(), method, payload
    )


def _deflate_whole(data: bytes, level: int) -> bytes | bytearray:
    if len(data) < SMALL_FILE_BYTES:
        level = min(level, _SMALL_FILE_LEVEL)
        if len(data) < _LIBDEFLATE_FROM:
            return zlib.compress(data, level, wbits=RAW_DEFLATE)
    return libdeflate.compress(data, level)


def streamed_method(arcname: str, head: bytes, level: int) -> int:
    """The method of a file streamed in chunks, decided on its first chunk."""
    if level == 0 or is_precompressed(arcname):
        return STORED
    return DEFLATED if _worth_deflating(head, _LARGE_PROBE) else STORED


def deflate_chunk(data: bytes, primer: bytes | None, level: int, last: bool) -> bytes:
    """One piece of a raw deflate stream; pieces concatenate into one stream (pigz)."""
    if primer:
        # The decoder has these bytes in its window already: matches may reach back.
        compressor = zlib.compressobj(level, zlib.DEFLATED, RAW_DEFLATE, zdict=primer)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, RAW_DEFLATE)
    head = compressor.compress(data)
    tail = compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return head + tail if head else tail


def primer_of(data: bytes) -> bytes:
    """What the next chunk's deflate may refer back to."""
    return data[-_DEFLATE_WINDOW:]


def max_deflated_size(size: int, chunks: int) -> int:
    """Above zlib's deflateBound for every chunk plus the sync-flush markers."""
    return size + (size >> 11) + 64 * (chunks + 1)
