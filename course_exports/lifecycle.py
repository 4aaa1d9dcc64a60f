"""One lifecycle for every export kind: claim, write, publish or fail; join or wait.

A request (:class:`~course_exports.export_records.ExportRequest`) becomes an export like this:

1. **Done before?** The request id's export is ``ready`` (or ``expired``): return it,
   unless its run is still alive and telling (no ``notified_at`` yet): wait for it. The
   same request id with other parameters: ConflictError.
2. **Joined before?** This run joined another export earlier (a ``joined.json`` beside
   where its own export would be): that export's outcome is this request's.
3. **Job lease** (``job-<job key>``): one export per job, i.e. per kind, course and
   selection whoever asks. Held by another export: this request *joins* it (writes
   ``joined.json``) and waits. Held by another run of the same request: waits for it.
   Taken, but the job's last export became ready after this request was made (the
   ``.done-<job key>.json`` mark its publisher left): this request joins that one, since
   its data is as fresh as asked for (twins queued far apart make one export).
4. **Claim** the request's export id: the ``pending`` manifest, created atomically. A
   manifest of the same request left ``pending`` by a run that died, or ``failed``, is
   taken over (its partial file removed); other parameters: ConflictError.
5. **Course lease** (course zips only): one zip of a course at a time; held: wait, keeping
   the job lease, so identical requests still join this queued export.
6. **Write**, with a heartbeat thread (course_exports.heartbeat) renewing both leases and
   writing progress into the manifest every few seconds; then **publish** (``ready``, and
   the job's done mark) or **fail** (a ``failed`` tombstone with the reason a teacher
   reads); release the leases.

Waiting never holds a worker: a deployment run returns a ``Scheduled`` state for itself
(Prefect releases its deployment slot and a worker picks it up again later); a run
without a deployment (a plain Python call) sleeps in its own process instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from course_exports import export_records, registry
from course_exports.errors import ExportError
from course_exports.export_records import ExportKind, ExportRecord, ExportRequest, ExportStatus
from course_exports.leases import (
    LEASE_PREFIX,
    LEASE_TTL,
    Holder,
    Lease,
    course_lease,
    job_lease,
)
from course_exports.storage import Location

log = logging.getLogger(__name__)

JOINED = "joined.json"
#: ``<course>/.done-<job key>.json``: the job's latest ready export (the purge removes the
#: mark a day after it was last written, long after any request it could serve).
DONE_PREFIX = ".done-"
#: How long a request waits for a busy course or a shared export before it gives up.
WAIT_LIMIT = timedelta(hours=4)

#: What a teacher is told when something failed us rather than their request.
TRANSIENT_REASON = (
    "the export service had a temporary problem (storage or network); please request the "
    "export again"
)
#: What a teacher is told when the run died under us (killed worker, lost machine).
CRASH_REASON = "the export service stopped while making the export; please request it again"
WAITED_TOO_LONG_REASON = (
    "the course was busy with other exports for too long; please request the export again"
)


def teacher_reason(exc: BaseException | None) -> str:
    """The one sentence a teacher (mail, webhook, event, Course Data page) reads about a
    failure: the error's own ``reason`` when it is ours, never a trace or a path."""
    if isinstance(exc, ExportError):
        return exc.reason
    return TRANSIENT_REASON


class SharedExportFailedError(ExportError):
    """The export this request joined (or an earlier run of it) failed."""

    def __init__(self, record: ExportRecord) -> None:
        reason = record.failure_reason or TRANSIENT_REASON
        super().__init__(
            f"{record.kind} export {record.export_id} of course {record.course_id} "
            f"failed: {reason}",
            reason=reason,
        )
        self.record = record


class WaitedTooLongError(ExportError):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"gave up after waiting {WAIT_LIMIT} for {what}", reason=WAITED_TOO_LONG_REASON
        )


class Joined(BaseModel):
    """``<course>/<export id>/joined.json``: this request is served by another export."""

    export_id: str
    job_key: str
    joined_at: datetime


class Done(BaseModel):
    """The mark a published export leaves for its job: requests made before
    ``completed_at`` that find it when they start are served by it."""

    export_id: str
    completed_at: datetime


def _done_parts(request: ExportRequest) -> tuple[str | int, ...]:
    return (request.course_id, f"{DONE_PREFIX}{request.job_key}.json")


class Outcome(StrEnum):
    WRITE = "write"  # this run makes the export
    DONE = "done"  # the export exists: return it (ready, expired) or report it (failed)
    WAIT = "wait"  # try again later


@dataclass(frozen=True)
class Claim:
    """What :func:`claim` decided for one run of a request."""

    outcome: Outcome
    record: ExportRecord | None = None
    #: For WAIT: what the run waits for, in words for its state message and log.
    reason: str = ""
    #: When this request started waiting (the WAIT_LIMIT runs from here).
    waiting_since: datetime | None = None
    job: Holder | None = None
    course: Holder | None = None

    @property
    def writes(self) -> bool:
        return self.outcome is Outcome.WRITE


