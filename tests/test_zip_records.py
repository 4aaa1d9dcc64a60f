"""The byte format alone: record layouts against the specification's sizes, and what
Python's zipfile reads back from hand-assembled records."""

from __future__ import annotations

import io
import zipfile
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from course_exports.zipstream import records
from course_exports.zipstream.records import EntryRecord


def test_layouts_have_the_sizes_of_the_specification() -> None:
    # APPNOTE 4.3.7, 4.3.9, 4.3.12, 4.3.14, 4.3.15, 4.3.16: fixed parts of each record.
    assert records.LOCAL.size == 30
    assert records.CENTRAL.size == 46
    assert records.DESCRIPTOR.size == 16 and records.DESCRIPTOR64.size == 24
    assert records.END.size == 22
    assert records.END64.size == 56
    assert records.END64_LOCATOR.size == 20
    assert records.ZIP64_LOCAL_EXTRA.size == 20


def test_a_packed_record_unpacks_to_its_fields() -> None:
    record = EntryRecord(b"a/b.txt", records.FLAG_UTF8, records.STORED, 0xDEADBEEF, 5, 5, 0, False)
    header = records.local_header(record, 0x6000, 0x58C1)
    fields = records.LOCAL.unpack(header)
    assert fields["signature"] == records.LOCAL_FILE_HEADER
    assert (fields["crc32"], fields["size"], fields["name_length"]) == (0xDEADBEEF, 5, 7)
    assert header[records.LOCAL.size :] == b"a/b.txt"


def test_hand_assembled_records_make_a_zip_that_zipfile_reads() -> None:
    data = b"hello, zip"
    mod_time, mod_date = records.dos_date_time((2024, 6, 1, 12, 30, 44))
    record = EntryRecord(
        b"c/\xc3\xa9t\xc3\xa9.txt", records.FLAG_UTF8, records.STORED, zlib.crc32(data),
        len(data), len(data), 0, False,
    )  # fmt: skip
    body = records.local_header(record, mod_time, mod_date) + data
    directory = records.central_header(record, mod_time, mod_date, records.ZIP64_LIMIT)
    archive = body + directory + records.end_records(1, len(body), len(directory), b"", 2**32 - 1)
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        [info] = zf.infolist()
        assert info.filename == "c/été.txt"
        assert info.date_time == (2024, 6, 1, 12, 30, 44)
        assert zf.read(info) == data


def test_zip64_end_records_only_when_needed() -> None:
    small = records.end_records(10, 1000, 500, b"", records.ZIP64_LIMIT)
    assert len(small) == records.END.size
    many = records.end_records(70_000, 1000, 500, b"", records.ZIP64_LIMIT)
    assert len(many) == records.END64.size + records.END64_LOCATOR.size + records.END.size
    end = records.END.unpack(many, records.END64.size + records.END64_LOCATOR.size)
    assert end["entries"] == records.COUNT_LIMIT
    assert records.END64.unpack(many)["entries"] == 70_000
    locator = records.END64_LOCATOR.unpack(many, records.END64.size)
    assert locator["end64_offset"] == 1500  # right after the central directory
    far = records.end_records(1, 5_000, 500, b"hi", 4_000)  # directory past the threshold
    assert records.END.unpack(far, len(far) - 2 - records.END.size)["central_directory_offset"] == (
        records.ZIP64_LIMIT
    )


def test_central_header_adds_zip64_fields_for_what_reaches_the_threshold() -> None:
    record = EntryRecord(b"x", records.FLAG_UTF8, records.STORED, 0, 10, 10, 5_000, False)
    header = records.central_header(record, 0, 0, 4_000)  # only the offset is past it
    fields = records.CENTRAL.unpack(header)
    assert fields["local_header_offset"] == records.ZIP64_LIMIT and fields["extra_length"] == 12
    assert (fields["size"], fields["compressed_size"]) == (10, 10)


@given(
    st.tuples(
        st.integers(1900, 2200), st.integers(1, 12), st.integers(1, 28),
        st.integers(0, 23), st.integers(0, 59), st.integers(0, 59),
    )
)  # fmt: skip
def test_dos_date_time_round_trips_within_its_range(date_time: records.DateTime) -> None:
    mod_time, mod_date = records.dos_date_time(date_time)
    assert 0 <= mod_time <= 0xFFFF and 0 <= mod_date <= 0xFFFF
    year = (mod_date >> 9) + 1980
    decoded = (year, (mod_date >> 5) & 15, mod_date & 31, mod_time >> 11, (mod_time >> 5) & 63)
    if 1980 <= date_time[0] <= 2107:
        assert decoded == date_time[:5] and (mod_time & 31) * 2 == date_time[5] // 2 * 2
    elif date_time[0] < 1980:
        assert decoded == (1980, 1, 1, 0, 0)
    else:
        assert year == 2107


@pytest.mark.parametrize("bad", ["", "/abs", "back\\slash", "x" * 70_000])
def test_names_a_zip_must_not_hold(bad: str) -> None:
    with pytest.raises(ValueError):
        records.encode_name(bad)
