"""The ZIP byte format (APPNOTE 6.3.10): named records as pure functions of their fields.

Every record is a :class:`Layout` of named little-endian fields, packed by keyword, so
the code that writes a header reads like the specification's table. Nothing here
writes or keeps state: the writer decides what goes into a record, this module only
knows how it is laid out.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ZIP64_LIMIT",
    "DateTime",
    "EntryRecord",
    "Layout",
    "central_header",
    "data_descriptor",
    "dos_date_time",
    "end_records",
    "local_header",
    "pack_central_header",
    "pack_local_header",
]

DateTime = tuple[int, int, int, int, int, int]

# A 4-byte size or offset, or a 2-byte count, at its maximum means "see the ZIP64 field".
ZIP64_LIMIT = 0xFFFFFFFF
COUNT_LIMIT = 0xFFFF
NAME_LIMIT = 0xFFFF

# Signatures (APPNOTE 4.3.7 ff.)
LOCAL_FILE_HEADER = 0x04034B50
DATA_DESCRIPTOR = 0x08074B50
CENTRAL_FILE_HEADER = 0x02014B50
END_OF_CENTRAL_DIRECTORY = 0x06054B50
ZIP64_END_OF_CENTRAL_DIRECTORY = 0x06064B50
ZIP64_END_LOCATOR = 0x07064B50
ZIP64_EXTRA_TAG = 0x0001

# Compression methods and general-purpose flags (APPNOTE 4.4.4, 4.4.5)
STORED = 0
DEFLATED = 8
FLAG_DATA_DESCRIPTOR = 1 << 3  # CRC and sizes follow the data
FLAG_UTF8 = 1 << 11  # the name is UTF-8

# "Version needed to extract" and "made by" (APPNOTE 4.4.2, 4.4.3)
VERSION_DEFAULT = 20  # 2.0: deflate, folders
VERSION_ZIP64 = 45  # 4.5: ZIP64
MADE_BY_UNIX = 3 << 8  # upper byte: the host system, so external_attr holds Unix modes
REGULAR_FILE_ATTRS = 0o100644 << 16  # a regular file, rw-r--r--
DOS_EPOCH = 1980
DOS_LAST_YEAR = 2107


class Layout:
    """A record of named fields with struct codes, packed from keywords.

    ``pack`` is generated with the fields as its parameters (as ``namedtuple`` and
    ``dataclasses`` generate code): a keyword call then binds straight to them, with no
    dict per call, which matters at a header or two per file for 500,000 files.
    """

    def __init__(self, *fields: tuple[str, str]) -> None:
        self.names = tuple(name for name, _ in fields)
        self._struct = struct.Struct("<" + "".join(code for _, code in fields))
        self.size = self._struct.size
        arguments = ", ".join(self.names)
        namespace: dict[str, Any] = {"_pack": self._struct.pack}
        exec(f"def pack(*, {arguments}):\n    return _pack({arguments})", namespace)
        self.pack: Callable[..., bytes] = namespace["pack"]

    def unpack(self, data: bytes | memoryview, offset: int = 0) -> dict[str, int]:
        return dict(zip(self.names, self._struct.unpack_from(data, offset), strict=True))


LOCAL = Layout(
    ("signature", "I"),
    ("version_needed", "H"),
    ("flags", "H"),
    ("method", "H"),
    ("mod_time", "H"),
    ("mod_date", "H"),
    ("crc32", "I"),
    ("compressed_size", "I"),
    ("size", "I"),
    ("name_length", "H"),
    ("extra_length", "H"),
)
CENTRAL = Layout(
    ("signature", "I"),
    ("version_made_by", "H"),
    ("version_needed", "H"),
    ("flags", "H"),
    ("method", "H"),
    ("mod_time", "H"),
    ("mod_date", "H"),
    ("crc32", "I"),
    ("compressed_size", "I"),
    ("size", "I"),
    ("name_length", "H"),
    ("extra_length", "H"),
    ("comment_length", "H"),
    ("disk_start", "H"),
    ("internal_attr", "H"),
    ("external_attr", "I"),
    ("local_header_offset", "I"),
)
DESCRIPTOR = Layout(("signature", "I"), ("crc32", "I"), ("compressed_size", "I"), ("size", "I"))
DESCRIPTOR64 = Layout(("signature", "I"), ("crc32", "I"), ("compressed_size", "Q"), ("size", "Q"))
EXTRA_HEADER = Layout(("tag", "H"), ("length", "H"))
# In a local header the ZIP64 field holds both sizes (zeros when they follow the data).
ZIP64_LOCAL_EXTRA = Layout(("tag", "H"), ("length", "H"), ("size", "Q"), ("compressed_size", "Q"))
END = Layout(
    ("signature", "I"),
    ("disk", "H"),
    ("central_directory_disk", "H"),
    ("disk_entries", "H"),
    ("entries", "H"),
    ("central_directory_size", "I"),
    ("central_directory_offset", "I"),
    ("comment_length", "H"),
)
END64 = Layout(
    ("signature", "I"),
    ("record_size", "Q"),  # of what follows this field
    ("version_made_by", "H"),
    ("version_needed", "H"),
    ("disk", "I"),
    ("central_directory_disk", "I"),
    ("disk_entries", "Q"),
    ("entries", "Q"),
    ("central_directory_size", "Q"),
    ("central_directory_offset", "Q"),
)
END64_LOCATOR = Layout(
    ("signature", "I"), ("end64_disk", "I"), ("end64_offset", "Q"), ("disks", "I")
)
_END64_RECORD_SIZE = END64.size - 12  # signature and the size field itself excluded


@dataclass(slots=True)
class EntryRecord:
    """What the headers say of one entry."""

    name: bytes  # UTF-8
    flags: int
    method: int
    crc32: int
    compressed_size: int
    size: int
    offset: int  # of its local header
    zip64: bool  # its local header carries a ZIP64 field (sizes decided before the data)


def dos_date_time(date_time: DateTime) -> tuple[int, int]:
    """MS-DOS (time, date) words; years outside 1980..2107 are clamped."""
    year, month, day, hour, minute, second = date_time
    if year < DOS_EPOCH:
        year, month, day, hour, minute, second = DOS_EPOCH, 1, 1, 0, 0, 0
    year = min(year, DOS_LAST_YEAR)
    return (
        (hour << 11) | (minute << 5) | (second // 2),
        ((year - DOS_EPOCH) << 9) | (month << 5) | day,
    )


def encode_name(arcname: str) -> bytes:
    """The entry name as stored; ValueError for names a zip must not hold."""
    if not arcname or arcname.startswith("/") or "\\" in arcname:
        raise ValueError("entry names must be relative '/'-separated paths")
    name = arcname.encode("utf-8")
    if len(name) > NAME_LIMIT:
        raise ValueError("the entry name is too long for a zip")
    return name


def local_header(record: EntryRecord, mod_time: int, mod_date: int) -> bytes:
    extra = b""
    csize, size, version = record.compressed_size, record.size, VERSION_DEFAULT
    if record.zip64:
        extra = ZIP64_LOCAL_EXTRA.pack(
            tag=ZIP64_EXTRA_TAG, length=ZIP64_LOCAL_EXTRA.size - EXTRA_HEADER.size,
            size=size, compressed_size=csize,
        )  # fmt: skip
        csize = size = ZIP64_LIMIT
        version = VERSION_ZIP64
    return pack_local_header(
        record.name, record.flags, record.method, record.crc32, csize, size, mod_time,
        mod_date, version=version, extra=extra,
    )  # fmt: skip


def pack_local_header(
    name: bytes, flags: int, method: int, crc32: int, compressed_size: int, size: int,
    mod_time: int, mod_date: int, *, version: int = VERSION_DEFAULT, extra: bytes = b"",
) -> bytes:  # fmt: skip
    """A local header from its fields, as :func:`local_header` decided them; a batch of
    small files (no ZIP64 field: the defaults) calls it directly, with no record."""
    header = LOCAL.pack(
        signature=LOCAL_FILE_HEADER, version_needed=version, flags=flags, method=method,
        mod_time=mod_time, mod_date=mod_date, crc32=crc32, compressed_size=compressed_size,
        size=size, name_length=len(name), extra_length=len(extra),
    )  # fmt: skip
    return header + name + extra


def data_descriptor(crc32: int, compressed_size: int, size: int, zip64: bool) -> bytes:
    layout = DESCRIPTOR64 if zip64 else DESCRIPTOR
    return layout.pack(
        signature=DATA_DESCRIPTOR, crc32=crc32, compressed_size=compressed_size, size=size
    )


def central_header(record: EntryRecord, mod_time: int, mod_date: int, threshold: int) -> bytes:
    """The central directory's header of one entry; ZIP64 fields for what reaches
    ``threshold`` (and both sizes whenever the local header had them)."""
    fields: list[int] = []
    size, csize, offset = record.size, record.compressed_size, record.offset
    if record.zip64 or size >= threshold:
        fields.append(size)
        size = ZIP64_LIMIT
    if record.zip64 or csize >= threshold:
        fields.append(csize)
        csize = ZIP64_LIMIT
    if offset >= threshold:
        fields.append(offset)
        offset = ZIP64_LIMIT
    extra = b""
    if fields:
        extra = EXTRA_HEADER.pack(tag=ZIP64_EXTRA_TAG, length=8 * len(fields))
        extra += struct.pack(f"<{len(fields)}Q", *fields)  # sizes and offset, those used
    version = VERSION_ZIP64 if fields else VERSION_DEFAULT
    return pack_central_header(
        record.name, record.flags, record.method, record.crc32, csize, size, offset,
        mod_time, mod_date, version=version, extra=extra,
    )  # fmt: skip


def pack_central_header(
    name: bytes, flags: int, method: int, crc32: int, compressed_size: int, size: int,
    offset: int, mod_time: int, mod_date: int, *, version: int = VERSION_DEFAULT,
    extra: bytes = b"",
) -> bytes:  # fmt: skip
    """A central directory header from its fields, as :func:`central_header` decided
    them; a batch of small files (no ZIP64 field: the defaults) calls it directly."""
    header = CENTRAL.pack(
        signature=CENTRAL_FILE_HEADER, version_made_by=MADE_BY_UNIX | version,
        version_needed=version, flags=flags, method=method, mod_time=mod_time,
        mod_date=mod_date, crc32=crc32, compressed_size=compressed_size, size=size,
        name_length=len(name), extra_length=len(extra), comment_length=0, disk_start=0,
        internal_attr=0, external_attr=REGULAR_FILE_ATTRS, local_header_offset=offset,
    )  # fmt: skip
    return header + name + extra


def end_records(
    count: int, directory_offset: int, directory_size: int, comment: bytes, threshold: int
) -> bytes:
    """The end of the archive; ``directory_offset`` is also where the ZIP64 end record
    would start minus ``directory_size``. ZIP64 end records only when something needs them."""
    out = b""
    if count >= COUNT_LIMIT or directory_size >= threshold or directory_offset >= threshold:
        end64_offset = directory_offset + directory_size
        out += END64.pack(
            signature=ZIP64_END_OF_CENTRAL_DIRECTORY, record_size=_END64_RECORD_SIZE,
            version_made_by=MADE_BY_UNIX | VERSION_ZIP64, version_needed=VERSION_ZIP64,
            disk=0, central_directory_disk=0, disk_entries=count, entries=count,
            central_directory_size=directory_size, central_directory_offset=directory_offset,
        )  # fmt: skip
        out += END64_LOCATOR.pack(
            signature=ZIP64_END_LOCATOR, end64_disk=0, end64_offset=end64_offset, disks=1
        )
    small_count = min(count, COUNT_LIMIT)
    out += END.pack(
        signature=END_OF_CENTRAL_DIRECTORY, disk=0, central_directory_disk=0,
        disk_entries=small_count, entries=small_count,
        central_directory_size=ZIP64_LIMIT if directory_size >= threshold else directory_size,
        central_directory_offset=(
            ZIP64_LIMIT if directory_offset >= threshold else directory_offset
        ),
        comment_length=len(comment),
    )  # fmt: skip
    return out + comment
