"""Export forms into deployment parameters and request ids (deployments/web/starter.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from course_exports.export_records import ExportKind
from deployments.web import starter
from deployments.web.runs import RunInfo

NONCE = "0123456789abcdef" * 2


def parse(kind: ExportKind, form: dict[str, str], **multi: list[str]) -> starter.Request:
    return starter.parse(
        kind,
        {"nonce": NONCE, **form},
        multi=multi,
        teacher_id=7,
        assignment_ids=[1, 2, 3],
        student_ids=[10, 11],
        course_timezone="Europe/Berlin",
    )


def test_a_double_click_is_one_request_and_other_fields_another() -> None:
    first = parse(ExportKind.COURSE, {}, assignment=["1"])
    assert first == parse(ExportKind.COURSE, {}, assignment=["1"])
    assert first.parameters == {"requested_by": 7, "assignment_ids": [1]}
    other = parse(ExportKind.COURSE, {}, assignment=["2"])
    assert other.request_id != first.request_id
    assert first.request_id.startswith(f"page-{NONCE}-")


def test_everything_ticked_is_the_whole_course() -> None:
    whole = parse(ExportKind.COURSE, {})
    assert whole.parameters == {"requested_by": 7}
    assert parse(ExportKind.COURSE, {}, assignment=["1", "2", "3"], student=["10", "11"]) == whole


def test_access_days_are_whole_days_on_the_chosen_clock() -> None:
    request = parse(
        ExportKind.ACCESS_DATA,
        {"since": "2026-11-01", "until": "2026-11-02", "timezone": "Europe/Berlin", "excel": "on"},
    )
    assert request.parameters == {
        "requested_by": 7,
        "since": "2026-11-01T00:00:00+01:00",
        "until": "2026-11-03T00:00:00+01:00",  # the last day is included
        "timezone": "Europe/Berlin",
        "excel": True,
    }
    default = parse(ExportKind.ACCESS_DATA, {"timezone": ""})
    assert default.parameters["timezone"] == "Europe/Berlin"  # the course's


@pytest.mark.parametrize(
    ("kind", "form", "multi", "words"),
    [
        (ExportKind.COURSE, {}, {"assignment": ["99"]}, "not part of this course"),
        (ExportKind.COURSE, {}, {"student": ["7"]}, "not part of this course"),
        (ExportKind.COURSE, {}, {"student": ["x"]}, "not part of this course"),
        (ExportKind.ACCESS_DATA, {"timezone": "Mars/Base"}, {}, "not a time zone"),
        (ExportKind.ACCESS_DATA, {"since": "2026-13-01"}, {}, "must be a date"),
        (ExportKind.ACCESS_DATA, {"since": "2026-11-05", "until": "2026-11-01"}, {}, "comes after"),
        (ExportKind.LTI_SETTINGS, {"nonce": "short"}, {}, "reload the page"),
    ],
)
def test_bad_forms_say_what_is_wrong(
    kind: ExportKind, form: dict[str, str], multi: dict[str, list[str]], words: str
) -> None:
    with pytest.raises(starter.FormError, match=words):
        parse(kind, form, **multi)


@given(
    st.dictionaries(st.sampled_from(["since", "until", "timezone", "excel", "nonce"]), st.text())
)
def test_any_access_form_is_parameters_or_a_form_error(form: dict[str, str]) -> None:
    try:
        request = starter.parse(
            ExportKind.ACCESS_DATA,
            form,
            multi={},
            teacher_id=7,
            assignment_ids=[],
            student_ids=[],
            course_timezone=None,
        )
    except starter.FormError:
        return
    assert request.request_id.startswith("page-")


def test_an_identical_running_export_is_found_whoever_asked() -> None:
    wanted = parse(ExportKind.COURSE, {}, assignment=["1"])

    def run(state: str, **params: object) -> RunInfo:
        return RunInfo("r", ExportKind.COURSE, state, state, params, None, datetime.now(UTC))

    same = run(
        "RUNNING", course_id=1, requested_by=8, request_id="lms-1", notify=True, assignment_ids=[1]
    )
    assert starter.identical(wanted, [same]) is same
    assert starter.identical(wanted, [run("COMPLETED", assignment_ids=[1])]) is None
    assert starter.identical(wanted, [run("RUNNING", assignment_ids=[2])]) is None
    assert starter.identical(wanted, [run("RUNNING")]) is None  # the whole course
