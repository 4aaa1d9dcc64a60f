"""The completion webhook: tell the LMS an export is ready (or failed), signed.

Optional: set ``COURSE_EXPORT_WEBHOOK_URL`` and ``COURSE_EXPORT_WEBHOOK_SECRET``. Each
delivery is one JSON POST signed by the `Standard Webhooks <https://www.standardwebhooks.com>`_
scheme, so the LMS verifies it with any Standard Webhooks library:

- ``webhook-id``: ``msg_<32 hex>``, the same for every attempt of one delivery (the LMS
  drops a repeat whose first attempt it did get: a lost 200 looks like a failure here),
- ``webhook-timestamp``: Unix seconds when this attempt was signed,
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, one
  per configured secret, space-separated (key rotation: sign with the new and the old
  secret until the LMS has switched),
- ``X-Course-Export-Event``: the event, for routing only (the signed body says it too).

The id and timestamp are inside the signature, so a captured request cannot be replayed
once it is older than the LMS's tolerance, nor passed off as another delivery.
``COURSE_EXPORT_WEBHOOK_SECRET`` holds one or more secrets in the standard's form,
``whsec_<base64 of 24 to 64 random bytes>``, separated by spaces; the first is the one
the LMS should use. Signing is done by the ``standardwebhooks`` package; :func:`verify`
is the LMS side (and the tests'), strict about malformed headers.
Delivery retries with exponential backoff and never raises: a webhook that cannot be
delivered is logged, and the export it announces stays finished.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from course_exports.export_records import ExportResult
from course_exports.text import one_line

COMPLETED = "course-export.completed"
FAILED = "course-export.failed"

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
EVENT_HEADER = "X-Course-Export-Event"

SECRET_PREFIX = "whsec_"
#: Key sizes the Standard Webhooks spec asks for (192 to 512 bits).
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
#: A key of random bytes has about as many distinct bytes as it is long; fewer than
#: this many is a made-up key (``whsec_AAAA…``), not a random one.
MIN_DISTINCT_KEY_BYTES = 8
#: How old a signed request the LMS should still accept (clock skew plus retries in flight).
DEFAULT_TOLERANCE_S = 300
#: Explicit everywhere: a hung LMS must not hold a finished flow run for long.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: 5 attempts, 1+2+4+8 s apart: rides out an LMS restart, gives up within a minute.
DEFAULT_ATTEMPTS = 5
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
#: Longest signature header :func:`verify` reads: a handful of signatures, not a flood.
_MAX_SIGNATURE_HEADER = 1024

log = logging.getLogger(__name__)


class InvalidSignatureError(Exception):
    """The request is not signed with the shared secret, is too old, or is malformed."""


def encode(payload: Mapping[str, Any]) -> bytes:
    """The body: compact JSON, keys sorted (the signature covers these exact bytes)."""
    return json.dumps(
        dict(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def _strict_base64(text: str) -> bytes:
    """Decoded standard base64 (padding optional); ValueError for anything else."""
    if not text.isascii() or not _BASE64.fullmatch(text):
        raise ValueError("is not base64")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not base64") from None


def parse_secret(secret: str) -> bytes:
    """The key of one ``whsec_<base64>`` secret; ValueError says what is wrong with it."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(
            f"must be a Standard Webhooks secret, {SECRET_PREFIX}<base64 of "
            f"{MIN_KEY_BYTES}-{MAX_KEY_BYTES} random bytes>"
        )
    try:
        key = _strict_base64(secret.removeprefix(SECRET_PREFIX))
    except ValueError:
        raise ValueError(f"must be {SECRET_PREFIX} followed by base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"must hold {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes after {SECRET_PREFIX} "
            f"(it holds {len(key)})"
        )
    if len(set(key)) < MIN_DISTINCT_KEY_BYTES:
        raise ValueError(
            f"has fewer than {MIN_DISTINCT_KEY_BYTES} distinct bytes: use random bytes"
        )
    return key


def parse_secrets(value: str) -> list[bytes]:
    """The keys of ``COURSE_EXPORT_WEBHOOK_SECRET``: one or more secrets, space-separated."""
    values = value.split()
    if not values:
        raise ValueError("is empty")
    return [parse_secret(secret) for secret in values]


def new_secret() -> str:
    """A fresh ``whsec_`` secret of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _keys(secret: str | bytes | Sequence[bytes]) -> list[bytes]:
    if isinstance(secret, bytes):
        return [secret]
    if isinstance(secret, str):
        return parse_secrets(secret)
    return list(secret)


def sign(secret: str | bytes | Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64>`` for each key, space-separated."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    text = body.decode()  # the library signs text; our bodies are UTF-8 JSON
    return " ".join(Webhook(key).sign(msg_id, moment, text) for key in _keys(secret))


def verify(
    secret: str | bytes | Sequence[bytes],
    *,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise InvalidSignatureError unless one of the ``webhook-signature`` values is ours
    over this id, timestamp and body, and the timestamp is recent.

    ``body`` must be the raw request bytes, before any JSON parsing. Every malformed
    header (missing, non-ASCII, not base64, a timestamp that is not Unix seconds) is an
    InvalidSignatureError too, never another exception.
    """
    lowered = {str(k).lower(): v for k, v in headers.items()}
    msg_id = lowered.get(ID_HEADER) or ""
    timestamp = lowered.get(TIMESTAMP_HEADER) or ""
    signatures = lowered.get(SIGNATURE_HEADER) or ""
    if not (msg_id and timestamp and signatures):
        raise InvalidSignatureError(
            f"missing {ID_HEADER}, {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}"
        )
    if not msg_id.isascii() or not msg_id.isprintable():
        raise InvalidSignatureError(f"{ID_HEADER} is not printable ASCII")
    if not timestamp.isascii() or not _TIMESTAMP.fullmatch(timestamp):
        raise InvalidSignatureError(f"{TIMESTAMP_HEADER} is not Unix seconds")
    if len(signatures) > _MAX_SIGNATURE_HEADER:
        raise InvalidSignatureError(f"{SIGNATURE_HEADER} is too long")
    signed_at = int(timestamp)
    if abs((time.time() if now is None else now) - signed_at) > tolerance_s:
        raise InvalidSignatureError(f"timestamp {signed_at} is outside {tolerance_s:.0f} s")
    try:
        body.decode()
    except UnicodeDecodeError:
        raise InvalidSignatureError("body is not UTF-8") from None
    expected = [
        _strict_base64(sig.split(",", 1)[1])
        for sig in sign(secret, msg_id, signed_at, body).split()
    ]
    for offered in signatures.split():
        version, _, value = offered.partition(",")
        if version != "v1":
            continue  # another scheme (v1a: asymmetric): not ours to check
        try:
            mac = _strict_base64(value)
        except ValueError:
            continue
        if any(hmac.compare_digest(mac, mine) for mine in expected):
            return
    raise InvalidSignatureError("no signature matches")


# -- payloads ----------------------------------------------------------------------------


def completed_payload(result: ExportResult, flow_run_id: str | None) -> dict[str, Any]:
    """The whole result (what the flow returned), plus which event and run it was."""
    # The reporting run's id wins over the record's (the run that made a shared export).
    return {**result.model_dump(mode="json"), "event": COMPLETED, "flow_run_id": flow_run_id}


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
    secret: str | bytes | Sequence[bytes],
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
    """POST ``payload`` signed with every key of ``secret``, retrying transport errors,
    408/425/429 and 5xx.

    ``secret`` is the setting's value (``whsec_…``, space-separated), or raw keys.
    Another 4xx is final (the LMS refuses this delivery; resending will not change its
    mind). Each attempt is signed afresh so a late retry is not refused as stale.
    """
    body = encode(payload)
    try:
        keys = _keys(secret)
    except ValueError as exc:  # the settings check it at start; never raise here anyway
        return Delivery(False, 0, None, f"webhook secret {exc}")
    event = str(payload.get("event", ""))
    msg_id = f"msg_{uuid.uuid4().hex}"
    own_client = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=False)
    last_status: int | None = None
    error = "no attempt made"
    try:
        for attempt in range(1, attempts + 1):
            timestamp = int(clock())
            headers = {
                "Content-Type": "application/json",
                ID_HEADER: msg_id,
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(keys, msg_id, timestamp, body),
                EVENT_HEADER: event,
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
                    one_line(event),
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
