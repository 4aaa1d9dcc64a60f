"""The export registry: ``<course_id>/<export_id>/manifest.json`` beside each file.

The manifest is the commit point (CONTRACT 4). It is written ``pending`` before the file
(so the purge knows a run is writing there), and ``ready`` only after the file is
complete; only ``ready`` exports before their expiry are listed, linked or mailed.
Ids of requests that carry a ``request_id`` are derived from it, so a retried request
finds its earlier export instead of making a second one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import IO, Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from course_exports.errors import ConflictError, LakeDataError
from course_exports.storage import Location, ObjectTooLargeError

MANIFEST = "manifest.json"
#: A manifest is a few kB; anything far larger is not one (and is not read whole).
MANIFEST_MAX_BYTES = 2**20
#: S3 multipart part size: 10,000 parts of 16 MiB allow a 160 GB export, and a part
#: that fails is re-sent alone. Local files ignore it.
UPLOAD_PART_BYTES = 16 * 2**20
log = logging.getLogger(__name__)
# Exports whose request ids collide across kinds or courses must not share an id.
_REQUEST_NAMESPACE = uuid.UUID("5b1f0d3c-8f43-4a53-9a57-3f1b8f3f6c11")


class ExportKind(StrEnum):
    COURSE = "course"
    ACCESS_DATA = "access-data"
    LTI_SETTINGS = "lti-settings"


class ExportStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    EXPIRED = "expired"
    #: The run gave up: a tombstone (manifest only, its file removed) that says why.
    FAILED = "failed"


class ExportRecord(BaseModel):
    """What ``manifest.json`` says about one export."""

    export_id: str
    course_id: int
    course_name: str
    kind: ExportKind
    status: ExportStatus
    request_id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    requested_by: int
    file_name: str
    file_url: str
    created_at: datetime
    expires_at: datetime
    completed_at: datetime | None = None
    size_bytes: int = 0
    sha256: str = ""
    counts: dict[str, int] = Field(default_factory=dict)
    #: What the file covers, for people and the LMS (e.g. the access window).
    details: dict[str, Any] = Field(default_factory=dict)
    #: When the purge deleted the file (``status`` is then ``expired``; the manifest
    #: stays a while as a tombstone so links answer 410 and the LMS sees what happened).
    purged_at: datetime | None = None
    #: While ``pending``: how far the write is (course zip: files_done, files_total,
    #: bytes_done, bytes_total; CSV: rows, bytes_done), rewritten every few seconds.
    progress: dict[str, int] = Field(default_factory=dict)
    #: Last time the run that owns a ``pending`` export wrote here (a sign of life).
    updated_at: datetime | None = None
    #: Why a ``failed`` export failed, in words a teacher can act on (never a trace).
    failure_reason: str | None = None
    failed_at: datetime | None = None
    #: The Prefect flow run that made (or is making) this export.
    flow_run_id: str | None = None
    #: When the requester's ready mail was delivered. A run of the same request that
    #: finds the export ready mails only while this is unset: the run that published it
    #: may have died before its mail (a crash between publish and tell).
    notified_at: datetime | None = None

    @field_validator("file_name")
    @classmethod
    def _bare_file_name(cls, value: str) -> str:
        # Joined onto the export's folder to serve and delete it: a path would reach
        # another export's file.
        if value == "":
            return value  # not named yet (a queued export); a ready one must be, below
        if value in (".", "..") or any(c in "/\\" or ord(c) < 32 or c == "\x7f" for c in value):
            raise ValueError("must be a bare file name, not a path")
        return value

    @model_validator(mode="after")
    def _named_when_published(self) -> ExportRecord:
        if not self.file_name and self.status in (ExportStatus.READY, ExportStatus.EXPIRED):
            raise ValueError(f"a {self.status} export must name its file")
        return self

    def is_live(self, now: datetime) -> bool:
        return self.status is ExportStatus.READY and now < self.expires_at


class ExportResult(ExportRecord):
    """What an export flow returns and persists: the record plus a fresh download link."""

    download_url: str


def new_export_id(kind: ExportKind, course_id: int, request_id: str | None) -> str:
    if request_id is None:
        return uuid.uuid4().hex
    return uuid.uuid5(_REQUEST_NAMESPACE, f"{kind}\x00{course_id}\x00{request_id}").hex


def canonical_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as JSON values, so a rerun's can be compared with the stored ones."""
    return json.loads(json.dumps(dict(parameters), sort_keys=True, default=str))  # type: ignore[no-any-return]


