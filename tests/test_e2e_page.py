"""The Course Data page in headless Chromium, against a real Prefect server (prefect.yaml
deployed), a process worker and the download service on uvicorn.

Debian's ``chromium`` (``.ci/run`` installs it) driven by Playwright with
``executable_path``: Playwright never downloads a browser. Screenshots of each state go
to the module's temporary folder (printed at the end of the module).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_kit import Site, delete_flow_run, flow_runs, make_site, wait_for

from course_exports import links
from course_exports.access_log import CSV_HEADER
from deployments.download_service import create_app
from deployments.lms_client import LmsClient, course_tag
from deployments.local_stack import free_port, run_worker
from sample_lake import LakeSpec

pytestmark = [pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Enough files that the zip takes a few seconds: long enough to watch it run.
SPEC = LakeSpec(
    seed=11,
    courses=2,
    students=20,
    teachers=2,
    assignments=5,
    events=4_000,
    days=60,
    files_per_workspace=12,
    file_bytes=40_000,
)
STATES_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("page-screenshots")
    yield folder
    print(f"\nscreenshots of the Course Data page: {folder}")


def forget_runs_of(api_url: str, courses: list[int]) -> None:
    """The e2e modules share one Prefect server, and the sample lakes share course ids:
    runs an earlier module left for "course 1001" (of its own lake) would show on this
    module's page as that course's. In production one lake means one course 1001."""
    tags = [course_tag(course) for course in courses]
    for run in flow_runs(api_url, tags={"any_": tags}):
        delete_flow_run(api_url, run["id"])


@pytest.fixture(scope="module")
def site(
    prefect_deployments: str, tmp_path_factory: pytest.TempPathFactory, serve_app: Any
) -> Iterator[tuple[Site, str]]:
    """Lake, worker and web app; yields the site and the app's base URL."""
    port = free_port()
    site = make_site(tmp_path_factory.mktemp("e2e-page"), SPEC, f"http://127.0.0.1:{port}", "")
    forget_runs_of(prefect_deployments, site.summary.course_ids)
    env = {k: v for k, v in site.env().items() if "WEBHOOK" not in k}
    with (
        run_worker(prefect_deployments, "e2e-page", site.root / "worker", env),
        LmsClient(prefect_deployments) as client,
        serve_app(
            create_app(site.settings(), prefect=client, refresh_seconds=0.5), port=port
        ) as base_url,
    ):
        yield site, base_url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright, tmp_path_factory


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile (its own --user-data-dir) per test."""
    playwright, _ = browser
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        accept_downloads=True,
        viewport={"width": 420, "height": 900},  # a phone's width
    )
    try:
        yield context.pages[0] if context.pages else context.new_page()
    finally:
        context.close()


def launch(site: Site, base_url: str, course: int, user: int, **kwargs: Any) -> str:
    return links.launch_url(base_url, site.settings().require_signing_key(), course, user, **kwargs)


def open_page(page: Any, site: tuple[Site, str], course: int, user: int | None = None) -> None:
    """Open the launch link of (course, user: its first teacher by default) and land on
    the course's page."""
    lake_site, base_url = site
    user = user or lake_site.summary.teachers[course][0]
    page.goto(launch(lake_site, base_url, course, user))
    page.wait_for_url(f"{base_url}/courses/{course}")


def course_runs(api_url: str, course: int, flow_name: str) -> list[dict[str, Any]]:
    runs = flow_runs(api_url, tags={"all_": [course_tag(course)]})
    return [
        r for r in runs if r["name"] and r.get("deployment_id") and _flow(api_url, r) == flow_name
    ]


def _flow(api_url: str, run: dict[str, Any]) -> str:
    flow = httpx.get(f"{api_url}/flows/{run['flow_id']}", timeout=30).json()
    return str(flow["name"])


