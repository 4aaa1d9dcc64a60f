"""The LMS's JSON list of a course's exports: a launch token (or the page's session) in,
the exports with working links out, as the OpenAPI document describes them."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import httpx
import jsonschema
import pytest
from pagekit import PageSite, now

from course_exports import links
from course_exports.export_records import ExportKind
from deployments.download_service import OPENAPI


def schema(name: str) -> dict[str, Any]:
    document = json.loads(OPENAPI.read_text())
    return {"$ref": f"#/components/schemas/{name}", "components": document["components"]}


def bearer(page_site: PageSite, course: int, user: int, **kwargs: Any) -> dict[str, str]:
    token = page_site.launch_url(course, user, **kwargs).split("token=")[1]
    return {"Authorization": f"Bearer {token}"}


def test_openapi_document_is_served_and_describes_the_list(page_site: PageSite) -> None:
    document = httpx.get(f"{page_site.base_url}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "/courses/{course_id}/exports" in document["paths"]
    jsonschema.Draft202012Validator.check_schema(schema("CourseExports"))


def test_the_list_shows_live_exports_with_working_links(page_site: PageSite) -> None:
    course = page_site.summary.course_ids[2]
    teacher = page_site.teacher(course)
    live_csv = page_site.make(course=course, data=b"x,y\n" * 300)
    live_zip = page_site.make(course=course, kind=ExportKind.COURSE, data=b"zip bytes")
    page_site.make(course=course, status="pending")
    page_site.make(course=course, now=now() - timedelta(days=8))
    page_site.make(course=page_site.course)

    url = f"{page_site.base_url}/courses/{course}/exports"
    response = httpx.get(url, headers=bearer(page_site, course, teacher))
    assert response.status_code == 200
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    jsonschema.validate(body, schema("CourseExports"))
    assert body["course_id"] == course
    listed = {item["export_id"]: item for item in body["exports"]}
    assert set(listed) == {live_csv.export_id, live_zip.export_id}
    assert [r["state"] for r in body["in_progress"]] == ["running"]
    item = listed[live_zip.export_id]
    assert item["kind"] == "course" and item["size_bytes"] == len(b"zip bytes")
    claims = links.verify(
        page_site.key, item["download_url"].rsplit("/", 1)[1], purpose=links.DOWNLOAD
    )
    assert claims.expires_at == live_zip.expires_at  # the LMS may keep the link
    for export in (live_csv, live_zip):
        download = httpx.get(listed[export.export_id]["download_url"])
        assert hashlib.sha256(download.content).hexdigest() == export.sha256

    # The page's own session gets the same list, and the page itself answers JSON too.
    with page_site.client(course, teacher) as client:
        assert client.get(f"/courses/{course}/exports").json() == body
        negotiated = client.get(f"/courses/{course}", headers={"Accept": "application/json"})
        assert negotiated.json() == body


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("no token", 401),
        ("garbage", 404),
        ("another course's token", 404),
        ("a student's token", 403),
        ("a download link", 404),
        ("expired", 410),
        ("another key", 404),
    ],
)
def test_the_list_refuses_what_is_not_a_teacher_of_the_course(
    page_site: PageSite, case: str, status: int
) -> None:
    course, other = page_site.course, page_site.other_course
    teacher = page_site.teacher()
    later = now() + timedelta(days=1)
    headers = {
        "no token": {},
        "garbage": {"Authorization": "Bearer nonsense"},
        "another course's token": bearer(page_site, other, page_site.teacher(other)),
        "a student's token": bearer(page_site, course, page_site.student()),
        "a download link": {
            "Authorization": "Bearer "
            + links.sign(page_site.key, links.TokenClaims(links.DOWNLOAD, course, "a" * 32, later))
        },
        "expired": bearer(page_site, course, teacher, ttl=timedelta(seconds=-1)),
        "another key": {
            "Authorization": "Bearer "
            + links.sign_user(b"o" * 32, links.LAUNCH, course, teacher, later)
        },
    }[case]
    response = httpx.get(f"{page_site.base_url}/courses/{course}/exports", headers=headers)
    assert response.status_code == status
    jsonschema.validate(response.json(), schema("Error"))


def test_a_course_without_exports(page_site: PageSite) -> None:
    course = page_site.summary.course_ids[3]
    response = httpx.get(
        f"{page_site.base_url}/courses/{course}/exports",
        headers=bearer(page_site, course, page_site.teacher(course)),
    )
    assert response.json() == {"course_id": course, "exports": [], "in_progress": [], "failed": []}
