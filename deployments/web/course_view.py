"""What the Course Data page shows: export records and Prefect runs, merged into rows.

A run that has not claimed its export yet is *queued* (or *running* once its flow has
started); a ``pending`` record is *running*, with its progress; ``ready`` before its
expiry is *ready*; ``failed`` keeps the reason a teacher can act on; ``expired`` (or
ready past its expiry) is greyed out for a while. Fields that the record may not have
(progress, failure reason) are read defensively.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from course_exports.export_records import ExportKind, ExportRecord
from course_exports.humanize import human_size
from deployments.web.runs import RunInfo

#: Expired exports stay on the page (greyed out) this long.
RECENTLY_EXPIRED = timedelta(days=14)
KIND_LABELS = {
    ExportKind.COURSE: "Course data",
    ExportKind.ACCESS_DATA: "User access data",
    ExportKind.LTI_SETTINGS: "LTI settings",
}
#: What a teacher reads when a run ended before it could say why.
STOPPED_REASON = "The export stopped before it finished. Please start it again."
_STATE_LABELS = {
    "AwaitingConcurrencySlot": "Waiting for another export of this course to finish",
    "AwaitingRetry": "Waiting to try again",
    "Late": "Queued (the export service is busy)",
}


class RowState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Row:
    key: str  # export id, or the run id of a run that has none yet
    kind: ExportKind
    state: RowState
    status_text: str
    requester: str
    created: str
    holds: str
    size: str = ""
    expires_in: str = ""
    expires_at: str = ""
    expires_iso: str = ""
    progress_text: str = ""
    progress_percent: int | None = None
    failure_reason: str = ""
    export_id: str | None = None
    run_id: str | None = None

    @property
    def kind_label(self) -> str:
        return KIND_LABELS[self.kind]


@dataclass(frozen=True)
class CourseView:
    in_progress: list[Row] = field(default_factory=list)
    ready: list[Row] = field(default_factory=list)
    failed: list[Row] = field(default_factory=list)
    expired: list[Row] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.in_progress or self.ready or self.failed or self.expired)

    def row(self, key: str) -> Row | None:
        every = [*self.in_progress, *self.ready, *self.failed, *self.expired]
        return next((r for r in every if key in (r.key, r.export_id, r.run_id)), None)


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time(moment: datetime, tz: ZoneInfo) -> str:
    """``30 Nov 2026, 14:05 CET``: the course's own clock."""
    local = moment.astimezone(tz)
    return f"{local.day} {local:%b %Y, %H:%M} {local.tzname()}"


def time_until(moment: datetime, now: datetime) -> str:
    seconds = (moment - now).total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"in {count} {unit}{'s' if count != 1 else ''}"
    return "in less than a minute"


#: Counts that say how the export was made rather than what it holds.
_INTERNAL_COUNTS = frozenset({"files_read", "days"})
_BYTES_LABELS = {"bytes": "", "bytes_uncompressed": " before compression"}


def holds(record_or_params: ExportRecord | Mapping[str, Any], kind: ExportKind) -> str:
    """What the export holds (a record) or will hold (a run's parameters), in words."""
    if isinstance(record_or_params, ExportRecord) and record_or_params.counts:
        parts = [
            human_size(value) + _BYTES_LABELS[name]
            if name in _BYTES_LABELS
            else _count(value, name)
            for name, value in record_or_params.counts.items()
            if name not in _INTERNAL_COUNTS
        ]
        details = record_or_params.details
        if details.get("window_start") or details.get("window_end"):
            parts.append(_window(details.get("window_start"), details.get("window_end"), details))
        return " · ".join(parts)
    params = (
        record_or_params.parameters
        if isinstance(record_or_params, ExportRecord)
        else record_or_params
    )
    return selection(params, kind)


def _count(value: int, name: str) -> str:
    words = name.replace("_", " ")
    return f"1 {words.removesuffix('s')}" if value == 1 else f"{value:,} {words}"


def _window(start: Any, end: Any, details: Mapping[str, Any]) -> str:
    def moment(value: Any, default: str) -> str:
        return str(value)[:16].replace("T", " ") if value else default

    tz = details.get("timezone") or "UTC"
    return f"{moment(start, 'the oldest kept')} to {moment(end, 'now')} ({tz})"


def selection(params: Mapping[str, Any], kind: ExportKind) -> str:
    parts = []
    if params.get("assignment_ids"):
        parts.append(f"{len(params['assignment_ids'])} assignments")
    if params.get("student_ids"):
        parts.append(f"{len(params['student_ids'])} students")
    if params.get("user_ids"):
        parts.append(f"{len(params['user_ids'])} users")
    if kind is ExportKind.ACCESS_DATA and (params.get("since") or params.get("until")):
        parts.append(_window(params.get("since"), params.get("until"), params))
    if params.get("excel"):
        parts.append("for Excel")
    return " · ".join(parts) or ("everything" if kind is ExportKind.COURSE else "all")


