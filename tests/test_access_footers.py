"""Footer checks of the access log read only the end of each file, on both backends:
one request per file on S3 (two for a footer longer than the first read), the same
errors as before for what is not a readable log file."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from course_exports.access_log import ACCESS_LOG_SCHEMA, schema
from course_exports.access_log.fetched import (
    FOOTER_READ_BYTES,
    FetchedFile,
    UnfetchedReadError,
    fetch_footer,
)
from course_exports.errors import LakeDataError
from course_exports.storage import Location, open_location

DAY = date(2026, 2, 1)


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def good_table(rows: int = 50) -> pa.Table:
    when = datetime(2026, 2, 1, 8, tzinfo=UTC)
    return pa.Table.from_pylist(
        [
            {
                "event_time": when,
                "user_id": i,
                "course_id": 7,
                "assignment_id": None,
                "access_type": "login",
                "project_path": None,
                "ip": "10.0.0.1",
            }
            for i in range(rows)
        ],
        ACCESS_LOG_SCHEMA,
    )


def footer_length(data: bytes) -> int:
    return int.from_bytes(data[-8:-4], "little") + 8


GOOD = parquet_bytes(good_table())
# Wide key-value metadata (a writer's notes, a big embedded schema) makes the footer
# longer than pyarrow's first footer read: the rest must be fetched too.
LONG = parquet_bytes(good_table().replace_schema_metadata({"notes": "n" * 150_000}))
# A footer that runs from the first byte after "PAR1" to nearly the end of a big file.
WIDE = parquet_bytes(
    pa.Table.from_arrays(
        [*good_table(3).columns, *[pa.array([1, 2, 3])] * 1500],
        names=[*ACCESS_LOG_SCHEMA.names, *[f"extra_{i}" for i in range(1500)]],
    )
)


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Location]:
    if request.param == "local":
        yield open_location(str(tmp_path / "lake"))
    else:
        s3: Any = request.getfixturevalue("s3_server")
        yield open_location(
            f"s3://{s3.make_bucket('footers')}/lake", s3_endpoint_url=s3.endpoint_url
        )


def put(lake: Location, name: str, data: bytes) -> str:
    lake.write_bytes_atomic(data, "access_log", f"event_date={DAY}", name)
    return lake.path("access_log", f"event_date={DAY}", name)


def test_long_footers_are_longer_than_the_first_read() -> None:
    assert footer_length(LONG) > FOOTER_READ_BYTES
    assert footer_length(WIDE) > FOOTER_READ_BYTES
    assert footer_length(GOOD) < len(GOOD) < FOOTER_READ_BYTES


@pytest.mark.parametrize("data", [GOOD, LONG, WIDE], ids=["short", "long metadata", "wide"])
def test_good_footers_pass(lake: Location, data: bytes) -> None:
    schema.check_footer(lake, put(lake, "x.parquet", data))
    fetched = fetch_footer(lake, f"access_log/event_date={DAY}/x.parquet")
    assert pq.read_metadata(fetched).num_rows == pq.read_metadata(io.BytesIO(data)).num_rows


BAD: dict[str, tuple[bytes, str]] = {
    "truncated": (GOOD[:-100], "not a readable parquet file"),
    "long footer truncated": (LONG[: len(LONG) - 70_000], "not a readable parquet file"),
    "head cut off a long footer": (LONG[-(footer_length(LONG) - 10) :], "not a readable"),
    "not parquet": (b"id,name\n" * 20_000, "not a readable parquet file"),
    "PAR1 and garbage": (b"PAR1" + b"\xff" * 70_000 + b"PAR1", "not a readable parquet file"),
    "empty": (b"", "not a readable parquet file"),
    "wrong column type": (
        parquet_bytes(
            good_table().cast(ACCESS_LOG_SCHEMA.set(1, pa.field("user_id", pa.string())))
        ),
        "column 'user_id' is string, expected int64",
    ),
    "missing column": (parquet_bytes(good_table().drop(["ip"])), "missing column 'ip'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_are_named_with_their_problem(lake: Location, case: str) -> None:
    data, problem = BAD[case]
    path = put(lake, "bad.parquet", data)
    with pytest.raises(LakeDataError) as raised:
        schema.check_footer(lake, path)
    assert raised.value.path == lake.url_of(path)
    assert raised.value.problem.startswith(problem)


def test_a_vanished_file_is_named(lake: Location) -> None:
    with pytest.raises(LakeDataError) as raised:
        schema.check_footer(lake, lake.path("access_log", f"event_date={DAY}", "gone.parquet"))
    assert raised.value.problem.startswith("file disappeared")


@pytest.mark.parametrize(
    ("data", "requests"), [(GOOD, 1), (LONG, 2), (WIDE, 2)], ids=["short", "long", "wide"]
)
def test_one_request_per_footer_on_s3(s3_server: Any, data: bytes, requests: int) -> None:
    """A footer check is one GET of the file's end (two for a long footer): no HEAD, no
    read-ahead, and only the footer's bytes (or the first 64 KiB of the end)."""
    from faults import faulty_proxy

    bucket = s3_server.make_bucket("footer-requests")
    with faulty_proxy(s3_server.endpoint_url) as proxy:
        lake = open_location(f"s3://{bucket}/lake", s3_endpoint_url=proxy.url)
        paths = [put(lake, f"{n}.parquet", data) for n in range(5)]
        proxy.seen.clear()
        proxy.answered.clear()
        for path in paths:
            schema.check_footer(lake, path)
        assert [m for m, _ in proxy.seen] == ["GET"] * (requests * len(paths))
        assert proxy.body_bytes() == len(paths) * min(
            len(data), max(FOOTER_READ_BYTES, footer_length(data))
        )


@given(
    size=st.integers(1, 300),
    pieces=st.lists(st.tuples(st.integers(0, 300), st.integers(1, 60)), max_size=4),
    reads=st.lists(st.tuples(st.integers(0, 320), st.integers(0, 80)), max_size=6),
)
def test_a_fetched_file_serves_only_what_was_fetched(
    size: int, pieces: list[tuple[int, int]], reads: list[tuple[int, int]]
) -> None:
    data = bytes(range(256)) * 2
    given_pieces = [(o, data[o : min(o + n, size)]) for o, n in pieces if o < size]
    known = {i for o, piece in given_pieces for i in range(o, o + len(piece))}
    fetched = FetchedFile(size, given_pieces)
    assert fetched.seek(0, io.SEEK_END) == size
    for offset, n in reads:
        fetched.seek(offset)
        wanted = range(offset, min(offset + n, size))
        if all(i in known for i in wanted):
            assert fetched.read(n) == data[offset : offset + len(wanted)]
            assert fetched.tell() == offset + len(wanted)
        else:
            with pytest.raises(UnfetchedReadError):
                fetched.read(n)
