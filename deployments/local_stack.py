"""The whole service on one machine, as subprocesses: a Prefect server, the work pool, the
deployments of prefect.yaml and process workers.

The end-to-end tests and the scale-out benchmark use it; it also shows, in code, what
docs/operations.md tells an operator to run. Every process gets its own PREFECT_HOME (never
the developer's ~/.prefect) and analytics off (there may be no internet).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx

from deployments import automations
from deployments.steps import default_checkout

POOL = "course-exports"
REPO_ROOT = default_checkout()
PREFECT = [sys.executable, "-m", "prefect"]


class StackError(RuntimeError):
    """A part of the stack did not start; the message holds its output."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prefect_env(
    home: Path, api_url: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment without any PREFECT_* or COURSE_EXPORT_* of its own
    (a test harness or a developer's profile must not leak in), plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "COURSE_EXPORT_"))}
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    env.update(extra or {})
    return env


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _stop(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group we started (the process and its flow-run children),
    then SIGKILL what is left after the grace period."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)


class LocalServer:
    """``prefect server start`` on 127.0.0.1:``port`` with its database under ``home``
    (SQLite unless ``extra_env`` names another). :meth:`stop` and :meth:`start` take it
    down and bring it back on the same port and database, as an operator's restart does."""

    def __init__(
        self, home: Path, port: int, extra_env: Mapping[str, str], timeout_s: float
    ) -> None:
        self.home = home
        self.port = port
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.log = home / "server.log"
        self.timeout_s = timeout_s
        self.env = prefect_env(
            home,
            extra={
                "PREFECT_UI_ENABLED": "false",
                # A run refused a deployment slot retries after this long (default 30 s).
                "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
                **extra_env,
            },
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_healthy(self.api_url, self.process, self.log, self.timeout_s)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


@contextmanager
def run_server(
    home: Path,
    *,
    port: int | None = None,
    timeout_s: float = 120.0,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[LocalServer]:
    """``prefect server start`` on 127.0.0.1 with SQLite under ``home``; stopped on exit."""
    home.mkdir(parents=True, exist_ok=True)
    server = LocalServer(home, port or free_port(), extra_env or {}, timeout_s)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _wait_healthy(
    api_url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"prefect server exited with {process.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise StackError(f"prefect server not healthy after {timeout_s:.0f} s:\n{_tail(log)}")


def run_cli(
    args: list[str], *, env: Mapping[str, str], cwd: Path = REPO_ROOT, timeout_s: float = 180
) -> str:
    """Run a ``prefect`` command; its output, or StackError with the output."""
    done = subprocess.run(
        [*PREFECT, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise StackError(f"prefect {' '.join(args)} failed ({done.returncode}):\n{output}")
    return output


def create_pool(api_url: str, home: Path, pool: str = POOL) -> None:
    run_cli(
        ["work-pool", "create", pool, "--type", "process", "--overwrite"],
        env=prefect_env(home, api_url),
    )


def deploy_all(api_url: str, home: Path, checkout: Path = REPO_ROOT) -> str:
    """``prefect deploy --all`` from the checkout: what an operator runs."""
    return run_cli(["--no-prompt", "deploy", "--all"], env=prefect_env(home, api_url), cwd=checkout)


def install_automations(
    api_url: str, home: Path, zombie_after: timedelta = automations.ZOMBIE_AFTER
) -> str:
    """``python -m deployments.automations``: what ``make deploy`` runs after deploying."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deployments.automations",
            "--zombie-after",
            str(zombie_after.total_seconds()),
        ],
        env=prefect_env(home, api_url),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise StackError(f"installing the automations failed ({done.returncode}):\n{output}")
    return output


def set_up(api_url: str, home: Path, *, zombie_after: timedelta = automations.ZOMBIE_AFTER) -> None:
    """What ``make deploy`` does: the pool, every deployment of prefect.yaml, the
    automations."""
    create_pool(api_url, home)
    deploy_all(api_url, home)
    install_automations(api_url, home, zombie_after)


@contextmanager
def run_serve(
    api_url: str, home: Path, env: Mapping[str, str], *, timeout_s: float = 240.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m deployments.serve`` from the checkout, with ``env`` (the COURSE_EXPORT_*
    settings its flow runs see); yields once every deployment of prefect.yaml is
    registered, stops it and its flow runs on exit."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / "serve.log"
    # Look for new runs every 2 s (default 10 s): someone is watching the page meanwhile.
    serve_env = prefect_env(home, api_url, {"PREFECT_RUNNER_POLL_FREQUENCY": "2", **env})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deployments.serve"],
            env=serve_env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_served(api_url, process, log, timeout_s)
        yield process
    finally:
        _stop(process)


def _wait_served(
    api_url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    # Every deployment, not just the exports: serve registers them one by one, and a
    # caller told "ready" (course-exports up) may look for any of them at once.
    from deployments.serve import read_specs

    wanted = {spec.name for spec in read_specs()}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"deployments.serve exited with {process.returncode}:\n{_tail(log)}")
        try:
            found = httpx.post(f"{api_url}/deployments/filter", json={}, timeout=5).json()
            if wanted <= {d["name"] for d in found}:
                return
        except (httpx.HTTPError, ValueError, TypeError, KeyError):
            pass
        time.sleep(0.5)
    raise StackError(f"the deployments were not served after {timeout_s:.0f} s:\n{_tail(log)}")


@dataclass(frozen=True)
class LocalWorker:
    name: str
    log: Path
    process: subprocess.Popen[bytes]


@contextmanager
def run_worker(
    api_url: str,
    name: str,
    home: Path,
    env: Mapping[str, str],
    *,
    pool: str = POOL,
    limit: int | None = None,
    timeout_s: float = 60.0,
) -> Iterator[LocalWorker]:
    """``prefect worker start`` for the pool, with ``env`` (the COURSE_EXPORT_* settings its
    flow runs see) and its own PREFECT_HOME (local result storage lives there); yields once
    the server knows the worker, stops it and its flow runs on exit."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"worker-{name}.log"
    worker_env = prefect_env(
        home,
        api_url,
        {
            "PREFECT_WORKER_QUERY_SECONDS": "1",  # default 10 s: tests would idle
            # Flow runs start as `python -m prefect.engine` (prefect.yaml): this venv's.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            **env,
        },
    )
    args = [*PREFECT, "worker", "start", "--pool", pool, "--name", name, "--type", "process"]
    if limit is not None:
        args += ["--limit", str(limit)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            env=worker_env,
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_registered(api_url, pool, name, process, log, timeout_s)
        yield LocalWorker(name, log, process)
    finally:
        _stop(process)


def _wait_registered(
    api_url: str,
    pool: str,
    name: str,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"worker {name} exited with {process.returncode}:\n{_tail(log)}")
        try:
            response = httpx.post(f"{api_url}/work_pools/{pool}/workers/filter", json={}, timeout=5)
            if response.status_code == 200 and any(w["name"] == name for w in response.json()):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise StackError(f"worker {name} did not register after {timeout_s:.0f} s:\n{_tail(log)}")


# -- PostgreSQL --------------------------------------------------------------------------

#: How to get PostgreSQL's server programs on Debian (initdb, pg_ctl).
POSTGRES_HINT = "apt-get install postgresql (Debian's package; its programs live in /usr/lib/postgresql/<version>/bin)"


def postgres_bin() -> Path:
    """The newest PostgreSQL's bin folder (Debian keeps them out of PATH)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise StackError(f"PostgreSQL is not installed: {POSTGRES_HINT}")


@dataclass(frozen=True)
class LocalPostgres:
    url: str  # postgresql+asyncpg://… for PREFECT_API_DATABASE_CONNECTION_URL
    data: Path
    pid: int  # the postmaster's


@contextmanager
def run_postgres(*, timeout_s: float = 120.0) -> Iterator[LocalPostgres]:
    """A throwaway PostgreSQL cluster in a new temporary folder on 127.0.0.1 (initdb,
    pg_ctl), with a ``prefect`` database; stopped and removed on exit. PostgreSQL refuses
    to run as root, so as root it runs as the ``postgres`` user the Debian package creates
    (the folder is made in the system's temporary directory, which that user can reach)."""
    bin_dir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="course-exports-postgres-"))
    data, log = root / "pgdata", root / "postgres.log"
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")

    def pg(*args: str) -> None:
        done = subprocess.run(
            [*as_user, *args], capture_output=True, text=True, timeout=timeout_s, cwd=root
        )
        if done.returncode != 0:
            raise StackError(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "prefect", "-A", "trust", "-E", "UTF8")
    pg(
        str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(int(timeout_s)),
        "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=200",
        "start",
    )  # fmt: skip
    try:
        pg(
            str(bin_dir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "prefect",
            "prefect",
        )
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield LocalPostgres(f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect", data, pid)
    finally:
        with suppress(StackError, subprocess.TimeoutExpired):
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
