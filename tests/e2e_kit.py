"""Shared set-up of the end-to-end tests: a site on disk for the workers, a webhook receiver
standing in for the LMS, and reads of the Prefect REST API the LMS would not need."""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from course_exports.settings import Settings
from course_exports.storage import open_location
from sample_lake import LakeSpec, LakeSummary, generate_lake

SIGNING_KEY = "e2e-signing-key-" + "x" * 32
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"e2e-webhook-secret-0123456789").decode()
T = TypeVar("T")


@dataclass(frozen=True)
class Site:
    """Lake, exports and outbox folders, and the COURSE_EXPORT_* a worker gets."""

    root: Path
    summary: LakeSummary
    public_url: str
    webhook_url: str

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    def env(self) -> dict[str, str]:
        return {
            "COURSE_EXPORT_LAKE_URL": str(self.lake),
            "COURSE_EXPORT_EXPORTS_URL": str(self.exports),
            "COURSE_EXPORT_OUTBOX": str(self.outbox),
            "COURSE_EXPORT_SMTP_URL": "",  # a developer's .env must not send real mail
            "COURSE_EXPORT_SIGNING_KEY": SIGNING_KEY,
            "COURSE_EXPORT_PUBLIC_URL": self.public_url,
            "COURSE_EXPORT_WEBHOOK_URL": self.webhook_url,
            "COURSE_EXPORT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }

    def settings(self) -> Settings:
        return Settings(
            _env_file=None,  # type: ignore[call-arg]
            lake_url=str(self.lake),
            exports_url=str(self.exports),
            outbox=str(self.outbox),
            signing_key=SIGNING_KEY,  # type: ignore[arg-type]
            public_url=self.public_url,
        )

    def manifests(self, course_id: int | None = None) -> list[Path]:
        base = self.exports if course_id is None else self.exports / str(course_id)
        return sorted(base.glob("**/manifest.json")) if base.exists() else []


def make_site(root: Path, spec: LakeSpec, public_url: str, webhook_url: str) -> Site:
    summary = generate_lake(open_location(str(root / "lake")), spec, now=datetime.now(UTC))
    return Site(root, summary, public_url, webhook_url)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """The LMS's webhook endpoint: keeps every delivery, and answers the first
    ``fail_first`` with 503 so the sender's retry is exercised."""

    fail_first: int = 0
    deliveries: list[Received] = field(default_factory=list)
    refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                if self.refused < self.fail_first:
                    self.refused += 1
                    return PlainTextResponse("busy", status_code=503)
                self.deliveries.append(Received(dict(request.headers), body))
            return PlainTextResponse("ok")

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def matching(self, predicate: Callable[[Received], bool]) -> list[Received]:
        with self._lock:
            return [d for d in self.deliveries if predicate(d)]


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 30.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


# -- Prefect API reads -----------------------------------------------------------------


def delete_flow_run(api_url: str, run_id: str, attempts: int = 6) -> None:
    """Delete a run, retrying a 503 as Prefect's own client does: on SQLite the server
    answers 503 when a write meets another one (SQLITE_BUSY_SNAPSHOT, which the busy
    timeout does not wait out), and a run's delete writes its task runs, states and logs."""
    for attempt in range(attempts):
        response = httpx.delete(f"{api_url}/flow_runs/{run_id}", timeout=30)
        if response.status_code != 503 or attempt == attempts - 1:
            break
        time.sleep(0.5 * 2**attempt)
    if response.status_code != 404:  # gone already: what was wanted
        response.raise_for_status()


def flow_runs(api_url: str, **flow_run_filter: Any) -> list[dict[str, Any]]:
    body = {"flow_runs": flow_run_filter, "limit": 200}
    response = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=30)
    response.raise_for_status()
    runs: list[dict[str, Any]] = response.json()
    return runs


def task_runs(api_url: str, flow_run_ids: list[str]) -> list[dict[str, Any]]:
    body = {"flow_runs": {"id": {"any_": flow_run_ids}}, "limit": 200}
    response = httpx.post(f"{api_url}/task_runs/filter", json=body, timeout=30)
    response.raise_for_status()
    runs: list[dict[str, Any]] = response.json()
    return runs


def state_names(api_url: str, flow_run_id: str) -> list[str]:
    response = httpx.get(
        f"{api_url}/flow_run_states/", params={"flow_run_id": flow_run_id}, timeout=30
    )
    response.raise_for_status()
    return [state["name"] for state in response.json()]


def events(api_url: str, name: str) -> list[dict[str, Any]]:
    body = {"filter": {"event": {"name": [name]}}, "limit": 50}  # occurred: the last day
    response = httpx.post(f"{api_url}/events/filter", json=body, timeout=30)
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()["events"]
    return found


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one moment (an end and a start at the same instant do
    not overlap)."""
    points = [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals]
    running = peak = 0
    for _, step in sorted(points, key=lambda p: (p[0], p[1])):
        running += step
        peak = max(peak, running)
    return peak


# -- processes ---------------------------------------------------------------------------


def flow_run_process(parent_pid: int, flow_run_id: str) -> psutil.Process | None:
    """The process running ``flow_run_id`` among the descendants of a worker or serve
    process (Prefect hands every flow-run process its run id in PREFECT__FLOW_RUN_ID)."""
    try:
        children = psutil.Process(parent_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if child.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def freeze(process: psutil.Process) -> None:
    """SIGSTOP: the process stops where it is (mid-write), to be looked at, then killed."""
    os.kill(process.pid, signal.SIGSTOP)


def resume(process: psutil.Process) -> None:
    os.kill(process.pid, signal.SIGCONT)


def kill_hard(*pids: int) -> None:
    """kill -9 each pid, as the out-of-memory killer or a vanished machine would."""
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def partial_files(site: Site, course_id: int) -> list[Path]:
    """Files being written for the course: beside a manifest that still says pending."""
    found = []
    for manifest in site.manifests(course_id):
        with suppress(OSError, ValueError):
            if json.loads(manifest.read_text()).get("status") == "pending":
                found += [p for p in manifest.parent.iterdir() if p.name != manifest.name]
    return [p for p in found if p.is_file() and p.stat().st_size > 0]


def export_folder_files(site: Site, course_id: int) -> dict[str, list[str]]:
    """Every export folder of the course and the files in it."""
    base = site.exports / str(course_id)
    if not base.exists():
        return {}
    return {d.name: sorted(p.name for p in d.iterdir()) for d in base.iterdir() if d.is_dir()}
