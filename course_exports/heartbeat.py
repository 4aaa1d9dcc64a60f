"""While an export is written: the run's heartbeat renews its leases and writes its
progress into the manifest; afterwards the leases are given back."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from course_exports import registry
from course_exports.export_records import ExportRecord, ExportRequest
from course_exports.leases import RENEW_EVERY, Holder, Lease, course_lease, job_lease
from course_exports.lifecycle import Claim
from course_exports.storage import Location

log = logging.getLogger(__name__)

#: How often a working export rewrites its manifest with its progress (one small PUT).
PROGRESS_EVERY_S = 5.0


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


def release_leases(exports: Location, heartbeat: Heartbeat) -> None:
    for lease, holder in heartbeat.leases:
        try:
            lease.release(holder)
        except Exception as exc:  # it runs out on its own in LEASE_TTL
            log.warning("lease %s not released: %s", lease.name, exc)
