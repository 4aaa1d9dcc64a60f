"""The exports purge: what to delete under the exports root, and its summary."""

from __future__ import annotations

import logging
import posixpath
import re
from datetime import datetime, timedelta

from pydantic import BaseModel

from course_exports.access_log import as_utc
from course_exports.export_records import MANIFEST, ExportRecord, ExportStatus
from course_exports.project import PROJECT_JSON
from course_exports.retention.steps import PurgeStep, StepKind, StoredFile, purge_step
from course_exports.retention.survey import (
    ExportFolder,
    ExportsSurvey,
    PendingUpload,
    ProjectFolder,
)

log = logging.getLogger(__name__)

#: A run (export or import) that showed no sign of life for this long is dead.
STALE_AFTER = timedelta(days=1)
#: How long an ``expired`` manifest is kept after its file was purged.
TOMBSTONE_DAYS = 30
#: Ids listed in a summary; the counts are always complete.
LIST_CAP = 100


_TEMP_RE = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")


class ExportPurgePlan(BaseModel):
    now: datetime
    steps: list[PurgeStep]
    #: Folders left alone because a run may still be writing them.
    in_progress: int
    #: Manifests or project files that could not be read: their folders are left alone.
    damaged: list[str]

    def of(self, *kinds: StepKind) -> list[PurgeStep]:
        return [s for s in self.steps if s.kind in kinds]


def is_stale(moment: datetime | None, now: datetime) -> bool:
    # An unknown time is taken as "just now": never delete on a guess.
    return moment is not None and moment + STALE_AFTER <= now


def last_sign_of_life(
    files: list[StoredFile], uploads: list[PendingUpload], *also: datetime
) -> datetime | None:
    """The latest write we can see in a folder; None if some file does not say when."""
    if any(f.modified is None for f in files):
        return None
    moments = [*(f.modified for f in files if f.modified), *(u.initiated for u in uploads), *also]
    return max(moments, default=None)


def _is_temp(path: str) -> bool:
    return _TEMP_RE.fullmatch(posixpath.basename(path)) is not None


def decide_export_purge(survey: ExportsSurvey, now: datetime, ttl: timedelta) -> ExportPurgePlan:
    """What to delete under the exports root at ``now``; nothing is touched here."""
    now = as_utc(now)
    uploads_by_folder: dict[str, list[PendingUpload]] = {}
    for upload in survey.uploads:
        uploads_by_folder.setdefault(upload.folder, []).append(upload)
    steps: list[PurgeStep] = []
    #: Folders a run may still be writing, or whose manifest we cannot read.
    hands_off: set[str] = set()
    in_progress = 0
    damaged: list[str] = []
    for folder in survey.exports:
        if folder.damaged:
            damaged.append(folder.damaged)
            hands_off.add(folder.path)
            continue
        step = _decide_export(folder, uploads_by_folder.get(folder.path, []), now)
        if step is None and not _settled(folder):
            in_progress += 1
            hands_off.add(folder.path)
        steps.extend([step] if step else [])
        steps.extend(_stale_temp_files(folder, step, now))
    exports = {f.export_id: f for f in survey.exports}
    for project in survey.projects:
        if project.damaged:
            damaged.append(project.damaged)
            hands_off.add(project.path)
            continue
        step = _decide_project(project, exports, uploads_by_folder.get(project.path, []), now, ttl)
        if step is not None:
            steps.append(step)
        elif project.stamp is None:
            in_progress += 1
            hands_off.add(project.path)
    # An upload into a folder a run is still writing is that run's, whatever its age
    # says (some S3 implementations report a made-up Initiated).
    steps.extend(
        purge_step(
            StepKind.ABORT_UPLOAD,
            upload.path,
            upload.folder,
            f"multipart upload started {upload.initiated.isoformat()} never completed",
            upload_id=upload.upload_id,
        )
        for upload in survey.uploads
        if is_stale(upload.initiated, now) and upload.folder not in hands_off
    )
    steps.extend(_stale_marks(survey.marks, now))
    return ExportPurgePlan(now=now, steps=steps, in_progress=in_progress, damaged=damaged)


