"""write_access_csv: the access-data CSV (CONTRACT 4.2), batch by batch, oldest first."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import BinaryIO

import polars as pl

from course_exports.access_log.course_copy import CourseCopy
from course_exports.access_log.partitions import DayPartition
from course_exports.access_log.reader import Prefetcher, Query, check_rows, explain_failure
from course_exports.access_log.render import (
    CSV_HEADER,
    UTF8_BOM,
    People,
    assignment_cells,
    render,
)
from course_exports.access_log.schema import SORT_KEYS
from course_exports.access_log.window import AccessWindow, parse_timezone
from course_exports.storage import Location
from course_exports.tabular import csv_bytes

#: Told the data rows and bytes of CSV made so far, after each piece (from the thread
#: that renders: counted as they are made, not by scanning the bytes for line ends).
Progress = Callable[[int, int], None]

# Rows rendered to CSV text at a time, and chunks of text waiting for the writer thread:
# together they bound the CSV bytes in memory (~4 x 131k rows x ~150 bytes).
_RENDER_ROWS = 131_072
_WRITE_QUEUE = 4


class _Writer:
    """Calls ``out.write`` from one background thread, in order, with a bounded queue.

    Writing (page cache, or an S3 part upload inside fsspec's writer) then overlaps the
    rendering of the next rows instead of stalling it.
    """

    def __init__(self, out: BinaryIO, on_progress: Progress | None = None) -> None:
        self._out = out
        self._on_progress = on_progress
        self._rows = 0
        self._bytes = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_WRITE_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="access-csv-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(data)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc

    def write(self, data: bytes, rows: int = 0) -> None:
        """Queue ``data`` (``rows`` data rows of CSV) and report the totals so far."""
        self._raise_error()
        self._queue.put(data)
        self._rows += rows
        self._bytes += len(data)
        if self._on_progress is not None:
            self._on_progress(self._rows, self._bytes)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc_type is None:  # otherwise the caller's own error is the one to report
            self._raise_error()


# ---------------------------------------------------------------------------- the CSV


@dataclass(frozen=True)
class AccessCsvStats:
    """What was written: data rows (header excluded), day partitions, source files read
    and days read from the course-clustered copy instead."""

    rows: int
    days: int
    files: int
    days_from_copy: int = 0


def write_access_csv(
    lake: Location,
    partitions: list[DayPartition],
    out: BinaryIO,
    *,
    course_id: int,
    window: AccessWindow,
    assignments: pl.DataFrame,
    roster: pl.DataFrame,
    users: pl.DataFrame,
    assignment_ids: Sequence[int] | None = None,
    user_ids: Sequence[int] | None = None,
    timezone: str = "UTC",
    excel: bool = False,
    copy: CourseCopy | None = None,
    on_progress: Progress | None = None,
) -> AccessCsvStats:
    """Write the access CSV of one course (CONTRACT 4.2) to ``out``, oldest row first.

    ``partitions`` come from :func:`list_day_partitions`; days outside ``window`` are
    skipped. ``assignment_ids`` keeps only project events of those assignments (login
    and logout have none, so they go); ``user_ids`` keeps only those users; an empty
    sequence selects nothing. ``out`` only receives ``write(bytes)`` calls, in order.
    Broken log data raises LakeDataError, possibly after some rows were written: the
    caller publishes the file only when this returns. ``on_progress(rows, bytes)`` is
    called after each piece of CSV, from this thread.
    """
    timezone = parse_timezone(timezone)
    query = Query(
        course_id=course_id,
        window=window,
        assignment_ids=None if assignment_ids is None else tuple(int(i) for i in assignment_ids),
        user_ids=None if user_ids is None else tuple(int(i) for i in user_ids),
    )
    days = sorted(
        (p for p in partitions if p.files and p.start < window.end and p.end > window.start),
        key=lambda p: p.day,
    )
    people = People(users, roster)
    labels = assignment_cells(assignments)

    rows = 0
    files: set[str] = set()
    copied: set[date] = set()
    with _Writer(out, on_progress) as writer, Prefetcher(lake, days, query, copy) as prefetcher:
        writer.write((UTF8_BOM if excel else b"") + CSV_HEADER.encode() + b"\r\n")
        for batch in prefetcher:
            if batch.error is not None:
                raise explain_failure(lake, batch, query) from batch.error
            assert batch.events is not None
            check_rows(lake, batch, query, batch.events)
            rows += _write_batch(writer, batch.events, people, labels, timezone)
            files.update(batch.files)
            copied.update(batch.copied)
    return AccessCsvStats(rows=rows, days=len(days), files=len(files), days_from_copy=len(copied))


def _write_batch(
    writer: _Writer,
    events: pl.DataFrame,
    people: People,
    labels: pl.DataFrame,
    timezone: str,
) -> int:
    if not events.height:
        return 0
    joined = (
        events.sort(list(SORT_KEYS), nulls_last=False)
        .join(people.for_batch(events), on="user_id", how="left", maintain_order="left")
        .join(labels, on="assignment_id", how="left", maintain_order="left")
    )
    for offset in range(0, joined.height, _RENDER_ROWS):
        piece = joined.slice(offset, _RENDER_ROWS)
        writer.write(csv_bytes(render(piece, timezone)), piece.height)
    return joined.height
