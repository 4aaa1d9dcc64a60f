"""What an export is: its manifest (``<course_id>/<export_id>/manifest.json``, beside the
file), the request that makes it, and the ids that tie the two; manifests read, written and
listed. How a manifest moves from ``pending`` to ``ready`` (or ``failed``) is
:mod:`course_exports.registry`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from course_exports.errors import LakeDataError
from course_exports.storage import Location, ObjectTooLargeError

MANIFEST = "manifest.json"
#: A manifest is a few kB; anything far larger is not one (and is not read whole).
MANIFEST_MAX_BYTES = 2**20
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
