"""Registry steps every export flow shares: dedupe, claim, publish, discard, summarise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from course_exports import links, registry
from course_exports.errors import ExportError
from course_exports.humanize import human_size
from course_exports.lake import Person
from course_exports.registry import ExportKind, ExportRecord, ExportResult
from course_exports.settings import Settings
from tasks.mail import send_failure_mail
from tasks.retry import io_task


@dataclass(frozen=True)
class WrittenFile:
    """What a pack/write step made: enough to publish it."""

    size_bytes: int
    sha256: str
    counts: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)


def result_for(settings: Settings, record: ExportRecord) -> ExportResult:
    """The record with its download link (deterministic: same export, same link)."""
    url = links.download_url(
        settings.public_url,
        settings.require_signing_key(),
        record.course_id,
        record.export_id,
        record.expires_at,
    )
    return ExportResult(**record.model_dump(), download_url=url)


@io_task("find-previous-export", timeout_seconds=120)
def find_previous_export(
    settings: Settings,
    kind: ExportKind,
    course_id: int,
    request_id: str | None,
    parameters: Mapping[str, Any],
) -> ExportResult | None:
    """The result of an earlier run of the same request, so a retry creates nothing new."""
    record = registry.find_completed(settings.exports(), kind, course_id, request_id, parameters)
    return None if record is None else result_for(settings, record)


@io_task("begin-export", timeout_seconds=120)
def begin_export(
    settings: Settings,
    *,
    kind: ExportKind,
    course_id: int,
    course_name: str,
    requested_by: int,
    request_id: str | None,
    parameters: Mapping[str, Any],
    file_name: str,
    now: datetime | None = None,
) -> ExportRecord:
    return registry.begin_export(
        settings.exports(),
        kind=kind,
        course_id=course_id,
        course_name=course_name,
        requested_by=requested_by,
        request_id=request_id,
        parameters=parameters,
        file_name=file_name,
        ttl=timedelta(days=settings.export_ttl_days),
        now=now,
    )


@io_task("publish-export", timeout_seconds=120)
def publish_export(
    settings: Settings,
    record: ExportRecord,
    written: WrittenFile,
) -> ExportResult:
    ready = registry.publish(
        settings.exports(),
        record,
        size_bytes=written.size_bytes,
        sha256=written.sha256,
        counts=written.counts,
        details=written.details,
    )
    return result_for(settings, ready)


@task(name="discard-export", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def discard_export(settings: Settings, record: ExportRecord) -> None:
    registry.discard(settings.exports(), record.course_id, record.export_id)


def summary_markdown(settings: Settings, result: ExportResult, contents: str) -> str:
    list_url = links.course_list_url(
        settings.public_url, settings.require_signing_key(), result.course_id, result.expires_at
    )
    counts = "\n".join(f"| {name} | {value:,} |" for name, value in result.counts.items())
    return (
        f"# {result.kind} export of course {result.course_id}: {result.course_name}\n\n"
        f"{contents}\n\n"
        f"| | |\n|---|---|\n"
        f"| export id | `{result.export_id}` |\n"
        f"| file | `{result.file_url}` |\n"
        f"| size | {human_size(result.size_bytes)} ({result.size_bytes:,} bytes) |\n"
        f"| sha256 | `{result.sha256}` |\n"
        f"| created | {result.created_at.isoformat()} |\n"
        f"| expires | {result.expires_at.isoformat()} |\n"
        f"{counts}\n\n"
        f"The download link was sent to the requester (user {result.requested_by}). "
        f"[Live exports of this course]({list_url}).\n"
    )


@task(name="summarise-export", cache_policy=NO_CACHE)
def summarise_export(settings: Settings, result: ExportResult, contents: str) -> None:
    """A markdown artifact for the Prefect UI; the bearer link itself stays out of it."""
    create_markdown_artifact(
        markdown=summary_markdown(settings, result, contents),
        key=f"{result.kind}-course-{result.course_id}",
        description=f"{result.kind} export {result.export_id} of course {result.course_id}",
    )


#: What a teacher is told when storage failed us rather than their request.
TRANSIENT_REASON = "the storage service did not answer in time; please request the export again"


def fail_export(
    settings: Settings,
    kind: ExportKind,
    requester: Person,
    course_name: str,
    record: ExportRecord | None,
    exc: Exception,
    notify: bool,
) -> None:
    """Leave nothing half-written, and tell the teacher what they can do about it."""
    if record is not None:
        discard_export(settings, record)
    if notify:
        reason = exc.reason if isinstance(exc, ExportError) else TRANSIENT_REASON
        send_failure_mail(settings, requester, course_name, kind, reason)
