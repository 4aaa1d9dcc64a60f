"""The export registry: how an export's manifest moves through its states.

The manifest (:mod:`course_exports.export_records`) is the commit point (CONTRACT 4). It
is written ``pending`` before the file (so the purge knows a run is writing there), and
``ready`` only after the file is complete; only ``ready`` exports before their expiry are
listed, linked or mailed. Ids of requests that carry a ``request_id`` are derived from
it, so a retried request finds its earlier export instead of making a second one.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from course_exports.errors import ConflictError
from course_exports.export_records import (
    MANIFEST,
    ExportKind,
    ExportRecord,
    ExportRequest,
    ExportStatus,
    canonical_parameters,
    export_dir,
    new_export_id,
    read_record,
    write_record,
)
from course_exports.storage import Location

#: S3 multipart part size: 10,000 parts of 16 MiB allow a 160 GB export, and a part
#: that fails is re-sent alone. Local files ignore it.
UPLOAD_PART_BYTES = 16 * 2**20


def _manifest_parts(course_id: int, export_id: str) -> tuple[str | int, ...]:
    return (course_id, export_id, MANIFEST)


def find_completed(
    exports: Location,
    kind: ExportKind,
    course_id: int,
    request_id: str | None,
    parameters: Mapping[str, Any],
) -> ExportRecord | None:
    """The export an earlier run of the same request completed (ready or expired), if any.

    The same ``request_id`` with other parameters is refused: silently returning the
    first export would hand the LMS a file it did not ask for.
    """
    if request_id is None:
        return None
    record = read_record(exports, course_id, new_export_id(kind, course_id, request_id))
    if record is None:
        return None
    check_same_request(record, request_id, parameters)
    return record if record.status in (ExportStatus.READY, ExportStatus.EXPIRED) else None


def check_same_request(
    record: ExportRecord, request_id: str | None, parameters: Mapping[str, Any]
) -> None:
    if record.parameters != canonical_parameters(parameters):
        raise ConflictError(
            f"request_id {request_id!r} was already used for export {record.export_id} "
            f"with other parameters ({record.parameters}); use a new request_id"
        )


def _pending_record(
    exports: Location,
    request: ExportRequest,
    course_name: str,
    ttl: timedelta,
    now: datetime | None,
) -> ExportRecord:
    created = (now or datetime.now(UTC)).replace(microsecond=0)
    return ExportRecord(
        export_id=request.export_id,
        course_id=request.course_id,
        course_name=course_name,
        kind=request.kind,
        status=ExportStatus.PENDING,
        request_id=request.request_id,
        parameters=request.parameters,
        requested_by=request.requested_by,
        file_name="",
        file_url="",
        created_at=created,
        expires_at=created + ttl,
        updated_at=created,
        flow_run_id=request.flow_run_id,
    )


def claim(
    exports: Location,
    request: ExportRequest,
    *,
    course_name: str,
    ttl: timedelta,
    now: datetime | None = None,
) -> ExportRecord | None:
    """Create the request's ``pending`` manifest if none is there (atomic: exactly one of
    two racing runs gets it); None if one was there already (read it to see whose)."""
    record = _pending_record(exports, request, course_name, ttl, now)
    data = record.model_dump_json(indent=2).encode()
    if exports.create_exclusive(data, *_manifest_parts(record.course_id, record.export_id)):
        return record
    return None


def take_over(
    exports: Location,
    previous: ExportRecord,
    request: ExportRequest,
    *,
    ttl: timedelta,
    now: datetime | None = None,
) -> ExportRecord:
    """Make a ``pending`` or ``failed`` export of the same request this run's again.

    Only for a run that holds the request's job lease: the run that wrote ``previous``
    is gone (its lease expired) or failed, so whatever it left in the folder is removed
    here: its partial file, and a storage temporary file if it was killed mid-write.
    """
    folder = export_dir(exports, previous.course_id, previous.export_id)
    manifest = posixpath.join(folder, MANIFEST)
    exports.delete_many(e.path for e in exports.iter_files(folder) if e.path != manifest)
    record = _pending_record(exports, request, previous.course_name, ttl, now)
    write_record(exports, record)
    return record


def name_file(exports: Location, record: ExportRecord, file_name: str) -> ExportRecord:
    """Record the file's name before its first byte, so a cleanup knows what to remove."""
    path = posixpath.join(export_dir(exports, record.course_id, record.export_id), file_name)
    named = record.model_copy(update={"file_name": file_name, "file_url": exports.url_for(path)})
    write_record(exports, named)
    return named


def write_progress(
    exports: Location, record: ExportRecord, progress: Mapping[str, int], now: datetime
) -> ExportRecord:
    """Rewrite a ``pending`` manifest with how far the write is (one small PUT)."""
    updated = record.model_copy(
        update={"progress": dict(progress), "updated_at": now.replace(microsecond=0)}
    )
    write_record(exports, updated)
    return updated