def progress(record: ExportRecord) -> tuple[str, int | None]:
    """``("120 of 300 files · 4.1 MB of 9.8 MB", 41)``, from the record's progress."""
    done: Mapping[str, int] = getattr(record, "progress", None) or {}
    if done.get("files_total"):
        text = f"{done.get('files_done', 0):,} of {done['files_total']:,} files"
        if done.get("bytes_total"):
            text += (
                f" · {human_size(done.get('bytes_done', 0))} of {human_size(done['bytes_total'])}"
            )
            share = done.get("bytes_done", 0) / done["bytes_total"]
        else:
            share = done.get("files_done", 0) / done["files_total"]
        return text, max(0, min(100, int(share * 100)))
    if "rows" in done:
        return f"{done['rows']:,} rows written", None
    return "", None


def build(
    records: Iterable[ExportRecord],
    runs: Iterable[RunInfo],
    *,
    now: datetime,
    tz: ZoneInfo,
    name_of: Callable[[int], str],
    failed_for: timedelta,
) -> CourseView:
    view = CourseView()
    by_export = {r.export_id: r for r in records}
    claimed: set[str] = set()
    for run in sorted(runs, key=lambda r: r.created or now, reverse=True):
        if run.export_id in by_export or run.export_id in claimed:
            continue  # the record tells more (or a newer run of the request is shown)
        if run.export_id:
            claimed.add(run.export_id)
        view_row = _run_row(run, now, tz, name_of)
        (view.in_progress if run.active else view.failed).append(view_row)
    for record in sorted(by_export.values(), key=lambda r: r.created_at, reverse=True):
        row = _record_row(record, now, tz, name_of, failed_for)
        if row is None:
            continue
        {
            RowState.QUEUED: view.in_progress,
            RowState.RUNNING: view.in_progress,
            RowState.READY: view.ready,
            RowState.FAILED: view.failed,
            RowState.EXPIRED: view.expired,
        }[row.state].append(row)
    return view


def _run_row(run: RunInfo, now: datetime, tz: ZoneInfo, name_of: Callable[[int], str]) -> Row:
    requested_by = run.parameters.get("requested_by")
    common: dict[str, Any] = {
        "key": run.export_id or run.run_id,
        "kind": run.kind,
        "requester": name_of(requested_by) if isinstance(requested_by, int) else "",
        "created": local_time(run.created or now, tz),
        "holds": selection(run.parameters, run.kind),
        "export_id": run.export_id,
        "run_id": run.run_id,
    }
    if not run.active:
        return Row(
            state=RowState.FAILED, status_text="Failed", failure_reason=STOPPED_REASON, **common
        )
    if run.state_type == "RUNNING":
        return Row(state=RowState.RUNNING, status_text="Starting", **common)
    label = _STATE_LABELS.get(run.state_name, "Queued")
    return Row(state=RowState.QUEUED, status_text=label, **common)


def _record_row(
    record: ExportRecord,
    now: datetime,
    tz: ZoneInfo,
    name_of: Callable[[int], str],
    failed_for: timedelta,
) -> Row | None:
    common: dict[str, Any] = {
        "key": record.export_id,
        "kind": record.kind,
        "requester": name_of(record.requested_by),
        "created": local_time(record.created_at, tz),
        "holds": holds(record, record.kind),
        "export_id": record.export_id,
        "run_id": getattr(record, "flow_run_id", None),
    }
    status = str(record.status)
    if status == "pending" and not record.file_name:
        # Claimed but not started: it waits for the course's other export (course zips
        # run one at a time per course).
        return Row(
            state=RowState.QUEUED, status_text=_STATE_LABELS["AwaitingConcurrencySlot"], **common
        )
    if status == "pending":
        text, percent = progress(record)
        return Row(
            state=RowState.RUNNING,
            status_text="Running",
            progress_text=text,
            progress_percent=percent,
            **common,
        )
    if status == "failed":
        failed_at: datetime = getattr(record, "failed_at", None) or record.created_at
        if now - failed_at > failed_for:
            return None
        reason = getattr(record, "failure_reason", None) or STOPPED_REASON
        common["holds"] = selection(record.parameters, record.kind)  # what was asked
        return Row(state=RowState.FAILED, status_text="Failed", failure_reason=reason, **common)
    expires: dict[str, Any] = {
        "expires_at": local_time(record.expires_at, tz),
        "expires_iso": record.expires_at.astimezone(UTC).isoformat(),
    }
    if status == "ready" and now < record.expires_at:
        return Row(
            state=RowState.READY,
            status_text="Ready",
            size=human_size(record.size_bytes),
            expires_in=f"expires {time_until(record.expires_at, now)}",
            **expires,
            **common,
        )
    if now - record.expires_at > RECENTLY_EXPIRED:
        return None
    return Row(
        state=RowState.EXPIRED,
        status_text="Expired",
        size=human_size(record.size_bytes),
        **expires,
        **common,
    )
