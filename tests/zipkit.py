"""Helpers of the zip tests: sample bytes, an append-only output, and checks that a zip
is valid for zipfile, ``python -m zipfile -t``, Info-ZIP ``unzip -t`` and a streaming
walk over its local records."""

from __future__ import annotations

import io
import random
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, cast

from course_exports.zipstream import (
    ZIP64_LIMIT,
    Source,
    WrittenEntry,
    ZipStreamWriter,
    write_entries,
)

DATE_TIME = (2024, 6, 1, 12, 30, 44)
UNZIP = shutil.which("unzip")


def text(n: int, seed: int = 0) -> bytes:
    """Compressible, code-like bytes."""
    rng = random.Random(seed)
    words = ["def", "return", "self", "value", "import", "print", "(", ")", ":", "\n    "]
    out = bytearray()
    while len(out) < n:
        out += (" ".join(rng.choice(words) for _ in range(12)) + "\n").encode()
    return bytes(out[:n])


def noise(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


class NonSeekable(io.RawIOBase):
    """An output that can only be appended to, like an S3 multipart upload."""

    def __init__(self, sink: BinaryIO | io.RawIOBase) -> None:
        self._sink = sink
        self.written = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        n = self._sink.write(data)
        self.written += n
        return n

    def seek(self, *args: Any) -> int:
        raise AssertionError("the writer must not seek")

    def tell(self) -> int:
        raise AssertionError("the writer must not tell")

    @property
    def stream(self) -> BinaryIO:
        return cast(BinaryIO, self)


def source(arcname: str, data: bytes, *, size: int | None = None) -> Source:
    return Source(arcname, len(data) if size is None else size, lambda: io.BytesIO(data))


def build(
    sources: list[Source], *, level: int = 6, threshold: int = ZIP64_LIMIT, **kwargs: Any
) -> tuple[bytes, list[WrittenEntry]]:
    out = io.BytesIO()
    writer = ZipStreamWriter(
        NonSeekable(out).stream, level=level, zip64_threshold=threshold, date_time=DATE_TIME
    )
    entries = write_entries(writer, sources, **kwargs)
    total = writer.close()
    assert total == len(out.getvalue())
    return out.getvalue(), entries


def walk_local_records(data: bytes) -> tuple[int, int]:
    """Check every local header and data descriptor against the central directory, in
    file order and back to back, as a streaming reader would meet them.

    Returns how many local headers had a ZIP64 field and how many data descriptors.
    """
    zip64_headers = descriptors = 0
    infos = sorted(zipfile.ZipFile(io.BytesIO(data)).infolist(), key=lambda i: i.header_offset)
    pos = 0
    for info in infos:
        assert info.header_offset == pos
        sig, _version, flags, method, _t, _d, crc, csize, size, nlen, xlen = struct.unpack_from(
            "<IHHHHHIIIHH", data, pos
        )
        assert sig == 0x04034B50
        assert flags & 0x800, "UTF-8 flag"
        assert data[pos + 30 : pos + 30 + nlen].decode() == info.filename
        assert method == info.compress_type
        extra = data[pos + 30 + nlen : pos + 30 + nlen + xlen]
        zip64 = None
        if extra:
            tag, length = struct.unpack_from("<HH", extra)
            assert (tag, length, len(extra)) == (1, 16, 20)
            zip64 = struct.unpack_from("<QQ", extra, 4)  # (size, compressed size)
            zip64_headers += 1
            assert (csize, size) == (0xFFFFFFFF, 0xFFFFFFFF)
        pos += 30 + nlen + xlen + info.compress_size
        if flags & 0x8:
            assert crc == 0
            assert zip64 == (0, 0) if zip64 else (csize, size) == (0, 0)
            fmt = "<IIQQ" if zip64 else "<IIII"
            assert struct.unpack_from(fmt, data, pos) == (
                0x08074B50,
                info.CRC,
                info.compress_size,
                info.file_size,
            )
            pos += struct.calcsize(fmt)
            descriptors += 1
        else:
            assert crc == info.CRC
            assert (zip64 or (size, csize)) == (info.file_size, info.compress_size)
    assert struct.unpack_from("<I", data, pos)[0] == 0x02014B50  # the central directory
    return zip64_headers, descriptors


def check_zip(data: bytes, expected: dict[str, bytes], tmp_path: Path) -> None:
    """Valid for zipfile (bytes and CRCs), a streaming walk, ``zipfile -t`` and ``unzip -t``."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert [i.filename for i in zf.infolist()] == list(expected)
        for info in zf.infolist():
            assert zf.read(info) == expected[info.filename]
            assert zlib.crc32(expected[info.filename]) == info.CRC
            assert info.flag_bits & 0x800
            assert info.date_time == (2024, 6, 1, 12, 30, 44)
            assert (info.external_attr >> 16) == 0o100644
    walk_local_records(data)
    path = tmp_path / "check.zip"
    path.write_bytes(data)
    tested = subprocess.run(
        [sys.executable, "-m", "zipfile", "-t", str(path)], capture_output=True, text=True
    )
    assert tested.returncode == 0 and "Done testing" in tested.stdout, tested.stdout + tested.stderr
    if UNZIP:
        tested = subprocess.run([UNZIP, "-tq", str(path)], capture_output=True, text=True)
        assert tested.returncode == 0, tested.stdout + tested.stderr


def entry_map(entries: list[WrittenEntry]) -> dict[str, WrittenEntry]:
    return {e.arcname: e for e in entries}
