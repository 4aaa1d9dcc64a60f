"""Waiting without a worker, against a real Prefect server and a process worker: a course
export that finds its course busy gives its process back (its run goes to a Scheduled
``AwaitingExport`` state and comes back later), identical requests share one export, and
nothing is left per course on the server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from e2e_kit import SIGNING_KEY, Site, make_site, state_names

from course_exports import leases
from course_exports.storage import open_location
from deployments.lms_client import LmsClient
from deployments.local_stack import run_worker
from sample_lake import tiny_lake_spec

pytestmark = [pytest.mark.e2e]

COURSE = "export-course/export-course"
ACCESS = "export-access-data/export-access-data"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return make_site(
        tmp_path_factory.mktemp("e2e-lifecycle"),
        tiny_lake_spec(),
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/hook",
    )


@pytest.fixture(scope="module")
def lms(prefect_deployments: str, site: Site) -> Iterator[LmsClient]:
    env = {
        **site.env(),
        "COURSE_EXPORT_WEBHOOK_URL": "",
        "COURSE_EXPORT_BUSY_RETRY_SECONDS": "2",
        # A worker fetches runs due within this many seconds and lets them wait in their
        # process; 0 so that a waiting run holds no process at all (docs/operations.md).
        "PREFECT_WORKER_PREFETCH_SECONDS": "0",
    }
    # One run at a time: a run that waited inside its process would stop everything else.
    with (
        run_worker(prefect_deployments, "e2e-lifecycle", site.root / "worker", env, limit=1),
        LmsClient(prefect_deployments, signing_key=SIGNING_KEY, public_url=site.public_url) as c,
    ):
        yield c


def test_a_busy_course_gives_its_worker_back_and_identical_requests_share(
    lms: LmsClient, site: Site
) -> None:
    course = site.summary.course_ids[0]
    first, second = site.summary.teachers[course][:2]
    exports = open_location(str(site.exports))
    # Another export of the course is packing: its run renews the course lease until the
    # test lets it finish (however slowly this machine starts flow runs).
    lease = leases.course_lease(exports, course)
    busy = lease.acquire("f" * 32, "someone-else")
    finished = threading.Event()

    def keep_busy() -> None:
        holder = busy
        while not finished.wait(2):
            holder = lease.renew(holder) or holder

    renewer = threading.Thread(target=keep_busy, daemon=True)
    renewer.start()
    try:
        zips = [
            lms.trigger(COURSE, {"course_id": course, "requested_by": teacher}, request_id=rid)
            for teacher, rid in ((first, "busy-zip-1"), (second, "busy-zip-2"))
        ]
        access = lms.trigger(
            ACCESS, {"course_id": course, "requested_by": first}, request_id="busy-3"
        )
        # The access export runs on the only worker slot while both zips wait for the
        # course: they gave the slot back.
        lms.wait(access.id, timeout_s=900, poll_s=1)
        for ref in zips:
            assert lms.read_run(ref.id)["state_type"] != "COMPLETED"
    finally:
        finished.set()
        renewer.join()
        lease.release(lease.read() or busy)
    results = []
    for ref in zips:
        lms.wait(ref.id, timeout_s=900, poll_s=1)
        results.append(lms.result(ref.id))
    # Two teachers, one zip: the same export, the same link.
    assert results[0]["export_id"] == results[1]["export_id"]
    assert results[0]["download_url"] == results[1]["download_url"]
    assert [p for p in site.manifests(course) if '"course"' in p.read_text()] == [
        site.exports / str(course) / results[0]["export_id"] / "manifest.json"
    ]
    for ref in zips:
        names = state_names(lms.api_url, ref.id)
        assert "AwaitingExport" in names
        # Waiting is not a crash: the process that gave its worker back exited cleanly.
        assert "Crashed" not in names, names
    # Nothing left behind: no lease, nothing per course on the server.
    assert list(site.exports.glob("*/.lease-*.json")) == []


def test_twins_that_never_run_together_share_one_export(lms: LmsClient, site: Site) -> None:
    """Two teachers ask for the same access data at once; the one worker slot runs the
    requests one after the other, so the second starts after the first is ready. It
    takes that export (made after it asked) instead of making it again."""
    course = site.summary.course_ids[1]
    first, second = site.summary.teachers[course][:2]
    refs = [
        lms.trigger(ACCESS, {"course_id": course, "requested_by": teacher}, request_id=rid)
        for teacher, rid in ((first, "twin-1"), (second, "twin-2"))
    ]
    results = []
    for ref in refs:
        lms.wait(ref.id, timeout_s=900, poll_s=1)
        results.append(lms.result(ref.id))
    assert results[0]["export_id"] == results[1]["export_id"]
    assert [p for p in site.manifests(course) if '"access-data"' in p.read_text()] == [
        site.exports / str(course) / results[0]["export_id"] / "manifest.json"
    ]
    for ref in refs:
        assert "AwaitingExport" not in state_names(lms.api_url, ref.id)  # they never overlapped
    # Asked again now, after it was ready: a new export with today's data.
    again = lms.trigger(ACCESS, {"course_id": course, "requested_by": first}, request_id="twin-3")
    lms.wait(again.id, timeout_s=900, poll_s=1)
    assert lms.result(again.id)["export_id"] != results[0]["export_id"]
