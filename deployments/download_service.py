"""The download service (CONTRACT section 5): ``python -m deployments.download_service``.

``GET /d/{token}`` checks a signed link against the export's manifest, then streams the
file (local storage) or redirects to a presigned URL that lives minutes (S3).
The Course Data pages (``/courses/{course_id}``, deployments/web/) show a course's
exports to its teachers, and ``GET /courses/{course_id}/exports`` lists them as JSON for
the LMS (described by ``GET /openapi.json``). ``GET /healthz`` answers ``ok``.

A signed token only proves what the signer said when it signed; the manifest decides
whether the export is still there, so a purged or expired export stops working
whatever its token says.
"""

from __future__ import annotations

import argparse
import logging
import mimetypes
import os
import re
import sys
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    PlainTextResponse,
    Response,
)
from starlette.routing import Route

from course_exports import export_records, links, registry
from course_exports.errors import ExportError, LakeDataError, SettingsError
from course_exports.export_records import ExportRecord, ExportStatus
from course_exports.settings import Settings, load_settings
from course_exports.storage import Download, Location
from course_exports.text import one_line, strip_bidi
from deployments.lms_client import LmsClient
from deployments.web.course_facts import CourseFacts
from deployments.web.pages import REFRESH_SECONDS, CoursePages, Parts
from deployments.web.runs import Runs

log = logging.getLogger(__name__)
#: The OpenAPI document of the LMS-facing routes.
OPENAPI = Path(__file__).parent / "web" / "openapi.json"

