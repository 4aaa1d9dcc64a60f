"""When a task is worth retrying."""

from __future__ import annotations

from typing import Any

from course_exports.errors import ExportError


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O hiccups, never a refusal or bad data: those fail the same way again."""
    try:
        state.result()
    except ExportError:
        return False
    except Exception:
        return True
    return False
