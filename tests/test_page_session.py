"""Launch tokens, the session cookie and CSRF of the Course Data page, over real HTTP."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from pagekit import PageSite, csrf_of, nonce_of, now

from course_exports import links
from deployments.web import session

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_launch_token_round_trip_and_refusals() -> None:
    key = b"k" * 32
    later = now() + timedelta(minutes=5)
    token = links.sign_user(key, links.LAUNCH, 1001, 77, later)
    claims = links.verify_user(key, token, purpose=links.LAUNCH)
    assert (claims.course_id, claims.user_id) == (1001, 77)
    with pytest.raises(links.InvalidTokenError):  # a launch token is not a session
        links.verify_user(key, token, purpose=links.SESSION)
    with pytest.raises(links.InvalidTokenError):  # nor a download link
        links.verify(key, token, purpose=links.DOWNLOAD)
    with pytest.raises(links.InvalidTokenError):  # another key
        links.verify_user(b"o" * 32, token, purpose=links.LAUNCH)
    download = links.sign(key, links.TokenClaims(links.LAUNCH, 1001, "a" * 32, later))
    with pytest.raises(links.InvalidTokenError):  # an export id is not a user id
        links.verify_user(key, download, purpose=links.LAUNCH)
    expired = links.sign_user(key, links.LAUNCH, 1001, 77, now() - timedelta(seconds=1))
    with pytest.raises(links.ExpiredTokenError):
        links.verify_user(key, expired, purpose=links.LAUNCH)


def test_launch_url_lives_minutes_and_names_the_course() -> None:
    url = links.launch_url("https://lms.example/x/", b"k" * 32, 1001, 7)
    assert url.startswith("https://lms.example/x/courses/1001/launch?token=")
    claims = links.verify_user(b"k" * 32, url.split("token=")[1], purpose=links.LAUNCH)
    assert timedelta(minutes=4) < claims.expires_at - now() <= links.LAUNCH_TTL


def test_launch_sets_a_strict_httponly_cookie_and_moves_on(page_site: PageSite) -> None:
    course = page_site.course
    response = httpx.get(page_site.launch_url(course, page_site.teacher()))
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{session.COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=strict", f"Path=/courses/{course}", "Max-Age=28800"):
        assert attribute.lower() in cookie.lower(), attribute
    assert "secure" not in cookie.lower()  # plain http on 127.0.0.1
    # The launch page moves on without the token, and keeps it out of Referer and caches.
    assert f'content="0;url=/courses/{course}"' in response.text
    assert "token=" not in response.text
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "no-store" in response.headers["cache-control"]
    with page_site.client() as client:
        html = page_site.page(client)
        assert "Course Data" in html and "Signed in as" in html


def test_session_cookie_is_secure_behind_https(page_site: PageSite) -> None:
    # Behind a TLS-terminating proxy the app sees http but its public URL is https.
    from starlette.responses import Response

    response = Response()
    claims = links.UserClaims(1, 2, now())
    session.start_session(response, b"k" * 32, claims, secure=True, now=now())
    assert "secure" in response.headers["set-cookie"].lower()


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("tampered", 404, "not valid"),
        ("another course's token", 404, "not valid"),
        ("a student", 403, "Only teachers"),
        ("a teacher of another course", 403, "Only teachers"),
        ("not in the roster", 403, "Only teachers"),
        ("expired", 410, "expired"),
        ("a course that does not exist", 404, "not valid"),
        ("a session token", 404, "not valid"),
    ],
)
def test_launch_refusals_say_what_to_do(
    page_site: PageSite, case: str, status: int, words: str
) -> None:
    course, other = page_site.course, page_site.other_course
    teacher = page_site.teacher()
    base = f"{page_site.base_url}/courses/{course}/launch?token="
    good = page_site.launch_url(course, teacher)
    url = {
        "tampered": good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "another course's token": base
        + page_site.launch_url(other, page_site.teacher(other)).split("token=")[1],
        "a student": page_site.launch_url(course, page_site.student()),
        "a teacher of another course": page_site.launch_url(course, page_site.teacher(other)),
        "not in the roster": page_site.launch_url(course, 999_999),
        "expired": page_site.launch_url(course, teacher, ttl=timedelta(seconds=-1)),
        "a course that does not exist": page_site.launch_url(424_242, teacher),
        "a session token": base
        + links.sign_user(
            page_site.key, links.SESSION, course, teacher, now() + timedelta(hours=1)
        ),
    }[case]
    response = httpx.get(url)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert words in response.text
    assert "Admin tab" in response.text  # what to do next
    assert "Traceback" not in response.text and "set-cookie" not in response.headers


def test_a_session_opens_only_its_own_course(page_site: PageSite) -> None:
    other = page_site.other_course
    with page_site.client() as client:
        # The cookie is scoped to the course's path; sent by hand, it is still refused.
        token = client.cookies[session.COOKIE]
        response = httpx.get(
            f"{page_site.base_url}/courses/{other}", cookies={session.COOKIE: token}
        )
        assert response.status_code == 401
        assert "Admin tab" in response.text
    assert httpx.get(f"{page_site.base_url}/courses/{page_site.course}").status_code == 401


def test_a_tampered_or_expired_session_is_refused(page_site: PageSite) -> None:
    course, teacher = page_site.course, page_site.teacher()
    url = f"{page_site.base_url}/courses/{course}"
    expired = links.sign_user(page_site.key, links.SESSION, course, teacher, now())
    forged = links.sign_user(b"x" * 32, links.SESSION, course, teacher, now() + timedelta(hours=1))
    for token in (expired, forged, "garbage"):
        assert httpx.get(url, cookies={session.COOKIE: token}).status_code == 401


def test_export_forms_refuse_a_missing_wrong_or_foreign_csrf_token(page_site: PageSite) -> None:
    course = page_site.course
    with page_site.client() as client:
        html = page_site.page(client)
        csrf, nonce = csrf_of(html), nonce_of(html)
        action = f"/courses/{course}/exports/lti-settings"
        for form, headers in (
            ({"nonce": nonce}, {}),
            ({"nonce": nonce, "csrf": "0" * 64}, {}),
            ({"nonce": nonce, "csrf": csrf}, {"origin": "https://evil.example"}),
            ({"nonce": nonce, "csrf": csrf}, {"sec-fetch-site": "cross-site"}),
        ):
            response = client.post(action, data=form, headers=headers)
            assert response.status_code == 403, (form, headers)
            assert "Reload the page" in response.text
        # Another teacher's session has another token.
        with page_site.client(course, page_site.summary.teachers[course][1]) as second:
            assert csrf_of(page_site.page(second)) != csrf
            response = second.post(action, data={"nonce": nonce, "csrf": csrf})
            assert response.status_code == 403
        # The right token gets past the check (here to "cannot start": no Prefect API).
        response = client.post(action, data={"nonce": nonce, "csrf": csrf})
        assert response.status_code == 503
        assert "not reachable" in response.text


def test_export_forms_need_a_session(page_site: PageSite) -> None:
    response = httpx.post(
        f"{page_site.base_url}/courses/{page_site.course}/exports/course", data={"csrf": "x"}
    )
    assert response.status_code == 401