def export_dir(exports: Location, course_id: int, export_id: str) -> str:
    """The export's folder, relative to the exports root."""
    return f"{course_id}/{export_id}"


def read_record(exports: Location, course_id: int, export_id: str) -> ExportRecord | None:
    path = posixpath.join(export_dir(exports, course_id, export_id), MANIFEST)
    try:
        raw = exports.read_bytes(path, max_bytes=MANIFEST_MAX_BYTES)
    except FileNotFoundError:
        return None
    except ObjectTooLargeError as exc:
        # Damage like any other: one oversized manifest must not hide the course's others.
        raise LakeDataError(
            exc.url,
            f"not a valid export manifest ({exc.size:,} bytes, "
            f"more than the {exc.limit:,} a manifest may have)",
        ) from None
    try:
        return ExportRecord.model_validate_json(raw)
    except ValidationError as exc:
        raise LakeDataError(exports.url_for(path), f"not a valid export manifest ({exc})") from None


def write_record(exports: Location, record: ExportRecord) -> None:
    path = posixpath.join(export_dir(exports, record.course_id, record.export_id), MANIFEST)
    exports.write_bytes_atomic(record.model_dump_json(indent=2).encode(), path)


@dataclass(frozen=True)
class ExportRequest:
    """One request for an export: what claim, write, publish, fail and mail all take.

    ``selection`` is what the export holds (assignments, students, window, time zone...)
    as canonical JSON values; who asked and the request id are not part of it, so two
    teachers asking for the same thing make the same :attr:`job_key` and share one export.
    """

    kind: ExportKind
    course_id: int
    requested_by: int
    request_id: str | None = None
    selection: dict[str, Any] = field(default_factory=dict)
    notify: bool = False
    #: The Prefect flow run serving the request (None outside Prefect).
    flow_run_id: str | None = None
    #: Names a request that has neither a request id nor a flow run.
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex, repr=False)
    #: When the request was made (its flow run's creation): an identical export that
    #: became ready after this moment is as fresh as the request asked for.
    requested_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def parameters(self) -> dict[str, Any]:
        """What the manifest records as the request's parameters (who asked included)."""
        return canonical_parameters({"requested_by": self.requested_by, **self.selection})

    @property
    def run_key(self) -> str:
        """Who serves the request: the flow run, or this object outside Prefect."""
        return self.flow_run_id or f"call-{self.nonce}"

    @property
    def export_id(self) -> str:
        """The request id's export; without one, the flow run's: stable across the run's
        retries and reschedules, so a run that comes back finds what it claimed."""
        if self.request_id is not None:
            return new_export_id(self.kind, self.course_id, self.request_id)
        return uuid.uuid5(
            _REQUEST_NAMESPACE, f"{self.kind}\x00{self.course_id}\x01{self.run_key}"
        ).hex

    @property
    def job_key(self) -> str:
        """Equal for requests that would make the same file (whoever asked)."""
        body = json.dumps(
            [str(self.kind), self.course_id, canonical_parameters(self.selection)], sort_keys=True
        )
        return hashlib.sha256(body.encode()).hexdigest()[:32]


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


def list_records(exports: Location, course_id: int) -> list[ExportRecord]:
    """Every export manifest of the course, whatever its state, newest first."""
    records = []
    for entry in exports.iter_files(course_id):
        folder, _, name = entry.path.rpartition("/")
        if name != MANIFEST or folder.count("/") != 1:  # <course>/<export>/manifest.json
            continue
        try:
            record = read_record(exports, course_id, folder.rpartition("/")[2])
        except LakeDataError as exc:
            # One damaged manifest must not hide the course's other exports.
            log.warning("skipping export: %s", exc)
            continue
        if record is not None:
            records.append(record)
    return sorted(records, key=lambda r: r.created_at, reverse=True)


def list_live(exports: Location, course_id: int, now: datetime | None = None) -> list[ExportRecord]:
    moment = now or datetime.now(UTC)
    return [r for r in list_records(exports, course_id) if r.is_live(moment)]
