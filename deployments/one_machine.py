"""``course-exports up``: the whole service on one machine, in one command.

A Prefect server on SQLite (with its UI), every deployment of prefect.yaml served with its
schedules from one process (deployments/serve.py), and the download service with the
Course Data pages. It prints the URLs and a launch link for a teacher of the lake (a
sample lake is written on first use, as ``make demo`` does). Ctrl-C (or SIGTERM) stops
the web app, then the serve process and its flow runs, then the server.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn
from pydantic import SecretStr

from course_exports import links
from course_exports.settings import ENV_PREFIX, Settings, load_settings
from deployments.download_service import RedactTokens, create_app
from deployments.lms_client import LmsClient
from deployments.local_stack import run_serve, run_server

#: The launch link printed at start-up is read by a person: give them time.
PRINTED_LINK_TTL = timedelta(hours=1)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as COURSE_EXPORT_* variables for processes started elsewhere (the
    flow runs start in the checkout, where another .env may be): local paths absolute."""
    env = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if name in ("lake_url", "exports_url", "outbox") and "://" not in text:
            text = str(Path(text).resolve())
        env[f"{ENV_PREFIX}{name.upper()}"] = text
    return env


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: every part is stopped


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints ``banner`` once its socket listens: "ready" printed
    before that sent the first click on the launch link to a closed port."""

    def __init__(self, config: uvicorn.Config, banner: str) -> None:
        super().__init__(config)
        self.banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(self.banner, flush=True)


def up(home: Path, *, prefect_port: int, host: str | None, port: int | None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    # The demo's module points Prefect at ./var/prefect when imported: this stack's own.
    os.environ.setdefault("PREFECT_HOME", str(home / "cli"))
    from deployments import demo

    demo.ensure_signing_key()
    settings = load_settings()
    key = settings.require_signing_key()
    course_id, teacher_id = demo.ensure_sample_lake(settings)
    public = urlsplit(settings.public_url)
    web_host = host or public.hostname or "127.0.0.1"
    web_port = port or public.port or 8765
    print(f"starting a Prefect server (SQLite under {home / 'server'}) ...", flush=True)
    with run_server(
        home / "server",
        port=prefect_port,
        extra_env={"PREFECT_UI_ENABLED": "true"},
        timeout_s=300,  # a first start migrates a new database: minutes on a busy machine
    ) as server:
        print("serving the deployments of prefect.yaml, with their schedules ...", flush=True)
        with (
            run_serve(server.api_url, home / "serve", settings_env(settings)),
            LmsClient(server.api_url) as client,
        ):
            app = create_app(settings, prefect=client)
            config = uvicorn.Config(app, host=web_host, port=web_port, log_level="warning")
            logging.getLogger("uvicorn.access").addFilter(RedactTokens())
            launch = links.launch_url(
                settings.public_url, key, course_id, teacher_id, ttl=PRINTED_LINK_TTL
            )
            banner = (
                "\nready:\n"
                f"  Prefect UI and API   {server.api_url.removesuffix('/api')}\n"
                f"  downloads and pages  http://{web_host}:{web_port} "
                f"(links say {settings.public_url})\n"
                f"  Course Data page of course {course_id} for teacher {teacher_id} "
                f"(valid {PRINTED_LINK_TTL.seconds // 60} minutes):\n"
                f"    {launch}\n"
                f"  another: course-exports launch-link COURSE TEACHER\n"
                "press Ctrl-C to stop everything\n"
            )
            # Returns on Ctrl-C or SIGTERM (and may re-raise it): the with blocks stop
            # the serve process, then the server.
            _AnnouncingServer(config, banner).run()
    return 0
