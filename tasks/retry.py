"""How I/O tasks retry: one policy for every step that touches storage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

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


class OpaqueArgsTask(Task[P, R]):
    """A task whose arguments Prefect hands to the function without looking inside.

    Prefect walks every argument of a task call, recursively, looking for futures and
    states to wait for (``visit_collection``), twice per run. Our tasks take plain values,
    never futures, and some are large: an access export's plan holds 180 days of
    row-group indexes, ~100,000 objects, which cost about a second of CPU per task run
    (profiled, issue 10's orchestration target is 0.7 s in all). ``quote`` tells Prefect
    not to look; the function still receives the values themselves.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        quoted = {name: quote(value) for name, value in kwargs.items()}
        return super().__call__(*(quote(value) for value in args), **quoted)  # type: ignore[arg-type]


def plain_task(name: str, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A task whose arguments Prefect does not walk (:class:`OpaqueArgsTask`), unless its
    run name is made from them (Prefect formats it from the arguments as passed)."""

    def make(fn: Callable[P, R]) -> Task[P, R]:
        if options.get("task_run_name"):
            return Task(fn, name=name, **options)
        return OpaqueArgsTask(fn, name=name, **options)

    return make


def io_task(
    name: str,
    *,
    timeout_seconds: float,
    delays: Sequence[float] = (2, 10),
    task_run_name: str | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A task over storage: retried on transient errors, never cached (it has side effects
    or reads data that changes; exports are deduplicated by the registry instead)."""
    return plain_task(
        name,
        task_run_name=task_run_name,
        cache_policy=NO_CACHE,
        retries=len(delays),
        retry_delay_seconds=list(delays),
        retry_condition_fn=transient,
        timeout_seconds=timeout_seconds,
    )
