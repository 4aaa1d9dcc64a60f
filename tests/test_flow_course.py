"""export-course, export-lti-settings and import-project through Prefect, on a local lake."""

from __future__ import annotations

import csv
import email
import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from flowkit import LocalSite
from importkit import snapshot

from course_exports import export_records, project
from course_exports.errors import InputError, NotFoundError, PermissionDeniedError
from course_exports.export_reader import UnsafeArchiveError
from course_exports.lake import read_course, read_users
from course_exports.storage import open_location
from deployments.download_service import create_app
from flows.export_course import export_course
from flows.export_lti_settings import export_lti_settings
from flows.import_project import import_project

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]


def lake_workspace_files(site: LocalSite, course_id: int) -> dict[tuple[int, int, str], bytes]:
    """Every workspace file of the course's current assignments, read straight from disk."""
    course = read_course(open_location(str(site.lake)), course_id)
    files = {}
    root = site.lake / "workspaces" / str(course_id)
    for path in root.rglob("*"):
        if path.is_file():
            aid, uid, *rest = path.relative_to(root).parts
            if int(aid) in course.assignment_ids():
                files[(int(aid), int(uid), "/".join(rest))] = path.read_bytes()
    return files


def zip_manifest(zf: zipfile.ZipFile) -> tuple[str, dict[str, Any]]:
    top = zf.namelist()[0].split("/")[0]
    return top, json.loads(zf.read(f"{top}/manifest.json"))


def assert_zip_tools_accept(path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "zipfile", "-t", str(path)], check=True, capture_output=True
    )
    if shutil.which("unzip") is None:  # .ci/run installs it; a bare dev machine may lack it
        return
    unzip = subprocess.run(["unzip", "-tqq", str(path)], capture_output=True)
    assert unzip.returncode == 0, unzip.stdout + unzip.stderr


def test_round_trip_every_byte(site: LocalSite, serve_app: Any) -> None:
    result = export_course(course_id=site.course, requested_by=site.teacher)
    path = Path(result.file_url)
    assert result.status == "ready" and result.kind == "course"
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert_zip_tools_accept(path)
    source = lake_workspace_files(site, site.course)
    assert len(source) > 10
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        top, manifest = zip_manifest(zf)
        assert all(name.startswith(f"{top}/") for name in zf.namelist())
        assert all(info.flag_bits & 0x800 for info in zf.infolist())  # UTF-8 names
        assert (
            zf.read(f"{top}/course.json")
            == (site.lake / "courses" / str(site.course) / "course.json").read_bytes()
        )
        roster = list(csv.reader(io.StringIO(zf.read(f"{top}/roster.csv").decode(), newline="")))
        assert roster[0] == ["User ID", "Username", "Email", "First Name", "Last Name", "Role"]
        by_source = {
            (e["source"]["assignment_id"], e["source"]["user_id"], e["source"]["path"]): e
            for e in manifest["entries"]
            if "source" in e
        }
        assert set(by_source) == set(source)
        for key, data in source.items():
            entry = by_source[key]
            assert zf.read(f"{top}/{entry['path']}") == data, key
            assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        for entry in manifest["entries"]:
            assert zf.getinfo(f"{top}/{entry['path']}").file_size == entry["size"]
    assert manifest["export_id"] == result.export_id
    assert manifest["counts"]["files"] == result.counts["files"] == len(source)
    assert {a["id"] for a in manifest["assignments"]} == set(
        read_course(open_location(str(site.lake)), site.course).assignment_ids()
    )
    # each workspace names its owner as the lake's user directory does
    users = dict(
        read_users(open_location(str(site.lake))).select("user_id", "username").iter_rows()
    )
    assert manifest["workspaces"]
    assert all(w["username"] == users.get(w["user_id"]) for w in manifest["workspaces"])
    # folder names are unique and safe even though two assignments are called "Homework"
    folders = [a["folder"] for a in manifest["assignments"]]
    assert len(set(f.casefold() for f in folders)) == len(folders)
    assert not any(part in ("", ".", "..") for f in folders for part in f.split("/"))

    # the ready mail names the course and carries a link that downloads the same bytes
    [mail] = site.mails()
    message = email.message_from_bytes(mail.read_bytes(), policy=default_policy)
    body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert result.course_name in body.replace("\n", " ") or result.course_name in message["Subject"]
    assert result.download_url in body
    settings = site.settings()
    with serve_app(create_app(settings)) as base:
        url = result.download_url.replace(settings.public_url, base)
        response = httpx.get(url, timeout=30)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == result.sha256