def watch_states(page: Any, selector: str, shots: Path, prefix: str) -> list[str]:
    """Every state the (self-refreshing) page shows for the row until it is ready, with a
    screenshot of each."""
    seen: list[str] = []
    deadline = time.monotonic() + STATES_TIMEOUT_S
    while time.monotonic() < deadline:
        row = page.locator(selector).first
        state = row.get_attribute("data-state") if row.count() else None
        if state and (not seen or seen[-1] != state):
            seen.append(state)
            page.screenshot(path=str(shots / f"{prefix}-{len(seen)}-{state}.png"), full_page=True)
        if state in ("ready", "failed"):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"no final state within {STATES_TIMEOUT_S} s; seen {seen}")


def test_teacher_exports_course_data_and_downloads_it(
    page: Any, site: tuple[Site, str], shots: Path, prefect_deployments: str, tmp_path: Path
) -> None:
    lake_site = site[0]
    course = lake_site.summary.course_ids[0]
    open_page(page, site, course)
    assert "token" not in page.url
    assert "launch" not in page.evaluate("document.referrer + location.href")
    assert page.get_by_text("No exports yet").is_visible()
    page.screenshot(path=str(shots / "course-1-empty.png"), full_page=True)

    with page.expect_navigation():
        page.get_by_role("button", name="Export course data").click()
    assert page.get_by_role("status").inner_text().startswith("Export started")
    row = "#exports li[data-kind=course]"
    assert page.locator(row).first.get_attribute("data-state") == "queued"
    page.screenshot(path=str(shots / "course-2-queued.png"), full_page=True)

    # Pressing Export again while it is queued shows that one instead of starting another.
    with page.expect_navigation():
        page.get_by_role("button", name="Export course data").click()
    assert "already queued or running" in page.get_by_role("status").inner_text()
    assert page.locator(row).count() == 1

    seen = watch_states(page, row, shots, "course-3")
    assert seen[-1] == "ready", seen
    assert "running" in seen and seen.index("running") < seen.index("ready"), seen
    assert len(course_runs(prefect_deployments, course, "export-course")) == 1

    with page.expect_download() as download_info:
        page.locator(row).first.get_by_role("link", name="Download").click()
    download = download_info.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    export_id = page.locator(row).first.get_attribute("data-export-id")
    manifest = json.loads(
        (lake_site.exports / str(course) / export_id / "manifest.json").read_text()
    )
    assert saved.suffix == ".zip" and saved.stat().st_size == manifest["size_bytes"]
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == manifest["sha256"]
    page.screenshot(path=str(shots / "course-4-ready.png"), full_page=True)


def test_access_data_for_a_date_range(
    page: Any, site: tuple[Site, str], shots: Path, tmp_path: Path
) -> None:
    lake_site = site[0]
    course = lake_site.summary.course_ids[0]
    open_page(page, site, course)
    today = datetime.now(UTC).date()
    first, last = today - timedelta(days=20), today - timedelta(days=10)
    page.get_by_label("From (first day, optional)").fill(first.isoformat())
    page.get_by_label("To (last day, included, optional)").fill(last.isoformat())
    page.get_by_label("Time zone").fill("UTC")
    page.get_by_label("For Excel").check()
    page.screenshot(path=str(shots / "access-1-form.png"), full_page=True)
    page.get_by_role("button", name="Export access data").click()
    row = "#exports li[data-kind=access-data]"
    seen = watch_states(page, row, shots, "access-2")
    assert seen[-1] == "ready", seen

    with page.expect_download() as download_info:
        page.locator(row).first.get_by_role("link", name="Download").click()
    saved = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(saved)
    text = saved.read_bytes()
    assert text.startswith(b"\xef\xbb\xbf")  # for Excel: a byte-order mark
    rows = list(csv.DictReader(io.StringIO(text.decode("utf-8-sig"))))
    assert rows, "the window holds events"
    times = {r[next(k for k in r if "date" in k.lower())][:10] for r in rows}
    assert min(times) >= first.isoformat() and max(times) <= last.isoformat()