def _joined_parts(request: ExportRequest) -> tuple[str | int, ...]:
    return (request.course_id, request.export_id, JOINED)


def _read_joined(exports: Location, request: ExportRequest) -> Joined | None:
    try:
        return Joined.model_validate_json(exports.read_bytes(*_joined_parts(request)))
    except FileNotFoundError:
        return None


def _finished(record: ExportRecord) -> bool:
    return record.status in (ExportStatus.READY, ExportStatus.EXPIRED, ExportStatus.FAILED)


def claim(
    exports: Location,
    request: ExportRequest,
    *,
    course_name: str,
    ttl: timedelta,
    wait_s: float,
    now: datetime | None = None,
) -> Claim:
    """Decide what this run of ``request`` does now (see the module's steps).

    A request that has waited :data:`WAIT_LIMIT` gives up: WaitedTooLongError, its queued
    manifest a ``failed`` tombstone.
    """
    moment = now or datetime.now(UTC)
    decision = _decide(
        exports, request, course_name=course_name, ttl=ttl, wait_s=wait_s, now=moment
    )
    if decision.waiting_since is not None and moment - decision.waiting_since > WAIT_LIMIT:
        error = WaitedTooLongError(decision.reason.removeprefix("waiting for "))
        give_up(exports, request, decision, error.reason)
        raise error
    return decision


def _decide(
    exports: Location,
    request: ExportRequest,
    *,
    course_name: str,
    ttl: timedelta,
    wait_s: float,
    now: datetime,
) -> Claim:
    moment = now
    run = request.run_key
    own = export_records.read_record(exports, request.course_id, request.export_id)
    jobs = job_lease(exports, request.course_id, request.job_key)
    if own is not None:
        registry.check_same_request(own, request.request_id, request.parameters)
        if own.status in (ExportStatus.READY, ExportStatus.EXPIRED):
            if _still_telling(jobs, own, run, moment):
                # Its run published it and is sending the ready mail (the job lease goes
                # after that): a repeat that took "ready, no mail yet" for a run that died
                # would mail the teacher twice.
                return _wait(f"the run that made export {own.export_id} to finish", moment, moment)
            return Claim(Outcome.DONE, own)

    joined = _read_joined(exports, request)
    if joined is not None:
        target = export_records.read_record(exports, request.course_id, joined.export_id)
        if target is not None and _finished(target):
            return Claim(Outcome.DONE, target)
        holder = jobs.read()
        if (
            target is not None
            and holder is not None
            and holder.owner == target.export_id
            and not holder.is_expired(moment)
        ):
            return _wait(
                f"the same export {target.export_id}, asked for by someone else",
                joined.joined_at,
                moment,
            )
        exports.delete(*_joined_parts(request))  # it died: this request starts over

    # A waiting run holds its job lease across its sleep: long enough to come back.
    waiting_ttl = LEASE_TTL + timedelta(seconds=4 * wait_s)
    job = jobs.acquire(request.export_id, run, ttl=waiting_ttl, now=moment)
    if not job.held_by(request.export_id, run):
        if job.owner == request.export_id:
            since = own.created_at if own is not None else moment
            return _wait(f"another run of this request ({job.run})", since, moment)
        _join(exports, request, own, job.owner, moment)
        return _wait(f"the same export {job.owner}, asked for by someone else", moment, moment)

    try:
        fresh = _fresh_export(exports, request)
        if fresh is not None:
            jobs.release(job)
            _join(exports, request, own, fresh.export_id, moment)
            return Claim(Outcome.DONE, fresh)
        record = _claim_record(exports, request, own, course_name=course_name, ttl=ttl, now=moment)
    except BaseException:
        jobs.release(job)
        raise
    if request.kind is not ExportKind.COURSE:
        return Claim(Outcome.WRITE, record, job=job)
    course = course_lease(exports, request.course_id).acquire(request.export_id, run, now=moment)
    if not course.held_by(request.export_id, run):
        return _wait(
            f"export {course.owner} of the same course", record.created_at, moment, record, job
        )
    return Claim(Outcome.WRITE, record, job=job, course=course)


def _still_telling(jobs: Lease, record: ExportRecord, run: str, now: datetime) -> bool:
    """A ready export whose mail has not gone out, while the run that made it is alive."""
    if record.status is not ExportStatus.READY or record.notified_at is not None:
        return False
    holder = jobs.read()
    return (
        holder is not None
        and holder.owner == record.export_id
        and holder.run != run
        and not holder.is_expired(now)
    )


def _join(
    exports: Location,
    request: ExportRequest,
    own: ExportRecord | None,
    export_id: str,
    now: datetime,
) -> None:
    """From now on this request is served by ``export_id`` (``joined.json``)."""
    if (
        own is not None
        and own.status is ExportStatus.PENDING
        and own.flow_run_id is not None
        and own.flow_run_id == request.flow_run_id
    ):
        # This run had queued its own export; another identical one got going first.
        exports.delete(request.course_id, request.export_id, export_records.MANIFEST)
    mark = Joined(export_id=export_id, job_key=request.job_key, joined_at=now)
    exports.write_bytes_atomic(mark.model_dump_json().encode(), *_joined_parts(request))


