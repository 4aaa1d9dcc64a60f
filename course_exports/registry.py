"""The export registry: ``<course_id>/<export_id>/manifest.json`` beside each file.

The manifest is the commit point (CONTRACT 4). It is written ``pending`` before the file
(so the purge knows a run is writing there), and ``ready`` only after the file is
complete; only ``ready`` exports before their expiry are listed, linked or mailed.
Ids of requests that carry a ``request_id`` are derived from it, so a retried request
finds its earlier export instead of making a second one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import posixpath
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import IO, Any

from fsspec.spec import AbstractBufferedFile
from pydantic import BaseModel, Field, ValidationError, field_validator

from course_exports.errors import ConflictError, LakeDataError
from course_exports.storage import Location

MANIFEST = "manifest.json"
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

    @field_validator("file_name")
    @classmethod
    def _bare_file_name(cls, value: str) -> str:
        # Joined onto the export's folder to serve and delete it: a path would reach
        # another export's file.
        if value in ("", ".", "..") or any(c in "/\\" or ord(c) < 32 or c == "\x7f" for c in value):
            raise ValueError("must be a bare file name, not a path")
        return value

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
    return exports.path(course_id, export_id)


def read_record(exports: Location, course_id: int, export_id: str) -> ExportRecord | None:
    path = posixpath.join(export_dir(exports, course_id, export_id), MANIFEST)
    try:
        raw = exports.fs.cat_file(path)
    except FileNotFoundError:
        return None
    try:
        return ExportRecord.model_validate_json(raw)
    except ValidationError as exc:
        raise LakeDataError(exports.url_of(path), f"not a valid export manifest ({exc})") from None


def write_record(exports: Location, record: ExportRecord) -> None:
    path = posixpath.join(export_dir(exports, record.course_id, record.export_id), MANIFEST)
    exports.write_bytes_atomic(record.model_dump_json(indent=2).encode(), exports.relative(path))


def find_completed(
    exports: Location,
    kind: ExportKind,
    course_id: int,
    request_id: str | None,
    parameters: Mapping[str, Any],
) -> ExportRecord | None:
    """The export an earlier run of the same request completed, if any.

    The same ``request_id`` with other parameters is refused: silently returning the
    first export would hand the LMS a file it did not ask for.
    """
    if request_id is None:
        return None
    record = read_record(exports, course_id, new_export_id(kind, course_id, request_id))
    if record is None or record.status is ExportStatus.PENDING:
        return None
    if record.parameters != canonical_parameters(parameters):
        raise ConflictError(
            f"request_id {request_id!r} was already used for export {record.export_id} "
            f"with other parameters ({record.parameters}); use a new request_id"
        )
    return record


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
    """Claim an export id and mark it ``pending`` before any byte of the file is written."""
    created = (now or datetime.now(UTC)).replace(microsecond=0)
    export_id = new_export_id(kind, course_id, request_id)
    path = posixpath.join(export_dir(exports, course_id, export_id), file_name)
    record = ExportRecord(
        export_id=export_id,
        course_id=course_id,
        course_name=course_name,
        kind=kind,
        status=ExportStatus.PENDING,
        request_id=request_id,
        parameters=canonical_parameters(parameters),
        requested_by=requested_by,
        file_name=file_name,
        file_url=exports.url_of(path),
        created_at=created,
        expires_at=created + ttl,
    )
    write_record(exports, record)
    return record


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
    path = file_path(exports, record)
    exports.fs.makedirs(posixpath.dirname(path), exist_ok=True)
    raw = exports.fs.open(path, "wb", block_size=UPLOAD_PART_BYTES)
    try:
        yield HashingWriter(raw)
    except BaseException:
        _abandon(raw)
        raise
    raw.close()


def _abandon(raw: IO[bytes]) -> None:
    """Close a failed write without completing it.

    Closing an fsspec S3 writer completes its multipart upload, which would turn half a
    file into an object; abort the upload instead. A local file is closed and later
    removed with the rest of the export.
    """
    if isinstance(raw, AbstractBufferedFile):
        raw.discard()
        raw.closed = True
    else:
        raw.close()


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
    """Mark the export ``ready``: from here on it is listed, linked and mailed."""
    ready = record.model_copy(
        update={
            "status": ExportStatus.READY,
            "size_bytes": size_bytes,
            "sha256": sha256,
            "counts": dict(counts),
            "details": canonical_parameters(details or {}),
            "completed_at": (now or datetime.now(UTC)).replace(microsecond=0),
        }
    )
    write_record(exports, ready)
    return ready


def discard(exports: Location, course_id: int, export_id: str) -> None:
    """Remove every trace of an export that did not complete."""
    path = export_dir(exports, course_id, export_id)
    if exports.fs.exists(path):
        exports.fs.rm(path, recursive=True)
    course_dir = exports.path(course_id)
    if exports.is_local:
        with contextlib.suppress(OSError):  # only succeeds when no other export is there
            exports.fs.rmdir(course_dir)


def list_records(exports: Location, course_id: int) -> list[ExportRecord]:
    """Every export manifest of the course, whatever its state, newest first."""
    exports.refresh()
    records = []
    for path in exports.fs.glob(exports.path(course_id, "*", MANIFEST)):
        try:
            record = read_record(exports, course_id, posixpath.basename(posixpath.dirname(path)))
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
