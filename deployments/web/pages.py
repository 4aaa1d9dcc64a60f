"""Routes of the Course Data page and of the LMS's JSON list.

``GET  /courses/{id}/launch?token=``   launch token -> session cookie -> the page
``GET  /courses/{id}``                 the page (HTML; JSON when asked for with Accept)
``POST /courses/{id}/exports/{kind}``  start an export (CSRF token, then the deployment)
``GET  /courses/{id}/exports/{export}/download``  a freshly minted download link
``GET  /courses/{id}/exports``         the JSON list (session cookie, or Bearer launch token)

Refusals are pages that say what to do (404 unknown or tampered link, 403 not a teacher
of the course or no session, 410 expired link), never a trace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from course_exports import export_records, links
from course_exports.errors import ExportError, NotFoundError
from course_exports.export_records import ExportKind, ExportRecord
from course_exports.settings import Settings
from course_exports.text import strip_bidi
from deployments.lms_client import LmsClientError
from deployments.web import course_view, session, starter
from deployments.web.course_facts import CourseFacts
from deployments.web.runs import RunInfo, Runs

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
#: A Download button's link works this long (the export's own expiry if sooner).
DOWNLOAD_LINK_TTL = timedelta(minutes=10)
#: How often the page's script refreshes while an export is queued or running.
REFRESH_SECONDS = 3
HEADERS = {
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
}
NOTICES = {
    "started": "Export started. It is queued and will show its progress here.",
    "joined": "This export is already queued or running; it is shown below.",
}
_REFUSALS = {
    404: (
        "Link not valid",
        "This link is not valid for this course. Open the Course Data page again from the "
        "course's Admin tab in the LMS.",
    ),
    403: (
        "Not allowed",
        "Only teachers of this course can see its exports. If you teach it, open the "
        "Course Data page from the course's Admin tab in the LMS.",
    ),
    410: (
        "Link expired",
        "This link has expired: links to the Course Data page work for a few minutes. "
        "Open the page again from the course's Admin tab in the LMS.",
    ),
    401: (
        "Please open the page from the LMS",
        "Your session for this course has ended or was never started. Open the Course "
        "Data page from the course's Admin tab in the LMS.",
    ),
    400: ("Form not accepted", ""),
    500: (
        "Something went wrong",
        "The page could not be shown. Please try again in a minute; if it keeps happening, "
        "tell your LMS administrator.",
    ),
    503: (
        "Exports cannot be started right now",
        "The export service is not reachable. Please try again in a few minutes.",
    ),
}


def _name_filter(value: object) -> str:
    # Autoescaping keeps markup out; this keeps direction overrides and line breaks out.
    return " ".join(strip_bidi(str(value)).split())


@dataclass
class Parts:
    settings: Settings
    key: bytes
    facts: CourseFacts
    runs: Runs | None
    clock: Callable[[], datetime]
    refresh_seconds: float = REFRESH_SECONDS


class CoursePages:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["name"] = _name_filter

    def routes(self) -> list[BaseRoute]:
        base = "/courses/{course_id:int}"
        return [
            Route(base, self.page, methods=["GET"]),
            Route(base + "/launch", self.launch, methods=["GET"]),
            Route(base + "/exports", self.api_list, methods=["GET"]),
            Route(base + "/exports/{kind}", self.start, methods=["POST"]),
            Route(base + "/exports/{export_id}/download", self.download, methods=["GET"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    # -- rendering ---------------------------------------------------------------------

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(
            refresh_seconds=self.p.refresh_seconds, **context
        )
        return HTMLResponse(html, status_code=status_code, headers=HEADERS)

    def refuse(self, status_code: int, detail: str = "") -> HTMLResponse:
        title, advice = _REFUSALS[status_code]
        return self.render(
            "refusal.html", status_code, title=title, advice=detail or advice, status=status_code
        )

    # -- launch ------------------------------------------------------------------------

    async def launch(self, request: Request) -> Response:
        course_id: int = request.path_params["course_id"]
        now = self.p.clock()
        try:
            claims = links.verify_user(
                self.p.key, request.query_params.get("token", ""), purpose=links.LAUNCH, now=now
            )
        except links.InvalidTokenError:
            return self.refuse(404)
        except links.ExpiredTokenError:
            return self.refuse(410)
        if claims.course_id != course_id:
            return self.refuse(404)
        refused = await self._check_teacher(course_id, claims.user_id)
        if refused is not None:
            return refused
        # A page (not a redirect) moves the browser on: a navigation the page itself
        # starts is same-site, so the SameSite=Strict cookie goes with it even when the
        # LMS on another site opened the launch link; location.replace drops the launch
        # URL from history.
        response = self.render("launch.html", next_url=f"/courses/{course_id}")
        secure = request.url.scheme == "https" or self.p.settings.public_url.startswith("https:")
        session.start_session(response, self.p.key, claims, secure=secure, now=now)
        return response

    async def _check_teacher(self, course_id: int, user_id: int) -> Response | None:
        try:
            role = await run_in_threadpool(self.p.facts.role, course_id, user_id)
        except NotFoundError:
            return self.refuse(404)
        except ExportError as exc:
            log.error("course %s: roster unreadable: %s", course_id, exc)
            return self.refuse(500)
        return None if role == "Teacher" else self.refuse(403)

    async def _session(self, request: Request) -> session.Session | Response:
        course_id: int = request.path_params["course_id"]
        found = session.read_session(request, self.p.key, course_id, self.p.clock())
        if found is None:
            return self.refuse(401)
        refused = await self._check_teacher(course_id, found.teacher_id)
        return refused if refused is not None else found

    # -- the page ----------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        current = await self._session(request)
        if isinstance(current, Response):
            return current
        if "application/json" in request.headers.get("accept", "").split(",")[0]:
            return await self.api_list(request)
        notice = NOTICES.get(request.query_params.get("notice", ""), "")
        return await self._render_page(
            current, notice=notice, shown=request.query_params.get("shown", "")
        )

    async def _render_page(
        self,
        current: session.Session,
        *,
        notice: str = "",
        error: str = "",
        shown: str = "",
        status_code: int = 200,
    ) -> Response:
        try:
            context = await run_in_threadpool(self._page_context, current)
        except ExportError as exc:
            log.error("course %s: page not rendered: %s", current.course_id, exc)
            return self.refuse(500)
        return self.render(
            "course.html", status_code, notice=notice, error=error, shown=shown, **context
        )

    def _runs(self, course_id: int) -> tuple[list[RunInfo], bool]:
        if self.p.runs is None:
            return [], False
        try:
            return self.p.runs.of_course(course_id, self.p.clock()), True
        except LmsClientError as exc:
            log.warning("course %s: Prefect API not readable: %s", course_id, exc)
            return [], False

    def _view(
        self, course_id: int, records: list[ExportRecord] | None = None
    ) -> tuple[course_view.CourseView, Any, bool]:
        course = self.p.facts.course(course_id)
        if records is None:
            records = export_records.list_records(self.p.settings.exports(), course_id)
        runs, prefect_ok = self._runs(course_id)
        view = course_view.build(
            records,
            runs,
            now=self.p.clock(),
            tz=course_view.zone(course.timezone),
            name_of=self.p.facts.name,
            failed_for=timedelta(days=self.p.settings.export_ttl_days),
        )
        return view, course, prefect_ok

    def _page_context(self, current: session.Session) -> dict[str, Any]:
        view, course, prefect_ok = self._view(current.course_id)
        return {
            "course": course,
            "teacher": self.p.facts.name(current.teacher_id),
            "view": view,
            "kinds": ExportKind,
            "students": self.p.facts.students(current.course_id),
            "csrf": current.csrf_token(self.p.key),
            "nonce": starter.new_nonce(),
            "can_start": prefect_ok,
            "timezone": course.timezone or "UTC",
            "ttl_days": self.p.settings.export_ttl_days,
        }

    # -- Export buttons ----------------------------------------------------------------

    async def start(self, request: Request) -> Response:
        current = await self._session(request)
        if isinstance(current, Response):
            return current
        form = await request.form()
        if not session.same_origin(request) or not session.csrf_ok(
            self.p.key, current, str(form.get("csrf", ""))
        ):
            return self.refuse(
                403,
                "This form has expired or did not come from this page. Reload the page "
                "and press the button again.",
            )
        try:
            kind = ExportKind(request.path_params["kind"])
        except ValueError:
            return self.refuse(404)
        if self.p.runs is None:
            return self.refuse(503)
        try:
            course = await run_in_threadpool(self.p.facts.course, current.course_id)
            students = await run_in_threadpool(self.p.facts.students, current.course_id)
            wanted = starter.parse(
                kind,
                dict(form),
                multi={
                    name: [str(v) for v in form.getlist(name)] for name in ("assignment", "student")
                },
                teacher_id=current.teacher_id,
                assignment_ids=course.assignment_ids(),
                student_ids=[s.user_id for s in students],
                course_timezone=course.timezone,
            )
        except starter.FormError as exc:
            return await self._render_page(current, error=str(exc), status_code=400)
        try:
            notice, shown = await run_in_threadpool(self._start, current.course_id, wanted)
        except LmsClientError as exc:
            log.error("course %s: %s export not started: %s", current.course_id, kind, exc)
            return self.refuse(503)
        query = urlencode({"notice": notice, "shown": shown})
        return RedirectResponse(
            f"/courses/{current.course_id}?{query}#exports", status_code=303, headers=HEADERS
        )

    def _start(self, course_id: int, wanted: starter.Request) -> tuple[str, str]:
        assert self.p.runs is not None
        runs = self.p.runs.of_course(course_id, self.p.clock())
        same = starter.identical(wanted, runs)
        if same is not None:
            return "joined", same.export_id or same.run_id
        params = {"course_id": course_id, **wanted.parameters}
        ref = self.p.runs.start(wanted.kind, params, wanted.request_id)
        export_id = export_records.new_export_id(wanted.kind, course_id, wanted.request_id)
        return ("started" if ref.created else "joined"), export_id

    # -- Download buttons --------------------------------------------------------------

    async def download(self, request: Request) -> Response:
        current = await self._session(request)
        if isinstance(current, Response):
            return current
        export_id = str(request.path_params["export_id"])
        now = self.p.clock()
        try:
            record = await run_in_threadpool(
                export_records.read_record, self.p.settings.exports(), current.course_id, export_id
            )
        except ExportError as exc:
            log.error("export %s/%s: %s", current.course_id, export_id, exc)
            return self.refuse(500)
        if record is None:
            return self.refuse(404, "This export does not exist (any more). Reload the page.")
        if not record.is_live(now):
            return self.refuse(
                410,
                "This export has expired or is not ready. Reload the page and start a new export.",
            )
        return RedirectResponse(self._fresh_link(record, now), status_code=303, headers=HEADERS)

    def _fresh_link(self, record: ExportRecord, now: datetime) -> str:
        expires = min(record.expires_at, now + DOWNLOAD_LINK_TTL)
        return links.download_url(
            self.p.settings.public_url, self.p.key, record.course_id, record.export_id, expires
        )

    # -- the LMS's JSON list -----------------------------------------------------------

    async def api_list(self, request: Request) -> Response:
        course_id: int = request.path_params["course_id"]
        now = self.p.clock()
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            try:
                claims = links.verify_user(
                    self.p.key, auth[7:].strip(), purpose=links.LAUNCH, now=now
                )
            except links.InvalidTokenError:
                return _json_error(404, "unknown or tampered token")
            except links.ExpiredTokenError:
                return _json_error(410, "token expired: mint a new one")
            if claims.course_id != course_id:
                return _json_error(404, "token is for another course")
            teacher_id = claims.user_id
        else:
            found = session.read_session(request, self.p.key, course_id, now)
            if found is None:
                return _json_error(401, "send Authorization: Bearer <launch token>")
            teacher_id = found.teacher_id
        refused = await self._check_teacher(course_id, teacher_id)
        if refused is not None:
            return _json_error(refused.status_code, "not a teacher of this course")
        try:
            body = await run_in_threadpool(self._listing, course_id, now)
        except ExportError as exc:
            log.error("course %s: exports cannot be listed: %s", course_id, exc)
            return _json_error(500, "exports cannot be listed right now")
        return JSONResponse(body, headers=HEADERS)

    def _listing(self, course_id: int, now: datetime) -> dict[str, Any]:
        records = export_records.list_records(self.p.settings.exports(), course_id)
        live = [r for r in records if r.is_live(now)]
        view, _, _ = self._view(course_id, records)
        return {
            "course_id": course_id,
            "exports": [self._describe(r) for r in live],
            "in_progress": [_row_json(r) for r in view.in_progress],
            "failed": [_row_json(r) for r in view.failed],
        }

    def _describe(self, record: ExportRecord) -> dict[str, Any]:
        fields = record.model_dump(
            mode="json",
            include={
                "export_id",
                "kind",
                "course_name",
                "created_at",
                "expires_at",
                "size_bytes",
                "sha256",
                "counts",
                "file_name",
            },
        )
        # The LMS may keep the link: it works until the export expires, as the flow's.
        fields["download_url"] = links.download_url(
            self.p.settings.public_url,
            self.p.key,
            record.course_id,
            record.export_id,
            record.expires_at,
        )
        return fields


def _row_json(row: course_view.Row) -> dict[str, Any]:
    return {
        "export_id": row.export_id,
        "flow_run_id": row.run_id,
        "kind": str(row.kind),
        "state": str(row.state),
        "status": row.status_text,
        "progress": row.progress_text,
        "progress_percent": row.progress_percent,
        "failure_reason": row.failure_reason or None,
    }


def _json_error(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=HEADERS)
