"""Steps of refresh-access-log-copy: plan, copy a day, remove days, merge months, a
summary to read."""

from __future__ import annotations

from datetime import date, datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from course_exports.access_log import indexer, months
from course_exports.access_log.indexer import CopyDay, CopyPlan, CopyResult
from course_exports.access_log.months import MonthMerge, MonthPlan, MonthResult
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


@io_task("plan-month-merges", timeout_seconds=1800)
def plan_month_merges(settings: Settings, verify: bool) -> MonthPlan:
    """Months whose merge of small courses is missing or no longer their days'."""
    return months.plan_months(settings.exports(), verify=verify)


# A month is a chunk too (~2 s of work for 30 days of 170,000 events).
@io_task("merge-access-month", timeout_seconds=1800, task_run_name="merge month={merge.month}")
def merge_access_month(settings: Settings, merge: MonthMerge) -> MonthResult:
    return months.merge_month(settings.exports(), merge)


@io_task("remove-merged-months", timeout_seconds=600)
def remove_merged_months(settings: Settings, gone: list[str]) -> list[str]:
    for month in gone:
        months.remove_month(settings.exports(), month)
    return gone


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
    #: Months merged for small courses (again), their bytes, and months already current.
    months_merged: int = 0
    months_bytes: int = 0
    months_current: int = 0
    #: Months not merged because a day copy was found damaged (it is copied again).
    months_not_merged: list[str] = []


def summarise(
    plan: CopyPlan,
    results: list[CopyResult],
    removed: list[date],
    month_plan: MonthPlan,
    merged: list[MonthResult],
) -> CopySummary:
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
        months_merged=sum(1 for m in merged if m.days),
        months_bytes=sum(m.copy_bytes for m in merged),
        months_current=month_plan.current,
        months_not_merged=[f"{m.month}: {m.problem}" for m in merged if m.problem],
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
        f"| months merged for small courses | {summary.months_merged:,}"
        f" ({human_size(summary.months_bytes)}) |",
        f"| months already merged | {summary.months_current:,} |",
    ]
    if summary.months_not_merged:
        lines += ["", "**Months not merged (a damaged day copy, copied again next):**"]
        lines += [f"- {markdown_text(line, limit=500)}" for line in summary.months_not_merged]
    if summary.not_copied:
        lines += ["", "**Left on the source (broken rows):**"]
        # A problem quotes the broken row's values: escaped, so none becomes markdown.
        lines += [f"- {markdown_text(line, limit=500)}" for line in summary.not_copied]
    return "\n".join(lines) + "\n"


@task(name="summarise-access-copy", cache_policy=NO_CACHE)
def summarise_access_copy(
    plan: CopyPlan,
    results: list[CopyResult],
    removed: list[date],
    month_plan: MonthPlan,
    merged: list[MonthResult],
) -> CopySummary:
    summary = summarise(plan, results, removed, month_plan, merged)
    create_markdown_artifact(
        markdown=copy_markdown(summary),
        key="refresh-access-log-copy",
        description=f"course-clustered copy of the access log at {summary.now.isoformat()}",
    )
    return summary