def mark_notified(
    exports: Location, course_id: int, export_id: str, now: datetime | None = None
) -> ExportRecord | None:
    """Note in a ``ready`` manifest that its requester's mail went out (one small PUT);
    None, touching nothing, when the export is no longer ready (purged meanwhile)."""
    current = read_record(exports, course_id, export_id)
    if current is None or current.status is not ExportStatus.READY:
        return None
    moment = (now or datetime.now(UTC)).replace(microsecond=0)
    updated = current.model_copy(update={"notified_at": moment})
    write_record(exports, updated)
    return updated


def is_ours(current: ExportRecord | None, record: ExportRecord) -> bool:
    """Whether the manifest still belongs to the run that holds ``record``."""
    return (
        current is not None
        and current.status is ExportStatus.PENDING
        and current.flow_run_id == record.flow_run_id
        and current.created_at == record.created_at
    )


def fail(
    exports: Location,
    record: ExportRecord,
    reason: str,
    now: datetime | None = None,
) -> ExportRecord | None:
    """Turn this run's ``pending`` export into a ``failed`` tombstone, its file removed.

    Touches nothing unless the manifest is still this run's: a run that lost its claim
    (another took the request over) must never delete the other's file.
    """
    current = read_record(exports, record.course_id, record.export_id)
    if not is_ours(current, record):
        return None
    assert current is not None  # is_ours
    if current.file_name:
        exports.delete(current.course_id, current.export_id, current.file_name)
    failed = current.model_copy(
        update={
            "status": ExportStatus.FAILED,
            "failure_reason": reason,
            "failed_at": (now or datetime.now(UTC)).replace(microsecond=0),
            "size_bytes": 0,
            "sha256": "",
        }
    )
    write_record(exports, failed)
    return failed


def discard(exports: Location, record: ExportRecord) -> bool:
    """Remove a ``pending`` export of this run without a trace (its file and manifest):
    for a claim nobody will come back to. False (nothing touched) if it is not this run's."""
    current = read_record(exports, record.course_id, record.export_id)
    if not is_ours(current, record):
        return False
    assert current is not None  # is_ours
    if current.file_name:
        exports.delete(current.course_id, current.export_id, current.file_name)
    exports.delete(*_manifest_parts(current.course_id, current.export_id))
    return True


def begin_export(
    exports: Location,
    *,
    kind: ExportKind,
    course_id: int,
    course_name: str,
    requested_by: int,
    request_id: str | None,
    parameters: Mapping[str, Any],
    file_name: str,
    ttl: timedelta,
    now: datetime | None = None,
) -> ExportRecord:
    """Claim an export id and name its file in one go (tests and benchmarks): ConflictError
    if the id is taken."""
    selection = {k: v for k, v in parameters.items() if k != "requested_by"}
    request = ExportRequest(kind, course_id, requested_by, request_id, dict(selection))
    record = claim(exports, request, course_name=course_name, ttl=ttl, now=now)
    if record is None:
        raise ConflictError(f"export {request.export_id} of course {course_id} is already claimed")
    return name_file(exports, record, file_name)


def file_path(exports: Location, record: ExportRecord) -> str:
    return posixpath.join(export_dir(exports, record.course_id, record.export_id), record.file_name)


class HashingWriter:
    """Counts and hashes what passes through to the underlying binary file."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._sha.update(data)
        self.size += len(data)
        self._raw.write(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


@contextmanager
def open_export_file(exports: Location, record: ExportRecord) -> Iterator[HashingWriter]:
    """The export's file for writing, hashed as it streams (S3: a multipart upload)."""
    with exports.open_write(file_path(exports, record), part_bytes=UPLOAD_PART_BYTES) as raw:
        yield HashingWriter(raw)


def publish(
    exports: Location,
    record: ExportRecord,
    *,
    size_bytes: int,
    sha256: str,
    counts: Mapping[str, int],
    details: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> ExportRecord:
    """Mark the export ``ready``: from here on it is listed, linked and mailed.

    ConflictError if the manifest is no longer this run's (another run took it over).
    """
    current = read_record(exports, record.course_id, record.export_id)
    if (
        current is not None
        and current.status is ExportStatus.READY
        and (current.flow_run_id, current.created_at) == (record.flow_run_id, record.created_at)
    ):
        return current  # a retry of this very step
    if not is_ours(current, record):
        raise ConflictError(
            f"export {record.export_id} of course {record.course_id} was taken over by "
            "another run while this one wrote it; this run's file is not published"
        )
    ready = record.model_copy(
        update={
            "status": ExportStatus.READY,
            "size_bytes": size_bytes,
            "sha256": sha256,
            "counts": dict(counts),
            "details": canonical_parameters(details or {}),
            "completed_at": (now or datetime.now(UTC)).replace(microsecond=0),
            "progress": {},
        }
    )
    write_record(exports, ready)
    return ready
