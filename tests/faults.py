"""A fault-injecting HTTP proxy in front of the S3 server.

The only "mock" in the S3 tests: requests travel for real to the S3 server (SeaweedFS),
except the few a rule chooses, which get a 500 (or a 503) as a flaky S3 would send; an
outage fails every request for a while. That exercises every retry
layer as it runs in production (botocore, s3fs, our own per-file retries).
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Matcher = Callable[[str, str], bool]  # (method, path with query) -> inject?

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}
#: S3's error code for each status the proxy injects.
_CODES = {500: "InternalError", 503: "ServiceUnavailable"}


def _error(status: int) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{_CODES[status]}</Code>'
        "<Message>injected fault</Message></Error>"
    ).encode()


@dataclass
class Rule:
    matches: Matcher
    times: int  # how many matching requests fail
    hits: list[str] = field(default_factory=list)
    status: int = 500


@dataclass
class FaultyProxy:
    url: str
    rules: list[Rule]
    seen: list[tuple[str, str]]  # every request that reached the proxy: (method, path)
    #: every answer passed on from the server: (method, path, bytes of its body)
    answered: list[tuple[str, str, int]] = field(default_factory=list)

    def body_bytes(self, method: str = "GET") -> int:
        return sum(n for m, _, n in list(self.answered) if m == method)

    def fail(self, matches: Matcher, times: int = 1, status: int = 500) -> Rule:
        rule = Rule(matches, times, status=status)
        self.rules.append(rule)
        return rule

    def outage(self, seconds: float, status: int = 503) -> Rule:
        """Every request fails with ``status`` for ``seconds`` from now: S3 down."""
        until = time.monotonic() + seconds
        return self.fail(lambda _m, _p: time.monotonic() < until, sys.maxsize, status)


def _handler(
    upstream: str,
    rules: list[Rule],
    seen: list[tuple[str, str]],
    answered: list[tuple[str, str, int]],
    lock: threading.Lock,
    latency_s: float,
) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _inject(self) -> int | None:
            """The status to fail this request with, or None to pass it on."""
            with lock:
                seen.append((self.command, self.path))
                for rule in rules:
                    if len(rule.hits) < rule.times and rule.matches(self.command, self.path):
                        rule.hits.append(f"{self.command} {self.path}")
                        return rule.status
            return None

        def _proxy(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if latency_s:
                time.sleep(latency_s)
            status = self._inject()
            if status is not None:
                error = _error(status)
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)
                return
            conn = http.client.HTTPConnection(target.netloc, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            self.send_response(response.status)
            head = self.command == "HEAD"  # keeps the upstream length of the object
            for key, value in response.getheaders():
                if key.lower() not in _HOP_HEADERS and (head or key.lower() != "content-length"):
                    self.send_header(key, value)
            if not head:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with lock:  # before the body goes out: a client that has it finds it counted
                answered.append((self.command, self.path, len(data)))
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _proxy

    return Handler


@contextmanager
def faulty_proxy(upstream: str, *, latency_s: float = 0.0) -> Iterator[FaultyProxy]:
    """A proxy to ``upstream`` that fails what its rules choose and may add latency to
    every request (the benchmark uses that to stand in for S3's first-byte latency)."""
    rules: list[Rule] = []
    seen: list[tuple[str, str]] = []
    answered: list[tuple[str, str, int]] = []
    handler = _handler(upstream, rules, seen, answered, threading.Lock(), latency_s)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FaultyProxy(f"http://127.0.0.1:{server.server_address[1]}", rules, seen, answered)
    finally:
        server.shutdown()
        server.server_close()
