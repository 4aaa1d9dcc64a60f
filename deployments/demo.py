"""`make demo`: a sample lake, then the access-data export through Prefect, end to end.

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
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import polars as pl

from course_exports.errors import ExportError
from course_exports.lake import read_roster
from course_exports.sample_lake import LakeSpec, generate_lake
from course_exports.settings import ENV_PREFIX, load_settings

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


def newest_mail(outbox: Path) -> Path | None:
    mails = sorted(outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime)
    return mails[-1] if mails else None


def main() -> int:
    ensure_signing_key()
    settings = load_settings()
    lake = settings.lake()
    if not lake.exists("directory", "users.parquet"):
        print(f"writing a sample lake to {lake.url} ...")
        summary = generate_lake(lake, DEMO_SPEC, now=datetime.now(UTC))
        print(f"  {summary.events:,} access events, {len(summary.course_ids)} courses")
    course_id = min(int(p.rsplit("/", 1)[-1]) for p in lake.fs.ls(lake.path("courses")))
    teachers = read_roster(lake, course_id).filter(pl.col("role") == "Teacher")["user_id"]
    requested_by = int(teachers.sort()[0])

    from flows.export_access_data import export_access_data

    try:
        result = export_access_data(course_id=course_id, requested_by=requested_by, notify=True)
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    smtp = settings.smtp
    mail = newest_mail(settings.outbox_path()) if smtp is None else None
    print()
    print(f"access-data export of course {course_id} ({result.course_name}) is ready")
    events = result.counts["events"]
    print(f"  CSV:      {result.file_url} ({result.size_bytes:,} bytes, {events:,} events)")
    print(f"  link:     {result.download_url}")
    print(f"            (make serve-downloads serves it until {result.expires_at.isoformat()})")
    print(f"  mail:     {mail or (f'sent via SMTP to {smtp.host}' if smtp else 'none written')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
