"""The Prefect UI renders each flow's parameters as a form: titles, help and types."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

FLOWS = [
    ("flows.export_course", "export_course"),
    ("flows.export_access_data", "export_access_data"),
    ("flows.export_lti_settings", "export_lti_settings"),
    ("flows.import_project", "import_project"),
    ("flows.retention", "purge_expired_exports"),
    ("flows.retention", "purge_access_logs"),
]


def flow_of(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(("module", "name"), FLOWS)
def test_every_parameter_has_a_human_title_and_help(module: str, name: str) -> None:
    schema = flow_of(module, name).parameters.model_dump()
    for parameter, spec in schema["properties"].items():
        assert spec["title"] != parameter, parameter
        assert spec["title"][0].isupper(), parameter
        assert spec.get("description"), parameter
        assert "type" in spec or "anyOf" in spec, parameter  # typed, never a free JSON box


@pytest.mark.parametrize(
    ("module", "name", "required"),
    [
        ("flows.export_course", "export_course", ["course_id", "requested_by"]),
        ("flows.export_access_data", "export_access_data", ["course_id", "requested_by"]),
        ("flows.export_lti_settings", "export_lti_settings", ["course_id", "requested_by"]),
        (
            "flows.import_project",
            "import_project",
            ["export_id", "assignment_id", "student_id", "requested_by"],
        ),
    ],
)
def test_contract_parameters(module: str, name: str, required: list[str]) -> None:
    schema = flow_of(module, name).parameters
    assert schema.required == required


def test_lists_of_ids_are_lists_of_integers() -> None:
    schema = flow_of("flows.export_course", "export_course").parameters.model_dump()
    ids = schema["properties"]["student_ids"]["anyOf"][0]
    assert ids["type"] == "array" and ids["items"]["type"] == "integer"
