"""The access-data CSV (CONTRACT 4.2) from the hive-partitioned access log (CONTRACT 2).

Modules, one concern each: ``window`` (which events), ``partitions`` (the day folders,
shared with the purge), ``schema`` (columns and footer checks), ``reader`` (batches of a
course's rows), ``render`` (CSV cells), ``writer`` (the CSV), ``clustered`` (our
course-clustered copy of the log).

How it stays fast and small:

* Only the day partitions that intersect the window are read, from one listing.
* Day partitions do not overlap in time, so the CSV is produced a batch at a time,
  oldest first: each batch is sorted on its own and the concatenation is ordered. No
  global sort, and memory is bounded by the batch size (about 200,000 rows of the
  course, or one day of them when a day holds more), not by the log or the course:
  quiet days are grouped into one batch, a busy day is a batch of its own (read once).
* Days our course-clustered copy holds (``clustered``) are read from it: only the
  course's row groups, checked against their checksums.
* Each batch is one Polars scan with the course predicate pushed into the Parquet
  reader, which decodes the other columns only for the matching rows: for a course that
  is a sliver of the log, most bytes are never turned into values.
* Users, roster and assignments are rendered to CSV cells once (formula guard included)
  and joined per batch; timestamps, labels and quoting are Polars expressions and the
  Polars CSV writer, never a Python loop over rows.
* The next batches are read in a background thread and the CSV is handed to ``out`` by
  another, so reading (S3 round trips), rendering and writing overlap.

Choices the contract leaves open, made here:

* Row order: ``event_time``, then :data:`SORT_KEYS` (user_id, access_type,
  assignment_id, project_path, ip; nulls first). That is every column of an event, so
  only identical rows tie, and their order changes no byte.
* Date/Time drops the fraction of a second (12.999 s is written as 12 s), never rounds.
* A text cell that is empty or null is an empty field; login and logout rows have an
  empty Assignment even if the LMS wrote an assignment id on them.
* ``event_time`` may be stored in ms, us or ns but must be UTC; a naive or other-zone
  timestamp is refused, not guessed at. Strings may be string, large_string, string_view
  or dictionary-encoded. Other columns must be exactly as in the contract.
* Broken rows of the course inside the window (unknown or null access_type, null
  event_time, a row filed under another day's partition) stop the export even when the
  user or assignment filters would have dropped them.
"""

from __future__ import annotations

from course_exports.access_log.partitions import (
    ACCESS_LOG_DIR,
    DayPartition,
    list_day_partitions,
    partition_folder,
)
from course_exports.access_log.render import CSV_HEADER, UTF8_BOM
from course_exports.access_log.schema import (
    ACCESS_LOG_SCHEMA,
    ACCESS_TYPE_LABELS,
    REQUIRED_COLUMNS,
    SORT_KEYS,
    check_log_files,
)
from course_exports.access_log.window import (
    AccessWindow,
    access_window,
    as_utc,
    parse_timezone,
    retention_cutoff,
)
from course_exports.access_log.writer import AccessCsvStats, write_access_csv

__all__ = [
    "ACCESS_LOG_DIR",
    "ACCESS_LOG_SCHEMA",
    "ACCESS_TYPE_LABELS",
    "CSV_HEADER",
    "REQUIRED_COLUMNS",
    "SORT_KEYS",
    "UTF8_BOM",
    "AccessCsvStats",
    "AccessWindow",
    "DayPartition",
    "access_window",
    "as_utc",
    "check_log_files",
    "list_day_partitions",
    "parse_timezone",
    "partition_folder",
    "retention_cutoff",
    "write_access_csv",
]
