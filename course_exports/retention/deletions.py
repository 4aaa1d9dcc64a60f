"""Carrying out export purge steps, each re-checked against the storage first."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable
from datetime import datetime

from course_exports.access_log import as_utc
from course_exports.export_records import ExportRecord, ExportStatus, read_record, write_record
from course_exports.project import PROJECT_JSON
from course_exports.retention.exports import is_stale, last_sign_of_life
from course_exports.retention.steps import ProjectStamp, PurgeStep, StepKind
from course_exports.retention.survey import find_files, is_course_mark
from course_exports.storage import Location
from course_exports.text import one_line

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- apply


def apply_steps(exports: Location, steps: Iterable[PurgeStep], now: datetime) -> list[PurgeStep]:
    """Carry out ``steps``; return those done (now or by an earlier attempt).

    Each step first checks that what it was decided on still holds, so a run that took
    an export id over (a retried request) or an import that restarted is left alone.
    Safe to call again with the same steps: a retry counts what the first attempt did.
    """
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
    if step.kind is StepKind.REMOVE_MARKS:
        return _remove_marks(exports, step, now)
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
        return not find_files(exports, step.folder)  # removed already (an earlier attempt)
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
    if step.stamp is None and exports.exists(exports.relative(path)):
        return False  # and finished since the listing
    if step.stamp is not None:
        try:
            current = ProjectStamp.model_validate_json(exports.read_bytes(exports.relative(path)))
        except FileNotFoundError:
            current = None
        if current is not None and current != step.stamp:
            return False  # imported again since the listing
    _remove_folder(exports, step.folder)
    return True


def _remove_marks(exports: Location, step: PurgeStep, now: datetime) -> bool:
    """The step's marks that are still a day old (listed again): one taken or renewed
    since the listing belongs to a live run."""
    still = {
        f.path
        for f in find_files(exports, step.folder)
        if is_course_mark(exports, f.path) and is_stale(f.modified, now)
    }
    _remove_files(exports, [p for p in step.paths if p in still])
    return True


def _quiet_since(exports: Location, folder: str, now: datetime) -> bool:
    """No file of ``folder`` was written in the last :data:`STALE_AFTER` (listed again)."""
    files = find_files(exports, folder)
    if not files:
        return True
    return is_stale(last_sign_of_life(files, []), now)


def _abort_upload(exports: Location, step: PurgeStep) -> bool:
    if step.upload_id is None:  # not an upload step (never decided so)
        return False
    exports.abort_upload(exports.relative(step.item), step.upload_id)  # gone already: fine
    return True


def _remove_files(exports: Location, paths: Iterable[str]) -> None:
    exports.delete_many(exports.relative(p) for p in paths)  # bulk; missing ones are fine


def _remove_folder(exports: Location, folder: str) -> None:
    # On a disk the course folder goes with its last export.
    exports.delete_tree(exports.relative(folder))
