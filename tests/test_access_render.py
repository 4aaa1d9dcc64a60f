"""The access CSV's cells (``access_log.render``): the fast date/time cell is strftime's."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_exports.access_log.render import _ISO_SECONDS, iso_seconds, render

# UTC, DST both ways, half and three-quarter hours, and zones whose early offsets had
# seconds (Amsterdam +00:19:32 until 1937, Monrovia -00:44:30 until 1972).
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Europe/Amsterdam",
    "Africa/Monrovia",
)

times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)
)


def strftime_cells(values: list[datetime | None], zone: str) -> pl.Series:
    series = pl.Series("event_time", values, dtype=pl.Datetime("us", "UTC"))
    local = series if zone == "UTC" else series.dt.convert_time_zone(zone)
    return local.dt.strftime(_ISO_SECONDS)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(times, st.none()), max_size=40), st.sampled_from(ZONES))
def test_the_date_time_cell_is_strftimes_byte_for_byte(
    values: list[datetime | None], zone: str
) -> None:
    series = pl.Series("event_time", values, dtype=pl.Datetime("us", "UTC"))
    assert iso_seconds(series, zone).to_list() == strftime_cells(values, zone).to_list()


@pytest.mark.parametrize("zone", ZONES)
def test_a_busy_stretch_across_dst_changes_matches(zone: str) -> None:
    # A quarter of a year every 7 seconds and a few microseconds: both DST changes of
    # a northern and a southern zone, fractions of seconds dropped, not rounded.
    start = datetime(2026, 2, 1, tzinfo=UTC)
    series = pl.datetime_range(
        start, datetime(2026, 11, 1, tzinfo=UTC), "7s13us", eager=True, time_zone="UTC"
    )
    assert len(series) > 3_000_000
    expected = (series if zone == "UTC" else series.dt.convert_time_zone(zone)).dt.strftime(
        _ISO_SECONDS
    )
    assert iso_seconds(series, zone).equals(expected)


def test_render_writes_the_time_in_the_exports_zone() -> None:
    events = pl.DataFrame(
        {
            "event_time": [datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC)] * 2,
            "access_type": ["login", "project_open"],
            "assignment": ["A1", "A1"],
            "project_path": ["p", "=cmd"],
            "ip": ["10.0.0.1", "10.0.0.2"],
            **{c: ["x", "y"] for c in ("username", "email", "first_name", "last_name", "role")},
        }
    )
    cells = render(events, "Europe/Berlin")
    assert cells["date_time"].to_list() == ["2026-03-29T01:59:59+01:00"] * 2
    assert cells["assignment"].to_list() == [None, "A1"]
    assert cells["project_path"].to_list() == ["p", "'=cmd"]