def _fresh_export(exports: Location, request: ExportRequest) -> ExportRecord | None:
    """The job's export that became ready after this request was made, if still ready.

    Read while holding the job lease: its publisher writes the mark before it lets the
    lease go, so a request that gets the lease after it sees the mark."""
    try:
        done = Done.model_validate_json(exports.read_bytes(*_done_parts(request)))
    except FileNotFoundError:
        return None
    except ValueError:  # a damaged mark is no reason to fail: make the export
        log.warning("damaged %s of course %s; ignored", _done_parts(request)[1], request.course_id)
        return None
    if done.completed_at < request.requested_at or done.export_id == request.export_id:
        return None
    record = export_records.read_record(exports, request.course_id, done.export_id)
    if record is None or record.status is not ExportStatus.READY:
        return None
    return record


def publish(
    exports: Location,
    request: ExportRequest,
    record: ExportRecord,
    *,
    size_bytes: int,
    sha256: str,
    counts: Mapping[str, int],
    details: Mapping[str, Any] | None = None,
) -> ExportRecord:
    """Publish the export (``registry.publish``), then mark it as its job's latest, so a
    request made before now that starts later takes it instead of making it again."""
    ready = registry.publish(
        exports, record, size_bytes=size_bytes, sha256=sha256, counts=counts, details=details
    )
    mark = Done(export_id=ready.export_id, completed_at=datetime.now(UTC))
    try:
        exports.write_bytes_atomic(mark.model_dump_json().encode(), *_done_parts(request))
    except Exception as exc:  # a missed mark costs one export made twice, nothing more
        log.warning(
            "export %s: job mark not written: %s: %s", ready.export_id, type(exc).__name__, exc
        )
    return ready


def _claim_record(
    exports: Location,
    request: ExportRequest,
    own: ExportRecord | None,
    *,
    course_name: str,
    ttl: timedelta,
    now: datetime,
) -> ExportRecord:
    """The request's manifest, now this run's (the caller holds the job lease)."""
    if own is None:
        record = registry.claim(exports, request, course_name=course_name, ttl=ttl, now=now)
        if record is not None:
            return record
        # Another run of this request id got there between our read and our claim.
        own = export_records.read_record(exports, request.course_id, request.export_id)
        if own is None:
            raise RuntimeError(f"export {request.export_id} vanished while being claimed")
        registry.check_same_request(own, request.request_id, request.parameters)
        if own.status in (ExportStatus.READY, ExportStatus.EXPIRED):
            raise RuntimeError(f"export {request.export_id} was published by another run")
    if (
        own.status is ExportStatus.PENDING
        and request.flow_run_id is not None
        and own.flow_run_id == request.flow_run_id
        and not own.file_name
    ):
        return own  # this run queued it earlier and has written nothing yet
    return registry.take_over(exports, own, request, ttl=ttl, now=now)


def _wait(
    what: str,
    since: datetime,
    now: datetime,
    record: ExportRecord | None = None,
    job: Holder | None = None,
) -> Claim:
    del now  # the caller checks the limit
    return Claim(Outcome.WAIT, record, reason=f"waiting for {what}", waiting_since=since, job=job)


def give_up(exports: Location, request: ExportRequest, decision: Claim, reason: str) -> None:
    """A waiting run that stops waiting: its queued manifest becomes a tombstone and its
    job lease goes (so identical requests no longer join a run that left)."""
    if decision.record is not None:
        registry.fail(exports, decision.record, reason)
    if decision.job is not None:
        job_lease(exports, request.course_id, request.job_key).release(decision.job)


def abandon_run(exports: Location, request: ExportRequest) -> ExportRecord | None:
    """A run of ``request`` died (Crashed): give back the leases it held, so the request's
    retry need not wait for them to run out, and return the export it had claimed (still
    ``pending`` and still its own), if any. ``request.flow_run_id`` is the dead run's."""
    for name in exports.list_names(request.course_id):
        if name.startswith(LEASE_PREFIX) and name.endswith(".json"):
            lease = Lease(exports, request.course_id, name[len(LEASE_PREFIX) : -len(".json")])
            holder = lease.read()
            if holder is not None and holder.run == request.run_key:
                lease.release(holder)
    record = export_records.read_record(exports, request.course_id, request.export_id)
    if (
        record is None
        or record.status is not ExportStatus.PENDING
        or record.flow_run_id != request.flow_run_id
    ):
        return None
    return record


def request_selection(**selection: Any) -> dict[str, Any]:
    """The selection as canonical JSON values (sorted, de-duplicated id lists)."""
    out: dict[str, Any] = {}
    for name, value in selection.items():
        if isinstance(value, list | tuple | set):
            value = sorted(set(value)) or None
        out[name] = value
    return export_records.canonical_parameters(out)
