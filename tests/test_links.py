from datetime import UTC, datetime, timedelta

import pytest

from course_exports import links

KEY = b"k" * 32
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
EXPORT = "0123456789abcdef0123456789abcdef"


def claims(**overrides: object) -> links.TokenClaims:
    base: dict[str, object] = {
        "purpose": links.DOWNLOAD,
        "course_id": 1042,
        "export_id": EXPORT,
        "expires_at": NOW + timedelta(days=7),
    }
    base.update(overrides)
    return links.TokenClaims(**base)  # type: ignore[arg-type]


def test_round_trip() -> None:
    token = links.sign(KEY, claims())
    got = links.verify(KEY, token, purpose=links.DOWNLOAD, now=NOW)
    assert (got.course_id, got.export_id, got.expires_at) == (1042, EXPORT, NOW + timedelta(days=7))


def test_token_is_url_safe_and_unguessable() -> None:
    token = links.sign(KEY, claims())
    assert all(c.isalnum() or c in "-_." for c in token)
    assert links.sign(b"o" * 32, claims()) != token


def test_every_changed_character_is_rejected() -> None:
    token = links.sign(KEY, claims())
    for i, char in enumerate(token):
        if char == ".":
            continue
        for replacement in {"A", "B", "-", "_"} - {char}:
            tampered = token[:i] + replacement + token[i + 1 :]
            with pytest.raises(links.InvalidTokenError):
                links.verify(KEY, tampered, purpose=links.DOWNLOAD, now=NOW)


def test_payload_swapped_between_tokens_is_rejected() -> None:
    a = links.sign(KEY, claims())
    b = links.sign(KEY, claims(course_id=9))
    with pytest.raises(links.InvalidTokenError):
        links.verify(KEY, a.split(".")[0] + "." + b.split(".")[1], purpose=links.DOWNLOAD, now=NOW)


@pytest.mark.parametrize("token", ["", ".", "abc", "a.b.c", "!!!.???"])
def test_malformed(token: str) -> None:
    with pytest.raises(links.InvalidTokenError):
        links.verify(KEY, token, purpose=links.DOWNLOAD, now=NOW)


def test_other_key_rejected() -> None:
    with pytest.raises(links.InvalidTokenError):
        links.verify(b"x" * 32, links.sign(KEY, claims()), purpose=links.DOWNLOAD, now=NOW)


def test_purpose_is_bound() -> None:
    token = links.sign(KEY, claims(purpose=links.COURSE_LIST, export_id=""))
    with pytest.raises(links.InvalidTokenError):
        links.verify(KEY, token, purpose=links.DOWNLOAD, now=NOW)
    assert links.verify(KEY, token, purpose=links.COURSE_LIST, now=NOW).course_id == 1042


def test_expiry_is_exclusive() -> None:
    token = links.sign(KEY, claims())
    links.verify(KEY, token, purpose=links.DOWNLOAD, now=NOW + timedelta(days=7, seconds=-1))
    with pytest.raises(links.ExpiredTokenError):
        links.verify(KEY, token, purpose=links.DOWNLOAD, now=NOW + timedelta(days=7))


def test_urls() -> None:
    url = links.download_url("https://x.example/", KEY, 1, EXPORT, NOW)
    assert url.startswith("https://x.example/d/")
    listing = links.course_list_url("https://x.example", KEY, 1, NOW)
    assert listing.startswith("https://x.example/courses/1/exports?token=")
