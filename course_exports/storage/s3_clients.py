"""The two S3 clients, built from one set of settings and botocore's credential chain.

- **obstore** (Rust ``object_store``) carries the data path (see :mod:`.s3`);
- **botocore** the few control-plane calls obstore has no API for.

Timeouts and retries live here, on the clients: a Prefect task timeout cannot interrupt a
blocked read. Credentials come from botocore's chain (the usual ``AWS_*`` variables,
profiles, SSO, instance roles), so both clients always sign as the same identity.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from obstore.store import S3Store

S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 60
S3_RETRIES = 5
#: How long one request may keep retrying before its error is raised.
S3_RETRY_TIMEOUT_S = 120
#: Concurrent GETs and PUTs of small objects (latency-bound), per process.
IO_CONCURRENCY = 16
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Settings:
    """What both clients are built from: endpoint (None: AWS), region, and botocore's
    session (the credential chain)."""

    endpoint_url: str | None
    region: str

    @classmethod
    def resolve(cls, endpoint_url: str | None) -> S3Settings:
        endpoint = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        region = botocore_session().get_config_variable("region") or DEFAULT_REGION
        return cls(endpoint, region)


_SESSION_LOCK = threading.Lock()
_SESSIONS: dict[int, Any] = {}
_POOLS: dict[int, ThreadPoolExecutor] = {}


def shared_pool() -> ThreadPoolExecutor:
    """The threads of concurrent small reads and writes, one pool per process (shared by
    every location: a worker opens locations per task)."""
    with _SESSION_LOCK:
        pool = _POOLS.get(os.getpid())
        if pool is None:
            pool = _POOLS[os.getpid()] = ThreadPoolExecutor(
                IO_CONCURRENCY, thread_name_prefix="s3-io"
            )
        return pool


def botocore_session() -> Any:
    """One botocore session per process (it caches the credential chain's result)."""
    import botocore.session

    with _SESSION_LOCK:
        session = _SESSIONS.get(os.getpid())
        if session is None:
            session = _SESSIONS[os.getpid()] = botocore.session.get_session()
        return session


class _Credentials:
    """obstore's credential provider, answered from botocore's chain. Refreshable
    credentials (roles, SSO) are handed out for at most five minutes at a time, so
    obstore asks again and botocore refreshes them when due."""

    def __call__(self) -> dict[str, Any]:
        credentials = botocore_session().get_credentials()
        if credentials is None:
            raise PermissionError(
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or a profile or role botocore can find)"
            )
        frozen = credentials.get_frozen_credentials()
        refreshable = hasattr(credentials, "refresh_needed")
        expires = datetime.now(UTC) + timedelta(minutes=5) if refreshable else None
        found: dict[str, Any] = {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "expires_at": expires,
        }
        if frozen.token:
            found["token"] = frozen.token
        return found


def build_store(settings: S3Settings, bucket: str, prefix: str) -> S3Store:
    """The obstore client of one bucket prefix: SigV4, timeouts and retries set."""
    config: dict[str, Any] = {"region": settings.region}
    client: dict[str, Any] = {
        "connect_timeout": timedelta(seconds=S3_CONNECT_TIMEOUT_S),
        "timeout": timedelta(seconds=S3_READ_TIMEOUT_S),
        "pool_idle_timeout": timedelta(seconds=30),
    }
    if settings.endpoint_url:
        config["endpoint"] = settings.endpoint_url
        client["allow_http"] = settings.endpoint_url.startswith("http://")
    retry = {
        "max_retries": S3_RETRIES,
        "retry_timeout": timedelta(seconds=S3_RETRY_TIMEOUT_S),
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=10),
            "base": 2,
        },
    }
    return S3Store(
        bucket,
        prefix=prefix or None,
        config=config,  # type: ignore[arg-type]
        client_options=client,  # type: ignore[arg-type]
        retry_config=retry,  # type: ignore[arg-type]
        credential_provider=_Credentials(),  # type: ignore[arg-type]
    )


def build_botocore_client(settings: S3Settings) -> Any:
    """The botocore client for presigning and multipart bookkeeping, same settings."""
    from botocore.config import Config

    return botocore_session().create_client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        config=Config(
            signature_version="s3v4",  # SigV2 links are refused by modern S3
            connect_timeout=S3_CONNECT_TIMEOUT_S,
            read_timeout=S3_READ_TIMEOUT_S,
            retries={"max_attempts": S3_RETRIES, "mode": "standard"},
        ),
    )