def test_selection_and_empty_selection(site: LocalSite) -> None:
    course = read_course(open_location(str(site.lake)), site.course)
    source = lake_workspace_files(site, site.course)
    assignment = course.assignment_ids()[0]
    students = sorted({uid for aid, uid, _ in source if aid == assignment})[:2]
    result = export_course(
        course_id=site.course,
        requested_by=site.teacher,
        assignment_ids=[assignment],
        student_ids=students,
        notify=False,
    )
    with zipfile.ZipFile(result.file_url) as zf:
        _, manifest = zip_manifest(zf)
    got = {
        (e["source"]["assignment_id"], e["source"]["user_id"])
        for e in manifest["entries"]
        if "source" in e
    }
    assert got == {(assignment, s) for s in students}
    assert [a["id"] for a in manifest["assignments"]] == [assignment]
    assert site.mails() == []


def test_student_without_workspace_exports_an_empty_selection(site: LocalSite) -> None:
    [student, *_] = site.summary.students_without_workspaces[site.course]
    result = export_course(
        course_id=site.course, requested_by=site.teacher, student_ids=[student], notify=False
    )
    assert result.counts["files"] == 0 and result.counts["workspaces"] == 0
    assert_zip_tools_accept(Path(result.file_url))


@pytest.mark.parametrize(
    ("parameters", "error", "message"),
    [
        ({"assignment_ids": [42]}, InputError, "assignment_ids"),
        ({"student_ids": [42]}, InputError, "student_ids"),
        ({"course_id": 424242}, NotFoundError, "course 424242"),
    ],
)
def test_bad_selection_writes_nothing(
    site: LocalSite, parameters: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        export_course(**({"course_id": site.course, "requested_by": site.teacher} | parameters))
    assert site.export_files() == []


def test_non_teacher_is_refused(site: LocalSite) -> None:
    student = next(iter(lake_workspace_files(site, site.course)))[1]
    with pytest.raises(PermissionDeniedError):
        export_course(course_id=site.course, requested_by=student)
    assert site.export_files() == [] and site.mails() == []


def test_lti_settings(site: LocalSite) -> None:
    course = read_course(open_location(str(site.lake)), site.course)
    result = export_lti_settings(course_id=site.course, requested_by=site.teacher)
    rows = list(csv.reader(io.StringIO(Path(result.file_url).read_text(), newline="")))
    assert rows[0] == ["Unit", "Assignment", "Launch URL", "Resource Link ID"]
    expected = [
        [u.name, a.name, a.lti.launch_url, a.lti.resource_link_id]
        for u, a in course.assignments()
        if a.lti is not None
    ]
    assert [[c.removeprefix("'") for c in r] for r in rows[1:]] == expected
    assert result.counts["assignments"] == len(expected) > 0
    assert Path(result.file_url).read_bytes().count(b"\r\n") >= len(rows)


def test_import_project_round_trip(site: LocalSite) -> None:
    export = export_course(course_id=site.course, requested_by=site.teacher, notify=False)
    source = lake_workspace_files(site, site.course)
    (aid, uid, _), _ = max(
        source.items(), key=lambda kv: sum(1 for k in source if k[:2] == kv[0][:2])
    )
    wanted = {path: data for (a, u, path), data in source.items() if (a, u) == (aid, uid)}
    with zipfile.ZipFile(export.file_url) as zf:
        _, manifest = zip_manifest(zf)
    assignment = next(a for a in manifest["assignments"] if a["id"] == aid)
    stack = None if assignment["stack"] else "python-3.12"
    imported = import_project(
        export_id=export.export_id,
        assignment_id=aid,
        student_id=uid,
        stack=stack,
        requested_by=site.teacher,
    )
    root = Path(imported.project_url)
    project = json.loads((root / "project.json").read_text())
    assert snapshot(root / project["workspace"]) == wanted
    assert project["stack"]["id"] == (stack or assignment["stack"]["id"])
    assert project["files"] == len(wanted)
    # another stack at import replaces the earlier copy
    again = import_project(
        export_id=export.export_id,
        assignment_id=aid,
        student_id=uid,
        stack="custom-stack",
        requested_by=site.teacher,
    )
    assert again.project_id == imported.project_id and again.stack["id"] == "custom-stack"
    assert sorted(p.name for p in root.iterdir()) == sorted(["project.json", again.workspace])
    assert snapshot(root / again.workspace) == wanted


def test_a_damaged_archive_is_refused_once_not_retried(
    site: LocalSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damage is a refusal: the unpack task runs once (the retry policy retries anything
    but an ExportError, 5 s and 30 s apart)."""
    export = export_course(course_id=site.course, requested_by=site.teacher, notify=False)
    (aid, uid, _), _ = next(iter(lake_workspace_files(site, site.course).items()))
    # The archive rewritten with a manifest that is JSON but not an object, and the
    # record made to agree with it, so that the zip itself is what gets judged.
    exports = open_location(str(site.exports))
    path = Path(export.file_url)
    with zipfile.ZipFile(path) as src:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                is_manifest = info.filename.endswith("/manifest.json")
                dst.writestr(info, b"[]" if is_manifest else src.read(info))
    path.write_bytes(out.getvalue())
    record = export_records.read_record(exports, export.course_id, export.export_id)
    assert record is not None
    export_records.write_record(
        exports,
        record.model_copy(
            update={
                "size_bytes": path.stat().st_size,
                "sha256": hashlib.sha256(out.getvalue()).hexdigest(),
            }
        ),
    )
    attempts = []
    real = project.import_workspace

    def counted(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(project, "import_workspace", counted)
    with pytest.raises(
        UnsafeArchiveError, match=r"manifest\.json: expected one of '\{', found '\['"
    ):
        import_project(
            export_id=export.export_id, assignment_id=aid, student_id=uid, requested_by=site.teacher
        )
    assert len(attempts) == 1
    assert not (site.exports / "projects").exists()


def test_import_refuses_non_teachers_and_unknown_workspaces(site: LocalSite) -> None:
    export = export_course(course_id=site.course, requested_by=site.teacher, notify=False)
    student = next(iter(lake_workspace_files(site, site.course)))[1]
    aid = read_course(open_location(str(site.lake)), site.course).assignment_ids()[0]
    with pytest.raises(PermissionDeniedError):
        import_project(
            export_id=export.export_id, assignment_id=aid, student_id=student, requested_by=student
        )
    with pytest.raises(NotFoundError):
        import_project(
            export_id=export.export_id, assignment_id=aid, student_id=1, requested_by=site.teacher
        )
    with pytest.raises(NotFoundError):
        import_project(
            export_id="0" * 32, assignment_id=aid, student_id=1, requested_by=site.teacher
        )
    with pytest.raises(InputError):
        import_project(
            export_id="../etc", assignment_id=aid, student_id=1, requested_by=site.teacher
        )
    assert not (site.exports / "projects").exists()


def test_an_empty_course_exports(site: LocalSite) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    course = site.lake / "courses" / "4242"
    course.mkdir()
    (course / "course.json").write_text(json.dumps({"id": 4242, "name": "Nothing yet"}))
    pq.write_table(
        pa.table({"user_id": pa.array([site.teacher], pa.int64()), "role": ["Teacher"]}),
        course / "roster.parquet",
    )
    result = export_course(course_id=4242, requested_by=site.teacher, notify=False)
    assert result.counts == {
        "assignments": 0,
        "workspaces": 0,
        "files": 0,
        "bytes_uncompressed": 0,
    }
    assert_zip_tools_accept(Path(result.file_url))
    with zipfile.ZipFile(result.file_url) as zf:
        names = sorted(n.split("/", 1)[1] for n in zf.namelist())
    assert names == ["course.json", "manifest.json", "roster.csv"]
    lti = export_lti_settings(course_id=4242, requested_by=site.teacher)
    assert Path(lti.file_url).read_bytes() == b"Unit,Assignment,Launch URL,Resource Link ID\r\n"


def test_the_progress_artifact_ends_at_every_file(site: LocalSite) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    state = export_course(course_id=site.course, requested_by=site.teacher, return_state=True)
    files = state.result().counts["files"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    [progress] = [a for a in artifacts if a.type == "progress"]
    assert float(progress.data) == 100.0  # type: ignore[arg-type]
    assert progress.description.startswith(f"{files:,} of {files:,} files")  # type: ignore[union-attr]
