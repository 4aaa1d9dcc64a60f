"""Leases (course_exports/leases.py): one holder at a time, also when runs race to take
over the lease of a run that died."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from course_exports import leases
from course_exports.retention.survey import is_course_mark
from course_exports.storage import Location, open_location

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LATER = NOW + leases.LEASE_TTL + timedelta(seconds=1)  # the first holder's lease ran out


@pytest.fixture
def exports(tmp_path: Path) -> Location:
    return open_location(str(tmp_path / "exports"))


class StaleLeaseView:
    """The exports seen by a run that read the lease before another run replaced it:
    reads of the lease keep answering the old bytes, everything else is the real store."""

    def __init__(self, exports: Location, lease: leases.Lease) -> None:
        self._exports = exports
        self._parts = lease.parts
        self._stale = exports.read_bytes(*lease.parts)

    def read_bytes(self, *parts: Any, **kwargs: Any) -> bytes:
        if parts == self._parts:
            return self._stale
        return self._exports.read_bytes(*parts, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._exports, name)


def test_lease_is_created_once_renewed_and_released(exports: Location) -> None:
    lease = leases.course_lease(exports, 7)
    mine = lease.acquire("e1", "run-a", now=NOW)
    assert mine.held_by("e1", "run-a")
    assert lease.acquire("e2", "run-b", now=NOW) == mine  # held: the holder comes back
    renewed = lease.renew(mine, now=NOW + timedelta(seconds=60))
    assert renewed is not None and renewed.expires_at > mine.expires_at
    lease.release(mine)  # an old copy of the holder still has its token
    assert lease.read() is None
    assert not list(Path(exports.path(7)).iterdir())  # nothing accumulates


def test_a_damaged_lease_is_replaced_never_honoured(exports: Location) -> None:
    lease = leases.course_lease(exports, 7)
    Path(exports.path(*lease.parts)).parent.mkdir(parents=True)
    Path(exports.path(*lease.parts)).write_text("{not json")
    assert lease.acquire("e1", "run-a", now=NOW).held_by("e1", "run-a")


@pytest.mark.parametrize("damaged", [False, True], ids=["expired", "damaged"])
def test_a_late_taker_of_a_dead_runs_lease_does_not_remove_the_new_holders(
    exports: Location, damaged: bool
) -> None:
    """Two runs saw the dead holder's lease; the first took it over. The second, still
    holding its old view of the lease, must not win as well (it used to delete the first
    taker's lease, which it took for the dead one, and create its own)."""
    lease = leases.course_lease(exports, 7)
    lease.acquire("dead", "run-dead", now=NOW)
    if damaged:
        Path(exports.path(*lease.parts)).write_text("{not json")
    late = leases.Lease(StaleLeaseView(exports, lease), 7, lease.name)  # type: ignore[arg-type]
    first = lease.acquire("e1", "run-a", now=LATER)
    assert first.held_by("e1", "run-a")
    second = late.acquire("e2", "run-b", now=LATER)
    assert not second.held_by("e2", "run-b")
    assert lease.read() == first  # the first taker's lease is still there, untouched


def take_over_at_once(exports: Location, takers: int) -> list[leases.Holder]:
    lease = leases.course_lease(exports, 7)
    lease.acquire("dead", "run-dead", now=NOW)
    barrier = threading.Barrier(takers)

    def take(i: int) -> leases.Holder:
        barrier.wait()
        return lease.acquire(f"e{i}", f"run-{i}", now=LATER)

    with ThreadPoolExecutor(takers) as pool:
        return list(pool.map(take, range(takers)))


def winners(holders: list[leases.Holder]) -> list[int]:
    return [i for i, h in enumerate(holders) if h.held_by(f"e{i}", f"run-{i}")]


def test_exactly_one_of_many_racing_takers_wins(exports: Location) -> None:
    holders = take_over_at_once(exports, 8)
    (winner,) = winners(holders)
    assert leases.course_lease(exports, 7).read() == holders[winner]


def test_exactly_one_racing_taker_wins_on_s3(s3_server: Any) -> None:
    bucket = s3_server.make_bucket("lease-takeover")
    exports = open_location(f"s3://{bucket}/exports", s3_endpoint_url=s3_server.endpoint_url)
    holders = take_over_at_once(exports, 8)
    (winner,) = winners(holders)
    assert leases.course_lease(exports, 7).read() == holders[winner]


def test_the_take_over_mark_is_a_course_mark_the_purge_removes(exports: Location) -> None:
    lease = leases.course_lease(exports, 7)
    lease.acquire("dead", "run-dead", now=NOW)
    lease.acquire("e1", "run-a", now=LATER)
    names = sorted(p.name for p in Path(exports.path(7)).iterdir())
    assert names[0] == ".lease-course.json"
    assert names[1].startswith(".lease-course" + leases.TAKEN_INFIX)
    assert all(is_course_mark(exports, exports.path(7, name)) for name in names)


def test_a_holder_renewing_after_expiry_loses_to_the_run_that_took_over(
    exports: Location,
) -> None:
    """A stalled holder read its own lease, then a run took it over: the holder's late
    renewal must not write over the taker's lease (it used to: it compared tokens on
    what it had read, then wrote)."""
    lease = leases.course_lease(exports, 7)
    stalled = lease.acquire("e1", "run-a", now=NOW)
    late = leases.Lease(StaleLeaseView(exports, lease), 7, lease.name)  # type: ignore[arg-type]
    taker = lease.acquire("e2", "run-b", now=LATER)
    assert taker.held_by("e2", "run-b")
    assert late.renew(stalled, now=LATER) is None
    assert lease.read() == taker


def test_a_renewal_near_expiry_wins_the_mark_and_the_lease_can_still_be_taken_later(
    exports: Location,
) -> None:
    lease = leases.course_lease(exports, 7)
    mine = lease.acquire("e1", "run-a", now=NOW)
    near = mine.expires_at - leases.RENEW_MARGIN / 2
    renewed = lease.renew(mine, now=near)
    assert renewed is not None and renewed.token != mine.token
    assert renewed.expires_at == near + leases.LEASE_TTL
    # A taker that had seen the old token finds its mark taken: the lease is held.
    assert not lease._claim_takeover(mine)
    assert lease.acquire("e2", "run-b", now=near).held_by("e1", "run-a")
    # When the renewed lease runs out in turn, it can be taken over (a fresh mark).
    after = renewed.expires_at + timedelta(seconds=1)
    assert lease.acquire("e2", "run-b", now=after).held_by("e2", "run-b")
    # Far from expiry a renewal keeps its token (no mark per renewal).
    again = lease.acquire("e3", "run-c", now=after + leases.LEASE_TTL * 2)
    assert lease.renew(again, now=after + leases.LEASE_TTL * 2 + timedelta(seconds=20)) == (
        again.model_copy(update={"expires_at": again.expires_at + timedelta(seconds=20)})
    )
