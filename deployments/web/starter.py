"""The page's Export buttons: a submitted form becomes the parameters of a deployment run.

Each rendered form carries a fresh nonce. The request id is the nonce and a hash of what
was asked, so a double click (same nonce, same fields) is one request and Prefect's
idempotency key makes it one run, while the same form sent again with other fields is
another request rather than a conflict. Before starting anything, an identical export
that is queued or running (whoever asked for it) is looked for and shown instead.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from course_exports.export_records import ExportKind
from deployments.web.course_view import zone
from deployments.web.runs import RunInfo

_NONCE = re.compile(r"^[0-9a-f]{32}$")
#: Parameters that do not change what an export holds.
_NOT_SELECTION = frozenset({"course_id", "request_id", "requested_by", "notify"})


class FormError(ValueError):
    """The form asks for something the export cannot do; the message is for the teacher."""


@dataclass(frozen=True)
class Request:
    kind: ExportKind
    parameters: dict[str, Any]
    request_id: str


def new_nonce() -> str:
    return secrets.token_hex(16)


def _ids(values: Sequence[str], allowed: Iterable[int], what: str) -> list[int] | None:
    allowed_set = set(allowed)
    chosen = set()
    for value in values:
        if not value.isdigit() or int(value) not in allowed_set:
            raise FormError(f"{what} {value!r} is not part of this course.")
        chosen.add(int(value))
    # Everything ticked is the same export as nothing ticked: the whole course.
    if not chosen or chosen == allowed_set:
        return None
    return sorted(chosen)


def _day(text: str, what: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FormError(f"{what} must be a date (YYYY-MM-DD), not {text!r}.") from None


def parse(
    kind: ExportKind,
    form: Mapping[str, Any],
    *,
    multi: Mapping[str, list[str]],
    teacher_id: int,
    assignment_ids: Iterable[int],
    student_ids: Iterable[int],
    course_timezone: str | None,
) -> Request:
    """The deployment parameters and request id of a submitted Export form."""
    nonce = str(form.get("nonce", ""))
    if not _NONCE.match(nonce):
        raise FormError("This form is incomplete: reload the page and try again.")
    params: dict[str, Any] = {"requested_by": teacher_id}
    if kind is ExportKind.COURSE:
        params["assignment_ids"] = _ids(multi.get("assignment", []), assignment_ids, "Assignment")
        params["student_ids"] = _ids(multi.get("student", []), student_ids, "Student")
    elif kind is ExportKind.ACCESS_DATA:
        params.update(_access(form, course_timezone))
    params = {k: v for k, v in params.items() if v is not None}
    digest = hashlib.sha256(
        json.dumps({"k": str(kind), "p": params}, sort_keys=True).encode()
    ).hexdigest()[:16]
    return Request(kind, params, f"page-{nonce}-{digest}")


def _access(form: Mapping[str, Any], course_timezone: str | None) -> dict[str, Any]:
    tz_name = str(form.get("timezone") or course_timezone or "UTC").strip()
    tz = zone(tz_name)
    if tz.key != tz_name:
        raise FormError(f"{tz_name!r} is not a time zone name such as Europe/Berlin.")
    first = _day(str(form.get("since", "")), "From")
    last = _day(str(form.get("until", "")), "To")
    if first and last and first > last:
        raise FormError("The first day comes after the last day.")
    # Whole days on the chosen clock; the last day is included.
    since = datetime.combine(first, time(), tz) if first else None
    until = datetime.combine(last + timedelta(days=1), time(), tz) if last else None
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "timezone": tz_name,
        "excel": form.get("excel") == "on",
    }


def selection_of(parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in parameters.items() if k not in _NOT_SELECTION and v is not None}


def identical(request: Request, runs: Iterable[RunInfo]) -> RunInfo | None:
    """A queued or running export of the same kind and selection, if there is one."""
    wanted = selection_of(request.parameters)
    for run in runs:
        if run.active and run.kind is request.kind and selection_of(run.parameters) == wanted:
            return run
    return None
