"""The access CSV engine against CONTRACT 4.2, and against an independent reference.

The reference below is deliberately naive: pyarrow rows as Python dicts, the csv module,
zoneinfo. It shares no code with the engine, so agreeing byte for byte over awkward data
(names with commas, quotes and newlines, formula-like cells, DST changes, window edges,
ties) means both read the contract the same way. A few tests also spell out exact bytes,
in case both ever read it wrongly together.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from reference import reference_csv

from course_exports import access_log
from course_exports.access_log import (
    ACCESS_TYPE_LABELS,
    CSV_HEADER,
    AccessCsvStats,
    AccessWindow,
    DayPartition,
    access_window,
    as_utc,
    check_log_files,
    list_day_partitions,
    parse_timezone,
    reader,
    retention_cutoff,
    write_access_csv,
    writer,
)
from course_exports.errors import InputError, LakeDataError
from course_exports.storage import Location, open_location

LOG_SCHEMA = access_log.ACCESS_LOG_SCHEMA
COURSE = 42
OTHER_COURSE = 43
NOW = datetime(2026, 3, 9, 15, 30, tzinfo=UTC)
CUTOFF = datetime(2025, 9, 9, 15, 30, tzinfo=UTC)  # NOW - 6 months
US = timedelta(microseconds=1)

# (user_id, username, email, first_name, last_name)
USERS: list[tuple[int, str | None, str | None, str | None, str | None]] = [
    (1, "alice", "alice@example.edu", "Alice", "Smith"),
    (2, "=cmd", "cmd@example.edu", '=HYPERLINK("http://evil.example","click")', "=1+2"),
    (3, "+plus", "+plus@example.edu", "+49 Plus", "-Minus"),
    (4, "@alice", "a@example.edu", "@Alice", "\tTabbed"),
    (5, "-minus", "m@example.edu", "-1+1", "\rCarriage"),
    (6, "multi.line", "multi@example.edu", "Multi\nLine", "Name\r\nHere"),
    (7, "bobby", "bobby+tables@example.edu", "Smith, Jr.", 'Robert "Bobby"'),
    (8, "li.lei", "li@example.cn", "李", "雷 🚀"),
    (9, "sukarno", "sukarno@example.id", "", None),
    (10, "left.student", "left@example.edu", "Left", "Student"),  # not in the roster
    (12, "teacher", "teacher@staff.example.edu", "Tea", "Cher"),
    (14, "outsider", "out@example.edu", "Out", "Sider"),  # in no roster
]
# 11 is in the roster but not in the directory; 13 is in neither.
ROSTER = {1: "Student", 2: "Student", 3: "Student", 4: "Student", 5: "Student"}
ROSTER |= {6: "Student", 7: "Student", 8: "Student", 9: "Student", 11: "Student", 12: "Teacher"}
LOG_USERS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
# 599 was deleted from course.json: its events keep an empty Assignment cell.
ASSIGNMENTS = {501: "Hello, World", 502: "=SUM(A1) book", 503: 'Ch. "2" exercises'}
LOG_ASSIGNMENTS = [501, 502, 503, 599]
PATHS = [
    "/home/project/main.py",
    "/home/project/a,b.txt",
    '/home/project/"quoted".txt',
    "/home/project/new\nline.txt",
    "-rf /",
    "=cmd|' /C calc'!A0",
    "/home/project/données/été.csv",
    "",
    None,
]
IPS = ["10.0.0.1", "2001:db8::1", "::1", "192.168.1.20", "@10.0.0.2"]
DAYS = [
    date(2025, 9, 1),  # before the retention: never listed
    date(2025, 9, 8),
    date(2025, 9, 9),  # the cut-off day: half in, half out
    date(2025, 9, 10),
    date(2025, 10, 26),  # Europe leaves summer time
    date(2025, 11, 2),  # the US leaves summer time
    date(2025, 11, 3),
    date(2025, 12, 31),
    date(2026, 1, 1),
    date(2026, 2, 28),
    date(2026, 3, 8),  # the US enters summer time
    date(2026, 3, 9),  # today: events after NOW are not exported
]


# ---------------------------------------------------------------------------- lake helpers


def at(day: date, seconds: float = 0.0) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=seconds)


def event(
    when: datetime,
    user_id: int,
    access_type: str = "login",
    assignment_id: int | None = None,
    project_path: str | None = None,
    ip: str | None = "10.0.0.1",
    course_id: int = COURSE,
) -> dict[str, Any]:
    return {
        "event_time": when,
        "user_id": user_id,
        "course_id": course_id,
        "assignment_id": assignment_id,
        "access_type": access_type,
        "project_path": project_path,
        "ip": ip,
    }


def write_events(
    root: str,
    day: date | str,
    name: str,
    rows: list[dict[str, Any]],
    schema: pa.Schema = LOG_SCHEMA,
) -> str:
    folder = os.path.join(root, "access_log", f"event_date={day}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def random_events(rng: random.Random, day: date, count: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(count):
        when = at(day) + timedelta(microseconds=rng.randrange(86_400 * 1_000_000))
        kind = rng.choice(list(ACCESS_TYPE_LABELS))
        project = kind.startswith("project")
        rows.append(
            event(
                when,
                rng.choice(LOG_USERS),
                kind,
                rng.choice(LOG_ASSIGNMENTS) if project else None,
                rng.choice(PATHS) if project else None,
                rng.choice(IPS),
                course_id=COURSE if rng.random() < 0.7 else OTHER_COURSE,
            )
        )
    return rows


def edge_events() -> list[dict[str, Any]]:
    """Events placed exactly on the boundaries the export must get right."""
    rows = [
        event(CUTOFF - US, 1),  # one microsecond too old
        event(CUTOFF, 2),  # the oldest instant kept
        event(NOW - US, 3, "logout"),  # the newest instant kept
        event(NOW, 4),  # end is exclusive
        event(NOW + timedelta(hours=2), 5),  # written "later today"
        # NY falls back at 06:00Z: 01:59:59-04:00, then 01:00:00-05:00.
        event(datetime(2025, 11, 2, 5, 59, 59, 999_999, tzinfo=UTC), 6, "project_open", 501, "/x"),
        event(datetime(2025, 11, 2, 6, 0, 0, tzinfo=UTC), 7, "project_close", 501, "/x"),
        # NY springs forward at 07:00Z: 01:59:59-05:00, then 03:00:00-04:00.
        event(datetime(2026, 3, 8, 6, 59, 59, 999_999, tzinfo=UTC), 8, "login"),
        event(datetime(2026, 3, 8, 7, 0, 0, tzinfo=UTC), 9, "login"),
        # Midnight UTC belongs to the new day's partition.
        event(at(date(2026, 1, 1)), 12, "login", ip="2001:db8::1"),
    ]
    # Ties: the same instant, different users and kinds, spread over two files below.
    tie = datetime(2025, 12, 31, 12, 0, 0, 500_000, tzinfo=UTC)
    rows += [
        event(tie, 3, "project_open", 503, "/b"),
        event(tie, 3, "project_open", 502, "/a"),
        event(tie, 3, "login"),
        event(tie, 1, "project_close", 501, None),
        event(tie, 1, "project_close", 501, "/z"),
        event(tie, 1, "logout", ip=None),
        event(tie, 13, "login", ip="@10.0.0.2"),
    ]
    return rows


@dataclass(frozen=True)
class Fixture:
    lake: Location
    root: str
    assignments: pl.DataFrame
    roster: pl.DataFrame
    users: pl.DataFrame


def frames() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    assignments = pl.DataFrame(
        {"assignment_id": list(ASSIGNMENTS), "label": list(ASSIGNMENTS.values())},
        schema={"assignment_id": pl.Int64, "label": pl.String},
    )
    roster = pl.DataFrame(
        {"user_id": list(ROSTER), "role": list(ROSTER.values())},
        schema={"user_id": pl.Int64, "role": pl.String},
    )
    users = pl.DataFrame(
        USERS,
        schema={
            "user_id": pl.Int64,
            "username": pl.String,
            "email": pl.String,
            "first_name": pl.String,
            "last_name": pl.String,
        },
        orient="row",
    )
    return assignments, roster, users


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    root = str(tmp_path_factory.mktemp("lake"))
    rng = random.Random(20260309)
    by_day: dict[date, list[dict[str, Any]]] = {day: random_events(rng, day, 60) for day in DAYS}
    for row in edge_events():
        by_day.setdefault(row["event_time"].astimezone(UTC).date(), []).append(row)
    for day, rows in by_day.items():
        rng.shuffle(rows)  # files are not in time order
        parts = 1 + (day.toordinal() % 3)  # one to three files a day
        for k in range(parts):
            write_events(root, day, f"part-{k}.parquet", rows[k::parts])
    assignments, roster, users = frames()
    return Fixture(open_location(root), root, assignments, roster, users)


# ---------------------------------------------------------------------------- the reference


def engine_csv(f: Fixture, window: AccessWindow, **options: Any) -> tuple[bytes, AccessCsvStats]:
    partitions = list_day_partitions(f.lake, window)
    check_log_files(f.lake, partitions)
    out = io.BytesIO()
    stats = write_access_csv(
        f.lake,
        partitions,
        out,
        course_id=options.pop("course_id", COURSE),
        window=window,
        assignments=f.assignments,
        roster=f.roster,
        users=f.users,
        **options,
    )
    return out.getvalue(), stats


def assert_same_csv(actual: bytes, expected: bytes) -> None:
    if actual == expected:
        return
    got = list(csv.reader(io.StringIO(actual.decode("utf-8-sig"), newline="")))
    want = list(csv.reader(io.StringIO(expected.decode("utf-8-sig"), newline="")))
    for number, (a, b) in enumerate(zip(got, want, strict=False)):
        assert a == b, f"record {number} differs"
    assert len(got) == len(want), f"{len(got)} records, expected {len(want)}"
    assert actual == expected  # same records, different bytes (quoting, BOM, line ends)


SCENARIOS: dict[str, dict[str, Any]] = {
    "retention only": {},
    "since and until": {
        "since": datetime(2025, 11, 2, 6, 0),  # naive = UTC, exactly an event: included
        "until": datetime(2026, 1, 1, tzinfo=UTC),  # exactly an event: excluded
    },
    "since before the retention": {"since": datetime(2024, 1, 1, tzinfo=UTC)},
    "aware since in another zone": {
        "since": datetime(2025, 12, 31, 7, 0, 0, 500_000, tzinfo=timezone(timedelta(hours=-5)))
    },
    "assignments": {"assignment_ids": [501, 599]},
    "users": {"user_ids": [2, 6, 10, 11, 13]},
    "everything": {
        "assignment_ids": [501, 502, 503],
        "user_ids": [1, 3, 6, 7, 8],
        "timezone": "America/New_York",
        "excel": True,
    },
    "new york": {"timezone": "America/New_York"},
    "half-hour zone": {"timezone": "Australia/Adelaide"},
    "berlin, excel": {"timezone": "Europe/Berlin", "excel": True},
    "other course": {"course_id": OTHER_COURSE},
    "nothing selected": {"user_ids": []},
    "until before the retention": {"until": datetime(2025, 1, 1, tzinfo=UTC)},
}


BATCHING: dict[str, dict[str, Any]] = {
    "default": {},
    # A few days a batch, several render chunks a batch, one chunk in flight.
    "grouped days": {
        "_BATCH_ROWS": 150,
        "_RENDER_ROWS": 7,
        "_WRITE_QUEUE": 1,
        "_PREFETCH_BATCHES": 0,
    },
    # Every day busier than a batch: each its own batch.
    "busy days": {"_BATCH_ROWS": 8, "_ROWS_PER_BYTE_GUESS": 0.01},
}


@pytest.mark.parametrize("batching", list(BATCHING))
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_engine_matches_reference(
    fixture: Fixture, name: str, batching: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for constant, value in BATCHING[batching].items():
        module = writer if constant in ("_RENDER_ROWS", "_WRITE_QUEUE") else reader
        monkeypatch.setattr(module, constant, value)
    options = dict(SCENARIOS[name])
    window = access_window(NOW, 6, options.pop("since", None), options.pop("until", None))
    actual, stats = engine_csv(fixture, window, **options)
    expected = reference_csv(
        fixture.root,
        course_id=options.get("course_id", COURSE),
        window=window,
        assignments=ASSIGNMENTS,
        roster=ROSTER,
        users=USERS,
        assignment_ids=options.get("assignment_ids"),
        user_ids=options.get("user_ids"),
        timezone=options.get("timezone", "UTC"),
        excel=options.get("excel", False),
    )
    assert_same_csv(actual, expected)
    records = list(csv.reader(io.StringIO(expected.decode("utf-8-sig"), newline="")))
    assert stats.rows == len(records) - 1


def test_reference_scenarios_are_not_trivial(fixture: Fixture) -> None:
    """The fixture really holds what the comparisons claim to cover."""
    window = access_window(NOW, 6, None, None)
    data, stats = engine_csv(fixture, window)
    records = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert stats.rows == len(records) - 1 > 300
    flat = "\x00".join("\x00".join(r) for r in records)
    for needle in (
        "'=cmd",
        "Multi\nLine",
        "Name\r\nHere",
        "Smith, Jr.",
        "'\rCarriage",
        "'\tTabbed",
        "'-rf /",
        "'@10.0.0.2",
        "=SUM",
        'Ch. "2" exercises',
        "+00:00",
    ):
        assert needle in flat, needle
    users_seen = {r[0] for r in records[1:]}
    assert "" in users_seen  # users 11 and 13 are not in the directory
    assert "left.student" in users_seen  # in the directory, not in the roster


# ---------------------------------------------------------------------------- exact bytes


def test_exact_bytes_of_a_small_export(tmp_path: Any) -> None:
    root = str(tmp_path)
    day = date(2026, 3, 8)
    write_events(
        root,
        day,
        "a.parquet",
        [
            event(
                datetime(2026, 3, 8, 7, 0, 0, 999_999, tzinfo=UTC),
                6,
                "project_open",
                502,
                '/p/"x",y',
                ip="2001:db8::1",
            ),
            event(datetime(2026, 3, 8, 6, 59, 59, tzinfo=UTC), 2, "login", 501, "/ignored", "-1"),
        ],
    )
    write_events(
        root,
        day,
        "b.parquet",
        [event(datetime(2026, 3, 8, 7, 0, 0, tzinfo=UTC), 13, "logout", course_id=COURSE)],
    )
    assignments, roster, users = frames()
    lake = open_location(root)
    window = access_window(NOW, 6, None, None)
    out = io.BytesIO()
    progress: list[tuple[int, int]] = []
    stats = write_access_csv(
        lake,
        list_day_partitions(lake, window),
        out,
        course_id=COURSE,
        window=window,
        assignments=assignments,
        roster=roster,
        users=users,
        timezone="America/New_York",
        excel=True,
        on_progress=lambda rows, done: progress.append((rows, done)),
    )
    # Rows as rendered, not line ends counted: a quoted cell below holds a CRLF.
    assert progress[0] == (0, len("\ufeff".encode() + CSV_HEADER.encode()) + 2)
    assert progress[-1] == (3, len(out.getvalue()))
    expected = (
        "\ufeff"
        "Username,Email,First Name,Last Name,Date/Time,Access Type,Assignment,Role,"
        "Project Path,IP Address\r\n"
        # A login names no assignment even if the row has one; every risky cell is guarded.
        '\'=cmd,cmd@example.edu,"\'=HYPERLINK(""http://evil.example"",""click"")",'
        "'=1+2,2026-03-08T01:59:59-05:00,Log In,,Student,/ignored,'-1\r\n"
        # User 13 is in neither the directory nor the roster.
        ",,,,2026-03-08T03:00:00-04:00,Log Out,,,,10.0.0.1\r\n"
        'multi.line,multi@example.edu,"Multi\nLine","Name\r\nHere",'
        "2026-03-08T03:00:00-04:00,Project Open,'=SUM(A1) book,Student,"
        '"/p/""x"",y",2001:db8::1\r\n'
    )
    assert out.getvalue() == expected.encode("utf-8")
    assert stats == AccessCsvStats(rows=3, days=1, files=2)


def test_progress_counts_every_row_once_in_order(fixture: Fixture) -> None:
    progress: list[tuple[int, int]] = []
    data, stats = engine_csv(
        fixture,
        access_window(NOW, 6, None, None),
        on_progress=lambda rows, done: progress.append((rows, done)),
    )
    assert stats.rows > 0
    assert progress == sorted(progress)
    assert progress[-1] == (stats.rows, len(data))


def test_empty_window_writes_the_header_only(fixture: Fixture) -> None:
    window = access_window(NOW, 6, datetime(2030, 1, 1), None)
    assert window.start == window.end
    data, stats = engine_csv(fixture, window, excel=False)
    assert data == CSV_HEADER.encode() + b"\r\n"
    assert stats == AccessCsvStats(rows=0, days=0, files=0)


def test_stats_count_days_and_files(fixture: Fixture) -> None:
    window = access_window(NOW, 6, None, None)
    partitions = list_day_partitions(fixture.lake, window)
    _, stats = engine_csv(fixture, window)
    assert stats.days == len(partitions) == len(DAYS) - 2  # Sep 1 and Sep 8 are too old
    assert stats.files == sum(len(p.files) for p in partitions)


def test_timestamps_of_other_units_and_polars_written_files(tmp_path: Any) -> None:
    """ms/ns timestamps and large/view strings (what Polars writes) read the same."""
    root = str(tmp_path)
    day = date(2026, 2, 1)
    rows = [
        event(datetime(2026, 2, 1, 10, 0, 0, 123_000, tzinfo=UTC), 1, "project_open", 501, "/a"),
        event(datetime(2026, 2, 1, 9, 0, 0, tzinfo=UTC), 7, "login"),
    ]
    ns = pa.schema([pa.field("event_time", pa.timestamp("ns", tz="UTC")), *list(LOG_SCHEMA)[1:]])
    write_events(root, day, "ns.parquet", rows[:1], ns)
    ms = pa.schema(
        [pa.field("event_time", pa.timestamp("ms", tz="Etc/UTC")), *list(LOG_SCHEMA)[1:]]
    )
    write_events(root, day, "ms.parquet", rows[1:], ms)
    pl.DataFrame(
        [event(datetime(2026, 2, 1, 8, 0, 0, tzinfo=UTC), 3, "logout", ip="10.9.9.9")],
        schema={
            "event_time": pl.Datetime("us", "UTC"),
            "user_id": pl.Int64,
            "course_id": pl.Int64,
            "assignment_id": pl.Int64,
            "access_type": pl.String,
            "project_path": pl.String,
            "ip": pl.String,
        },
    ).write_parquet(os.path.join(root, "access_log", f"event_date={day}", "polars.parquet"))
    lake = open_location(root)
    window = access_window(NOW, 6, None, None)
    assert check_log_files(lake, list_day_partitions(lake, window)) == 3
    records = list(csv.reader(io.StringIO(export(lake, window=window).decode(), newline="")))
    assert [r[4] for r in records[1:]] == [
        "2026-02-01T08:00:00+00:00",
        "2026-02-01T09:00:00+00:00",
        "2026-02-01T10:00:00+00:00",
    ]


# ---------------------------------------------------------------------------- broken rows


def small_lake(tmp_path: Any, rows: list[dict[str, Any]], day: date = date(2026, 2, 1)) -> Location:
    write_events(str(tmp_path), day, "good.parquet", [event(at(day, 60), 1)])
    write_events(str(tmp_path), day, "suspect.parquet", rows)
    return open_location(str(tmp_path))


def export(lake: Location, **options: Any) -> bytes:
    window = options.pop("window", None) or access_window(NOW, 6, None, None)
    assignments, roster, users = frames()
    out = io.BytesIO()
    write_access_csv(
        lake,
        list_day_partitions(lake, window),
        out,
        course_id=COURSE,
        window=window,
        assignments=assignments,
        roster=roster,
        users=users,
        **options,
    )
    return out.getvalue()


@pytest.mark.parametrize("options", [{}, {"assignment_ids": [501]}, {"user_ids": [1]}])
def test_unknown_access_type_names_the_file_and_value(
    tmp_path: Any, options: dict[str, Any]
) -> None:
    """Never skipped, even when the filters would have dropped the row."""
    day = date(2026, 2, 1)
    lake = small_lake(tmp_path, [event(at(day, 120), 5, "login"), event(at(day, 90), 5, "sudo")])
    with pytest.raises(LakeDataError) as raised:
        export(lake, **options)
    assert raised.value.path.endswith("event_date=2026-02-01/suspect.parquet")
    assert "'sudo'" in raised.value.problem


def test_null_access_type_is_an_error(tmp_path: Any) -> None:
    day = date(2026, 2, 1)
    lake = small_lake(tmp_path, [event(at(day, 90), 5, None)])  # type: ignore[arg-type]
    with pytest.raises(LakeDataError, match="unknown access_type None"):
        export(lake)


def test_null_event_time_is_an_error(tmp_path: Any) -> None:
    lake = small_lake(tmp_path, [event(None, 5)])  # type: ignore[arg-type]
    with pytest.raises(LakeDataError, match="event_time is null") as raised:
        export(lake)
    assert raised.value.path.endswith("suspect.parquet")


def test_unknown_access_type_elsewhere_is_not_this_exports_business(tmp_path: Any) -> None:
    day = date(2026, 2, 1)
    lake = small_lake(
        tmp_path,
        [
            event(at(day, 90), 5, "sudo", course_id=OTHER_COURSE),
            event(at(day, 95), 5, "sudo"),  # before `since`
        ],
    )
    window = access_window(NOW, 6, at(day, 100), None)
    assert export(lake, window=window).count(b"\r\n") == 1  # header only: good.parquet is at 60s


def test_row_outside_its_partition_day_is_an_error(tmp_path: Any) -> None:
    day = date(2026, 2, 1)
    lake = small_lake(tmp_path, [event(at(day, -1), 5)])  # Jan 31 in Feb 1's folder
    with pytest.raises(LakeDataError) as raised:
        export(lake)
    assert raised.value.path.endswith("suspect.parquet")
    assert "not on the partition's day 2026-02-01" in raised.value.problem


def test_unreadable_file_during_export_names_the_file(tmp_path: Any) -> None:
    lake = small_lake(tmp_path, [event(at(date(2026, 2, 1), 5), 5)])
    (tmp_path / "access_log" / "event_date=2026-02-01" / "suspect.parquet").write_bytes(b"PAR1junk")
    with pytest.raises(LakeDataError) as raised:
        export(lake)
    assert raised.value.path.endswith("suspect.parquet")
    assert "not a readable parquet file" in raised.value.problem


# ---------------------------------------------------------------------------- footers


def test_check_log_files_counts_files(fixture: Fixture) -> None:
    partitions = list_day_partitions(fixture.lake, access_window(NOW, 6, None, None))
    assert check_log_files(fixture.lake, partitions) == sum(len(p.files) for p in partitions)
    assert check_log_files(fixture.lake, []) == 0


def _partition(lake: Location, name: str) -> list[DayPartition]:
    return [
        DayPartition(date(2026, 2, 1), (lake.path("access_log", "event_date=2026-02-01", name),))
    ]


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda path: Path(path).write_bytes(b"not parquet at all"), "not a readable parquet file"),
        (lambda path: Path(path).write_bytes(b""), "not a readable parquet file"),
        (
            lambda path: pq.write_table(
                pa.Table.from_pylist([event(at(date(2026, 2, 1)), 1)], LOG_SCHEMA).drop(["ip"]),
                path,
            ),
            "missing column 'ip'",
        ),
        (
            lambda path: pq.write_table(
                pa.table({**{n: [None] for n in LOG_SCHEMA.names}, "user_id": ["7"]}).cast(
                    pa.schema(
                        [
                            f if f.name != "user_id" else pa.field("user_id", pa.string())
                            for f in LOG_SCHEMA
                        ]
                    )
                ),
                path,
            ),
            "column 'user_id' is string, expected int64",
        ),
        (
            lambda path: pq.write_table(
                pa.Table.from_pylist(
                    [],
                    pa.schema([pa.field("event_time", pa.timestamp("us")), *list(LOG_SCHEMA)[1:]]),
                ),
                path,
            ),
            "column 'event_time' is timestamp[us], expected timestamp[us, tz=UTC]",
        ),
        (
            lambda path: pq.write_table(
                pa.Table.from_pylist(
                    [],
                    pa.schema(
                        [
                            *list(LOG_SCHEMA)[:2],
                            pa.field("course_id", pa.int32()),
                            *list(LOG_SCHEMA)[3:],
                        ]
                    ),
                ),
                path,
            ),
            "column 'course_id' is int32, expected int64",
        ),
    ],
    ids=["garbage", "empty", "missing column", "string id", "naive time", "int32 id"],
)
def test_check_log_files_errors(tmp_path: Any, make: Callable[[str], Any], problem: str) -> None:
    folder = tmp_path / "access_log" / "event_date=2026-02-01"
    folder.mkdir(parents=True)
    write_events(
        str(tmp_path), date(2026, 2, 1), "a-good.parquet", [event(at(date(2026, 2, 1)), 1)]
    )
    make(str(folder / "b-bad.parquet"))
    lake = open_location(str(tmp_path))
    with pytest.raises(LakeDataError) as raised:
        check_log_files(lake, list_day_partitions(lake, access_window(NOW, 6, None, None)))
    assert raised.value.path == str(folder / "b-bad.parquet")
    assert raised.value.problem.startswith(problem)


def test_check_log_files_accepts_dictionary_and_large_strings(tmp_path: Any) -> None:
    schema = pa.schema(
        [
            *list(LOG_SCHEMA)[:4],
            pa.field("access_type", pa.dictionary(pa.int32(), pa.string())),
            pa.field("project_path", pa.large_string()),
            pa.field("ip", pa.string()),
        ]
    )
    write_events(
        str(tmp_path),
        date(2026, 2, 1),
        "x.parquet",
        [event(at(date(2026, 2, 1), 5), 1, "login")],
        schema,
    )
    lake = open_location(str(tmp_path))
    partitions = list_day_partitions(lake, access_window(NOW, 6, None, None))
    assert check_log_files(lake, partitions) == 1
    assert b"Log In" in export(lake)


# ---------------------------------------------------------------------------- listing


def test_list_day_partitions_keeps_the_window_days_in_order(fixture: Fixture) -> None:
    window = access_window(NOW, 6, None, None)
    days = [p.day for p in list_day_partitions(fixture.lake, window)]
    assert days == sorted(d for d in DAYS if d >= CUTOFF.date())
    narrow = AccessWindow(at(date(2025, 11, 2), 3600), at(date(2025, 11, 3)))  # end exclusive
    assert [p.day for p in list_day_partitions(fixture.lake, narrow)] == [date(2025, 11, 2)]
    for partition in list_day_partitions(fixture.lake, window):
        assert list(partition.files) == sorted(partition.files)
        assert all(p.endswith(".parquet") for p in partition.files)
        assert partition.size_bytes > 0


def test_list_day_partitions_ignores_bookkeeping_files(tmp_path: Any) -> None:
    day = date(2026, 2, 1)
    write_events(str(tmp_path), day, "b.parquet", [event(at(day), 1)])
    write_events(str(tmp_path), day, "a.parquet", [event(at(day), 1)])
    folder = tmp_path / "access_log" / f"event_date={day}"
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".c.parquet.tmp").write_bytes(b"partial")
    (folder / "notes.txt").write_bytes(b"hi")
    (tmp_path / "access_log" / "_committed").write_bytes(b"")
    (tmp_path / "access_log" / ".hidden").mkdir()
    (tmp_path / "access_log" / "event_date=2026-02-02").mkdir()  # empty: nothing to read
    lake = open_location(str(tmp_path))
    partitions = list_day_partitions(lake, access_window(NOW, 6, None, None))
    assert [(p.day, [os.path.basename(f) for f in p.files]) for p in partitions] == [
        (day, ["a.parquet", "b.parquet"])
    ]


def test_list_day_partitions_without_a_log(tmp_path: Any) -> None:
    assert (
        list_day_partitions(open_location(str(tmp_path)), access_window(NOW, 6, None, None)) == []
    )


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("event_date=2026-1-5", "not a day partition"),
        ("date=2026-01-05", "not a day partition"),
        ("event_date=2026-02-30", "2026-02-30 is not a date"),
        ("event_date=2026-02-01/nested", "unexpected folder inside a day partition"),
    ],
)
def test_list_day_partitions_rejects_a_bad_folder(tmp_path: Any, bad: str, problem: str) -> None:
    write_events(str(tmp_path), date(2026, 2, 1), "a.parquet", [event(at(date(2026, 2, 1)), 1)])
    (tmp_path / "access_log" / bad).mkdir(parents=True, exist_ok=True)
    (tmp_path / "access_log" / bad / "x.parquet").write_bytes(b"")  # S3 has no empty folders
    with pytest.raises(LakeDataError) as raised:
        list_day_partitions(open_location(str(tmp_path)), access_window(NOW, 6, None, None))
    assert raised.value.path == str(tmp_path / "access_log" / bad)
    assert problem in raised.value.problem


def test_list_day_partitions_rejects_a_data_file_outside_a_partition(tmp_path: Any) -> None:
    write_events(str(tmp_path), date(2026, 2, 1), "a.parquet", [event(at(date(2026, 2, 1)), 1)])
    stray = tmp_path / "access_log" / "stray.parquet"
    stray.write_bytes(b"")
    with pytest.raises(LakeDataError, match="outside a day partition") as raised:
        list_day_partitions(open_location(str(tmp_path)), access_window(NOW, 6, None, None))
    assert raised.value.path == str(stray)


# ---------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("now", "months", "expected"),
    [
        (datetime(2026, 8, 31, 12, 0, tzinfo=UTC), 6, datetime(2026, 2, 28, 12, 0, tzinfo=UTC)),
        (datetime(2024, 8, 31, tzinfo=UTC), 6, datetime(2024, 2, 29, tzinfo=UTC)),
        (datetime(2026, 3, 31, tzinfo=UTC), 1, datetime(2026, 2, 28, tzinfo=UTC)),
        (
            datetime(2026, 5, 31, 23, 59, 59, 999_999, tzinfo=UTC),
            1,
            datetime(2026, 4, 30, 23, 59, 59, 999_999, tzinfo=UTC),
        ),
        (datetime(2026, 1, 15, 8, 30, tzinfo=UTC), 6, datetime(2025, 7, 15, 8, 30, tzinfo=UTC)),
        (datetime(2026, 12, 31, tzinfo=UTC), 12, datetime(2025, 12, 31, tzinfo=UTC)),
        (datetime(2026, 3, 9, tzinfo=UTC), 27, datetime(2023, 12, 9, tzinfo=UTC)),
        (datetime(2026, 3, 9, tzinfo=UTC), 0, datetime(2026, 3, 9, tzinfo=UTC)),
        (datetime(2026, 8, 31, 12, 0), 6, datetime(2026, 2, 28, 12, 0, tzinfo=UTC)),  # naive
        # Converted to UTC first: 01:00 at +05:00 on Mar 1 is Feb 28 20:00 UTC.
        (
            datetime(2026, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=5))),
            1,
            datetime(2026, 1, 28, 20, 0, tzinfo=UTC),
        ),
    ],
)
def test_retention_cutoff(now: datetime, months: int, expected: datetime) -> None:
    result = retention_cutoff(now, months)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


def test_retention_cutoff_rejects_negative_months() -> None:
    with pytest.raises(ValueError):
        retention_cutoff(NOW, -1)


def test_as_utc() -> None:
    assert as_utc(datetime(2026, 1, 1, 12)) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    berlin = datetime(2026, 7, 1, 12, tzinfo=ZoneInfo("Europe/Berlin"))
    assert as_utc(berlin) == datetime(2026, 7, 1, 10, tzinfo=UTC)
    assert as_utc(berlin).tzinfo is UTC


def test_parse_timezone() -> None:
    assert parse_timezone(None) == "UTC"
    assert parse_timezone("UTC") == "UTC"
    assert parse_timezone("America/New_York") == "America/New_York"
    assert parse_timezone(" america/new_york ") == "America/New_York"
    for bad in ("Mars/Olympus_Mons", "", "../../etc/passwd", "localtime", "+05:00"):
        with pytest.raises(InputError) as raised:
            parse_timezone(bad)
        assert raised.value.parameter == "timezone"


def test_access_window_defaults_to_the_retention() -> None:
    assert access_window(NOW, 6, None, None) == AccessWindow(CUTOFF, NOW)


def test_access_window_intersects_since_and_until() -> None:
    since, until = (
        datetime(2025, 12, 1),
        datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
    )
    window = access_window(NOW, 6, since, until)
    assert window == AccessWindow(
        datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert window.start.tzinfo is not None and window.end.tzinfo is not None
    # since before the retention is clipped; until after now is capped at now.
    assert access_window(NOW, 6, datetime(2020, 1, 1), datetime(2030, 1, 1)) == AccessWindow(
        CUTOFF, NOW
    )


def test_access_window_empty_after_retention_is_not_an_error() -> None:
    window = access_window(NOW, 6, datetime(2025, 1, 1), datetime(2025, 2, 1))
    assert window.is_empty and window.start == window.end == CUTOFF
    future = access_window(NOW, 6, datetime(2027, 1, 1), None)
    assert future.is_empty


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (datetime(2026, 1, 2), datetime(2026, 1, 1)),
        (datetime(2026, 1, 1), datetime(2026, 1, 1)),
        (datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), datetime(2026, 1, 1)),
    ],
)
def test_access_window_since_must_be_before_until(since: datetime, until: datetime) -> None:
    with pytest.raises(InputError) as raised:
        access_window(NOW, 6, since, until)
    assert raised.value.parameter == "since"
    assert raised.value.problem.startswith("must be before until (")


# ---------------------------------------------------------------------------- batching


def _days(count: int, size: int) -> list[DayPartition]:
    first = date(2026, 2, 1)
    return [DayPartition(first + timedelta(days=k), ("f",), size) for k in range(count)]


def test_planner_groups_quiet_days(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "_BATCH_ROWS", 100)
    monkeypatch.setattr(reader, "_ROWS_PER_BYTE_GUESS", 0.01)  # 10 rows a day
    days = _days(25, 1000)
    window = AccessWindow(days[0].start, days[-1].end)
    batches = list(reader.Planner(window).batches(days))
    assert [len(b.partitions) for b in batches] == [10, 10, 5]
    assert all((b.start, b.end) == (window.start, window.end) for b in batches)


def test_planner_reads_a_busy_day_once_and_learns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "_BATCH_ROWS", 100)
    monkeypatch.setattr(reader, "_ROWS_PER_BYTE_GUESS", 0.5)  # 500 rows a day
    days = _days(4, 1000)
    window = AccessWindow(days[0].start + timedelta(hours=6), days[-1].end - timedelta(hours=1))
    planner = reader.Planner(window)
    plan = planner.batches(days)
    # A day busier than a batch is one batch, read once (never in time slices: a slice
    # of a one-row-group file decodes the whole file again).
    first = next(plan)
    assert first.partitions == [days[0]]
    assert (first.start, first.end, first.planned_bytes) == (window.start, window.end, 1000)
    # The course turns out to be quiet: the remaining days go in one batch.
    first.events = pl.DataFrame({"n": range(2)})
    first.source_rows = 2
    planner.observe(first)
    rest = list(plan)
    assert [b.partitions for b in rest] == [days[1:]]


def test_planner_sizes_copied_days_by_their_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from course_exports.access_log.clustered import DayIndex
    from course_exports.access_log.course_copy import CopiedDay

    monkeypatch.setattr(reader, "_BATCH_ROWS", 100)
    monkeypatch.setattr(reader, "_ROWS_PER_BYTE_GUESS", 0.001)  # 1 row a source day
    days = _days(6, 1000)
    groups = [(7, 7, 40, 1, 4, 10, 0), (7, 9, 40, 2, 14, 10, 0), (9, 9, 40, 1, 24, 10, 0)]
    copied = {
        d.day: CopiedDay(
            d,
            DayIndex(
                format=2,
                day=d.day,
                source=[],
                file="x.parquets",
                size=99,
                rows=120,
                chunks=groups,
                built_at=datetime(2026, 1, 1, tzinfo=UTC),
            ),
            (0, 1),  # 60 rows a day: a chunk of its own (40), half of a shared one (20)
        )
        for d in days[1:4]
    }
    window = AccessWindow(days[0].start, days[-1].end)
    batches = list(reader.Planner(window, copied).batches(days))
    # source day + copied day (61 rows), copied, copied + source + source.
    assert [[p.day for p in b.partitions] for b in batches] == [
        [days[0].day, days[1].day],
        [days[2].day],
        [days[3].day, days[4].day, days[5].day],
    ]
    assert [sorted(b.copied) for b in batches] == [[days[1].day], [days[2].day], [days[3].day]]
    assert [b.planned_bytes for b in batches] == [1000, 0, 2000]
    assert batches[0].files == ["f"]


def test_only_write_is_called_with_bytes(fixture: Fixture) -> None:
    class OnlyWrite:
        def __init__(self) -> None:
            self.chunks: list[bytes] = []

        def write(self, data: bytes) -> int:
            assert type(data) is bytes
            self.chunks.append(data)
            return len(data)

    window = access_window(NOW, 6, None, None)
    out = OnlyWrite()
    write_access_csv(
        fixture.lake,
        list_day_partitions(fixture.lake, window),
        out,  # type: ignore[arg-type]
        course_id=COURSE,
        window=window,
        assignments=fixture.assignments,
        roster=fixture.roster,
        users=fixture.users,
    )
    assert b"".join(out.chunks) == engine_csv(fixture, window)[0]


def test_a_failing_writer_fails_the_export(fixture: Fixture) -> None:
    class Full:
        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

    window = access_window(NOW, 6, None, None)
    with pytest.raises(OSError, match="No space left"):
        write_access_csv(
            fixture.lake,
            list_day_partitions(fixture.lake, window),
            Full(),  # type: ignore[arg-type]
            course_id=COURSE,
            window=window,
            assignments=fixture.assignments,
            roster=fixture.roster,
            users=fixture.users,
        )


def test_s3_lake_and_s3_output(fixture: Fixture, s3_server: Any) -> None:
    """The same CSV from an S3 lake (SeaweedFS on loopback) into an S3 writer."""
    bucket = s3_server.make_bucket("access")
    lake = open_location(f"s3://{bucket}/lake", s3_endpoint_url=s3_server.endpoint_url)
    for path in glob.glob(os.path.join(fixture.root, "access_log", "*", "*.parquet")):
        with open(path, "rb") as fh:
            lake.write_bytes_atomic(fh.read(), os.path.relpath(path, fixture.root))
    window = access_window(NOW, 6, datetime(2025, 10, 1), None)
    partitions = list_day_partitions(lake, window)
    assert check_log_files(lake, partitions) == sum(len(p.files) for p in partitions)
    target = "exports/access.csv"
    with lake.open_write(target) as out:
        write_access_csv(
            lake,
            partitions,
            out,
            course_id=COURSE,
            window=window,
            assignments=fixture.assignments,
            roster=fixture.roster,
            users=fixture.users,
            assignment_ids=[501, 502],
            excel=True,
        )
    expected, _ = engine_csv(fixture, window, assignment_ids=[501, 502], excel=True)
    assert lake.read_bytes(target) == expected
