"""How I/O tasks retry: one policy for every step that touches storage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from course_exports.errors import ExportError

P = ParamSpec("P")
R = TypeVar("R")


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O hiccups, never a refusal or bad data: those fail the same way again."""
    try:
        state.result()
    except ExportError as exc:
        return exc.transient
    except Exception:
        return True
    return False


def io_task(
    name: str,
    *,
    timeout_seconds: float,
    delays: Sequence[float] = (2, 10),
    task_run_name: str | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A task over storage: retried on transient errors, never cached (it has side effects
    or reads data that changes; exports are deduplicated by the registry instead)."""
    return task(
        name=name,
        task_run_name=task_run_name,
        cache_policy=NO_CACHE,
        retries=len(delays),
        retry_delay_seconds=list(delays),
        retry_condition_fn=transient,
        timeout_seconds=timeout_seconds,
    )
