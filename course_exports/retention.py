"""Retention: expired exports and leftovers under the exports root, old access events.

Both purges are *survey -> decide -> apply*: one listing, a pure decision a person can
read (and a dry run can report), then deletions that re-check what they delete, because
exports keep running while a purge does.

Exports root (CONTRACT 4), what :func:`decide_export_purge` does with each thing:

* ``<course>/<export>/`` with a ``ready`` manifest past ``expires_at``: the files go, the
  manifest stays as an ``expired`` tombstone with ``purged_at`` (links answer 410, the
  LMS sees what happened). Before ``expires_at`` nothing of it is ever deleted.
* an ``expired`` tombstone :data:`TOMBSTONE_DAYS` after it was purged: removed. Links
  still answer 410 after that, because every token carries its own expiry.
* a ``failed`` tombstone (a run that gave up: its manifest says why) once its
  ``expires_at`` has passed: removed.
* a ``pending`` manifest, or files without a manifest, with no sign of life for
  :data:`STALE_AFTER` (created_at, file times, S3 uploads): a run that died; removed.
  A day is well over the longest an export can write (6 h pack task, retried twice).
* ``.<name>.<hex>.tmp`` files of atomic writes older than :data:`STALE_AFTER`: removed.
* S3 multipart uploads under an export or project folder, started over
  :data:`STALE_AFTER` ago: aborted (their parts cost money and are invisible).
* ``projects/<id>/`` (import-project) lives as long as the export it came from, but at
  least the TTL after the import, so a reviewer gets a full TTL whatever the export's
  age: removed once its export is not live (expired, tombstone or gone) *and*
  ``imported_at + TTL`` has passed. A project folder without ``project.json`` is an
  import that died and goes after :data:`STALE_AFTER`.
* Anything else (names that are not ``<course id>/<32 hex>/`` or ``projects/<32 hex>/``,
  unreadable manifests): never touched; unreadable manifests are reported.

Access log (CONTRACT 2): whole ``access_log/event_date=YYYY-MM-DD/`` folders whose day
ends at or before the retention cut-off are dropped, oldest first, a bounded number per
run. The listing follows :func:`access_log.list_day_partitions`: a folder that breaks
the layout stops the purge with an error naming it before anything is deleted (a lake
that does not look like a lake may be the wrong URL; deleting from it is the last thing
to do). Folders holding no parquet file hold no events and are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from course_exports.access_log import (
    AccessWindow,
    as_utc,
    list_day_partitions,
    partition_folder,
    retention_cutoff,
)
from course_exports.errors import LakeDataError
from course_exports.project import PROJECT_JSON, PROJECTS
from course_exports.registry import MANIFEST, ExportRecord, ExportStatus, read_record, write_record
from course_exports.storage import Location
from course_exports.text import one_line

log = logging.getLogger(__name__)

#: A run (export or import) that showed no sign of life for this long is dead.
STALE_AFTER = timedelta(days=1)
#: How long an ``expired`` manifest is kept after its file was purged.
TOMBSTONE_DAYS = 30
#: Ids listed in a summary; the counts are always complete.
LIST_CAP = 100

_ID_RE = re.compile(r"[0-9a-f]{32}")
_COURSE_RE = re.compile(r"[1-9][0-9]*")
# Location.write_bytes_atomic's temporary name: ".<target>.<uuid hex>.tmp".
_TEMP_RE = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")
_MANIFEST_READERS = 16


# ---------------------------------------------------------------------------- survey


class StoredFile(BaseModel):
    path: str
    size: int
    #: Last write as the storage reports it; None when it does not say.
    modified: datetime | None


class ExportFolder(BaseModel):
    """``<course_id>/<export_id>/``: its files and what its manifest said."""

    course_id: int
    export_id: str
    path: str
    files: list[StoredFile]
    record: ExportRecord | None = None
    #: Why the manifest could not be used (the folder is then left alone).
    damaged: str | None = None


class ProjectStamp(BaseModel):
    """The part of ``project.json`` retention needs."""

    export_id: str
    imported_at: datetime


class ProjectFolder(BaseModel):
    project_id: str
    path: str
    files: list[StoredFile]
    stamp: ProjectStamp | None = None
    damaged: str | None = None


class PendingUpload(BaseModel):
    """An S3 multipart upload not completed nor aborted."""

    path: str  # bucket/key
    upload_id: str
    initiated: datetime
    folder: str  # the export or project folder it writes into


class ExportsSurvey(BaseModel):
    root: str
    exports: list[ExportFolder]
    projects: list[ProjectFolder]
    uploads: list[PendingUpload]


def _modified(info: dict[str, Any]) -> datetime | None:
    value = info.get("LastModified", info.get("mtime"))
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def _stored(path: str, info: dict[str, Any]) -> StoredFile:
    return StoredFile(path=path, size=int(info.get("size") or 0), modified=_modified(info))


def _find_files(location: Location, path: str) -> dict[str, dict[str, Any]]:
    try:
        found: dict[str, dict[str, Any]] = location.fs.find(path, detail=True)
    except FileNotFoundError:
        return {}
    return {p: i for p, i in found.items() if i.get("type") != "directory"}


def _owner(location: Location, path: str) -> tuple[str, str] | None:
    """``("export", "<course>/<export>")`` or ``("project", "<id>")`` for a path of ours."""
    try:
        parts = location.relative(path).split("/")
    except ValueError:
        return None
    if len(parts) < 3 or not _ID_RE.fullmatch(parts[1]):
        return None
    if parts[0] == PROJECTS:
        return "project", parts[1]
    if _COURSE_RE.fullmatch(parts[0]):
        return "export", f"{parts[0]}/{parts[1]}"
    return None


def survey_exports(exports: Location) -> ExportsSurvey:
    """Every export and project folder from one recursive listing, with its manifest."""
    exports.refresh()
    export_files: dict[str, list[StoredFile]] = {}
    project_files: dict[str, list[StoredFile]] = {}
    for path, info in _find_files(exports, exports.root).items():
        owner = _owner(exports, path)
        if owner is None:
            continue  # not ours to judge
        kind, key = owner
        target = export_files if kind == "export" else project_files
        target.setdefault(key, []).append(_stored(path, info))
    folders = [_export_folder(exports, key, files) for key, files in sorted(export_files.items())]
    projects = [
        ProjectFolder(project_id=key, path=exports.path(PROJECTS, key), files=files)
        for key, files in sorted(project_files.items())
    ]
    # One GET per manifest: concurrent, because on S3 each is a round trip.
    with ThreadPoolExecutor(_MANIFEST_READERS) as pool:
        folders = list(pool.map(lambda f: _read_manifest(exports, f), folders))
        projects = list(pool.map(lambda p: _read_stamp(exports, p), projects))
    return ExportsSurvey(
        root=exports.root, exports=folders, projects=projects, uploads=list_uploads(exports)
    )


def _export_folder(exports: Location, key: str, files: list[StoredFile]) -> ExportFolder:
    course, export_id = key.split("/")
    return ExportFolder(
        course_id=int(course),
        export_id=export_id,
        path=exports.path(course, export_id),
        files=files,
    )


def _has(files: list[StoredFile], folder: str, name: str) -> bool:
    return any(f.path == posixpath.join(folder, name) for f in files)


def _read_manifest(exports: Location, folder: ExportFolder) -> ExportFolder:
    if not _has(folder.files, folder.path, MANIFEST):
        return folder
    try:
        record = read_record(exports, folder.course_id, folder.export_id)
    except LakeDataError as exc:
        return folder.model_copy(update={"damaged": str(exc)})
    if record is not None and (record.course_id, record.export_id) != (
        folder.course_id,
        folder.export_id,
    ):
        # A manifest copied from elsewhere would point the purge at another folder.
        problem = f"manifest names export {record.course_id}/{record.export_id}"
        return folder.model_copy(update={"damaged": f"{folder.path}: {problem}"})
    return folder.model_copy(update={"record": record})


def _read_stamp(exports: Location, project: ProjectFolder) -> ProjectFolder:
    if not _has(project.files, project.path, PROJECT_JSON):
        return project
    try:
        raw = exports.fs.cat_file(posixpath.join(project.path, PROJECT_JSON))
    except FileNotFoundError:
        return project  # removed since the listing; judged as an unfinished import
    try:
        stamp = ProjectStamp.model_validate_json(raw)
    except ValidationError as exc:
        problem = f"not a valid {PROJECT_JSON} ({exc.error_count()} problems)"
        return project.model_copy(update={"damaged": f"{project.path}: {problem}"})
    return project.model_copy(update={"stamp": stamp})


def _bucket_and_prefix(exports: Location) -> tuple[str, str]:
    bucket, _, prefix = exports.root.partition("/")
    return bucket, f"{prefix}/" if prefix else ""


def list_uploads(exports: Location) -> list[PendingUpload]:
    """Unfinished S3 multipart uploads into our export and project folders.

    s3fs's ``list_multipart_uploads`` lists the whole bucket and only its first page, and
    ``clear_multipart_uploads`` would abort the uploads of running exports too: the S3
    call is made here, with the exports prefix and every page.
    """
    if exports.is_local:
        return []
    s3: Any = exports.fs
    bucket, prefix = _bucket_and_prefix(exports)
    uploads: list[PendingUpload] = []
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = s3.call_s3("list_multipart_uploads", **request)
        for upload in page.get("Uploads", []):
            path = f"{bucket}/{upload['Key']}"
            owner = _owner(exports, path)
            if owner is None:
                continue
            kind, key = owner
            folder = exports.path(PROJECTS, key) if kind == "project" else exports.path(key)
            uploads.append(
                PendingUpload(
                    path=path,
                    upload_id=upload["UploadId"],
                    initiated=as_utc(upload["Initiated"]),
                    folder=folder,
                )
            )
        if not page.get("IsTruncated"):
            return uploads
        request["KeyMarker"] = page.get("NextKeyMarker", "")
        request["UploadIdMarker"] = page.get("NextUploadIdMarker", "")


# ---------------------------------------------------------------------------- decide


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


class ExportPurgePlan(BaseModel):
    now: datetime
    steps: list[PurgeStep]
    #: Folders left alone because a run may still be writing them.
    in_progress: int
    #: Manifests or project files that could not be read: their folders are left alone.
    damaged: list[str]

    def of(self, *kinds: StepKind) -> list[PurgeStep]:
        return [s for s in self.steps if s.kind in kinds]


def _is_stale(moment: datetime | None, now: datetime) -> bool:
    # An unknown time is taken as "just now": never delete on a guess.
    return moment is not None and moment + STALE_AFTER <= now


def _last_sign_of_life(
    files: list[StoredFile], uploads: list[PendingUpload], *also: datetime
) -> datetime | None:
    """The latest write we can see in a folder; None if some file does not say when."""
    if any(f.modified is None for f in files):
        return None
    moments = [*(f.modified for f in files if f.modified), *(u.initiated for u in uploads), *also]
    return max(moments, default=None)


def _is_temp(path: str) -> bool:
    return _TEMP_RE.fullmatch(posixpath.basename(path)) is not None


def _sum(files: Iterable[StoredFile]) -> int:
    return sum(f.size for f in files)


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
        PurgeStep(
            kind=StepKind.ABORT_UPLOAD,
            item=upload.path,
            folder=upload.folder,
            upload_id=upload.upload_id,
            reason=f"multipart upload started {upload.initiated.isoformat()} never completed",
        )
        for upload in survey.uploads
        if _is_stale(upload.initiated, now) and upload.folder not in hands_off
    )
    return ExportPurgePlan(now=now, steps=steps, in_progress=in_progress, damaged=damaged)


def _settled(folder: ExportFolder) -> bool:
    """Ready or expired: nothing is being written there."""
    return folder.record is not None and folder.record.status is not ExportStatus.PENDING


def _decide_export(
    folder: ExportFolder, uploads: list[PendingUpload], now: datetime
) -> PurgeStep | None:
    record = folder.record
    data = [f for f in folder.files if f.path != posixpath.join(folder.path, MANIFEST)]
    if record is None:
        if not _is_stale(_last_sign_of_life(folder.files, uploads), now):
            return None
        return PurgeStep(
            kind=StepKind.REMOVE_LEFTOVER,
            item=folder.export_id,
            folder=folder.path,
            bytes=_sum(folder.files),
            reason="files without a manifest: a run that died before it registered",
        )
    if record.status is ExportStatus.READY:
        if now < record.expires_at:
            return None
        return PurgeStep(
            kind=StepKind.EXPIRE,
            item=folder.export_id,
            folder=folder.path,
            paths=[f.path for f in data],
            bytes=_sum(data),
            reason=f"expired at {record.expires_at.isoformat()}",
            record=record,
        )
    if record.status is ExportStatus.PENDING:
        if not _is_stale(_last_sign_of_life(folder.files, uploads, record.created_at), now):
            return None
        return PurgeStep(
            kind=StepKind.REMOVE_LEFTOVER,
            item=folder.export_id,
            folder=folder.path,
            bytes=_sum(folder.files),
            reason=f"pending since {record.created_at.isoformat()}: the run never published",
            record=record,
        )
    # A failed export's tombstone tells the Course Data page why, for as long as the
    # export would have lived.
    if record.status is ExportStatus.FAILED and record.expires_at <= now:
        return PurgeStep(
            kind=StepKind.REMOVE_TOMBSTONE,
            item=folder.export_id,
            folder=folder.path,
            bytes=_sum(folder.files),
            reason=f"failed export, past {record.expires_at.isoformat()}",
            record=record,
        )
    purged = record.purged_at or record.expires_at
    if record.status is ExportStatus.EXPIRED and purged + timedelta(days=TOMBSTONE_DAYS) <= now:
        return PurgeStep(
            kind=StepKind.REMOVE_TOMBSTONE,
            item=folder.export_id,
            folder=folder.path,
            bytes=_sum(folder.files),
            reason=f"expired export purged {purged.isoformat()}, over {TOMBSTONE_DAYS} days ago",
            record=record,
        )
    # A tombstone holds only its manifest; anything else left there is not wanted.
    extra = [f for f in data if not (_is_temp(f.path) and not _is_stale(f.modified, now))]
    if not extra:
        return None
    return PurgeStep(
        kind=StepKind.REMOVE_STALE_FILES,
        item=folder.export_id,
        folder=folder.path,
        paths=[f.path for f in extra],
        bytes=_sum(extra),
        reason="files left beside an expired export's manifest",
    )


def _stale_temp_files(
    folder: ExportFolder, step: PurgeStep | None, now: datetime
) -> list[PurgeStep]:
    """Temporary files of atomic writes that never got renamed, in a folder that stays."""
    if step is not None or folder.record is None:
        # The folder's own step deletes them; without a manifest the folder is judged whole.
        return []
    stale = [f for f in folder.files if _is_temp(f.path) and _is_stale(f.modified, now)]
    if not stale:
        return []
    return [
        PurgeStep(
            kind=StepKind.REMOVE_STALE_FILES,
            item=folder.export_id,
            folder=folder.path,
            paths=[f.path for f in stale],
            bytes=_sum(stale),
            reason="temporary files of an interrupted manifest write",
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
        if not _is_stale(_last_sign_of_life(project.files, uploads), now):
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
    return PurgeStep(
        kind=StepKind.REMOVE_PROJECT,
        item=project.project_id,
        folder=project.path,
        bytes=_sum(project.files),
        reason=reason,
        stamp=stamp,
    )


# ---------------------------------------------------------------------------- apply


def apply_steps(exports: Location, steps: Iterable[PurgeStep], now: datetime) -> list[PurgeStep]:
    """Carry out ``steps``; return those done (now or by an earlier attempt).

    Each step first checks that what it was decided on still holds, so a run that took
    an export id over (a retried request) or an import that restarted is left alone.
    Safe to call again with the same steps: a retry counts what the first attempt did.
    """
    exports.refresh()
    done = []
    for step in steps:
        if _apply(exports, step, as_utc(now)):
            done.append(step)
        else:
            log.info(
                "left %s %s alone: it changed since the listing", step.kind, one_line(step.item)
            )
    return done


def _apply(exports: Location, step: PurgeStep, now: datetime) -> bool:
    if step.kind is StepKind.EXPIRE:
        return _expire(exports, step, now)
    if step.kind is StepKind.REMOVE_TOMBSTONE:
        return _remove_tombstone(exports, step)
    if step.kind is StepKind.REMOVE_LEFTOVER:
        return _remove_leftover(exports, step, now)
    if step.kind is StepKind.REMOVE_STALE_FILES:
        _remove_files(exports, step.paths)
        return True
    if step.kind is StepKind.REMOVE_PROJECT:
        return _remove_project(exports, step, now)
    return _abort_upload(exports, step)


def _current(exports: Location, step: PurgeStep) -> ExportRecord | None:
    course, export_id = exports.relative(step.folder).split("/")
    return read_record(exports, int(course), export_id)


def _expire(exports: Location, step: PurgeStep, now: datetime) -> bool:
    current = _current(exports, step)
    if current is None:
        return False
    if current.status is ExportStatus.EXPIRED:
        return current.purged_at == now  # an earlier attempt of this very step
    if current.status is not ExportStatus.READY or now < current.expires_at:
        return False
    _remove_files(exports, step.paths)
    write_record(
        exports, current.model_copy(update={"status": ExportStatus.EXPIRED, "purged_at": now})
    )
    return True


def _remove_tombstone(exports: Location, step: PurgeStep) -> bool:
    current = _current(exports, step)
    if current is not None and current.status not in (ExportStatus.EXPIRED, ExportStatus.FAILED):
        return False  # taken over by a rerun of the request since the listing
    _remove_folder(exports, step.folder)
    return True


def _remove_leftover(exports: Location, step: PurgeStep, now: datetime) -> bool:
    current, expected = _current(exports, step), step.record
    if expected is None and current is not None:
        return False  # a run registered here since the listing
    if expected is not None and current is None:
        return not _find_files(exports, step.folder)  # removed already (an earlier attempt)
    if expected is not None and current != expected:
        return False  # taken over by a rerun of the request, published, or gone
    if not _quiet_since(exports, step.folder, now):
        return False
    _remove_folder(exports, step.folder)
    return True


def _remove_project(exports: Location, step: PurgeStep, now: datetime) -> bool:
    if step.stamp is None and not _quiet_since(exports, step.folder, now):
        return False  # the import was restarted
    path = posixpath.join(step.folder, PROJECT_JSON)
    if step.stamp is None and exports.fs.exists(path):
        return False  # and finished since the listing
    if step.stamp is not None:
        try:
            current = ProjectStamp.model_validate_json(exports.fs.cat_file(path))
        except FileNotFoundError:
            current = None
        if current is not None and current != step.stamp:
            return False  # imported again since the listing
    _remove_folder(exports, step.folder)
    return True


def _quiet_since(exports: Location, folder: str, now: datetime) -> bool:
    """No file of ``folder`` was written in the last :data:`STALE_AFTER` (listed again)."""
    files = [_stored(p, i) for p, i in _find_files(exports, folder).items()]
    if not files:
        return True
    return _is_stale(_last_sign_of_life(files, []), now)


def _abort_upload(exports: Location, step: PurgeStep) -> bool:
    s3: Any = exports.fs
    bucket, _, key = step.item.partition("/")
    with contextlib.suppress(FileNotFoundError):  # aborted already (s3fs maps NoSuchUpload)
        s3.abort_mpu(bucket, key, step.upload_id)
    return True


def _remove_files(exports: Location, paths: Iterable[str]) -> None:
    paths = list(paths)
    if not paths:
        return
    if exports.is_local:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                exports.fs.rm_file(path)
    else:
        exports.fs.rm(paths)  # one bulk delete; missing keys are not an error on S3
    exports.refresh()


def _remove_folder(exports: Location, folder: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        exports.fs.rm(folder, recursive=True)
    if exports.is_local:
        # The course folder goes with its last export; rmdir fails while others remain.
        with contextlib.suppress(OSError):
            exports.fs.rmdir(posixpath.dirname(folder))
    exports.refresh()


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
        damaged=plan.damaged[:LIST_CAP],
        expired_ids=_ids(done, StepKind.EXPIRE),
        leftover_ids=_ids(done, StepKind.REMOVE_LEFTOVER, StepKind.REMOVE_STALE_FILES),
        tombstone_ids=_ids(done, StepKind.REMOVE_TOMBSTONE),
        project_ids=_ids(done, StepKind.REMOVE_PROJECT),
        upload_keys=_ids(done, StepKind.ABORT_UPLOAD),
    )


# ---------------------------------------------------------------------------- access log


class PartitionDrop(BaseModel):
    day: date
    folder: str
    files: int
    bytes: int


class AccessPurgePlan(BaseModel):
    now: datetime
    cutoff: datetime
    #: Oldest first, at most ``max_partitions``.
    due: list[PartitionDrop]
    #: Partitions past retention left for later runs.
    remaining: int


def plan_access_purge(
    lake: Location, now: datetime, retention_months: int, max_partitions: int
) -> AccessPurgePlan:
    """The day partitions that lie wholly before the retention cut-off, oldest first.

    A partition holding the cut-off instant is kept: its older rows are filtered out by
    the export itself (CONTRACT 4.2), and dropping it would delete events still inside.
    """
    if max_partitions < 1:
        raise ValueError(f"max_partitions must be at least 1, got {max_partitions}")
    now = as_utc(now)
    cutoff = retention_cutoff(now, retention_months)
    before_cutoff = AccessWindow(datetime.min.replace(tzinfo=UTC), cutoff)
    due = [p for p in list_day_partitions(lake, before_cutoff) if p.end <= cutoff]
    return AccessPurgePlan(
        now=now,
        cutoff=cutoff,
        due=[
            PartitionDrop(
                day=p.day,
                folder=partition_folder(lake, p.day),
                files=len(p.files),
                bytes=p.size_bytes,
            )
            for p in due[:max_partitions]
        ],
        remaining=max(0, len(due) - max_partitions),
    )


def drop_partition(lake: Location, drop: PartitionDrop) -> None:
    """Delete one whole day folder of the access log (gone already is fine)."""
    # The path is rebuilt from the day, never taken from a listing: nothing but a day
    # folder of access_log/ can be named here.
    folder = partition_folder(lake, drop.day)
    if folder != drop.folder:
        raise ValueError(f"{drop.folder} is not the access-log folder of {drop.day}")
    with contextlib.suppress(FileNotFoundError):
        lake.fs.rm(folder, recursive=True)
    lake.refresh()


class AccessPurgeSummary(BaseModel):
    """What purge-access-logs deleted (or, in a dry run, would delete)."""

    now: datetime
    cutoff: datetime
    dry_run: bool
    partitions_deleted: int
    first_day: date | None
    last_day: date | None
    files_deleted: int
    bytes_freed: int
    #: Day partitions past retention still there, for the next runs.
    remaining: int


def summarise_access_purge(
    plan: AccessPurgePlan, dropped: list[PartitionDrop], dry_run: bool
) -> AccessPurgeSummary:
    days = sorted(d.day for d in dropped)
    return AccessPurgeSummary(
        now=plan.now,
        cutoff=plan.cutoff,
        dry_run=dry_run,
        partitions_deleted=len(dropped),
        first_day=days[0] if days else None,
        last_day=days[-1] if days else None,
        files_deleted=sum(d.files for d in dropped),
        bytes_freed=sum(d.bytes for d in dropped),
        remaining=plan.remaining + len(plan.due) - len(dropped),
    )


# ---------------------------------------------------------------------------- in one call


def purge_exports(
    exports: Location, now: datetime, ttl: timedelta, *, dry_run: bool = False
) -> ExportPurgeSummary:
    """Survey, decide and (unless ``dry_run``) delete, without Prefect."""
    plan = decide_export_purge(survey_exports(exports), now, ttl)
    done = plan.steps if dry_run else apply_steps(exports, plan.steps, plan.now)
    return summarise_export_purge(plan, done, dry_run)


def purge_access_log(
    lake: Location,
    now: datetime,
    retention_months: int,
    *,
    max_partitions: int = 31,
    dry_run: bool = False,
) -> AccessPurgeSummary:
    """Plan and (unless ``dry_run``) drop the day partitions past retention, without Prefect."""
    plan = plan_access_purge(lake, now, retention_months, max_partitions)
    if not dry_run:
        for drop in plan.due:
            drop_partition(lake, drop)
    return summarise_access_purge(plan, plan.due, dry_run)
