"""The export lifecycle through the flows, in-process on the Prefect harness: concurrent
runs of one request, identical requests joining one export, and no token anywhere a
Prefect user can read."""

from __future__ import annotations

import email
import functools
import hashlib
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from typing import Any

import pytest
from flowkit import SIGNING_KEY, LocalSite
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)

from course_exports import leases, links
from course_exports.errors import ConflictError
from course_exports.export_records import ExportRecord, ExportResult, ExportStatus
from course_exports.lake import read_course
from course_exports.storage import open_location
from flows.export_access_data import export_access_data
from flows.export_course import export_course

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]

#: Anything shaped like one of our tokens: base64url payload "." base64url HMAC-SHA256.
#: How long the course stays busy with someone else's export (longer than the runs take
#: to start on a loaded machine, so all of them meet it).
BUSY_S = 20
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{43}")


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released together; each one's result or exception."""
    barrier = threading.Barrier(len(calls))

    def go(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(go, calls))


def manifests(site: LocalSite) -> list[ExportRecord]:
    return [
        ExportRecord.model_validate_json(p.read_bytes())
        for p in sorted(site.exports.glob("*/*/manifest.json"))
    ]


def test_same_request_id_with_other_selections_at_once(site: LocalSite) -> None:
    """Issue 8.1: the first caller's link serves the first caller's zip, the other run is
    refused, and nothing is written beside the export."""
    course = read_course(open_location(str(site.lake)), site.course)
    first, second = course.assignment_ids()[:2]
    outcomes = at_once(
        [
            lambda: export_course(
                course_id=site.course,
                requested_by=site.teacher,
                request_id="same-1",
                assignment_ids=[first],
                notify=False,
            ),
            lambda: export_course(
                course_id=site.course,
                requested_by=site.teacher,
                request_id="same-1",
                assignment_ids=[second],
                notify=False,
            ),
        ]
    )
    [result] = [o for o in outcomes if isinstance(o, ExportResult)]
    [refused] = [o for o in outcomes if isinstance(o, Exception)]
    assert isinstance(refused, ConflictError), refused
    [record] = manifests(site)
    assert record.status is ExportStatus.READY
    assert record.parameters == result.parameters and record.sha256 == result.sha256
    files = [p for p in site.export_files() if p.name != "manifest.json"]
    assert [p.name for p in files] == [result.file_name]
    # Beside it only the job's done mark: no lease left, nothing of the refused run.
    [mark] = site.marks()
    assert mark.name.startswith(".done-") and result.export_id in mark.read_text()
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == result.sha256


def test_identical_requests_make_one_export_and_each_asker_gets_mail(site: LocalSite) -> None:
    """Teachers pressing Export on a course that is busy: their identical requests queue
    as one export, and each gets the same link by mail."""
    exports = open_location(str(site.exports))
    busy = leases.course_lease(exports, site.course).acquire(
        "f" * 32, "someone-else", ttl=timedelta(seconds=BUSY_S)
    )
    teachers = site.summary.teachers[site.course]
    outcomes = at_once(
        [
            functools.partial(export_course, course_id=site.course, requested_by=teacher)
            for teacher in teachers + teachers[:1]
        ]
    )
    assert datetime.now(UTC) >= busy.expires_at  # they did wait for the course
    assert all(isinstance(o, ExportResult) for o in outcomes), outcomes
    assert len({o.export_id for o in outcomes}) == 1
    assert len({o.download_url for o in outcomes}) == 1
    [record] = manifests(site)
    assert record.status is ExportStatus.READY
    mails = [email.message_from_bytes(p.read_bytes(), policy=default_policy) for p in site.mails()]
    assert len(mails) == len(outcomes)  # one ready mail per request that asked for mail
    bodies = [m.get_body(("plain",)).get_content() for m in mails]  # type: ignore[union-attr]
    assert all(outcomes[0].download_url in body for body in bodies)
    assert list(site.exports.glob("*/.lease-*.json")) == []  # every lease given back
    # The expired busy lease was taken over exactly once; its mark stays for the purge.
    assert len(list(site.exports.glob(f"*/.lease-course{leases.TAKEN_INFIX}*"))) == 1


def valid_tokens(text: str) -> list[str]:
    found = []
    for candidate in TOKEN_SHAPE.findall(text):
        for purpose in (links.DOWNLOAD, links.LAUNCH, links.SESSION):
            try:
                links.verify(SIGNING_KEY.encode(), candidate, purpose=purpose)
            except links.InvalidTokenError:
                continue
            found.append(candidate)
    return found


def test_nothing_a_prefect_user_reads_holds_a_token(site: LocalSite) -> None:
    """Issue 8.2: artifacts, logs, events and run names of export runs hold no token
    that lists or downloads an export."""
    states = [
        export_course(
            course_id=site.course, requested_by=site.teacher, notify=True, return_state=True
        ),
        export_access_data(
            course_id=site.course, requested_by=site.teacher, notify=True, return_state=True
        ),
    ]
    results = [ExportResult.model_validate(s.result()) for s in states]
    assert all(valid_tokens(r.download_url) for r in results)  # the detector works
    run_ids = [s.state_details.flow_run_id for s in states if s.state_details.flow_run_id]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids))
        )
        assert {a.type for a in artifacts} >= {"markdown", "result", "progress"}
        runs = [client.read_flow_run(run_id) for run_id in run_ids]
        texts = [a.model_dump_json() for a in artifacts] + [r.model_dump_json() for r in runs]
        deadline = time.monotonic() + 30  # logs reach the API in batches
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids))
            )
            if any("ready" in log.message for log in logs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        texts += [log.model_dump_json() for log in logs]
        runs_as_resources = [f"prefect.flow-run.{run_id}" for run_id in run_ids]
        events = client.request(
            "POST",
            "/events/filter",
            json={"filter": {"any_resource": {"id": runs_as_resources}}, "limit": 50},
        ).json()["events"]
    assert logs and events
    texts += [str(event) for event in events]
    assert [t for t in texts if valid_tokens(t)] == []
    summary = next(a for a in artifacts if a.type == "markdown")
    assert f"/courses/{site.course})" in str(summary.data)  # the Course Data page instead


class Killed(BaseException):
    """Stands for the process dying: nothing after it runs, no handler turns it into a
    failure."""


def test_a_run_killed_between_publish_and_mail_is_told_by_the_next(
    site: LocalSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export is ready but the teacher never got the mail (the run died in between):
    the retry of the same request sends it, once; later repeats send nothing."""
    import tasks.export

    real = tasks.export.send_ready_mail

    class DiesInMail:
        @staticmethod
        def fn(*args: Any, **kwargs: Any) -> Any:
            raise Killed

    monkeypatch.setattr(tasks.export, "send_ready_mail", DiesInMail)
    with pytest.raises(Killed):
        export_course(course_id=site.course, requested_by=site.teacher, request_id="r-mail")
    [record] = manifests(site)
    assert record.status is ExportStatus.READY and record.notified_at is None
    assert site.mails() == []

    monkeypatch.setattr(tasks.export, "send_ready_mail", real)
    again = [
        export_course(course_id=site.course, requested_by=site.teacher, request_id="r-mail")
        for _ in range(2)
    ]
    assert {r.export_id for r in again} == {record.export_id}
    assert len(site.mails()) == 1  # the first retry told the teacher, the second did not
    [told] = manifests(site)
    assert told.notified_at is not None and told.sha256 == record.sha256
