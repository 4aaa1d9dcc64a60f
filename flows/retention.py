"""Retention flows: expired exports (hourly) and access events past retention (daily).

Both are list -> decide -> delete, with a dry run that reports what it would delete,
and a ``now`` to run "as of" another time (tests, or a purge an operator wants to see
ahead). Deleting is idempotent: a second run at the same time deletes nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow
from prefect.runtime import flow_run
from pydantic import Field

from course_exports.access_log import as_utc
from course_exports.retention import (
    AccessPurgeSummary,
    ExportPurgePlan,
    ExportPurgeSummary,
    PartitionDrop,
    PurgeStep,
)
from course_exports.settings import Settings, load_settings
from flows.parameters import param
from tasks.retention import (
    DELETIONS,
    decide_export_purge,
    drop_partition,
    plan_access_purge,
    summarise_access_purge,
    summarise_export_purge,
    survey_exports,
)


def resolve_now(now: datetime | None) -> datetime:
    """The moment the purge judges by: the given one (no offset = UTC), else the clock."""
    return as_utc(now) if now is not None else datetime.now(UTC)


def run_name(what: str) -> Callable[[], str]:
    """``purge expired exports · 2026-11-28T18:00Z``, ``(dry run)`` when it is one."""

    def name() -> str:
        parameters: dict[str, Any] = flow_run.parameters
        now = parameters.get("now")
        if isinstance(now, str):  # a deployment run hands parameters over as JSON
            now = datetime.fromisoformat(now)
        moment = resolve_now(now)
        dry = " (dry run)" if parameters.get("dry_run") else ""
        return f"{what} · {moment:%Y-%m-%dT%H:%MZ}{dry}"

    return name


def carry_out(settings: Settings, plan: ExportPurgePlan, moment: datetime) -> list[PurgeStep]:
    """The deletions, one task per kind so a person can follow them in the UI."""
    done: list[PurgeStep] = []
    for deletion, kinds in DELETIONS:
        if steps := plan.of(*kinds):
            done += deletion(settings, steps, moment)
    return done


NOW = param(
    "As of",
    "Purge as if it were this time (without an offset: UTC); empty: the current time",
    None,
)
DRY_RUN = param("Dry run", "Only report what would be deleted; delete nothing", False)


@flow(
    name="purge-expired-exports",
    flow_run_name=run_name("purge expired exports"),
    description=(
        "Deletes the files of exports past their expiry (keeping the manifest as an "
        "'expired' tombstone), leftovers of runs that never finished, and imported "
        "projects whose export is gone."
    ),
    persist_result=True,
    result_serializer="json",
    log_prints=True,
)
def purge_expired_exports(
    now: datetime | None = NOW, dry_run: bool = DRY_RUN
) -> ExportPurgeSummary:
    settings = load_settings()
    moment = resolve_now(now)
    survey = survey_exports(settings)
    plan = decide_export_purge(survey, moment, settings.export_ttl_days)
    done = plan.steps if dry_run else carry_out(settings, plan, moment)
    summary = summarise_export_purge(plan, done, dry_run)
    verb = "would free" if dry_run else "freed"
    print(
        f"{summary.expired} expired exports, {summary.leftovers_removed} leftovers, "
        f"{summary.tombstones_removed} tombstones, {summary.projects_removed} projects, "
        f"{summary.uploads_aborted} uploads: {verb} {summary.bytes_freed:,} bytes"
    )
    return summary


@flow(
    name="purge-access-logs",
    flow_run_name=run_name("purge access logs"),
    description=(
        "Deletes access events older than the retention by dropping whole day "
        "partitions of access_log/, oldest first, a bounded number per run."
    ),
    persist_result=True,
    result_serializer="json",
    log_prints=True,
)
def purge_access_logs(
    now: datetime | None = NOW,
    dry_run: bool = DRY_RUN,
    max_partitions: Annotated[int, Field(ge=1)] = param(
        "Most days per run",
        "Drop at most this many day partitions, oldest first; the next run continues",
        31,
    ),
) -> AccessPurgeSummary:
    settings = load_settings()
    plan = plan_access_purge(settings, resolve_now(now), max_partitions)
    dropped: list[PartitionDrop] = plan.due
    if not dry_run:
        dropped = [drop_partition(settings, drop) for drop in plan.due]
    summary = summarise_access_purge(plan, dropped, dry_run)
    verb = "would drop" if dry_run else "dropped"
    print(
        f"events before {summary.cutoff.isoformat()} are past retention: {verb} "
        f"{summary.partitions_deleted} day partitions ({summary.bytes_freed:,} bytes), "
        f"{summary.remaining} left for the next runs"
    )
    return summary
