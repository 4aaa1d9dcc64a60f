"""The completion webhook: tell the LMS an export is ready (or failed), signed.

Optional: set ``COURSE_EXPORT_WEBHOOK_URL`` and ``COURSE_EXPORT_WEBHOOK_SECRET``. Each
delivery is one JSON POST with

- ``X-Course-Export-Timestamp``: Unix seconds when it was signed,
- ``X-Course-Export-Signature``: ``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``,
- ``X-Course-Export-Event``: ``course-export.completed`` or ``course-export.failed``,
- ``X-Course-Export-Delivery``: one id for every attempt of the same delivery, so the LMS
  can drop a repeat whose first attempt it did get (a lost 200 looks like a failure here).

The timestamp is inside the signature, so a captured request cannot be replayed once it
is older than the LMS's tolerance; :func:`verify` is the LMS side (and the tests').
Delivery retries with exponential backoff and never raises: a webhook that cannot be
delivered is logged, and the export it announces stays finished.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from course_exports.registry import ExportResult

COMPLETED = "course-export.completed"
FAILED = "course-export.failed"

TIMESTAMP_HEADER = "X-Course-Export-Timestamp"
SIGNATURE_HEADER = "X-Course-Export-Signature"
EVENT_HEADER = "X-Course-Export-Event"
DELIVERY_HEADER = "X-Course-Export-Delivery"

#: How old a signed request the LMS should still accept (clock skew plus retries in flight).
DEFAULT_TOLERANCE_S = 300
#: Explicit everywhere: a hung LMS must not hold a finished flow run for long.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: 5 attempts, 1+2+4+8 s apart: rides out an LMS restart, gives up within a minute.
DEFAULT_ATTEMPTS = 5
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

log = logging.getLogger(__name__)


class InvalidSignatureError(Exception):
    """The request is not signed with the shared secret, or is too old."""


def encode(payload: Mapping[str, Any]) -> bytes:
    """The body: compact JSON, keys sorted (the signature covers these exact bytes)."""
    return json.dumps(
        dict(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` over ``"<timestamp>.<body>"``."""
    mac = hmac.new(_key(secret), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: str | bytes,
    *,
    timestamp: str,
    body: bytes,
    signature: str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise InvalidSignatureError unless ``signature`` is ours and ``timestamp`` is recent.

    ``body`` must be the raw request bytes, before any JSON parsing.
    """
    try:
        signed_at = int(timestamp)
    except (TypeError, ValueError):
        raise InvalidSignatureError("timestamp is not Unix seconds") from None
    if abs((time.time() if now is None else now) - signed_at) > tolerance_s:
        raise InvalidSignatureError(f"timestamp {signed_at} is outside {tolerance_s:.0f} s")
    if not hmac.compare_digest(sign(secret, timestamp, body), signature or ""):
        raise InvalidSignatureError("signature does not match")


# -- payloads ----------------------------------------------------------------------------


def completed_payload(result: ExportResult, flow_run_id: str | None) -> dict[str, Any]:
    """The whole result (what the flow returned), plus which event and run it was."""
    return {"event": COMPLETED, "flow_run_id": flow_run_id, **result.model_dump(mode="json")}


def failed_payload(
    *,
    course_id: int | None,
    kind: str,
    request_id: str | None,
    requested_by: int | None,
    reason: str,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """What the LMS needs to tell the teacher: which request, and a reason they can act on."""
    return {
        "event": FAILED,
        "status": "failed",
        "flow_run_id": flow_run_id,
        "course_id": course_id,
        "kind": kind,
        "request_id": request_id,
        "requested_by": requested_by,
        "reason": reason,
    }


# -- delivery ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None


def _delay(attempt: int, first_delay_s: float, max_delay_s: float, response: Any) -> float:
    delay = min(max_delay_s, first_delay_s * 2 ** (attempt - 1))
    retry_after = response.headers.get("Retry-After") if response is not None else None
    if retry_after and retry_after.isdigit():  # the LMS asked for a pause: honour it, capped
        delay = max(delay, min(float(retry_after), max_delay_s))
    return delay


def post(
    url: str,
    secret: str | bytes,
    payload: Mapping[str, Any],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    first_delay_s: float = 1.0,
    max_delay_s: float = 30.0,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> Delivery:
    """POST ``payload`` signed, retrying transport errors, 408/425/429 and 5xx.

    Another 4xx is final (the LMS refuses this delivery; resending will not change its
    mind). Each attempt is signed afresh so a late retry is not refused as stale.
    """
    body = encode(payload)
    event = str(payload.get("event", ""))
    delivery_id = uuid.uuid4().hex
    own_client = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=False)
    last_status: int | None = None
    error = "no attempt made"
    try:
        for attempt in range(1, attempts + 1):
            timestamp = str(int(clock()))
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(secret, timestamp, body),
                EVENT_HEADER: event,
                DELIVERY_HEADER: delivery_id,
            }
            response = None
            try:
                response = http.post(url, content=body, headers=headers, timeout=timeout)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
                last_status = None
            else:
                last_status = response.status_code
                if response.is_success:
                    return Delivery(True, attempt, last_status)
                error = f"HTTP {last_status} {response.reason_phrase}".strip()
                if last_status not in _RETRY_STATUS:
                    return Delivery(False, attempt, last_status, error)
            if attempt < attempts:
                delay = _delay(attempt, first_delay_s, max_delay_s, response)
                log.warning(
                    "webhook %s to %s: %s; attempt %d of %d again in %.0f s",
                    event,
                    url,
                    error,
                    attempt + 1,
                    attempts,
                    delay,
                )
                sleep(delay)
        return Delivery(False, attempts, last_status, error)
    finally:
        if own_client:
            http.close()
