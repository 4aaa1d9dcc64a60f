"""Exceptions that say what happened, to whom and where.

Every error a user can cause or fix derives from :class:`ExportError`; its ``str`` is
written for the person who will read it (a teacher's admin in the Prefect UI, the LMS
log), and ``reason`` is the short text a failure mail may show to a teacher.
"""

from __future__ import annotations

from course_exports.text import one_line

#: Longest message kept (a pydantic report of a damaged manifest runs to a few KB).
MAX_MESSAGE_CHARS = 4000


class ExportError(Exception):
    """Base of every error this system reports on purpose."""

    #: What a teacher can be told (no paths, no internals).
    reason: str = "the export could not be produced"
    #: True for the few errors of ours that a later attempt may cure (storage that kept
    #: failing); the task retry policy (tasks/retry.py) retries only those.
    transient: bool = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        # Messages quote names and data from the lake; Prefect logs them when a run
        # fails, so a CR/LF (or bidi control) in a name must not start a forged line.
        super().__init__(one_line(message, limit=MAX_MESSAGE_CHARS))
        if reason is not None:
            self.reason = reason


class SettingsError(ExportError):
    """A setting (environment variable) is missing or invalid."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(
            f"setting {variable}: {problem}", reason="the export service is misconfigured"
        )
        self.variable = variable
        self.problem = problem


class InputError(ExportError):
    """A flow parameter is invalid (bad timezone, since after until, unknown id...)."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"parameter {parameter}: {problem}", reason=f"{parameter}: {problem}")
        self.parameter = parameter
        self.problem = problem


class NotFoundError(ExportError):
    """Something named by the request does not exist (course, export, assignment...)."""

    def __init__(self, what: str, problem: str = "not found") -> None:
        super().__init__(f"{what}: {problem}", reason=f"{what} was not found")
        self.what = what


class PermissionDeniedError(ExportError):
    """The requester may not ask for this."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="only a teacher of the course may request this export")


class LakeDataError(ExportError):
    """Data the LMS wrote breaks the layout of CONTRACT section 2."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(
            f"{path}: {problem}",
            reason="the course data on the platform is damaged; support has been told",
        )
        self.path = path
        self.problem = problem


class ConflictError(ExportError):
    """The request clashes with an earlier one (request_id reused with other parameters...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason=message)
