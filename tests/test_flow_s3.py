"""The export flows against real S3 (SeaweedFS) and real SMTP (aiosmtpd).

Lake and exports live in buckets, the mail goes through the SMTP server, and the link in
the mail is fetched over HTTP from the download service, which redirects to a presigned
S3 URL. The course export also runs through a proxy that fails one upload part and one
workspace read: it must still complete, byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from faults import faulty_proxy
from flowkit import SIGNING_KEY
from reference import lake_reference_csv

from course_exports import registry
from course_exports.access_log import AccessWindow
from course_exports.settings import load_settings
from course_exports.storage import open_location
from deployments.download_service import create_app
from flows.export_access_data import export_access_data
from flows.export_course import export_course
from flows.import_project import import_project
from sample_lake import LakeSpec, LakeSummary, generate_lake, tiny_lake_spec

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]

BIG_SPEC = LakeSpec(
    seed=3, courses=1, students=12, assignments=3, events=500, files_per_workspace=8,
    file_bytes=80_000, days=30,
)  # fmt: skip


@dataclass(frozen=True)
class Lakes:
    """The same lake twice: in a bucket (what the flows read) and on disk (the reference)."""

    local: Path
    url: str
    summary: LakeSummary


def twin_lakes(s3: Any, tmp: Path, spec: LakeSpec) -> Lakes:
    now = datetime.now(UTC).replace(microsecond=0)
    summary = generate_lake(open_location(str(tmp)), spec, now=now)
    url = f"s3://{s3.make_bucket('lake')}/lake"
    generate_lake(open_location(url, s3_endpoint_url=s3.endpoint_url), spec, now=now)
    return Lakes(tmp, url, summary)


@pytest.fixture(scope="module")
def tiny_lakes(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Lakes:
    return twin_lakes(s3_server, tmp_path_factory.mktemp("tiny"), tiny_lake_spec())


@pytest.fixture(scope="module")
def big_lakes(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Lakes:
    return twin_lakes(s3_server, tmp_path_factory.mktemp("big"), BIG_SPEC)


@dataclass(frozen=True)
class S3Site:
    lakes: Lakes
    exports_url: str
    smtp: Any

    @property
    def course(self) -> int:
        return self.lakes.summary.course_ids[0]

    @property
    def teacher(self) -> int:
        return self.lakes.summary.teachers[self.course][0]


@contextmanager
def s3_site(
    lakes: Lakes,
    endpoint_url: str,
    s3: Any,
    smtp: Any,
    serve_app: Any,
    free_port: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[S3Site]:
    """Settings for buckets + SMTP in the environment, and the download service running."""
    port = free_port()
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("COURSE_EXPORT_")]:
        monkeypatch.delenv(name)
    exports_url = f"s3://{s3.make_bucket('exports')}/exports"
    values = {
        "LAKE_URL": lakes.url,
        "EXPORTS_URL": exports_url,
        "S3_ENDPOINT_URL": endpoint_url,
        "SMTP_URL": smtp.url,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SIGNING_KEY": SIGNING_KEY,
    }
    for name, value in values.items():
        monkeypatch.setenv(f"COURSE_EXPORT_{name}", value)
    smtp.clear()
    with serve_app(create_app(load_settings()), port=port):
        yield S3Site(lakes, exports_url, smtp)


def download(url: str) -> bytes:
    """Fetch a mailed link as a browser would: the service redirects to presigned S3."""
    response = httpx.get(url, follow_redirects=True, timeout=60)
    assert response.status_code == 200, response.text
    assert response.history and response.history[0].status_code == 307
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in str(response.url)
    return response.content


def mailed_link(smtp: Any, result: Any) -> str:
    [message] = smtp.messages
    body = message.get_body(("plain",)).get_content()
    assert result.download_url in body
    assert result.course_name in body
    return str(result.download_url)


def test_access_data_on_s3(
    tiny_lakes: Lakes,
    s3_server: Any,
    smtp_server: Any,
    serve_app: Any,
    get_free_port: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with s3_site(
        tiny_lakes, s3_server.endpoint_url, s3_server, smtp_server, serve_app, get_free_port,
        monkeypatch, tmp_path,
    ) as site:  # fmt: skip
        result = export_access_data(
            course_id=site.course, requested_by=site.teacher, notify=True, timezone="Europe/Berlin"
        )
        assert result.file_url.startswith(site.exports_url + "/")
        data = download(mailed_link(smtp_server, result))
    window = AccessWindow(
        datetime.fromisoformat(result.details["window_start"]),
        datetime.fromisoformat(result.details["window_end"]),
    )
    expected = lake_reference_csv(tiny_lakes.local, site.course, window, timezone="Europe/Berlin")
    assert data == expected
    assert hashlib.sha256(data).hexdigest() == result.sha256


def test_course_zip_on_s3_survives_faults_and_imports(
    big_lakes: Lakes,
    s3_server: Any,
    smtp_server: Any,
    serve_app: Any,
    get_free_port: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # small parts, so the zip goes up in several and one of them can fail
    monkeypatch.setattr(registry, "UPLOAD_PART_BYTES", 5 * 2**20)
    with faulty_proxy(s3_server.endpoint_url) as proxy:
        part = proxy.fail(lambda method, path: method == "PUT" and "partNumber=2" in path)
        # one workspace object fails more often than botocore retries: our own retry reads it
        victim = next(
            p.relative_to(big_lakes.local).as_posix()
            for p in sorted((big_lakes.local / "workspaces").rglob("*"))
            if p.is_file() and p.stat().st_size and re.fullmatch(r"[\w/.-]+", str(p))
        )
        read = proxy.fail(lambda method, path: method == "GET" and victim in path, times=6)
        with s3_site(
            big_lakes, proxy.url, s3_server, smtp_server, serve_app, get_free_port,
            monkeypatch, tmp_path,
        ) as site:  # fmt: skip
            result = export_course(course_id=site.course, requested_by=site.teacher)
            data = download(mailed_link(smtp_server, result))
            assert len(part.hits) == 1 and len(read.hits) == 6
            # One GET per workspace object, no HEAD: requests are what S3 bills and what
            # a course of 60,000 small files waits on.
            keys = (
                (method, unquote(urlsplit(path).path).split("/workspaces/", 1)[1])
                for method, path in proxy.seen
                if "/workspaces/" in path and method in ("GET", "HEAD")
            )
            # <course>/<assignment>/<user>/<file>: objects, not the listing's own requests
            reads = Counter(key for key in keys if key[1].count("/") >= 3)
            assert reads
            assert not [key for key in reads if key[0] == "HEAD"]
            victim_key = ("GET", victim.removeprefix("workspaces/"))
            assert reads.pop(victim_key) == 7  # six injected failures, then the read
            assert set(reads.values()) == {1}

            source = {
                p.relative_to(big_lakes.local / "workspaces" / str(site.course)).as_posix(): p
                for p in (big_lakes.local / "workspaces" / str(site.course)).rglob("*")
                if p.is_file()
            }
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                assert zf.testzip() is None
                top = zf.namelist()[0].split("/")[0]
                manifest = json.loads(zf.read(f"{top}/manifest.json"))
                entries = [e for e in manifest["entries"] if "source" in e]
                assert len(entries) == len(source) == result.counts["files"]
                for entry in entries:
                    src = entry["source"]
                    key = f"{src['assignment_id']}/{src['user_id']}/{src['path']}"
                    assert zf.read(f"{top}/{entry['path']}") == source[key].read_bytes(), key
            assert result.size_bytes > 5 * 2**20  # really went up in several parts

            src = entries[0]["source"]
            imported = import_project(
                export_id=result.export_id,
                assignment_id=src["assignment_id"],
                student_id=src["user_id"],
                stack="python-3.12",
                requested_by=site.teacher,
            )
            assert imported.project_url.startswith(site.exports_url + "/projects/")
            exports = open_location(site.exports_url, s3_endpoint_url=s3_server.endpoint_url)
            workspace = exports.relative(imported.workspace_url.removeprefix("s3://"))
            got = {
                e.path.removeprefix(workspace + "/"): exports.read_bytes(e.path)
                for e in exports.iter_files(workspace)
            }
            prefix = f"{src['assignment_id']}/{src['user_id']}/"
            want = {
                k.removeprefix(prefix): v.read_bytes()
                for k, v in source.items()
                if k.startswith(prefix)
            }
            assert got == want
            # A re-import replaces the copy: project.json is the commit point, no rename.
            again = import_project(
                export_id=result.export_id,
                assignment_id=src["assignment_id"],
                student_id=src["user_id"],
                stack="java-21",
                requested_by=site.teacher,
            )
            # Objects, not the listing: SeaweedFS (unlike S3) goes on listing a folder
            # whose objects are all deleted, as an empty common prefix.
            root = exports.relative(again.project_url.removeprefix("s3://"))
            kept = {e.path.removeprefix(root + "/").split("/")[0] for e in exports.iter_files(root)}
            assert (
                kept == {"project.json", again.workspace} and again.workspace != imported.workspace
            )
