"""The ``course-exports`` command line and the project's prefect.toml.

``up`` is started for real (a Prefect server, the served deployments and the web app)
and stopped with Ctrl-C (SIGINT); ``export --watch`` runs in tests/test_e2e_page.py,
beside a worker.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pagekit import KEY, PageSite

from course_exports import links
from course_exports.export_records import ExportKind
from deployments import cli
from deployments.local_stack import REPO_ROOT, free_port


def test_prefect_toml_gives_the_project_its_prefect_settings() -> None:
    """Run from the repo root with no PREFECT_* variable, Prefect reads prefect.toml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    probe = (
        "from prefect.settings import get_current_settings as g; s = g(); "
        "print(s.server.ephemeral.startup_timeout_seconds, s.server.analytics_enabled)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.split() == ["120", "False"], done.stderr


@pytest.fixture
def cli_env(page_site: PageSite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> PageSite:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("COURSE_EXPORT_LAKE_URL", page_site.settings.lake_url)
    monkeypatch.setenv("COURSE_EXPORT_EXPORTS_URL", page_site.settings.exports_url)
    monkeypatch.setenv("COURSE_EXPORT_SIGNING_KEY", KEY)
    monkeypatch.setenv("COURSE_EXPORT_PUBLIC_URL", page_site.base_url)
    return page_site


def test_launch_link_opens_the_page_for_a_teacher_only(
    cli_env: PageSite, capsys: pytest.CaptureFixture[str]
) -> None:
    course, teacher = cli_env.course, cli_env.teacher()
    assert cli.main(["launch-link", str(course), str(teacher), "--minutes", "2"]) == 0
    url = capsys.readouterr().out.strip()
    claims = links.verify_user(cli_env.key, url.split("token=")[1], purpose=links.LAUNCH)
    assert (claims.course_id, claims.user_id) == (course, teacher)
    assert claims.expires_at - links.LAUNCH_TTL < claims.expires_at - timedelta(minutes=2)
    with httpx.Client() as client:
        assert client.get(url).status_code == 200
        assert client.get(f"{cli_env.base_url}/courses/{course}").status_code == 200

    assert cli.main(["launch-link", str(course), str(cli_env.student())]) == 2
    assert "is a Student" in capsys.readouterr().err


def test_list_shows_every_state(cli_env: PageSite, capsys: pytest.CaptureFixture[str]) -> None:
    course = cli_env.summary.course_ids[3]
    ready = cli_env.make(course=course, kind=ExportKind.LTI_SETTINGS)
    pending = cli_env.make(course=course, status="pending")
    assert cli.main(["list", str(course)]) == 0
    out, err = capsys.readouterr()
    assert "PREFECT_API_URL is not set" in err  # queued runs need the API; the rest is shown
    assert re.search(rf"{ready.export_id}\s+LTI settings\s+Ready", out), out
    assert re.search(rf"{pending.export_id}\s+User access data\s+Running", out), out
    assert "expires in 6 days" in out


def test_export_needs_the_prefect_api(
    cli_env: PageSite, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["export", "lti", str(cli_env.course), "--requested-by", str(cli_env.teacher())]
    )
    assert code == 2
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err


@pytest.mark.e2e
def test_up_starts_the_stack_and_ctrl_c_stops_it(pristine_lake: Any, tmp_path: Path) -> None:
    shutil.copytree(pristine_lake[0], tmp_path / "lake")  # a lake there: no sample to write
    web_port, prefect_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "COURSE_EXPORT_"))}
    env.update(
        COURSE_EXPORT_LAKE_URL=str(tmp_path / "lake"),
        COURSE_EXPORT_EXPORTS_URL=str(tmp_path / "exports"),
        COURSE_EXPORT_OUTBOX=str(tmp_path / "outbox"),
        COURSE_EXPORT_PUBLIC_URL=f"http://127.0.0.1:{web_port}",
    )
    command = [
        str(Path(sys.executable).parent / "course-exports"),
        "up",
        "--home",
        str(tmp_path / "stack"),
        "--prefect-port",
        str(prefect_port),
    ]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if "press Ctrl-C" in line:
                break
        text = "".join(output)
        assert "press Ctrl-C" in text, text
        assert (tmp_path / ".env").read_text().startswith("COURSE_EXPORT_SIGNING_KEY=")
        launch = re.search(r"http://\S+/launch\?token=\S+", text)
        assert launch, text
        with httpx.Client() as client:
            assert client.get(launch.group(0)).status_code == 200
            page = client.get(launch.group(0).split("/launch")[0])
            assert page.status_code == 200 and "Export course data" in page.text
            assert "disabled" not in page.text  # the page can start exports
        api = f"http://127.0.0.1:{prefect_port}/api"
        names = {d["name"] for d in httpx.post(f"{api}/deployments/filter", json={}).json()}
        assert {"export-course", "export-access-data", "purge-expired-exports"} <= names
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
    assert process.returncode == 0, rest
    assert "stopped" in rest
    for port in (web_port, prefect_port):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
