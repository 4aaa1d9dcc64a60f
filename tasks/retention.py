"""Steps of the retention flows: list, decide, delete, and a summary a person can read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from prefect import Task, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from course_exports import retention
from course_exports.humanize import human_size
from course_exports.retention import (
    TOMBSTONE_DAYS,
    AccessPurgePlan,
    AccessPurgeSummary,
    ExportPurgePlan,
    ExportPurgeSummary,
    ExportsSurvey,
    PartitionDrop,
    PurgeStep,
    StepKind,
)
from course_exports.settings import Settings
from course_exports.text import markdown_text
from tasks.retry import io_task

# -- purge-expired-exports ---------------------------------------------------------------


@io_task("list-exports", timeout_seconds=1800)
def survey_exports(settings: Settings) -> ExportsSurvey:
    """One listing of the exports root, every manifest, and (S3) unfinished uploads."""
    return retention.survey_exports(settings.exports())


@task(name="decide-what-to-purge", cache_policy=NO_CACHE)
def decide_export_purge(survey: ExportsSurvey, now: datetime, ttl_days: int) -> ExportPurgePlan:
    return retention.decide_export_purge(survey, now, timedelta(days=ttl_days))


def _apply(settings: Settings, steps: list[PurgeStep], now: datetime) -> list[PurgeStep]:
    return retention.apply_steps(settings.exports(), steps, now)


# Each step re-checks before it deletes and counts what an earlier attempt did, so a
# retried task neither deletes more nor under-reports.
delete_expired_exports = io_task("delete-expired-exports", timeout_seconds=3600)(_apply)
remove_leftovers = io_task("remove-leftovers", timeout_seconds=3600)(_apply)
remove_projects = io_task("remove-imported-projects", timeout_seconds=3600)(_apply)
abort_uploads = io_task("abort-stale-uploads", timeout_seconds=600)(_apply)

#: The deletions in the order the flow runs them, one task per kind so a person can
#: follow them in the UI.
DELETIONS: tuple[tuple[Task[..., list[PurgeStep]], tuple[StepKind, ...]], ...] = (
    (delete_expired_exports, (StepKind.EXPIRE,)),
    (
        remove_leftovers,
        (
            StepKind.REMOVE_LEFTOVER,
            StepKind.REMOVE_STALE_FILES,
            StepKind.REMOVE_TOMBSTONE,
            StepKind.REMOVE_MARKS,
        ),
    ),
    (remove_projects, (StepKind.REMOVE_PROJECT,)),
    (abort_uploads, (StepKind.ABORT_UPLOAD,)),
)


def _id_lines(title: str, ids: list[str], total: int) -> Iterator[str]:
    if not ids:
        return
    more = f" (first {len(ids)} of {total})" if total > len(ids) else ""
    yield ""
    # Keys and paths hold names from the lake: escaped, not code spans (a backtick in a
    # name would close one).
    yield f"**{title}**{more}: " + ", ".join(markdown_text(i, limit=300) for i in ids)


def export_purge_markdown(summary: ExportPurgeSummary) -> str:
    verb = "would free" if summary.dry_run else "freed"
    title = "Dry run: purge" if summary.dry_run else "Purge"
    lines = [
        f"# {title} of expired exports at {summary.now.isoformat()}",
        "",
        f"The purge {verb} {human_size(summary.bytes_freed)} ({summary.bytes_freed:,} bytes).",
        "",
        "| | |",
        "|---|---|",
        f"| expired exports (file deleted, manifest kept as a tombstone) | {summary.expired:,} |",
        f"| leftovers of runs that never published | {summary.leftovers_removed:,} |",
        f"| tombstones purged over {TOMBSTONE_DAYS} days ago | {summary.tombstones_removed:,} |",
        f"| imported projects whose export is gone | {summary.projects_removed:,} |",
        f"| unfinished S3 uploads aborted | {summary.uploads_aborted:,} |",
        f"| leases and job marks a day old | {summary.marks_removed:,} |",
        f"| left alone: a run may still be writing them | {summary.in_progress:,} |",
    ]
    lines += _id_lines("Expired", summary.expired_ids, summary.expired)
    lines += _id_lines("Leftovers", summary.leftover_ids, summary.leftovers_removed)
    lines += _id_lines("Tombstones", summary.tombstone_ids, summary.tombstones_removed)
    lines += _id_lines("Projects", summary.project_ids, summary.projects_removed)
    lines += _id_lines("Uploads", summary.upload_keys, summary.uploads_aborted)
    if summary.damaged:
        lines += [
            "",
            "**Unreadable, left alone:**",
            *(f"- {markdown_text(d, limit=500)}" for d in summary.damaged),
        ]
    return "\n".join(lines) + "\n"


@task(name="summarise-export-purge", cache_policy=NO_CACHE)
def summarise_export_purge(
    plan: ExportPurgePlan, done: list[PurgeStep], dry_run: bool
) -> ExportPurgeSummary:
    summary = retention.summarise_export_purge(plan, done, dry_run)
    create_markdown_artifact(
        markdown=export_purge_markdown(summary),
        key="purge-expired-exports",
        description=f"purge of expired exports at {summary.now.isoformat()}",
    )
    return summary


# -- purge-access-logs -------------------------------------------------------------------


@io_task("list-access-partitions", timeout_seconds=600)
def plan_access_purge(settings: Settings, now: datetime, max_partitions: int) -> AccessPurgePlan:
    """The day partitions past retention, oldest first, bounded to this run's share."""
    return retention.plan_access_purge(
        settings.lake(), settings.exports(), now, settings.access_retention_months, max_partitions
    )


@io_task("drop-day-partition", timeout_seconds=1800, task_run_name="drop event_date={drop.day}")
def drop_partition(settings: Settings, drop: PartitionDrop) -> PartitionDrop:
    retention.drop_partition(settings.lake(), settings.exports(), drop)
    return drop


def access_purge_markdown(summary: AccessPurgeSummary) -> str:
    verb = "would delete" if summary.dry_run else "deleted"
    title = "Dry run: purge" if summary.dry_run else "Purge"
    if summary.partitions_deleted:
        what = (
            f"{summary.partitions_deleted:,} day partitions, "
            f"{summary.first_day} to {summary.last_day} (UTC days)"
        )
    else:
        what = "nothing: no day partition lies wholly before the cut-off"
    lines = [
        f"# {title} of access events at {summary.now.isoformat()}",
        "",
        f"Events before **{summary.cutoff.isoformat()}** are past retention. "
        f"The purge {verb} {what}.",
        "",
        "| | |",
        "|---|---|",
        f"| day partitions | {summary.partitions_deleted:,} |",
        f"| first day | {summary.first_day or '-'} |",
        f"| last day | {summary.last_day or '-'} |",
        f"| files | {summary.files_deleted:,} |",
        f"| size | {human_size(summary.bytes_freed)} ({summary.bytes_freed:,} bytes) |",
        f"| past retention, left for the next runs | {summary.remaining:,} |",
    ]
    return "\n".join(lines) + "\n"


@task(name="summarise-access-purge", cache_policy=NO_CACHE)
def summarise_access_purge(
    plan: AccessPurgePlan, dropped: list[PartitionDrop], dry_run: bool
) -> AccessPurgeSummary:
    summary = retention.summarise_access_purge(plan, dropped, dry_run)
    create_markdown_artifact(
        markdown=access_purge_markdown(summary),
        key="purge-access-logs",
        description=f"purge of access events before {summary.cutoff.isoformat()}",
    )
    return summary
