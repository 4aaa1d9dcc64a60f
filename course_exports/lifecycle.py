"""One lifecycle for every export kind: claim, write, publish or fail; join or wait.

A request (:class:`~course_exports.registry.ExportRequest`) becomes an export like this:

1. **Done before?** The request id's export is ``ready`` (or ``expired``): return it. The
   same request id with other parameters: ConflictError.
2. **Joined before?** This run joined another export earlier (a ``joined.json`` beside
   where its own export would be): that export's outcome is this request's.
3. **Job lease** (``job-<job key>``): one export per job, i.e. per kind, course and
   selection whoever asks. Held by another export: this request *joins* it (writes
   ``joined.json``) and waits. Held by another run of the same request: waits for it.
4. **Claim** the request's export id: the ``pending`` manifest, created atomically. A
   manifest of the same request left ``pending`` by a run that died, or ``failed``, is
   taken over (its partial file removed); other parameters: ConflictError.
5. **Course lease** (course zips only): one zip of a course at a time; held: wait, keeping
   the job lease, so identical requests still join this queued export.
6. **Write**, with a heartbeat thread renewing both leases and writing progress into the
   manifest every few seconds; then **publish** (``ready``) or **fail** (a ``failed``
   tombstone with the reason a teacher reads); release the leases.

Waiting never holds a worker: a deployment run returns a ``Scheduled`` state for itself
(Prefect releases its deployment slot and a worker picks it up again later); a run
without a deployment (a plain Python call) sleeps in its own process instead.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from course_exports import registry
from course_exports.errors import ExportError
from course_exports.leases import (
    LEASE_PREFIX,
    LEASE_TTL,
    RENEW_EVERY,
    Holder,
    Lease,
    course_lease,
    job_lease,
)
from course_exports.registry import ExportKind, ExportRecord, ExportRequest, ExportStatus
from course_exports.storage import Location

log = logging.getLogger(__name__)

JOINED = "joined.json"
#: How long a request waits for a busy course or a shared export before it gives up.
WAIT_LIMIT = timedelta(hours=4)
#: How often a working export rewrites its manifest with its progress (one small PUT).
PROGRESS_EVERY_S = 5.0

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
    own = registry.read_record(exports, request.course_id, request.export_id)
    if own is not None:
        registry.check_same_request(own, request.request_id, request.parameters)
        if own.status in (ExportStatus.READY, ExportStatus.EXPIRED):
            return Claim(Outcome.DONE, own)

    jobs = job_lease(exports, request.course_id, request.job_key)
    joined = _read_joined(exports, request)
    if joined is not None:
        target = registry.read_record(exports, request.course_id, joined.export_id)
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
        if (
            own is not None
            and own.status is ExportStatus.PENDING
            and own.flow_run_id is not None
            and own.flow_run_id == request.flow_run_id
        ):
            # This run had queued its own export; another identical one got going first.
            exports.delete(request.course_id, request.export_id, registry.MANIFEST)
        mark = Joined(export_id=job.owner, job_key=request.job_key, joined_at=moment)
        exports.write_bytes_atomic(mark.model_dump_json().encode(), *_joined_parts(request))
        return _wait(f"the same export {job.owner}, asked for by someone else", moment, moment)

    try:
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
        own = registry.read_record(exports, request.course_id, request.export_id)
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
    record = registry.read_record(exports, request.course_id, request.export_id)
    if (
        record is None
        or record.status is not ExportStatus.PENDING
        or record.flow_run_id != request.flow_run_id
    ):
        return None
    return record


# -- while writing ----------------------------------------------------------------------


@dataclass
class Heartbeat:
    """The working run's sign of life: a thread that renews its leases and writes its
    progress into the manifest, at most every :data:`PROGRESS_EVERY_S`.

    ``update`` is what the writers call (from any thread, as often as they like): it only
    stores numbers. Only this thread (and :meth:`name_file`, under the lock) writes.
    """

    exports: Location
    record: ExportRecord
    leases: list[tuple[Lease, Holder]]
    progress_every_s: float = PROGRESS_EVERY_S
    renew_every_s: float = RENEW_EVERY.total_seconds()
    _latest: dict[str, int] = field(default_factory=dict)
    _written: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name="export-heartbeat", daemon=True)
        self._thread.start()
        return self

    def update(self, **counts: int) -> None:
        self._latest = {**self._latest, **counts}

    def name_file(self, file_name: str) -> ExportRecord:
        with self._lock:
            self.record = registry.name_file(self.exports, self.record, file_name)
            return self.record

    def stop(self) -> ExportRecord:
        """Stop writing (before the manifest is published or failed); the current record."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.record

    def _run(self) -> None:
        last_renew = time.monotonic()
        while not self._stop.wait(self.progress_every_s):
            try:
                self._beat(renew=time.monotonic() - last_renew >= self.renew_every_s)
            except Exception as exc:  # a missed beat is not a failed export
                log.warning(
                    "export %s heartbeat: %s: %s", self.record.export_id, type(exc).__name__, exc
                )
                continue
            if time.monotonic() - last_renew >= self.renew_every_s:
                last_renew = time.monotonic()

    def _beat(self, *, renew: bool) -> None:
        latest = self._latest
        with self._lock:
            if self._stop.is_set():
                return
            if latest != self._written:
                self.record = registry.write_progress(
                    self.exports, self.record, latest, datetime.now(UTC)
                )
                self._written = latest
        if renew:
            for index, (lease, holder) in enumerate(self.leases):
                renewed = lease.renew(holder)
                if renewed is None:
                    log.warning("export %s lost its lease %s", self.record.export_id, lease.name)
                else:
                    self.leases[index] = (lease, renewed)


def start_heartbeat(exports: Location, request: ExportRequest, decision: Claim) -> Heartbeat:
    if decision.record is None:
        raise ValueError("only a claim to write has a heartbeat")
    leases: list[tuple[Lease, Holder]] = []
    if decision.job is not None:
        leases.append((job_lease(exports, request.course_id, request.job_key), decision.job))
    if decision.course is not None:
        leases.append((course_lease(exports, request.course_id), decision.course))
    return Heartbeat(exports, decision.record, leases).start()


def release(exports: Location, heartbeat: Heartbeat) -> None:
    for lease, holder in heartbeat.leases:
        try:
            lease.release(holder)
        except Exception as exc:  # it runs out on its own in LEASE_TTL
            log.warning("lease %s not released: %s", lease.name, exc)


def request_selection(**selection: Any) -> dict[str, Any]:
    """The selection as canonical JSON values (sorted, de-duplicated id lists)."""
    out: dict[str, Any] = {}
    for name, value in selection.items():
        if isinstance(value, list | tuple | set):
            value = sorted(set(value)) or None
        out[name] = value
    return registry.canonical_parameters(out)