#: How long a presigned S3 URL works: long enough to start the download, short enough
#: that a leaked redirect target is useless soon.
PRESIGN_SECONDS = 300
_CONTENT_TYPES = {
    ".zip": "application/zip",
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json",
}
# Links carry their secret in the URL: keep them out of caches and Referer headers.
_PRIVATE = {
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_ATTR_CHAR_EXTRA = "!#$&+^`|"  # RFC 5987 attr-char besides ALPHA, DIGIT and "-._~"

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _not_found() -> Response:
    # Deliberately the same for every kind of bad link: no hint that helps guessing.
    return PlainTextResponse("Not Found", status_code=404, headers=_PRIVATE)


def _gone() -> Response:
    return PlainTextResponse(
        "Gone: this link has expired. Ask for a new export.", status_code=410, headers=_PRIVATE
    )


def _server_error() -> Response:
    return PlainTextResponse("Internal Server Error", status_code=500, headers=_PRIVATE)


def content_type_for(file_name: str) -> str:
    ext = os.path.splitext(file_name)[1].lower()
    return (
        _CONTENT_TYPES.get(ext)
        or mimetypes.guess_type(file_name)[0]
        or ("application/octet-stream")
    )


def _ascii_fallback(text: str) -> str:
    # "Einführung" -> "Einfuhrung"; what has no ASCII spelling is dropped.
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = "".join("_" if ch in '"\\/' or not ch.isprintable() else ch for ch in ascii_text)
    return " ".join(cleaned.split())


def content_disposition(file_name: str) -> str:
    """``attachment`` with an ASCII ``filename`` for old clients and an RFC 5987
    ``filename*`` with the real (UTF-8) name, which RFC 6266 clients prefer. Bidi
    controls are dropped (an export named before they were stripped from names could
    otherwise still spoof its extension in a save dialog)."""
    file_name = strip_bidi(file_name)
    stem, ext = os.path.splitext(file_name)
    fallback = (_ascii_fallback(stem).strip(" .") or "download") + _ascii_fallback(ext)
    encoded = quote(file_name, safe=_ATTR_CHAR_EXTRA)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _etag(record: ExportRecord) -> str | None:
    return f'"{record.sha256}"' if record.sha256 else None


class _Service:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.key = settings.require_signing_key()
        self.exports: Location = settings.exports()
        self.clock = clock

    # -- GET|HEAD /d/{token} -----------------------------------------------------------

    async def download(self, request: Request) -> Response:
        now = self.clock()
        try:
            claims = links.verify(
                self.key, request.path_params["token"], purpose=links.DOWNLOAD, now=now
            )
        except links.InvalidTokenError:
            return _not_found()
        except links.ExpiredTokenError:
            return _gone()
        try:
            record = await run_in_threadpool(
                export_records.read_record, self.exports, claims.course_id, claims.export_id
            )
        except LakeDataError as exc:
            # A manifest that breaks the record's rules (e.g. a file_name that is a path
            # to another export's file) is never served.
            log.error("export %s/%s: %s", claims.course_id, claims.export_id, one_line(exc))
            return _not_found()
        except ExportError as exc:
            log.error("export %s/%s: %s", claims.course_id, claims.export_id, exc)
            return _server_error()
        if record is None or record.status is ExportStatus.PENDING:
            return _not_found()
        if not record.is_live(now):
            return _gone()
        try:
            handle = await run_in_threadpool(self._handle, record)
        except Exception:
            log.exception("export %s: no download", record.export_id)
            return _server_error()
        if handle is None:
            return _not_found()
        return handle.respond(
            request,
            headers={**_PRIVATE, "Content-Disposition": content_disposition(record.file_name)},
            media_type=content_type_for(record.file_name),
            etag=_etag(record),
        )

    def _handle(self, record: ExportRecord) -> Download | None:
        """The stored file's download handle (a presigned S3 URL or the local file), or
        None when it is missing. Never a file that is not the one the manifest (and
        ETag) describe."""
        path = registry.file_path(self.exports, record)
        handle = self.exports.download(
            path,
            content_disposition=content_disposition(record.file_name),
            content_type=content_type_for(record.file_name),
            expires_s=PRESIGN_SECONDS,
        )
        if handle is None:
            log.warning(
                "export %s is ready but its file %s is missing", record.export_id, one_line(path)
            )
            return None
        if handle.size != record.size_bytes:
            raise RuntimeError(
                f"export {record.export_id}: file has {handle.size} bytes, "
                f"manifest says {record.size_bytes}"
            )
        return handle


async def _healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _openapi(request: Request) -> Response:
    return Response(OPENAPI.read_bytes(), media_type="application/json")


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    prefect: LmsClient | Literal["env"] | None = "env",
    refresh_seconds: float = REFRESH_SECONDS,
) -> Starlette:
    """The download service and the Course Data pages. ``settings`` are read from the
    environment when None; raises SettingsError (naming the variable) when they are
    invalid or lack the key. ``prefect``: the client the pages start exports and read
    runs with; by default one for PREFECT_API_URL when that is set; without one the
    pages show exports but cannot start them."""
    service = _Service(settings if settings is not None else load_settings(), clock or _utcnow)
    if prefect == "env":
        prefect = LmsClient.from_env() if os.environ.get("PREFECT_API_URL") else None
    pages = CoursePages(
        Parts(
            settings=service.settings,
            key=service.key,
            facts=CourseFacts(service.settings.lake()),
            runs=Runs(prefect) if prefect is not None else None,
            clock=service.clock,
            refresh_seconds=refresh_seconds,
        )
    )
    app = Starlette(
        routes=[
            Route("/d/{token}", service.download, methods=["GET", "HEAD"]),
            *pages.routes(),
            Route("/openapi.json", _openapi, methods=["GET"]),
            Route("/healthz", _healthz, methods=["GET"]),
        ]
    )
    app.state.settings = service.settings
    return app


class RedactTokens(logging.Filter):
    """Keep link secrets out of uvicorn's access log: whoever reads the log could
    otherwise download every export it mentions."""

    _PATTERN = re.compile(r"(/d/|[?&]token=)[^/?&# ]+")  # downloads and launch links

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._PATTERN.sub(r"\1…", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.download_service",
        description="Serve export download links. Listens on the host and port of "
        "COURSE_EXPORT_PUBLIC_URL unless --host/--port say otherwise (behind a proxy, "
        "e.g. --host 0.0.0.0 --port 8765).",
    )
    parser.add_argument("--host", help="interface to listen on")
    parser.add_argument("--port", type=int, help="port to listen on")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        app = create_app(settings)
    except SettingsError as exc:
        print(f"download service not started: {exc}", file=sys.stderr)
        return 2

    import uvicorn  # only the command needs it, not importers of create_app

    public = urlsplit(settings.public_url)
    host = args.host or public.hostname or "127.0.0.1"
    port = args.port or public.port or (443 if public.scheme == "https" else 80)
    print(f"download service on http://{host}:{port} (links point to {settings.public_url})")
    config = uvicorn.Config(app, host=host, port=port, log_level=args.log_level.lower())
    # After Config: it (re)configures uvicorn's loggers.
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
