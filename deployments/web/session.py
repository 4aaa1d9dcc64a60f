"""Sessions of the Course Data page: a launch token in, an HttpOnly cookie out.

The LMS opens ``/courses/<id>/launch?token=…`` with a short-lived LAUNCH token for one
(course, teacher). The page checks it, sets a SESSION token for the same pair as a cookie
scoped to that course's path (HttpOnly, SameSite=Strict, Secure behind https), and moves
the browser on to ``/courses/<id>`` so the token leaves the address bar and history.
Forms carry a CSRF token derived from the session; a cross-site request carries no
Strict cookie anyway, and the Origin header is checked as well.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from course_exports import links

COOKIE = "course_exports_session"
#: A working day: long enough to come back for a download, short enough that a shared
#: computer forgets it. The roster is checked on every request besides.
SESSION_TTL = timedelta(hours=8)


@dataclass(frozen=True)
class Session:
    course_id: int
    teacher_id: int
    token: str

    def csrf_token(self, key: bytes) -> str:
        return csrf_token(key, self.token)


def csrf_token(key: bytes, session_token: str) -> str:
    # Bound to the session: a token scraped from another session (or none) does not fit.
    return hmac.new(key, b"csrf\x00" + session_token.encode(), hashlib.sha256).hexdigest()


def csrf_ok(key: bytes, session: Session, sent: str) -> bool:
    return hmac.compare_digest(session.csrf_token(key).encode(), sent.encode())


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site (Origin, or
    Sec-Fetch-Site); true when it says nothing (old browsers, curl)."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        own = f"{request.url.scheme}://{request.url.netloc}"
        if origin != own:
            return False
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def cookie_path(course_id: int) -> str:
    return f"/courses/{course_id}"


def start_session(
    response: Response, key: bytes, claims: links.UserClaims, *, secure: bool, now: datetime
) -> Session:
    expires = now + SESSION_TTL
    token = links.sign_user(key, links.SESSION, claims.course_id, claims.user_id, expires)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(SESSION_TTL.total_seconds()),
        path=cookie_path(claims.course_id),
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    return Session(claims.course_id, claims.user_id, token)


def read_session(request: Request, key: bytes, course_id: int, now: datetime) -> Session | None:
    """The request's session for this course, or None (no cookie, another course's,
    tampered or expired)."""
    token = request.cookies.get(COOKIE, "")
    if not token:
        return None
    try:
        claims = links.verify_user(key, token, purpose=links.SESSION, now=now)
    except (links.InvalidTokenError, links.ExpiredTokenError):
        return None
    if claims.course_id != course_id:
        return None
    return Session(claims.course_id, claims.user_id, token)


def utcnow() -> datetime:
    return datetime.now(UTC)
