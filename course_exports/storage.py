"""fsspec URLs to filesystems: one place that knows local folders and S3.

A :class:`Location` is a root URL opened once (``./var/lake``, ``s3://bucket/prefix``);
everything else joins relative paths onto it, so the same code runs on both.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

# Timeouts live on the client: a Prefect task timeout cannot interrupt a blocked read.
S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 60
S3_RETRIES = 5


def s3_storage_options(endpoint_url: str | None) -> dict[str, Any]:
    """Options for s3fs: SigV4 signing (SigV2 links are refused by modern S3) and timeouts."""
    client_kwargs: dict[str, Any] = {}
    if endpoint_url:
        client_kwargs["endpoint_url"] = endpoint_url
    return {
        "client_kwargs": client_kwargs,
        "config_kwargs": {
            "signature_version": "s3v4",
            "connect_timeout": S3_CONNECT_TIMEOUT_S,
            "read_timeout": S3_READ_TIMEOUT_S,
            "retries": {"max_attempts": S3_RETRIES, "mode": "standard"},
        },
        # Not a top-level "retries": S3FileSystem has no such parameter and hands unknown
        # ones to aiobotocore's AioSession, which rejects them; its own retry count is a
        # class attribute (5 by default).
    }


@dataclass(frozen=True)
class Location:
    """A storage root: its filesystem, its root path inside it, and the URL it came from."""

    fs: fsspec.AbstractFileSystem
    root: str
    url: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str | int) -> str:
        """The filesystem path of ``parts`` under the root (``parts`` are trusted names)."""
        return posixpath.join(self.root, *(str(p) for p in parts)) if parts else self.root

    def url_of(self, path: str) -> str:
        """The fsspec URL of a path of this filesystem (``s3://…`` or an absolute local path)."""
        if self.is_local:
            return path
        return self.fs.unstrip_protocol(path)

    def relative(self, path: str) -> str:
        """``path`` relative to the root; raises ValueError if it lies outside."""
        rel = posixpath.relpath(path, self.root)
        if rel == ".." or rel.startswith("../"):
            raise ValueError(f"{path} is outside {self.root}")
        return rel

    def exists(self, *parts: str | int) -> bool:
        return bool(self.fs.exists(self.path(*parts)))

    def read_bytes(self, *parts: str | int) -> bytes:
        data: bytes = self.fs.cat_file(self.path(*parts))
        return data

    def write_bytes_atomic(self, data: bytes, *parts: str | int) -> None:
        """Write a small object so that readers see the old or the new content, never half.

        S3 PUTs are atomic already; a local file is written beside and renamed over.
        """
        target = self.path(*parts)
        parent = posixpath.dirname(target)
        if self.is_local:
            self.fs.makedirs(parent, exist_ok=True)
            tmp = posixpath.join(parent, f".{posixpath.basename(target)}.{uuid.uuid4().hex}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(target, data)

    def refresh(self) -> None:
        """Forget cached listings (s3fs caches them; another client may have written)."""
        self.fs.invalidate_cache()


def open_location(url: str, *, s3_endpoint_url: str | None = None) -> Location:
    """Open a root URL: a local path (relative paths are made absolute) or ``s3://…``."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol == "file":
        local = url.removeprefix("file://")
        root = os.path.abspath(os.path.expanduser(local)).replace(os.sep, "/")
        return Location(fsspec.filesystem("file"), root.rstrip("/") or "/", root)
    if protocol in ("s3", "s3a"):
        fs = fsspec.filesystem("s3", **s3_storage_options(s3_endpoint_url))
        root = fs._strip_protocol(url).rstrip("/")
        return Location(fs, root, f"s3://{root}")
    fs, root = fsspec.core.url_to_fs(url)
    return Location(fs, root.rstrip("/"), url)
