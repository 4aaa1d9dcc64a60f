"""The completion webhook: signature, verification, delivery with retries; its settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from course_exports import webhook
from course_exports.errors import SettingsError
from course_exports.registry import ExportKind, ExportResult, ExportStatus
from course_exports.settings import load_settings

SECRET = "webhook-secret-0123456789"
URL = "https://lms.example/hooks/exports"


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


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = webhook.encode({"b": 1, "a": "é"})
    assert body == '{"a":"é","b":1}'.encode()
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhook.sign(SECRET, "1700000000", body) == f"sha256={expected}"


def test_verify_accepts_ours_and_refuses_tampering_and_replays() -> None:
    body = webhook.encode({"event": webhook.COMPLETED})
    signature = webhook.sign(SECRET, "1700000000", body)
    webhook.verify(SECRET, timestamp="1700000000", body=body, signature=signature, now=1700000100)
    cases = [
        dict(timestamp="1700000000", body=body + b" ", signature=signature, now=1700000100),
        dict(timestamp="1700000001", body=body, signature=signature, now=1700000100),
        dict(timestamp="1700000000", body=body, signature="sha256=00", now=1700000100),
        dict(timestamp="1700000000", body=body, signature=signature, now=1700000000 + 301),
        dict(timestamp="soon", body=body, signature=signature, now=1700000100),
    ]
    for case in cases:
        with pytest.raises(webhook.InvalidSignatureError):
            webhook.verify(SECRET, **case)  # type: ignore[arg-type]
    with pytest.raises(webhook.InvalidSignatureError):
        webhook.verify("another-secret-000000", timestamp="1700000000", body=body,
                       signature=signature, now=1700000100)  # fmt: skip


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
    ids = {r.headers[webhook.DELIVERY_HEADER] for r in recorder.requests}
    assert len(ids) == 1  # one delivery id across its attempts
    for request in recorder.requests:
        assert request.headers["content-type"] == "application/json"
        assert request.headers[webhook.EVENT_HEADER] == webhook.COMPLETED
        webhook.verify(
            SECRET,
            timestamp=request.headers[webhook.TIMESTAMP_HEADER],
            body=request.content,
            signature=request.headers[webhook.SIGNATURE_HEADER],
            now=float(request.headers[webhook.TIMESTAMP_HEADER]),
        )
    assert [r.headers[webhook.TIMESTAMP_HEADER] for r in recorder.requests] == [
        "1700000000", "1700000001", "1700000003", "1700000007",
    ]  # fmt: skip


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
    clean_env.setenv("COURSE_EXPORT_WEBHOOK_SECRET", "short")
    with pytest.raises(SettingsError, match=r"COURSE_EXPORT_WEBHOOK_SECRET: .*16 characters"):
        load_settings()
    clean_env.setenv("COURSE_EXPORT_WEBHOOK_SECRET", SECRET)
    settings = load_settings()
    assert settings.webhook_url == URL
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == SECRET
    clean_env.setenv("COURSE_EXPORT_WEBHOOK_URL", "ftp://lms.example/")
    with pytest.raises(SettingsError, match="COURSE_EXPORT_WEBHOOK_URL"):
        load_settings()
    clean_env.setenv("COURSE_EXPORT_WEBHOOK_URL", "")
    assert load_settings().webhook_url is None  # blank is unset (the secret may stay)
