"""One export of a course at a time, through a Prefect global concurrency limit.

Prefect does not limit by a name that does not exist (non-strict acquisition proceeds),
so the per-course limit is created on first use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

#: How long a second export of the same course waits for the first before giving up.
WAIT_FOR_COURSE_S = 4 * 3600


def course_limit_name(course_id: int) -> str:
    return f"course-export-{course_id}"


def ensure_limit(name: str, limit: int) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit)
                )


@contextmanager
def one_export_per_course(course_id: int, timeout_s: float = WAIT_FOR_COURSE_S) -> Iterator[None]:
    """Hold the course's slot; a second export of the same course waits here."""
    name = course_limit_name(course_id)
    ensure_limit(name, 1)
    with concurrency(name, occupy=1, timeout_seconds=timeout_s, strict=True):
        yield
