"""refresh-access-log-copy: keep our course-clustered copy of the access log current.

Exports read a day from the copy when it is current and intact, and from the LMS's log
otherwise (course_exports/access_log/clustered.py), so this flow only buys speed: a
late, failed or never-run refresh changes no byte of any export.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from prefect import flow
from pydantic import Field

from course_exports.settings import load_settings
from flows.parameters import param
from flows.retention import NOW, resolve_now, run_name
from tasks.access_copy import (
    CopySummary,
    copy_access_day,
    merge_access_month,
    plan_access_copy,
    plan_month_merges,
    remove_copied_days,
    remove_merged_months,
    summarise_access_copy,
)


@flow(
    name="refresh-access-log-copy",
    flow_run_name=run_name("refresh access log copy"),
    description=(
        "Copies closed days of the access log, sorted by course and time, into our own "
        "storage so an access export reads only its course's rows; rebuilds days the LMS "
        "changed or that are damaged, removes days the log no longer has, and merges each "
        "month's days into one file for small courses."
    ),
    persist_result=True,
    result_serializer="json",
    log_prints=True,
)
def refresh_access_log_copy(
    now: datetime | None = NOW,
    max_days: Annotated[int, Field(ge=1)] = param(
        "Most days per run", "Copy at most this many days, oldest first; the next run continues", 60
    ),
    verify: bool = param(
        "Verify every chunk",
        "Also read every current day of the copy in full, checking each chunk's checksum",
        False,
    ),
) -> CopySummary:
    settings = load_settings()
    plan = plan_access_copy(settings, resolve_now(now), max_days, verify)
    results = [copy_access_day(settings, day) for day in plan.build]
    removed = remove_copied_days(settings, plan.remove) if plan.remove else []
    # Months after days: a month merges the day copies as they are now.
    month_plan = plan_month_merges(settings, verify)
    merged = [merge_access_month(settings, month) for month in month_plan.merge]
    if month_plan.remove:
        remove_merged_months(settings, month_plan.remove)
    summary = summarise_access_copy(plan, results, removed, month_plan, merged)
    print(
        f"copied {summary.copied} days ({summary.rows:,} rows, {summary.seconds:.1f} s), "
        f"{summary.current} current, {summary.removed} removed, {summary.remaining} left; "
        f"merged {summary.months_merged} months, {summary.months_current} current"
    )
    return summary
