"""Steps of refresh-access-log-copy: plan, copy a day, remove days, a summary to read."""

from __future__ import annotations

from datetime import date, datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from course_exports.access_log import indexer
from course_exports.access_log.indexer import CopyDay, CopyPlan, CopyResult
from course_exports.humanize import human_size
from course_exports.settings import Settings
from course_exports.text import markdown_text
from tasks.retry import io_task


@io_task("plan-access-copy", timeout_seconds=1800)
def plan_access_copy(settings: Settings, now: datetime, max_days: int, verify: bool) -> CopyPlan:
    """Closed days inside the retention whose copy is missing, stale or damaged."""
    return indexer.plan_copy(
        settings.lake(),
        settings.exports(),
        now,
        settings.access_retention_months,
        max_days=max_days,
        verify=verify,
    )


# A day is a chunk (a whole day of the log, about a second of work), not a file.
@io_task("copy-access-day", timeout_seconds=1800, task_run_name="copy event_date={day.day}")
def copy_access_day(settings: Settings, day: CopyDay) -> CopyResult:
    return indexer.build_day(settings.lake(), settings.exports(), day.partition)


@io_task("remove-copied-days", timeout_seconds=600)
def remove_copied_days(settings: Settings, days: list[date]) -> list[date]:
    for day in days:
        indexer.remove_day(settings.exports(), day)
    return days


class CopySummary(BaseModel):
    """What one refresh of the copy did."""

    now: datetime
    copied: int
    #: Days left on the source because a row is broken (exports report it from there).
    not_copied: list[str]
    rows: int
    source_bytes: int
    copy_bytes: int
    seconds: float
    removed: int
    current: int
    remaining: int


def summarise(plan: CopyPlan, results: list[CopyResult], removed: list[date]) -> CopySummary:
    done = [r for r in results if r.copied]
    return CopySummary(
        now=plan.now,
        copied=len(done),
        not_copied=[f"{r.day}: {r.problem}" for r in results if not r.copied],
        rows=sum(r.rows for r in done),
        source_bytes=sum(r.source_bytes for r in done),
        copy_bytes=sum(r.copy_bytes for r in done),
        seconds=sum(r.seconds for r in done),
        removed=len(removed),
        current=plan.current,
        remaining=plan.remaining,
    )


def copy_markdown(summary: CopySummary) -> str:
    per_day = summary.seconds / summary.copied if summary.copied else 0.0
    lines = [
        f"# Course-clustered copy of the access log at {summary.now.isoformat()}",
        "",
        "| | |",
        "|---|---|",
        f"| days copied (new, changed or damaged) | {summary.copied:,} |",
        f"| rows copied | {summary.rows:,} |",
        f"| source read | {human_size(summary.source_bytes)} |",
        f"| copy written | {human_size(summary.copy_bytes)} |",
        f"| build time | {summary.seconds:.1f} s ({per_day:.2f} s a day) |",
        f"| days already current | {summary.current:,} |",
        f"| days removed (no longer in the log) | {summary.removed:,} |",
        f"| days left for the next runs | {summary.remaining:,} |",
    ]
    if summary.not_copied:
        lines += ["", "**Left on the source (broken rows):**"]
        # A problem quotes the broken row's values: escaped, so none becomes markdown.
        lines += [f"- {markdown_text(line, limit=500)}" for line in summary.not_copied]
    return "\n".join(lines) + "\n"


@task(name="summarise-access-copy", cache_policy=NO_CACHE)
def summarise_access_copy(
    plan: CopyPlan, results: list[CopyResult], removed: list[date]
) -> CopySummary:
    summary = summarise(plan, results, removed)
    create_markdown_artifact(
        markdown=copy_markdown(summary),
        key="refresh-access-log-copy",
        description=f"course-clustered copy of the access log at {summary.now.isoformat()}",
    )
    return summary
