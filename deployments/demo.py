"""`make demo`: a sample lake, then the access-data and course exports through Prefect.

Runs on the embedded defaults: local folders under ./var, Prefect's ephemeral API (no
server to start), mail written to the outbox folder. Safe to run again: the lake is
reused and each run makes a new export.
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

# Prefect reads these when first imported: keep the demo's state under ./var.
os.environ.setdefault("PREFECT_HOME", str(Path("var/prefect").resolve()))
# The rest of Prefect's settings (startup timeout, analytics) are in ./prefect.toml.

import polars as pl

from course_exports.errors import ExportError
from course_exports.export_records import ExportResult
from course_exports.lake import read_roster
from course_exports.settings import ENV_PREFIX, Settings, load_settings
from course_exports.text import one_line
from sample_lake import LakeSpec, generate_lake

DEMO_SPEC = LakeSpec(seed=7, courses=4, students=40, assignments=6, events=200_000, days=240)


def ensure_signing_key(env_file: Path = Path(".env")) -> None:
    """Make a signing key for the demo unless one is configured already."""
    variable = f"{ENV_PREFIX}SIGNING_KEY"
    if os.environ.get(variable):
        return
    text = env_file.read_text() if env_file.exists() else ""
    if any(line.startswith(f"{variable}=") for line in text.splitlines()):
        return
    with env_file.open("a") as fh:
        separator = "" if not text or text.endswith("\n") else "\n"
        fh.write(f"{separator}{variable}={secrets.token_urlsafe(32)}\n")
    print(f"wrote a new {variable} to {env_file.resolve()}")


def newest_mail(settings: Settings) -> str:
    """Where the last mail went: its .eml file, or the SMTP server."""
    smtp = settings.smtp
    if smtp is not None:
        return f"sent through SMTP server {smtp.host}:{smtp.port}"
    mails = sorted(settings.outbox_path().glob("*.eml"), key=lambda p: p.stat().st_mtime)
    return str(mails[-1]) if mails else "none written"


def ensure_sample_lake(settings: Settings) -> tuple[int, int]:
    """The lake (a sample one is written on first use): its first course and that
    course's first teacher."""
    lake = settings.lake()
    if not lake.exists("directory", "users.parquet"):
        print(f"writing a sample lake to {lake.url} ...")
        summary = generate_lake(lake, DEMO_SPEC, now=datetime.now(UTC))
        print(f"  {summary.events:,} access events, {len(summary.course_ids)} courses")
    # courses/<id>/course.json: the smallest id is the demo's course
    course_id = min(
        int(e.path.split("/")[1])
        for e in lake.iter_files("courses")
        if e.path.endswith("/course.json")
    )
    teachers = read_roster(lake, course_id).filter(pl.col("role") == "Teacher")["user_id"]
    return course_id, int(teachers.sort()[0])


def main() -> int:
    ensure_signing_key()
    settings = load_settings()
    course_id, requested_by = ensure_sample_lake(settings)

    from flows.export_access_data import export_access_data
    from flows.export_course import export_course

    try:
        access = export_access_data(course_id=course_id, requested_by=requested_by, notify=True)
        access_mail = newest_mail(settings)
        course = export_course(course_id=course_id, requested_by=requested_by, notify=True)
        course_mail = newest_mail(settings)
    except ExportError as exc:
        print(f"export failed: {one_line(exc, limit=1000)}", file=sys.stderr)
        return 1
    print()
    report("access-data export", access, f"{access.counts['events']:,} events", access_mail)
    report("course export", course, f"{course.counts['files']:,} workspace files", course_mail)
    print("serve the links and the Course Data page with: make serve-downloads")
    print("or start the whole stack (Prefect server, deployments, page): course-exports up")
    return 0


def report(title: str, result: ExportResult, holds: str, mail: str) -> None:
    print(f"{title} of course {result.course_id} ({one_line(result.course_name)}) is ready")
    print(f"  file:  {one_line(result.file_url, limit=400)}")
    print(f"         {result.size_bytes:,} bytes, {holds}")
    print(f"  link:  {result.download_url}")
    print(f"         valid until {result.expires_at.isoformat()}")
    print(f"  mail:  {mail}")
    print()


if __name__ == "__main__":
    raise SystemExit(main())
