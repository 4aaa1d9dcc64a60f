"""What a purge decides to delete: one step per thing, made by one builder."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

from course_exports.export_records import ExportRecord


class StoredFile(BaseModel):
    path: str
    size: int
    #: Last write as the storage reports it; None when it does not say.
    modified: datetime | None


class ProjectStamp(BaseModel):
    """The part of ``project.json`` retention needs."""

    export_id: str
    imported_at: datetime


class StepKind(StrEnum):
    #: A ready export past its expiry: delete its files, keep the manifest as a tombstone.
    EXPIRE = "expire"
    #: An expired export's manifest, long after its file was purged.
    REMOVE_TOMBSTONE = "remove-tombstone"
    #: The folder of a run that never published (pending, or files without a manifest).
    REMOVE_LEFTOVER = "remove-leftover"
    #: Stale temporary files (or files left beside a tombstone) in a folder that stays.
    REMOVE_STALE_FILES = "remove-stale-files"
    #: An imported project whose export is gone, or an import that never finished.
    REMOVE_PROJECT = "remove-project"
    #: An S3 multipart upload nobody will complete.
    ABORT_UPLOAD = "abort-upload"
    #: A course's lease or job mark not written for a day: its run and requests are gone.
    REMOVE_MARKS = "remove-marks"


class PurgeStep(BaseModel):
    """One thing to delete, and what it was decided on (re-checked before deleting)."""

    kind: StepKind
    #: What a summary lists: an export id, a project id or an object key.
    item: str
    folder: str
    #: Files to delete when the folder itself stays (expire, stale files).
    paths: list[str] = []
    bytes: int = 0
    reason: str
    record: ExportRecord | None = None
    stamp: ProjectStamp | None = None
    upload_id: str | None = None


def _sum(files: Iterable[StoredFile]) -> int:
    return sum(f.size for f in files)


def purge_step(
    kind: StepKind,
    item: str,
    folder: str,
    reason: str,
    files: Iterable[StoredFile] = (),
    *,
    only_files: bool = False,
    record: ExportRecord | None = None,
    stamp: ProjectStamp | None = None,
    upload_id: str | None = None,
) -> PurgeStep:
    """The one way a step is made: what goes (the whole ``folder``, or with
    ``only_files`` just ``files`` in it), how many bytes that frees, and why."""
    files = list(files)
    return PurgeStep(
        kind=kind,
        item=item,
        folder=folder,
        paths=[f.path for f in files] if only_files else [],
        bytes=_sum(files),
        reason=reason,
        record=record,
        stamp=stamp,
        upload_id=upload_id,
    )
