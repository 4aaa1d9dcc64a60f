"""Leases in the export registry: who may work on a course or a job, for how long.

A lease is one small object ``<exports>/<course_id>/.lease-<name>.json`` created with the
storage's atomic create-if-absent (``O_EXCL``-like link locally, ``If-None-Match: *`` on
S3), so of two runs racing for it exactly one wins. It names its holder (an export and
a flow run) and an expiry; the holder renews it while it works and deletes it when done.
A lease past its expiry belongs to a run that died. Taking it over is a second
create-if-absent: ``<lease>.taken-<token>`` names the expired holder's token, so of all
the runs that saw that holder expired exactly one creates it and overwrites the lease;
the others find it taken and wait like any run that finds a lease held. (Reading the
lease and then deleting it let two takers both win: the second read the dead holder's
lease, the first replaced it, and the second deleted the replacement.) The purge removes
these marks with other course dotfiles a day after they were written.

They replace Prefect's per-course global concurrency limits: nothing is created on the
Prefect server per course, a killed run's lease runs out in :data:`LEASE_TTL` (not in
the server's lease duration), and a run that finds a lease taken can give back its
process and try again later (see course_exports.lifecycle).

Renewal takes the same mark when the lease is expired or within :data:`RENEW_MARGIN` of
it (it is the holder's own token a taker would name), and then writes a fresh token: of
a stalled holder coming back and a run taking over, exactly one wins. Known limit: a
renewal further from expiry reads the lease and then rewrites it, so a holder stalled
for more than RENEW_MARGIN between that read and that write (a few milliseconds
normally) could overwrite a taker's lease. Exports never share files whatever the
leases say (each export id is claimed atomically), so the worst case is two exports of
one course packing at once.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ValidationError

from course_exports.storage import Location

#: Beside the course's export folders; the purge and the listings leave such names alone.
LEASE_PREFIX = ".lease-"
#: How long a lease lives without renewal: a killed run frees its course within this.
LEASE_TTL = timedelta(seconds=90)
#: ``<lease>.taken-<token>``: the one taker of an expired holder (see the module's doc).
TAKEN_INFIX = ".taken-"
#: How often a working run renews its leases.
RENEW_EVERY = timedelta(seconds=20)
#: A renewal this close to expiry (or after it) races takers, so it takes their mark.
RENEW_MARGIN = timedelta(seconds=15)
log = logging.getLogger(__name__)


class Holder(BaseModel):
    """What a lease object says."""

    name: str
    owner: str  # the export id working under the lease
    run: str | None  # the flow run (None outside Prefect)
    token: str
    acquired_at: datetime
    expires_at: datetime

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def held_by(self, owner: str, run: str | None) -> bool:
        return (self.owner, self.run) == (owner, run)


@dataclass(frozen=True)
class Lease:
    exports: Location
    course_id: int
    name: str

    @property
    def parts(self) -> tuple[str | int, ...]:
        return (self.course_id, f"{LEASE_PREFIX}{self.name}.json")

    def read(self) -> Holder | None:
        try:
            raw = self.exports.read_bytes(*self.parts)
        except FileNotFoundError:
            return None
        try:
            return Holder.model_validate_json(raw)
        except ValidationError:
            # Not ours to trust: treat it as expired so it is replaced, never as held. Its
            # token is its content's hash, so its takers still agree on one winner.
            log.warning("lease %s of course %s is damaged; replacing it", self.name, self.course_id)
            epoch = datetime.fromtimestamp(0, UTC)
            token = "damaged-" + hashlib.sha256(raw).hexdigest()[:32]
            return Holder(
                name=self.name, owner="", run=None, token=token, acquired_at=epoch, expires_at=epoch
            )

    def acquire(
        self,
        owner: str,
        run: str | None,
        *,
        ttl: timedelta = LEASE_TTL,
        now: datetime | None = None,
    ) -> Holder:
        """Take the lease for ``owner``/``run``, or renew it if they hold it already.

        Returns the holder afterwards: compare with :meth:`Holder.held_by` to know
        whether it is ours.
        """
        for _ in range(5):
            moment = now or datetime.now(UTC)
            mine = Holder(
                name=self.name,
                owner=owner,
                run=run,
                token=uuid.uuid4().hex,
                acquired_at=moment,
                expires_at=moment + ttl,
            )
            if self.exports.create_exclusive(mine.model_dump_json().encode(), *self.parts):
                return mine
            current = self.read()
            if current is None:
                continue  # released in between: try again
            if current.held_by(owner, run):
                renewed = self.renew(current, ttl=ttl, now=moment)
                if renewed is not None:
                    return renewed
                continue
            if not current.is_expired(moment):
                return current
            if not self._claim_takeover(current):
                return current  # another run is taking it over: held, for all we know
            self.exports.write_bytes_atomic(mine.model_dump_json().encode(), *self.parts)
            return mine
        current = self.read()
        if current is None:
            raise RuntimeError(f"lease {self.name} of course {self.course_id} keeps changing")
        return current

    def renew(
        self, holder: Holder, *, ttl: timedelta = LEASE_TTL, now: datetime | None = None
    ) -> Holder | None:
        """Push the expiry out; None if the lease is no longer ``holder``'s (lost).

        Use the returned holder from then on: a renewal near expiry changes the token.
        """
        moment = now or datetime.now(UTC)
        current = self.read()
        if current is None or current.token != holder.token:
            return None
        renewed = current.model_copy(update={"expires_at": moment + ttl})
        if moment + RENEW_MARGIN >= current.expires_at:
            # A taker may be deciding now: win its mark first, then a token it never saw.
            if not self._claim_takeover(current):
                return None
            renewed = renewed.model_copy(update={"token": uuid.uuid4().hex})
        self.exports.write_bytes_atomic(renewed.model_dump_json().encode(), *self.parts)
        return renewed

    def release(self, holder: Holder) -> None:
        """Give the lease back (only if it is still ``holder``'s)."""
        self._remove_if(holder)

    def _claim_takeover(self, expired: Holder) -> bool:
        """True for exactly one of the runs that saw ``expired`` holding the lease."""
        mark = f"{LEASE_PREFIX}{self.name}{TAKEN_INFIX}{expired.token}"
        return self.exports.create_exclusive(b"", self.course_id, mark)

    def _remove_if(self, holder: Holder) -> None:
        current = self.read()
        if current is not None and current.token == holder.token:
            self.exports.delete(*self.parts)


def course_lease(exports: Location, course_id: int) -> Lease:
    """One course zip of a course at a time."""
    return Lease(exports, course_id, "course")


def job_lease(exports: Location, course_id: int, job_key: str) -> Lease:
    """One export per job (same kind, course and selection): identical requests join it."""
    return Lease(exports, course_id, f"job-{job_key}")