def _stale_marks(marks: list[StoredFile], now: datetime) -> list[PurgeStep]:
    """One step per course for its leases and job marks untouched for a day: a live lease
    is renewed every few seconds, and a job mark serves requests made before it was
    written, which wait at most a few hours (lifecycle.WAIT_LIMIT)."""
    by_course: dict[str, list[StoredFile]] = {}
    for mark in marks:
        if is_stale(mark.modified, now):
            by_course.setdefault(posixpath.dirname(mark.path), []).append(mark)
    return [
        purge_step(
            StepKind.REMOVE_MARKS,
            posixpath.basename(folder),
            folder,
            "leases and job marks not written for a day",
            files,
            only_files=True,
        )
        for folder, files in sorted(by_course.items())
    ]


def _folder_step(
    kind: StepKind,
    folder: ExportFolder,
    reason: str,
    *,
    only: list[StoredFile] | None = None,
    record: ExportRecord | None = None,
) -> PurgeStep:
    """A step on an export folder: all of it, or ``only`` these files of it."""
    files = folder.files if only is None else only
    return purge_step(
        kind,
        folder.export_id,
        folder.path,
        reason,
        files,
        only_files=only is not None,
        record=record,
    )


def _settled(folder: ExportFolder) -> bool:
    """Ready or expired: nothing is being written there."""
    return folder.record is not None and folder.record.status is not ExportStatus.PENDING


def _decide_export(
    folder: ExportFolder, uploads: list[PendingUpload], now: datetime
) -> PurgeStep | None:
    record = folder.record
    data = [f for f in folder.files if f.path != posixpath.join(folder.path, MANIFEST)]
    if record is None:
        if not is_stale(last_sign_of_life(folder.files, uploads), now):
            return None
        return _folder_step(
            StepKind.REMOVE_LEFTOVER,
            folder,
            "files without a manifest: a run that died before it registered",
        )
    if record.status is ExportStatus.READY:
        if now < record.expires_at:
            return None
        return _folder_step(
            StepKind.EXPIRE,
            folder,
            f"expired at {record.expires_at.isoformat()}",
            only=data,
            record=record,
        )
    if record.status is ExportStatus.PENDING:
        if not is_stale(last_sign_of_life(folder.files, uploads, record.created_at), now):
            return None
        return _folder_step(
            StepKind.REMOVE_LEFTOVER,
            folder,
            f"pending since {record.created_at.isoformat()}: the run never published",
            record=record,
        )
    # A failed export's tombstone tells the Course Data page why, for as long as the
    # export would have lived.
    if record.status is ExportStatus.FAILED and record.expires_at <= now:
        return _folder_step(
            StepKind.REMOVE_TOMBSTONE,
            folder,
            f"failed export, past {record.expires_at.isoformat()}",
            record=record,
        )
    purged = record.purged_at or record.expires_at
    if record.status is ExportStatus.EXPIRED and purged + timedelta(days=TOMBSTONE_DAYS) <= now:
        return _folder_step(
            StepKind.REMOVE_TOMBSTONE,
            folder,
            f"expired export purged {purged.isoformat()}, over {TOMBSTONE_DAYS} days ago",
            record=record,
        )
    # A tombstone holds only its manifest; anything else left there is not wanted.
    extra = [f for f in data if not (_is_temp(f.path) and not is_stale(f.modified, now))]
    if not extra:
        return None
    return _folder_step(
        StepKind.REMOVE_STALE_FILES,
        folder,
        "files left beside an expired export's manifest",
        only=extra,
    )


def _stale_temp_files(
    folder: ExportFolder, step: PurgeStep | None, now: datetime
) -> list[PurgeStep]:
    """Temporary files of atomic writes that never got renamed, in a folder that stays."""
    if step is not None or folder.record is None:
        # The folder's own step deletes them; without a manifest the folder is judged whole.
        return []
    stale = [f for f in folder.files if _is_temp(f.path) and is_stale(f.modified, now)]
    if not stale:
        return []
    return [
        _folder_step(
            StepKind.REMOVE_STALE_FILES,
            folder,
            "temporary files of an interrupted manifest write",
            only=stale,
        )
    ]


