"""Which events an export covers: the retention window, since/until, the time zone."""

from __future__ import annotations

import calendar
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import polars as pl

from course_exports.access_log.schema import EVENT_TIME
from course_exports.errors import InputError

# ---------------------------------------------------------------------------- parameters


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already (CONTRACT 4.2)."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def retention_cutoff(now: datetime, months: int) -> datetime:
    """``now`` minus ``months`` calendar months, in UTC, clamping the day to the month.

    Aug 31 minus 6 months is Feb 28 (29 in a leap year): the oldest instant still kept.
    """
    if months < 0:
        raise ValueError(f"retention months must be >= 0, got {months}")
    now = as_utc(now)
    index = now.year * 12 + (now.month - 1) - months
    year, month0 = divmod(index, 12)
    day = min(now.day, calendar.monthrange(year, month0 + 1)[1])
    return now.replace(year=year, month=month0 + 1, day=day)


@cache
def _timezones_by_folded_name() -> dict[str, str]:
    return {name.casefold(): name for name in zoneinfo.available_timezones()}


def _is_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def parse_timezone(name: str | None) -> str:
    """The canonical IANA name for ``name`` ("UTC" when None); InputError if unknown.

    Case is forgiven (``america/new_york``) because people type these by hand. The name
    must be known to both zoneinfo and Polars' time-zone database, which renders it.
    """
    if name is None:
        return "UTC"
    cleaned = name.strip()
    # Listing every zone (to forgive case) scans the tz database: ~20 ms, paid only when
    # the name as given is not one.
    canonical = (
        cleaned
        if _is_zone(cleaned)
        else _timezones_by_folded_name().get(cleaned.casefold(), cleaned)
    )
    try:
        zoneinfo.ZoneInfo(canonical)
        pl.Series([0], dtype=EVENT_TIME).dt.convert_time_zone(canonical)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, pl.exceptions.PolarsError):
        raise InputError(
            "timezone", f"{name!r} is not an IANA time zone name (e.g. 'Europe/Berlin')"
        ) from None
    return canonical


@dataclass(frozen=True)
class AccessWindow:
    """Events with ``start <= event_time < end`` are exported (both UTC aware)."""

    start: datetime
    end: datetime

    @property
    def is_empty(self) -> bool:
        return self.start >= self.end


def access_window(
    now: datetime, retention_months: int, since: datetime | None, until: datetime | None
) -> AccessWindow:
    """The retention window ``[now - months, now)`` intersected with ``[since, until)``.

    ``until`` later than ``now`` is capped at ``now``: the export is a snapshot of what
    had happened when the run started, even while the LMS keeps appending to today.
    A window that ends up empty (e.g. ``since`` before the retention and ``until`` too)
    is not an error: the export then has the header only.
    """
    now = as_utc(now)
    start = retention_cutoff(now, retention_months)
    end = now
    if since is not None and until is not None and as_utc(since) >= as_utc(until):
        raise InputError(
            "since",
            f"must be before until ({as_utc(since).isoformat()} is not before "
            f"{as_utc(until).isoformat()})",
        )
    if since is not None:
        start = max(start, as_utc(since))
    if until is not None:
        end = min(end, as_utc(until))
    return AccessWindow(start=start, end=max(start, end))
