"""Shared test servers: a real SMTP server, a real S3 (SeaweedFS) and a uvicorn runner.

Each server starts once per session; tests keep apart by using their own buckets,
folders and recipients, and by clearing the SMTP server's inbox.
"""

from __future__ import annotations

import email
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
from seaweed import SeaweedFS

# Prefect reads its settings when first imported: give the whole session its own home
# (never the developer's ~/.prefect) and no analytics (there is no internet here).
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)

SMTP_USER = "mailer"
SMTP_PASSWORD = "s3cret"
#: Recipients at this domain are refused with a permanent 550.
REFUSED_DOMAIN = "refused.test"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- SMTP ------------------------------------------------------------------------------


@dataclass
class _Handler:
    """aiosmtpd handler that keeps what it receives and can fail on demand."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Any] = field(default_factory=list)
    # Replies to give instead of accepting the next DATA commands ("421 ...", "554 ...").
    data_replies: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower().endswith("@" + REFUSED_DOMAIN):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        self.envelopes.append(envelope)
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    url: str  # smtp://127.0.0.1:PORT
    host: str
    port: int
    handler: _Handler
    #: Recipients at this domain are refused with a permanent 550.
    refused_domain: str = REFUSED_DOMAIN

    @property
    def messages(self) -> list[EmailMessage]:
        return self.handler.messages

    @property
    def envelopes(self) -> list[Any]:
        return self.handler.envelopes

    def clear(self) -> None:
        self.handler.messages.clear()
        self.handler.envelopes.clear()
        self.handler.data_replies.clear()

    def fail_next(self, *replies: str) -> None:
        """Answer the next DATA commands with these replies (e.g. ``"421 try later"``)."""
        self.handler.data_replies.extend(replies)

    def url_with_login(self, user: str = SMTP_USER, password: str = SMTP_PASSWORD) -> str:
        return f"smtp://{user}:{password}@{self.host}:{self.port}"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture(autouse=True, scope="module")
def _prefect_events_closed() -> Iterator[None]:
    """A module that ran flows in this process leaves Prefect's events worker behind,
    its websocket open; the keepalive pings draw from the global ``random``, and one
    landing while a later module's Hypothesis test draws examples made Hypothesis warn
    "Do not use the `random` module inside strategies" (seen in CI now and then; traced
    to ``websockets``' ping through a watch on ``random``'s functions). Draining the
    worker after each module sends what it holds and closes the websocket."""
    yield
    if "prefect.events.worker" in sys.modules:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=10, at_exit=False)


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server on 127.0.0.1: AUTH optional (plain text allowed), SMTPUTF8 on.

    Session-scoped: call ``.clear()`` at the start of a test that reads ``.messages``.
    """
    from aiosmtpd.controller import Controller

    handler = _Handler()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        enable_SMTPUTF8=True,
        authenticator=_authenticator,
        auth_require_tls=False,  # tests talk plain text on loopback
    )
    controller.start()
    try:
        yield SmtpServer(f"smtp://127.0.0.1:{port}", "127.0.0.1", port, handler)
    finally:
        controller.stop()


# -- S3 (SeaweedFS) ---------------------------------------------------------------------

S3Server = SeaweedFS  # the fixture's type under its earlier name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedFS]:
    """A real S3 server (SeaweedFS, ``weed mini``) on 127.0.0.1 for the whole session,
    with its credentials in os.environ (what the product's clients read)."""
    from seaweed import AWS_ENV, AWS_ENV_CLEARED, seaweedfs

    with pytest.MonkeyPatch.context() as mp:
        for name, value in AWS_ENV.items():
            mp.setenv(name, value)
        for name in AWS_ENV_CLEARED:
            mp.delenv(name, raising=False)
        with seaweedfs() as server:
            yield server


# -- uvicorn ---------------------------------------------------------------------------


@contextmanager
def _serve(app: Any, port: int | None = None) -> Iterator[str]:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port or 0))
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


ServeApp = Callable[..., AbstractContextManager[str]]


@pytest.fixture(scope="session")
def serve_app() -> ServeApp:
    """``with serve_app(app, port=None) as base_url:`` runs ``app`` on a real uvicorn
    server in a background thread. Pass ``port`` (see :func:`free_port`) when the app
    must know its own URL before it starts."""
    return _serve


@pytest.fixture(scope="session")
def get_free_port() -> Callable[[], int]:
    return free_port


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    """No COURSE_EXPORT_* variable and no ``.env`` file: the settings see only defaults."""
    for name in list(os.environ):
        if name.startswith("COURSE_EXPORT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


# -- Prefect ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for every flow test of the session (it takes ~12 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# -- a real Prefect server (e2e) ---------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``prefect server start`` in a subprocess (its own PREFECT_HOME, SQLite, analytics
    off), once per session; yields the API URL (``http://127.0.0.1:PORT/api``)."""
    from deployments.local_stack import run_server

    # A fresh SQLite database migrates at start: 115 s were seen on this shared 2-core
    # machine under load, so leave room (a healthy server answers sooner).
    with run_server(tmp_path_factory.mktemp("prefect-server"), timeout_s=300) as server:
        yield server.api_url


@pytest.fixture(scope="session")
def prefect_deployments(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The work pool, every deployment of prefect.yaml (``prefect deploy --all`` from the
    repo root, as an operator runs it) and the automations, as ``make deploy`` sets them up,
    on the session's server; returns its API URL. Modules start their own workers
    (deployments.local_stack.run_worker)."""
    from deployments.local_stack import set_up

    set_up(prefect_server, tmp_path_factory.mktemp("prefect-cli"))
    return prefect_server


# -- a sample lake for flow tests --------------------------------------------------------


@pytest.fixture(scope="session")
def pristine_lake(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny sample lake, generated once; tests work on copies (see ``site``)."""
    from flowkit import make_pristine_lake

    return make_pristine_lake(tmp_path_factory)


@pytest.fixture
def site(pristine_lake: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A private copy of the lake, empty exports and outbox, COURSE_EXPORT_* set for them."""
    from flowkit import make_site

    return make_site(pristine_lake, tmp_path, monkeypatch)


# -- the Course Data page ----------------------------------------------------------------


@pytest.fixture(scope="module")
def page_site(
    pristine_lake: Any,
    serve_app: ServeApp,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """The download service with its pages on uvicorn, over a copy of the tiny lake and
    empty exports; no Prefect API (the pages show exports but cannot start them)."""
    import shutil

    from pagekit import PageSite, site_settings

    from deployments.download_service import create_app
    from deployments.local_stack import free_port

    root = tmp_path_factory.mktemp("page-site")
    shutil.copytree(pristine_lake[0], root / "lake")
    port = free_port()
    settings = site_settings(root, root / "lake", f"http://127.0.0.1:{port}")
    with serve_app(create_app(settings, prefect=None), port=port) as base_url:
        yield PageSite(base_url, settings, pristine_lake[1])
