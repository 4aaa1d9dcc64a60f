"""The retention flows through Prefect: names, summaries, artifacts, dry runs, reruns."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from flowkit import LocalSite
from test_retention import DATA, NOW, SECOND, TTL, make_export

from course_exports import export_records, registry
from course_exports.access_log import retention_cutoff
from course_exports.export_records import ExportStatus
from course_exports.retention import AccessPurgeSummary, ExportPurgeSummary
from course_exports.storage import Location, open_location
from flows.retention import purge_access_logs, purge_expired_exports

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]


def exports_of(site: LocalSite) -> Location:
    return open_location(str(site.exports))


def run(flow: Any, **parameters: Any) -> tuple[Any, str, str]:
    """The flow's result, its run name and the markdown of its artifact."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    state = flow(**parameters, return_state=True)
    result = state.result()
    flow_run_id: UUID = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        name = client.read_flow_run(flow_run_id).name
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    markdown = [a for a in artifacts if a.type == "markdown"]
    assert len(markdown) == 1
    return result, name, str(markdown[0].data)


def day_folders(lake: Path) -> list[date]:
    return sorted(
        date.fromisoformat(p.name.removeprefix("event_date="))
        for p in (lake / "access_log").glob("event_date=*")
    )


def test_purge_expired_exports(site: LocalSite) -> None:
    exports = exports_of(site)
    expired = make_export(exports, NOW - TTL - SECOND)
    alive = make_export(exports, NOW - TTL + SECOND)
    dead = make_export(exports, NOW - timedelta(days=2), publish=False)
    writing = make_export(exports, NOW - timedelta(minutes=5), publish=False)

    summary, name, markdown = run(purge_expired_exports, now=NOW.replace(tzinfo=None))
    assert isinstance(summary, ExportPurgeSummary)
    assert name == "purge expired exports · 2026-11-28T18:00Z"
    assert summary.now == NOW and not summary.dry_run
    assert (summary.expired, summary.leftovers_removed, summary.in_progress) == (1, 1, 1)
    assert summary.expired_ids == [expired.export_id]
    assert summary.leftover_ids == [dead.export_id]
    assert summary.bytes_freed > 2 * len(DATA)
    assert expired.export_id in markdown and dead.export_id in markdown

    tombstone = export_records.read_record(exports, 7, expired.export_id)
    assert tombstone is not None and tombstone.status is ExportStatus.EXPIRED
    assert tombstone.purged_at == NOW
    assert export_records.read_record(exports, 7, dead.export_id) is None
    for kept in (alive, writing):
        assert export_records.read_record(exports, 7, kept.export_id) == kept
        assert Path(exports.path(registry.file_path(exports, kept))).read_bytes() == DATA

    again, _, _ = run(purge_expired_exports, now=NOW)
    assert (again.expired, again.leftovers_removed, again.bytes_freed) == (0, 0, 0)


def test_purge_expired_exports_dry_run(site: LocalSite) -> None:
    exports = exports_of(site)
    expired = make_export(exports, NOW - TTL - SECOND)
    before = site.export_files()
    dry, name, markdown = run(purge_expired_exports, now=NOW, dry_run=True)
    assert name == "purge expired exports · 2026-11-28T18:00Z (dry run)"
    assert dry.dry_run and dry.expired_ids == [expired.export_id]
    assert "Dry run" in markdown and "would free" in markdown
    assert site.export_files() == before
    record = export_records.read_record(exports, 7, expired.export_id)
    assert record is not None and record.status is ExportStatus.READY


def test_purge_access_logs_is_bounded_and_continues(site: LocalSite) -> None:
    now = datetime.now(UTC)
    cutoff = retention_cutoff(now, 6)
    past = [d for d in day_folders(site.lake) if d < cutoff.date()]
    assert len(past) > 6  # the sample lake reaches well past six months

    summary, name, markdown = run(purge_access_logs, now=now, max_partitions=4)
    assert isinstance(summary, AccessPurgeSummary)
    assert name == f"purge access logs · {now:%Y-%m-%dT%H:%MZ}"
    assert (summary.partitions_deleted, summary.remaining) == (4, len(past) - 4)
    assert (summary.first_day, summary.last_day) == (past[0], past[3])
    assert summary.cutoff == cutoff and summary.bytes_freed > 0
    assert f"{past[0]} to {past[3]}" in markdown
    assert day_folders(site.lake)[0] == past[4]

    dry, _, _ = run(purge_access_logs, now=now, dry_run=True)
    assert (dry.partitions_deleted, dry.remaining) == (len(past) - 4, 0)
    assert day_folders(site.lake)[0] == past[4]

    rest, _, _ = run(purge_access_logs, now=now)
    assert rest.model_dump(exclude={"dry_run"}) == dry.model_dump(exclude={"dry_run"})
    remaining = day_folders(site.lake)
    assert remaining and remaining[0] >= cutoff.date()  # the cut-off's own day is kept
    assert (site.lake / "directory" / "users.parquet").exists()

    last, _, _ = run(purge_access_logs, now=now)
    assert (last.partitions_deleted, last.remaining, last.first_day) == (0, 0, None)
