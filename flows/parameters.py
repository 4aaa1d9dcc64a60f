"""Flow parameters as the Prefect UI shows them: a human title, a description, a type.

Prefect titles every parameter with its Python name; a title given through
``json_schema_extra`` on the default is what it puts in the form instead. Constraints
(``gt=0``) go in the ``Annotated`` type, where Prefect keeps them for validation.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

PositiveId = Annotated[int, Field(gt=0)]


def param(title: str, description: str, default: Any = ...) -> Any:
    """A parameter's default carrying its form title and help text."""
    return Field(default, description=description, json_schema_extra={"title": title})


COURSE_ID = param("Course ID", "LMS id of the course")
REQUESTED_BY = param(
    "Requested by (user ID)",
    "LMS user id of the person asking; must be a Teacher of the course",
)
REQUEST_ID = param(
    "Request ID",
    "Idempotency key from the LMS: a request already completed returns its export again",
    None,
)
