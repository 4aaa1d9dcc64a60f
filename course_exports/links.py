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
from datetime import UTC, datetime

DOWNLOAD = "download"
COURSE_LIST = "course-list"
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
    export_id: str  # empty for a course listing
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


def course_list_url(public_url: str, key: bytes, course_id: int, expires_at: datetime) -> str:
    token = sign(key, TokenClaims(COURSE_LIST, course_id, "", expires_at))
    return f"{public_url.rstrip('/')}/courses/{course_id}/exports?token={token}"