def _decide_project(
    project: ProjectFolder,
    exports: dict[str, ExportFolder],
    uploads: list[PendingUpload],
    now: datetime,
    ttl: timedelta,
) -> PurgeStep | None:
    stamp = project.stamp
    if stamp is None:
        if not is_stale(last_sign_of_life(project.files, uploads), now):
            return None
        reason = f"no {PROJECT_JSON}: an import that never finished"
    else:
        export = exports.get(stamp.export_id)
        if export is not None and (export.damaged or export.record is None):
            return None  # we cannot tell whether its export still lives
        record = export.record if export else None
        if record is not None and record.is_live(now):
            return None
        if now < stamp.imported_at + ttl:
            return None
        status = "gone" if record is None else f"{record.status}"
        reason = f"export {stamp.export_id} is {status}; imported {stamp.imported_at.isoformat()}"
    return purge_step(
        StepKind.REMOVE_PROJECT,
        project.project_id,
        project.path,
        reason,
        project.files,
        stamp=stamp,
    )


# ---------------------------------------------------------------------------- summary


class ExportPurgeSummary(BaseModel):
    """What purge-expired-exports deleted (or, in a dry run, would delete)."""

    now: datetime
    dry_run: bool
    #: Ready exports past expiry whose files were deleted (their manifests now say expired).
    expired: int
    bytes_freed: int
    #: Folders of runs that never published, and stale temporary files.
    leftovers_removed: int
    tombstones_removed: int
    projects_removed: int
    uploads_aborted: int
    #: Folders left alone because a run may still be writing them.
    in_progress: int
    #: Leases and job marks of finished work, a day old.
    marks_removed: int = 0
    #: Unreadable manifests or project files (their folders were left alone).
    damaged: list[str]
    #: Ids, each list capped at :data:`LIST_CAP`.
    expired_ids: list[str]
    leftover_ids: list[str]
    tombstone_ids: list[str]
    project_ids: list[str]
    upload_keys: list[str]


def _ids(steps: list[PurgeStep], *kinds: StepKind) -> list[str]:
    unique = dict.fromkeys(s.item for s in steps if s.kind in kinds)
    return list(unique)[:LIST_CAP]


def _count(steps: list[PurgeStep], *kinds: StepKind) -> int:
    return sum(1 for s in steps if s.kind in kinds)


def summarise_export_purge(
    plan: ExportPurgePlan, done: list[PurgeStep], dry_run: bool
) -> ExportPurgeSummary:
    return ExportPurgeSummary(
        now=plan.now,
        dry_run=dry_run,
        expired=_count(done, StepKind.EXPIRE),
        bytes_freed=sum(s.bytes for s in done),
        leftovers_removed=_count(done, StepKind.REMOVE_LEFTOVER, StepKind.REMOVE_STALE_FILES),
        tombstones_removed=_count(done, StepKind.REMOVE_TOMBSTONE),
        projects_removed=_count(done, StepKind.REMOVE_PROJECT),
        uploads_aborted=_count(done, StepKind.ABORT_UPLOAD),
        in_progress=plan.in_progress,
        marks_removed=sum(len(s.paths) for s in done if s.kind is StepKind.REMOVE_MARKS),
        damaged=plan.damaged[:LIST_CAP],
        expired_ids=_ids(done, StepKind.EXPIRE),
        leftover_ids=_ids(done, StepKind.REMOVE_LEFTOVER, StepKind.REMOVE_STALE_FILES),
        tombstone_ids=_ids(done, StepKind.REMOVE_TOMBSTONE),
        project_ids=_ids(done, StepKind.REMOVE_PROJECT),
        upload_keys=_ids(done, StepKind.ABORT_UPLOAD),
    )
