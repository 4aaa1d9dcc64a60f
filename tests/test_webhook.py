"""The completion webhook: signature, verification, delivery with retries; its settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from standardwebhooks import Webhook

from course_exports import webhook
from course_exports.errors import SettingsError
from course_exports.export_records import ExportKind, ExportResult, ExportStatus
from course_exports.settings import load_settings

SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
OLD_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
URL = "https://lms.example/hooks/exports"
NOW = 1700000000


def result() -> ExportResult:
    created = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    return ExportResult(
        export_id="a" * 32,
        course_id=1042,
        course_name="Intro to Python",
        kind=ExportKind.COURSE,
        status=ExportStatus.READY,
        request_id="lms-7",
        requested_by=7,
        file_name="x.zip",
        file_url="/exports/1042/x.zip",
        created_at=created,
        expires_at=created + timedelta(days=7),
        size_bytes=123,
        sha256="b" * 64,
        counts={"files": 3},
        download_url="http://127.0.0.1:8765/d/token",
    )


def signed_headers(body: bytes, secret: str = SECRET, msg_id: str = "msg_1") -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(NOW),
        "webhook-signature": webhook.sign(secret, msg_id, NOW, body),
    }


def test_signature_is_standard_webhooks_hmac_of_id_timestamp_body() -> None:
    body = webhook.encode({"b": 1, "a": "é"})
    assert body == '{"a":"é","b":1}'.encode()
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    assert webhook.sign(SECRET, "msg_1", NOW, body) == "v1," + base64.b64encode(mac).decode()


def test_verify_accepts_ours_and_refuses_tampering_and_replays() -> None:
    body = webhook.encode({"event": webhook.COMPLETED})
    headers = signed_headers(body)
    webhook.verify(SECRET, headers=headers, body=body, now=NOW + 100)
    webhook.verify(SECRET, headers={k.upper(): v for k, v in headers.items()}, body=body, now=NOW)
    cases: list[tuple[dict[str, str], bytes, float]] = [
        (headers, body + b" ", NOW),
        ({**headers, "webhook-timestamp": str(NOW + 1)}, body, NOW),
        ({**headers, "webhook-id": "msg_2"}, body, NOW),  # the id is signed: no relabelling
        ({**headers, "webhook-signature": "v1,AAAA"}, body, NOW),
        (headers, body, NOW + 301),
        (headers, body, NOW - 301),
        ({**headers, "webhook-timestamp": "soon"}, body, NOW),
    ]
    for case_headers, case_body, now in cases:
        with pytest.raises(webhook.InvalidSignatureError):
            webhook.verify(SECRET, headers=case_headers, body=case_body, now=now)
    with pytest.raises(webhook.InvalidSignatureError):
        webhook.verify(OLD_SECRET, headers=headers, body=body, now=NOW)


MALFORMED = [
    {"webhook-signature": "v1,é"},
    {"webhook-signature": "sha256=é"},
    {"webhook-signature": "v1"},
    {"webhook-signature": "v1,,,"},
    {"webhook-signature": "v1,!!!!"},
    {"webhook-signature": "v1,QUJD="},  # bad padding
    {"webhook-signature": "\u202ev1,AAAA"},
    {"webhook-signature": "v1,AAAA " * 500},
    {"webhook-signature": ""},
    {"webhook-id": "msg_é"},
    {"webhook-id": "msg\r\n1"},
    {"webhook-id": ""},
    {"webhook-timestamp": "１７００００００００"},  # int() reads full-width digits
    {"webhook-timestamp": "1e9"},
    {"webhook-timestamp": "-1"},
    {"webhook-timestamp": "9" * 400},
]


@pytest.mark.parametrize("change", MALFORMED)
def test_verify_refuses_malformed_headers_with_its_own_error(change: dict[str, str]) -> None:
    body = webhook.encode({"event": webhook.COMPLETED})
    with pytest.raises(webhook.InvalidSignatureError):
        webhook.verify(SECRET, headers={**signed_headers(body), **change}, body=body, now=NOW)


def test_verify_refuses_a_body_that_is_not_utf8() -> None:
    with pytest.raises(webhook.InvalidSignatureError, match="UTF-8"):
        webhook.verify(SECRET, headers=signed_headers(b"{}"), body=b"\xff", now=NOW)


header_text = st.text(
    alphabet=st.one_of(st.sampled_from(list("v1,= .+/_-msgwhsec")), st.characters()),
    max_size=200,
)


@examples(max_examples=300, deadline=None)
@given(msg_id=header_text, timestamp=header_text, signature=header_text, body=st.binary())
def test_verify_raises_only_its_own_error(
    msg_id: str, timestamp: str, signature: str, body: bytes
) -> None:
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    with pytest.raises(webhook.InvalidSignatureError):
        webhook.verify(SECRET, headers=headers, body=body, now=NOW)


def test_rotation_signs_with_every_secret_and_either_verifies() -> None:
    body = webhook.encode({"event": webhook.COMPLETED})
    headers = signed_headers(body, secret=f"{SECRET} {OLD_SECRET}")
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, OLD_SECRET):
        webhook.verify(secret, headers=headers, body=body, now=NOW)


def test_payloads_carry_what_the_lms_needs() -> None:
    done = webhook.completed_payload(result(), "run-1")
    assert done["event"] == webhook.COMPLETED and done["flow_run_id"] == "run-1"
    assert done["download_url"] and done["sha256"] == "b" * 64 and done["status"] == "ready"
    json.loads(webhook.encode(done))  # JSON all the way down (datetimes as ISO strings)
    failed = webhook.failed_payload(
        course_id=1042, kind="course", request_id="r", requested_by=7, reason="why",
        flow_run_id="run-2",
    )  # fmt: skip
    assert failed["status"] == "failed" and failed["reason"] == "why"


class Recorder:
    def __init__(self, *replies: int | Exception, headers: dict[str, str] | None = None) -> None:
        self.replies = list(replies)
        self.headers = headers or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return httpx.Response(reply, headers=self.headers)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def test_post_signs_each_attempt_and_backs_off_exponentially() -> None:
    recorder = Recorder(503, httpx.ConnectError("refused"), 500, 200)
    slept: list[float] = []
    clock = iter([1700000000.0, 1700000001.0, 1700000003.0, 1700000007.0])
    delivery = webhook.post(
        URL, SECRET, webhook.completed_payload(result(), "run-1"),
        client=recorder.client(), sleep=slept.append, clock=lambda: next(clock),
    )  # fmt: skip
    assert delivery == webhook.Delivery(True, 4, 200)
    assert slept == [1.0, 2.0, 4.0]
    ids = {r.headers[webhook.ID_HEADER] for r in recorder.requests}
    assert len(ids) == 1 and ids.pop().startswith("msg_")  # one id across its attempts
    for request in recorder.requests:
        assert request.headers["content-type"] == "application/json"
        assert request.headers[webhook.EVENT_HEADER] == webhook.COMPLETED
        webhook.verify(
            SECRET,
            headers=request.headers,
            body=request.content,
            now=float(request.headers[webhook.TIMESTAMP_HEADER]),
        )
    assert [r.headers[webhook.TIMESTAMP_HEADER] for r in recorder.requests] == [
        "1700000000", "1700000001", "1700000003", "1700000007",
    ]  # fmt: skip


def test_a_delivery_verifies_with_the_standardwebhooks_library() -> None:
    """What the LMS does: any Standard Webhooks library, here the reference one for Python,
    verifies a delivery signed with the new and the old secret, holding either."""
    recorder = Recorder(200)
    payload = webhook.completed_payload(result(), "run-1")
    webhook.post(URL, f"{SECRET} {OLD_SECRET}", payload, client=recorder.client())
    [request] = recorder.requests
    for secret in (SECRET, OLD_SECRET):
        assert Webhook(secret).verify(request.content, dict(request.headers)) == json.loads(
            webhook.encode(payload)
        )
    assert abs(int(request.headers[webhook.TIMESTAMP_HEADER]) - time.time()) < 60


def test_post_gives_up_at_once_on_a_refusal_and_after_the_attempts_otherwise() -> None:
    slept: list[float] = []
    refused = webhook.post(URL, SECRET, {"event": "x"}, client=Recorder(401).client(),
                           sleep=slept.append)  # fmt: skip
    assert not refused.delivered and refused.attempts == 1 and refused.status_code == 401
    assert slept == []
    down = webhook.post(URL, SECRET, {"event": "x"}, attempts=3,
                        client=Recorder(502, 502, 502).client(), sleep=slept.append)  # fmt: skip
    assert (down.delivered, down.attempts, down.status_code) == (False, 3, 502)
    assert "502" in (down.error or "")
    assert slept == [1.0, 2.0]


def test_post_honours_retry_after_within_the_cap() -> None:
    slept: list[float] = []
    recorder = Recorder(429, 200, headers={"Retry-After": "7"})
    webhook.post(URL, SECRET, {"event": "x"}, client=recorder.client(), sleep=slept.append)
    assert slept == [7.0]


def test_post_never_raises_on_a_dead_endpoint() -> None:
    delivery = webhook.post(
        "http://127.0.0.1:9/hook", SECRET, {"event": "x"}, attempts=2, sleep=lambda _: None,
        timeout=httpx.Timeout(1.0),
    )  # fmt: skip
    assert not delivery.delivered and delivery.status_code is None
    assert "ConnectError" in (delivery.error or "")


# -- settings -----------------------------------------------------------------------------


def test_webhook_settings(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.webhook_url is None and settings.webhook_secret is None
    clean_env.setenv("COURSE_EXPORT_WEBHOOK_URL", URL)
    with pytest.raises(SettingsError, match=r"COURSE_EXPORT_WEBHOOK_SECRET: .*required"):
        load_settings()
    for bad, why in [
        ("short", "Standard Webhooks secret"),
        ("a-sixteen-plus-character-secret", "Standard Webhooks secret"),
        ("whsec_not*base64", "base64"),
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "24 to 64 bytes"),
        ("whsec_" + base64.b64encode(bytes(24)).decode(), "distinct"),
        (f"{SECRET} whsec_", "base64"),
    ]:
        clean_env.setenv("COURSE_EXPORT_WEBHOOK_SECRET", bad)
        with pytest.raises(SettingsError, match=f"COURSE_EXPORT_WEBHOOK_SECRET: .*{why}"):
            load_settings()
    for good in (SECRET, f" {SECRET}  {OLD_SECRET} ", webhook.new_secret()):
        clean_env.setenv("COURSE_EXPORT_WEBHOOK_SECRET", good)
        settings = load_settings()
        assert settings.webhook_url == URL
        assert settings.webhook_secret is not None
        assert settings.webhook_secret.get_secret_value() == good.strip()
    clean_env.setenv("COURSE_EXPORT_WEBHOOK_URL", "ftp://lms.example/")
    with pytest.raises(SettingsError, match="COURSE_EXPORT_WEBHOOK_URL"):
        load_settings()
    clean_env.setenv("COURSE_EXPORT_WEBHOOK_URL", "")
    assert load_settings().webhook_url is None  # blank is unset (the secret may stay)