def test_a_teacher_of_another_course_cannot_see_this_course(
    page: Any, site: tuple[Site, str], shots: Path
) -> None:
    lake_site, base_url = site
    course, other = lake_site.summary.course_ids[:2]
    stranger = lake_site.summary.teachers[other][0]
    page.goto(launch(lake_site, base_url, other, stranger))
    page.wait_for_url(f"{base_url}/courses/{other}")
    response = page.goto(f"{base_url}/courses/{course}")
    assert response.status == 401
    assert page.get_by_role("heading", level=1).inner_text() == "Please open the page from the LMS"
    page.screenshot(path=str(shots / "refused-1-no-session.png"), full_page=True)
    response = page.goto(launch(lake_site, base_url, course, stranger))
    assert response.status == 403
    assert "Only teachers of this course" in page.content()
    page.screenshot(path=str(shots / "refused-2-not-a-teacher.png"), full_page=True)


def test_an_expired_launch_link_shows_the_expired_page(
    page: Any, site: tuple[Site, str], shots: Path
) -> None:
    lake_site, base_url = site
    course = lake_site.summary.course_ids[0]
    teacher = lake_site.summary.teachers[course][0]
    response = page.goto(launch(lake_site, base_url, course, teacher, ttl=timedelta(seconds=-5)))
    assert response.status == 410
    assert page.get_by_role("heading", level=1).inner_text() == "Link expired"
    assert "Admin tab" in page.content()
    page.screenshot(path=str(shots / "refused-3-expired.png"), full_page=True)


def test_a_double_click_makes_one_run(
    page: Any, site: tuple[Site, str], shots: Path, prefect_deployments: str
) -> None:
    lake_site = site[0]
    course = lake_site.summary.course_ids[1]
    open_page(page, site, course)
    row = "#exports li[data-kind=lti-settings]"

    # Chromium sends one request for a double click on a submit button (the second
    # replaces the first navigation); on a slow network both can reach the server, as
    # here: the same form, twice at once, from the page with its cookie.
    statuses = page.evaluate(
        """async () => {
            const form = document.querySelector("form[action$='/exports/lti-settings']");
            const send = () => fetch(form.action, {
                method: "POST", body: new URLSearchParams(new FormData(form)),
                redirect: "manual", credentials: "same-origin"});
            const answers = await Promise.all([send(), send()]);
            return answers.map(a => a.type);
        }"""
    )
    assert statuses == ["opaqueredirect", "opaqueredirect"]  # both were accepted (303)
    page.reload()
    seen = watch_states(page, row, shots, "double-submit")
    assert seen[-1] == "ready", seen
    assert page.locator(row).count() == 1
    assert len(course_runs(prefect_deployments, course, "export-lti-settings")) == 1

    # And the gesture itself: a double click on the button starts exactly one more.
    with page.expect_navigation():
        page.get_by_role("button", name="Export LTI settings").dblclick()
    wait_for("a second LTI export", lambda: page.locator(row).count() == 2)
    page.screenshot(path=str(shots / "double-click.png"), full_page=True)
    wait_for(
        "the second LTI export to be ready",
        lambda: page.locator(f"{row}[data-state=ready]").count() == 2,
        timeout_s=STATES_TIMEOUT_S,
    )
    assert len(course_runs(prefect_deployments, course, "export-lti-settings")) == 2


def test_cli_export_watch_prints_the_link(site: tuple[Site, str], prefect_deployments: str) -> None:
    """``course-exports export … --watch`` triggers as the LMS does and waits for the link."""
    lake_site, _ = site
    course = lake_site.summary.course_ids[1]
    teacher = lake_site.summary.teachers[course][0]
    env = {k: v for k, v in lake_site.env().items() if "WEBHOOK" not in k}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deployments.cli",
            "export",
            "access",
            str(course),
            "--requested-by",
            str(teacher),
            "--watch",
        ],
        env={**os.environ, **env, "PREFECT_API_URL": prefect_deployments},
        cwd=lake_site.root,
        capture_output=True,
        text=True,
        timeout=STATES_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert "access export of course" in done.stdout and "ready:" in done.stderr
    link = done.stdout.strip().splitlines()[-1]
    response = httpx.get(link, timeout=30)
    assert response.status_code == 200
    assert response.text.splitlines()[0] == CSV_HEADER
