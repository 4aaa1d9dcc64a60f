"""Signed, expiring download links (CONTRACT section 5).

A token carries the course, the export and the expiry, and an HMAC-SHA256 over them and
a purpose, so it cannot be guessed, altered or reused for another purpose. It proves
only what the signer said; the download service still checks the export's manifest,
so an export purged or expired early stops working whatever its token says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DOWNLOAD = "download"
#: The LMS opens a course's Course Data page with a launch token for (course, teacher);
#: the page exchanges it for a session (a token of purpose SESSION in an HttpOnly cookie).
#: For both, the third claim is the user id instead of an export id.
LAUNCH = "launch"
SESSION = "session"
#: The LMS mints a launch link when the teacher clicks, so it is opened within seconds;
#: minutes of validity leave room for a slow network, not for a link passed around.
LAUNCH_TTL = timedelta(minutes=5)
_EXPORT_ID = re.compile(r"^[0-9a-f]{32}$")


class InvalidTokenError(Exception):
    """Tampered, malformed, for another purpose, or signed with another key."""


class ExpiredTokenError(Exception):
    """Well signed, but past its expiry."""

    def __init__(self, claims: TokenClaims) -> None:
        super().__init__(f"link expired at {claims.expires_at.isoformat()}")
        self.claims = claims


@dataclass(frozen=True)
class TokenClaims:
    purpose: str
    course_id: int
    export_id: str  # the user id for LAUNCH and SESSION
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def sign(key: bytes, claims: TokenClaims) -> str:
    expiry = int(claims.expires_at.timestamp())
    payload = f"{claims.purpose}:{claims.course_id}:{claims.export_id}:{expiry}".encode()
    return f"{_b64(payload)}.{_b64(_mac(key, payload))}"


def verify(key: bytes, token: str, *, purpose: str, now: datetime | None = None) -> TokenClaims:
    """The token's claims; InvalidTokenError unless signed by ``key`` for ``purpose``,
    ExpiredTokenError once past its expiry."""
    try:
        payload_b64, mac_b64 = token.split(".")
        payload, mac = _unb64(payload_b64), _unb64(mac_b64)
    except ValueError:
        raise InvalidTokenError("malformed token") from None
    # base64 leaves spare bits in the last character; only the canonical spelling is valid,
    # so no two different strings are the same token.
    if _b64(payload) != payload_b64 or _b64(mac) != mac_b64:
        raise InvalidTokenError("malformed token")
    if not hmac.compare_digest(mac, _mac(key, payload)):
        raise InvalidTokenError("bad signature")
    try:
        got_purpose, course, export_id, expiry = payload.decode().split(":")
        claims = TokenClaims(
            got_purpose, int(course), export_id, datetime.fromtimestamp(int(expiry), UTC)
        )
    except (ValueError, UnicodeDecodeError, OverflowError, OSError):
        # OverflowError/OSError: an expiry beyond what datetime or the platform holds.
        raise InvalidTokenError("malformed claims") from None
    if claims.purpose != purpose:
        raise InvalidTokenError(f"token is for {claims.purpose}, not {purpose}")
    if purpose == DOWNLOAD and not _EXPORT_ID.match(claims.export_id):
        raise InvalidTokenError("malformed export id")
    if (now or datetime.now(UTC)) >= claims.expires_at:
        raise ExpiredTokenError(claims)
    return claims


def download_url(
    public_url: str, key: bytes, course_id: int, export_id: str, expires_at: datetime
) -> str:
    token = sign(key, TokenClaims(DOWNLOAD, course_id, export_id, expires_at))
    return f"{public_url.rstrip('/')}/d/{token}"


@dataclass(frozen=True)
class UserClaims:
    """A launch or session token's claims: who, for which course, until when."""

    course_id: int
    user_id: int
    expires_at: datetime


def sign_user(key: bytes, purpose: str, course_id: int, user_id: int, expires_at: datetime) -> str:
    """A LAUNCH or SESSION token for one (course, user)."""
    return sign(key, TokenClaims(purpose, course_id, str(user_id), expires_at))


def verify_user(key: bytes, token: str, *, purpose: str, now: datetime | None = None) -> UserClaims:
    """The (course, user) of a LAUNCH or SESSION token; InvalidTokenError or
    ExpiredTokenError as :func:`verify` (an expired one still says whose it was)."""
    try:
        claims = verify(key, token, purpose=purpose, now=now)
    except ExpiredTokenError as exc:
        _user_id(exc.claims)  # a malformed subject is invalid, not merely expired
        raise
    return UserClaims(claims.course_id, _user_id(claims), claims.expires_at)


def _user_id(claims: TokenClaims) -> int:
    subject = claims.export_id
    if not subject.isascii() or not subject.isdigit() or len(subject) > 18:
        raise InvalidTokenError("malformed user id")
    return int(subject)


def launch_url(
    public_url: str,
    key: bytes,
    course_id: int,
    teacher_id: int,
    *,
    now: datetime | None = None,
    ttl: timedelta = LAUNCH_TTL,
) -> str:
    """The link the LMS opens for a teacher: the course's Course Data page, via a launch
    token that the page exchanges for a session cookie (so it leaves the address bar)."""
    expires = (now or datetime.now(UTC)) + ttl
    token = sign_user(key, LAUNCH, course_id, teacher_id, expires)
    return f"{course_page_url(public_url, course_id)}/launch?token={token}"


def course_page_url(public_url: str, course_id: int) -> str:
    """The course's Course Data page: no secret in it, fine for mails and artifacts."""
    return f"{public_url.rstrip('/')}/courses/{course_id}"
