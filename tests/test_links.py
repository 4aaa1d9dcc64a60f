from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

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
    token = links.sign(KEY, claims(purpose=links.LAUNCH, export_id="77"))
    with pytest.raises(links.InvalidTokenError):
        links.verify(KEY, token, purpose=links.DOWNLOAD, now=NOW)
    assert links.verify(KEY, token, purpose=links.LAUNCH, now=NOW).course_id == 1042


def test_expiry_is_exclusive() -> None:
    token = links.sign(KEY, claims())
    links.verify(KEY, token, purpose=links.DOWNLOAD, now=NOW + timedelta(days=7, seconds=-1))
    with pytest.raises(links.ExpiredTokenError):
        links.verify(KEY, token, purpose=links.DOWNLOAD, now=NOW + timedelta(days=7))


def test_urls() -> None:
    url = links.download_url("https://x.example/", KEY, 1, EXPORT, NOW)
    assert url.startswith("https://x.example/d/")
    page = links.launch_url("https://x.example", KEY, 1, 7, now=NOW)
    assert page.startswith("https://x.example/courses/1/launch?token=")


# -- properties: any input is a refusal, never another exception ---------------------------

ERRORS = (links.InvalidTokenError, links.ExpiredTokenError)
token_text = st.text(
    alphabet=st.one_of(st.sampled_from(list("AZaz09-_.=:+/ ")), st.characters()), max_size=200
)


@examples(max_examples=500)
@given(token=token_text, purpose=st.sampled_from([links.DOWNLOAD, links.LAUNCH, links.SESSION]))
def test_any_string_is_refused_with_a_token_error(token: str, purpose: str) -> None:
    with pytest.raises(ERRORS):
        links.verify(KEY, token, purpose=purpose, now=NOW)


def mac_b64(payload: bytes) -> str:
    import base64
    import hashlib
    import hmac

    mac = hmac.new(KEY, payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@examples(max_examples=500)
@given(
    payload=st.one_of(
        st.binary(max_size=120),
        st.builds(
            lambda p, c, e, x: f"{p}:{c}:{e}:{x}".encode(),
            st.sampled_from([links.DOWNLOAD, links.LAUNCH, links.SESSION, "", "x"]),
            st.one_of(st.integers(), st.text(max_size=8)),
            st.one_of(st.just(EXPORT), st.text(max_size=40)),
            st.one_of(st.integers(), st.text(max_size=25)),
        ),
    ),
    purpose=st.sampled_from([links.DOWNLOAD, links.LAUNCH, links.SESSION]),
)
def test_any_signed_payload_is_claims_or_a_token_error(payload: bytes, purpose: str) -> None:
    """Even a payload we signed (a signer bug, an old format) never raises anything else:
    huge expiries, non-UTF-8, missing or extra fields."""
    import base64

    token = f"{base64.urlsafe_b64encode(payload).rstrip(b'=').decode()}.{mac_b64(payload)}"
    try:
        claims = links.verify(KEY, token, purpose=purpose, now=NOW)
    except ERRORS:
        return
    assert claims.purpose == purpose and claims.expires_at > NOW


@examples(max_examples=300)
@given(token=token_text, purpose=st.sampled_from([links.LAUNCH, links.SESSION]))
def test_any_string_is_refused_as_a_launch_or_session_token(token: str, purpose: str) -> None:
    with pytest.raises(ERRORS):
        links.verify_user(KEY, token, purpose=purpose, now=NOW)


@examples(max_examples=300)
@given(subject=st.text(max_size=30))
def test_a_user_token_names_a_user_id_or_is_refused(subject: str) -> None:
    token = links.sign(KEY, links.TokenClaims(links.LAUNCH, 1, subject, NOW + timedelta(minutes=5)))
    try:
        claims = links.verify_user(KEY, token, purpose=links.LAUNCH, now=NOW)
    except links.InvalidTokenError:
        assert not (subject.isascii() and subject.isdigit() and len(subject) <= 18)
        return
    assert str(claims.user_id) == subject.lstrip("0") or subject.strip("0") == ""
