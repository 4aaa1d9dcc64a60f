"""Crashes, end to end: a real Prefect server with the project's deployments and
automations, real process workers, real processes killed by pid, a real SMTP server.

- kill -9 of the flow-run process mid-zip: Crashed at once, nothing published, one
  automatic retry, one mail, and the LMS client sees the retry's outcome;
- kill -9 of the worker (and its flow run: the machine vanished): the zombie automation
  marks the run Crashed when its heartbeats stop, then the same retry;
- the Prefect server stopped for 30 s while an export packs: the export finishes and is
  recorded once the server is back;
- S3 answering 503 to everything for 60 s mid-zip: the export completes or fails with a
  teacher-safe reason, and leaves nothing behind.

To keep the suite short the courses are small and this module's server gets a zombie
window of 60 s (production: deployments/automations.py's 120 s).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from conftest import SmtpServer
from e2e_kit import (
    SIGNING_KEY,
    Site,
    export_folder_files,
    flow_run_process,
    flow_runs,
    freeze,
    kill_hard,
    make_site,
    partial_files,
    resume,
    state_names,
    wait_for,
)
from faults import faulty_proxy

from course_exports.access_log.clustered import COPY_DIR
from course_exports.lake import read_users
from course_exports.storage import open_location
from deployments import automations
from deployments.lms_client import CRASH_RETRY_TAG, FlowRunRef, LmsClient, RunFailed
from deployments.local_stack import (
    LocalServer,
    LocalWorker,
    install_automations,
    run_server,
    run_worker,
    set_up,
)
from sample_lake import LakeSpec, generate_lake

pytestmark = [pytest.mark.e2e]

COURSE = "export-course/export-course"
ZOMBIE_AFTER = timedelta(seconds=60)
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
#: A server start took over 120 s while the machine was shared; these tests restart one.
SERVER_START_S = 300
#: Courses of about 30 MB in 200 files: a zip takes a second or two, long enough to be
#: caught mid-write, short enough for the suite.
SPEC = LakeSpec(
    seed=3,
    courses=4,
    students=12,
    teachers=1,
    assignments=3,
    events=500,
    days=10,
    files_per_workspace=6,
    file_bytes=150_000,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    home = tmp_path_factory.mktemp("crash-server")
    with run_server(home, timeout_s=SERVER_START_S) as server:
        set_up(server.api_url, home, zombie_after=ZOMBIE_AFTER)
        yield server


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    # Links are not followed and the LMS webhook is not the subject here.
    return make_site(tmp_path_factory.mktemp("crash-site"), SPEC, "http://127.0.0.1:9", "")


def worker_env(site: Site, smtp: SmtpServer) -> dict[str, str]:
    return {**site.env(), "COURSE_EXPORT_WEBHOOK_URL": "", "COURSE_EXPORT_SMTP_URL": smtp.url}


@pytest.fixture
def lms(server: LocalServer) -> Iterator[LmsClient]:
    with LmsClient(server.api_url) as client:
        yield client


def teacher_of(site: Site, course: int) -> tuple[int, str]:
    teacher = site.summary.teachers[course][0]
    users = read_users(open_location(str(site.lake)))
    return teacher, str(users.filter(pl.col("user_id") == teacher)["email"][0])


def mails_to(smtp: SmtpServer, address: str) -> list[str]:
    """Subjects of the mails the SMTP server accepted for ``address``."""
    return [
        str(message["Subject"])
        for envelope, message in zip(smtp.envelopes, smtp.messages, strict=True)
        if address in envelope.rcpt_tos
    ]


def run_state(api_url: str, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=30)
    response.raise_for_status()
    run: dict[str, Any] = response.json()
    return run


def catch_mid_zip(worker: LocalWorker, ref: FlowRunRef, site: Site, course: int) -> Any:
    """The flow-run process, stopped (SIGSTOP) while its zip is half-written."""
    process = wait_for(
        "the flow-run process", lambda: flow_run_process(worker.process.pid, ref.id), 120
    )
    wait_for("the zip being written", lambda: partial_files(site, course), 120)
    freeze(process)
    manifests = [json.loads(p.read_text()) for p in site.manifests(course)]
    assert [m["status"] for m in manifests] == ["pending"], "the zip finished before the kill"
    return process


def retries_of(api_url: str, ref: FlowRunRef) -> list[dict[str, Any]]:
    runs = flow_runs(api_url, tags={"all_": [CRASH_RETRY_TAG]})
    return [r for r in runs if r["parameters"].get("request_id") == ref.parameters["request_id"]]


def settled(api_url: str, request_id: str) -> bool:
    """Every run of the request, and every recovery run an automation started, is over
    (the schedules' own runs of other deployments come and go meanwhile)."""
    for run in flow_runs(api_url):
        mine = (run["parameters"] or {}).get("request_id") == request_id
        recovery = "recovery" in run["tags"] and not run["auto_scheduled"]
        if (mine or recovery) and run["state_type"] not in FINAL:
            return False
    return True


def check_one_good_export(site: Site, course: int, result: dict[str, Any]) -> None:
    """One ready export of the course, its folder holding the manifest and the published
    file only: the killed attempt's partial file is gone."""
    assert result["status"] == "ready"
    folders = export_folder_files(site, course)
    assert folders == {
        result["export_id"]: sorted(["manifest.json", Path(result["file_url"]).name])
    }
    manifest = json.loads(
        (site.exports / str(course) / result["export_id"] / "manifest.json").read_text()
    )
    assert manifest["status"] == "ready" and manifest["sha256"] == result["sha256"]
    assert Path(result["file_url"]).stat().st_size == result["size_bytes"]


def test_automations_are_installed_once(server: LocalServer) -> None:
    # set_up ran once for the fixture; run the installer again, as a second `make deploy`.
    install_automations(server.api_url, server.home, ZOMBIE_AFTER)
    response = httpx.post(f"{server.api_url}/automations/filter", json={}, timeout=30)
    response.raise_for_status()
    names = sorted(a["name"] for a in response.json())
    assert names == sorted([automations.ZOMBIE_NAME, automations.RETRY_NAME])
    [zombie] = [a for a in response.json() if a["name"] == automations.ZOMBIE_NAME]
    assert zombie["trigger"]["posture"] == "Proactive"
    assert zombie["trigger"]["within"] == ZOMBIE_AFTER.total_seconds()


def test_killed_flow_run_is_retried_once_and_mailed_once(
    server: LocalServer, site: Site, smtp_server: SmtpServer, lms: LmsClient
) -> None:
    smtp_server.clear()
    course = site.summary.course_ids[0]
    teacher, email = teacher_of(site, course)
    with run_worker(
        server.api_url, "crash-a", site.root / "crash-a", worker_env(site, smtp_server)
    ) as worker:
        ref = lms.trigger(
            COURSE, {"course_id": course, "requested_by": teacher}, request_id="crash-1"
        )
        process = catch_mid_zip(worker, ref, site, course)
        kill_hard(process.pid)
        crashed = wait_for(
            "the run marked Crashed",
            lambda: run_state(server.api_url, ref.id)["state_type"] == "CRASHED" or None,
            60,
        )
        assert crashed
        final = lms.wait(ref.id, timeout_s=240, poll_s=0.5)
        result = lms.result(ref.id)

    assert final.type == "COMPLETED" and final.run_id != ref.id
    [retry] = retries_of(server.api_url, ref)
    assert retry["id"] == final.run_id and retry["state_type"] == "COMPLETED"
    assert retry["parameters"] == run_state(server.api_url, ref.id)["parameters"]
    # The retry did not wait for the dead run's slot (a lease that outlives its run held
    # a retry back for ~5 minutes).
    assert "AwaitingConcurrencySlot" not in state_names(server.api_url, retry["id"])
    check_one_good_export(site, course, result)
    assert result["request_id"] == "crash-1"
    # The retry mailed before it completed; the recovery runs mail only a crashed retry.
    wait_for("every run final", lambda: settled(server.api_url, ref.parameters["request_id"]), 300)
    [subject] = mails_to(smtp_server, email)
    assert "is ready" in subject


def test_killed_worker_runs_are_found_by_their_heartbeats_and_retried(
    server: LocalServer, site: Site, smtp_server: SmtpServer, lms: LmsClient
) -> None:
    """The worker and its flow run killed together (the machine vanished): nobody tells
    the server, so the run is Running until the zombie automation notices that its
    heartbeats stopped; then the retry runs on the machine that is left."""
    smtp_server.clear()
    course = site.summary.course_ids[2]
    teacher, email = teacher_of(site, course)
    env = worker_env(site, smtp_server)
    with run_worker(server.api_url, "doomed", site.root / "doomed", env) as doomed:
        ref = lms.trigger(
            COURSE, {"course_id": course, "requested_by": teacher}, request_id="zombie-1"
        )
        process = catch_mid_zip(doomed, ref, site, course)
        kill_hard(doomed.process.pid, process.pid)
    assert run_state(server.api_url, ref.id)["state_type"] == "RUNNING"  # nobody told it
    with run_worker(server.api_url, "survivor", site.root / "survivor", env):
        crashed = wait_for(
            "the zombie automation",
            lambda: run_state(server.api_url, ref.id)["state_type"] == "CRASHED" or None,
            ZOMBIE_AFTER.total_seconds() + 90,
        )
        assert crashed
        assert "No heartbeat" in (run_state(server.api_url, ref.id)["state"]["message"] or "")
        final = lms.wait(ref.id, timeout_s=300, poll_s=1)
        result = lms.result(ref.id)
        wait_for(
            "every run final", lambda: settled(server.api_url, ref.parameters["request_id"]), 300
        )
    [retry] = retries_of(server.api_url, ref)
    assert retry["id"] == final.run_id and retry["labels"]["prefect.worker.name"] == "survivor"
    check_one_good_export(site, course, result)
    [subject] = mails_to(smtp_server, email)
    assert "is ready" in subject


def test_export_survives_the_server_stopped_for_30_s(
    tmp_path: Path, site: Site, smtp_server: SmtpServer
) -> None:
    """Its own server (this one is stopped), set up as `make deploy` does: production
    zombie window, so the outage must not get a live run marked Crashed either."""
    smtp_server.clear()
    course = site.summary.course_ids[1]
    teacher, email = teacher_of(site, course)
    with (
        run_server(tmp_path / "server", timeout_s=SERVER_START_S) as server,
        LmsClient(server.api_url) as lms,
    ):
        set_up(server.api_url, server.home)
        with run_worker(
            server.api_url, "outage", tmp_path / "worker", worker_env(site, smtp_server)
        ) as worker:
            ref = lms.trigger(
                COURSE, {"course_id": course, "requested_by": teacher}, request_id="outage-1"
            )
            process = catch_mid_zip(worker, ref, site, course)
            server.stop()  # while the flow run is frozen mid-zip: it packs on with no server
            resume(process)
            time.sleep(30)
            assert worker.process.poll() is None, "the worker died with the server"
            server.start()
            final = lms.wait(ref.id, timeout_s=300, poll_s=1)
            result = lms.result(ref.id)
        assert final.run_id == ref.id  # the same run finished: no crash, no retry
        assert "Crashed" not in state_names(server.api_url, ref.id)
    check_one_good_export(site, course, result)
    [subject] = mails_to(smtp_server, email)
    assert "is ready" in subject


#: A course whose zip is two 16 MiB upload parts: the outage hits a multipart upload.
S3_SPEC = LakeSpec(
    seed=5,
    courses=1,
    students=12,
    teachers=1,
    assignments=3,
    events=300,
    days=10,
    files_per_workspace=6,
    file_bytes=250_000,
)


def test_s3_down_for_60_s_mid_zip(
    tmp_path: Path, server: LocalServer, s3_server: Any, smtp_server: SmtpServer
) -> None:
    """Lake and exports in buckets behind the fault proxy, which answers 503 to every
    request for 60 s once a third of the course's files were read."""
    smtp_server.clear()
    lake_url = f"s3://{s3_server.make_bucket('outage-lake')}/lake"
    exports_bucket = s3_server.make_bucket("outage-exports")
    lake = open_location(lake_url, s3_endpoint_url=s3_server.endpoint_url)
    summary = generate_lake(lake, S3_SPEC, now=datetime.now(UTC))
    [course] = summary.course_ids
    teacher = summary.teachers[course][0]
    users = read_users(lake)
    email = str(users.filter(pl.col("user_id") == teacher)["email"][0])
    with (
        faulty_proxy(s3_server.endpoint_url) as proxy,
        LmsClient(server.api_url) as lms,
    ):
        env = {
            "COURSE_EXPORT_LAKE_URL": lake_url,
            "COURSE_EXPORT_EXPORTS_URL": f"s3://{exports_bucket}/exports",
            "COURSE_EXPORT_S3_ENDPOINT_URL": proxy.url,
            "COURSE_EXPORT_SMTP_URL": smtp_server.url,
            "COURSE_EXPORT_SIGNING_KEY": SIGNING_KEY,
            "COURSE_EXPORT_PUBLIC_URL": "http://127.0.0.1:9",
        }
        with run_worker(server.api_url, "s3-outage", tmp_path / "worker", env):
            ref = lms.trigger(
                COURSE, {"course_id": course, "requested_by": teacher}, request_id="s3-down"
            )
            files = summary.workspace_files

            def workspace_reads() -> bool:
                reads = [p for m, p in list(proxy.seen) if m == "GET" and "/workspaces/" in p]
                return len(reads) >= files // 3

            wait_for("a third of the files read", workspace_reads, 300)
            outage = proxy.outage(60)
            try:
                final = lms.wait(ref.id, timeout_s=600, poll_s=1)
                outcome = lms.result(ref.id)
            except RunFailed as failed:
                final, outcome = None, {"status": "failed", "message": str(failed)}
    assert len(outage.hits) > 10, "the outage met no request"

    client = s3_server.client()
    pending = client.list_multipart_uploads(Bucket=exports_bucket).get("Uploads", [])
    assert pending == [], "an upload was left incomplete"
    # The worker also runs what the server schedules meanwhile: the access-log indexer
    # may have put its copy under the exports root (it did once in CI); not this export's.
    listed = [
        o["Key"]
        for o in client.list_objects_v2(Bucket=exports_bucket).get("Contents", [])
        if not o["Key"].startswith(f"exports/{COPY_DIR}/")
    ]
    # Beside the export folders only the job's done mark, once an export is ready.
    marks = [k for k in listed if Path(k).name.startswith(".done-")]
    keys = sorted(k for k in listed if k not in marks)
    subjects = mails_to(smtp_server, email)
    if final is not None:  # it retried and completed
        assert outcome["status"] == "ready"
        prefix = f"exports/{course}/{outcome['export_id']}/"
        assert keys == sorted([prefix + "manifest.json", prefix + Path(outcome["file_url"]).name])
        head = client.head_object(
            Bucket=exports_bucket, Key=prefix + Path(outcome["file_url"]).name
        )
        assert head["ContentLength"] == outcome["size_bytes"]
        [mark] = marks
        body = client.get_object(Bucket=exports_bucket, Key=mark)["Body"].read()
        assert outcome["export_id"] in body.decode()
        assert [s for s in subjects if "is ready" in s] == subjects and len(subjects) == 1
    else:  # it failed: a reason a teacher can read, and no file
        assert all(key.endswith("manifest.json") for key in keys), keys
        assert marks == []
        [subject] = subjects
        assert "could not be produced" in subject
        [mail] = [m for m in smtp_server.messages if email in str(m["To"])]
        body = mail.get_body(("plain",))
        assert body is not None and "storage service" in body.get_content()
