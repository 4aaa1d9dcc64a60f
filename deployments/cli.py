"""``course-exports``: the operator's command line.

    course-exports up                                  the whole stack on this machine
    course-exports launch-link COURSE TEACHER          open the Course Data page as a teacher
    course-exports export course|access|lti COURSE --requested-by ID [filters] [--watch]
    course-exports list COURSE                         every export of a course, in any state

``export`` triggers the deployment through the Prefect API exactly as the LMS does
(PREFECT_API_URL; LmsClient.trigger), and with ``--watch`` shows a progress bar until the
link is ready. Settings (signing key, storage) come from COURSE_EXPORT_* or ./.env.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from course_exports import export_records, links
from course_exports.errors import ExportError, SettingsError
from course_exports.export_records import ExportKind
from course_exports.settings import Settings, load_settings
from course_exports.text import one_line
from deployments.lms_client import TERMINAL_STATES, LmsClient, LmsClientError, RunEnded
from deployments.web import course_view
from deployments.web.course_facts import CourseFacts
from deployments.web.runs import Runs

KINDS = {
    "course": ExportKind.COURSE,
    "access": ExportKind.ACCESS_DATA,
    "lti": ExportKind.LTI_SETTINGS,
}
BAR_WIDTH = 30


def _launch_link(args: argparse.Namespace, settings: Settings) -> int:
    role = CourseFacts(settings.lake()).role(args.course, args.teacher)
    if role != "Teacher":
        what = "is not in the roster" if role is None else f"is a {role}"
        print(
            f"user {args.teacher} {what} of course {args.course}: the page would refuse them",
            file=sys.stderr,
        )
        return 2
    print(
        links.launch_url(
            settings.public_url,
            settings.require_signing_key(),
            args.course,
            args.teacher,
            ttl=timedelta(minutes=args.minutes),
        )
    )
    return 0


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"course_id": args.course, "requested_by": args.requested_by}
    if args.kind == "course":
        params.update(assignment_ids=args.assignment or None, student_ids=args.student or None)
    elif args.kind == "access":
        params.update(
            since=args.since,
            until=args.until,
            timezone=args.timezone,
            excel=args.excel,
            assignment_ids=args.assignment or None,
            user_ids=args.user or None,
        )
    if args.no_mail:
        params["notify"] = False
    return {k: v for k, v in params.items() if v is not None}


def _export(args: argparse.Namespace, settings: Settings) -> int:
    kind = KINDS[args.kind]
    request_id = args.request_id or f"cli-{uuid.uuid4().hex}"
    with LmsClient.from_env() as client:
        ref = Runs(client).start(kind, _parameters(args), request_id)
        export_id = export_records.new_export_id(kind, args.course, request_id)
        what = "started" if ref.created else "already started"
        print(
            f"{args.kind} export of course {args.course} {what}: flow run {ref.id}, export {export_id}"
        )
        if not args.watch:
            return 0
        return _watch(client, settings, ref.id, args.course, export_id, sys.stderr)


def _bar(percent: int | None, tick: int) -> str:
    if percent is None:  # unknown total: a bouncing block
        at = tick % BAR_WIDTH
        return "[" + " " * at + "#" + " " * (BAR_WIDTH - at - 1) + "]     "
    done = BAR_WIDTH * percent // 100
    return f"[{'#' * done}{'-' * (BAR_WIDTH - done)}] {percent:3d}%"


def _watch(
    client: LmsClient, settings: Settings, run_id: str, course_id: int, export_id: str, out: TextIO
) -> int:
    """A progress bar on ``out`` until the run ends; then the link, or why it failed."""
    exports = settings.exports()
    tty = out.isatty()
    last, tick = "", 0
    while True:
        run = client.read_run(run_id)
        state = str(run.get("state_type"))
        record = export_records.read_record(exports, course_id, export_id)
        if record is not None and str(record.status) == "pending":
            text, percent = course_view.progress(record)
            line = f"{_bar(percent, tick)} running  {text}"
        elif state in TERMINAL_STATES:
            break
        else:
            line = f"{_bar(None, tick)} {str(run.get('state_name') or state).lower()}"
        if tty:
            out.write("\r" + line.ljust(100)[:100])
            out.flush()
        elif line != last:
            out.write(line + "\n")
        last, tick = line, tick + 1
        time.sleep(1)
    if tty:
        out.write("\n")
    try:
        result = client.result(run_id)
    except RunEnded as exc:
        record = export_records.read_record(exports, course_id, export_id)
        reason = getattr(record, "failure_reason", None) or exc.state_message or exc.state_name
        print(f"export failed: {one_line(reason, limit=500)}", file=out)
        return 1
    expires_at = datetime.fromisoformat(str(result["expires_at"]).replace("Z", "+00:00"))
    print(f"{_bar(100, 0)} ready: {result['size_bytes']:,} bytes, expires {expires_at}", file=out)
    # Signed here with the service's key: the Prefect API does not carry bearer links.
    key = settings.require_signing_key()
    print(
        links.download_url(
            settings.public_url, key, course_id, str(result["export_id"]), expires_at
        )
    )
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    facts = CourseFacts(settings.lake())
    course = facts.course(args.course)
    runs: list[Any] = []
    now = datetime.now(UTC)
    try:
        with LmsClient.from_env() as client:
            runs = Runs(client).of_course(args.course, now)
    except LmsClientError as exc:
        print(f"(queued runs not shown: {exc})", file=sys.stderr)
    view = course_view.build(
        export_records.list_records(settings.exports(), args.course),
        runs,
        now=now,
        tz=course_view.zone(course.timezone),
        name_of=facts.name,
        failed_for=timedelta(days=settings.export_ttl_days),
    )
    # Names from the lake reach a terminal: one line, controls (ESC too) escaped.
    print(f"course {course.id}: {one_line(course.name)}")
    if view.empty:
        print("  no exports")
    for title, rows in (
        ("in progress", view.in_progress),
        ("ready", view.ready),
        ("failed", view.failed),
        ("recently expired", view.expired),
    ):
        if rows:
            print(f"{title}:")
        for row in rows:
            print(
                f"  {row.export_id or row.run_id}  {row.kind_label:<17} {row.status_text:<8} {row.created}  by {one_line(row.requester)}"
            )
            details = [
                row.holds,
                row.size,
                row.progress_text,
                row.expires_in and f"{row.expires_in} ({row.expires_at})",
                row.failure_reason,
            ]
            print("      " + one_line(" · ".join(d for d in details if d), limit=1000))
    return 0


def _up(args: argparse.Namespace) -> int:
    from deployments.one_machine import up

    try:
        return up(
            args.home.resolve(), prefect_port=args.prefect_port, host=args.host, port=args.port
        )
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="course-exports", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="Prefect server, deployments and web app on this machine")
    up.add_argument(
        "--home",
        type=Path,
        default=Path("var/stack"),
        help="state of the stack (default: var/stack)",
    )
    up.add_argument("--prefect-port", type=int, default=4200)
    up.add_argument("--host", help="web app interface (default: COURSE_EXPORT_PUBLIC_URL's host)")
    up.add_argument(
        "--port", type=int, help="web app port (default: COURSE_EXPORT_PUBLIC_URL's port)"
    )

    launch = sub.add_parser("launch-link", help="a link that opens a course's Course Data page")
    launch.add_argument("course", type=int)
    launch.add_argument("teacher", type=int, help="user id of a Teacher of the course")
    launch.add_argument("--minutes", type=float, default=links.LAUNCH_TTL.total_seconds() / 60)

    export = sub.add_parser("export", help="start an export as the LMS does")
    export.add_argument("kind", choices=sorted(KINDS))
    export.add_argument("course", type=int)
    export.add_argument("--requested-by", type=int, required=True, help="a Teacher's user id")
    export.add_argument(
        "--assignment", type=int, action="append", help="only this assignment (repeatable)"
    )
    export.add_argument(
        "--student", type=int, action="append", help="course: only this student (repeatable)"
    )
    export.add_argument(
        "--user", type=int, action="append", help="access: only this user (repeatable)"
    )
    export.add_argument("--since", help="access: from this time (ISO 8601; no offset: UTC)")
    export.add_argument("--until", help="access: before this time (ISO 8601; no offset: UTC)")
    export.add_argument("--timezone", help="access: IANA time zone of the Date/Time column")
    export.add_argument("--excel", action="store_true", default=None, help="access: for Excel")
    export.add_argument("--no-mail", action="store_true", help="do not mail the link")
    export.add_argument("--request-id", help="the same id again returns the same export")
    export.add_argument(
        "--watch", action="store_true", help="show progress until the link is ready"
    )

    listing = sub.add_parser("list", help="every export of a course, in any state")
    listing.add_argument("course", type=int)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "up":
        return _up(args)
    try:
        settings = load_settings()
        handler = {"launch-link": _launch_link, "export": _export, "list": _list}[args.command]
        return handler(args, settings)
    except (SettingsError, ExportError, LmsClientError, ValueError) as exc:
        print(f"course-exports {args.command}: {one_line(exc, limit=1000)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
