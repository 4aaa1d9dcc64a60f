"""Storage: one interface (:class:`Location`) over local folders and S3.

``open_location(url)`` opens a root once; everything above this package names objects
relative to it and never asks which backend it has. See :mod:`.base` for the interface,
:mod:`.local` and :mod:`.s3` for the backends.
"""

from __future__ import annotations

import os

from course_exports.storage.base import (
    Entry,
    Location,
    ObjectChangedError,
    ObjectTooLargeError,
    PendingUpload,
    SizedReader,
    join,
)
from course_exports.storage.download import Download, FileDownload, RedirectDownload
from course_exports.storage.local import LocalLocation
from course_exports.storage.s3 import (
    S3_CONNECT_TIMEOUT_S,
    S3_READ_TIMEOUT_S,
    S3_RETRIES,
    S3Location,
    S3Settings,
)

__all__ = [
    "S3_CONNECT_TIMEOUT_S",
    "S3_READ_TIMEOUT_S",
    "S3_RETRIES",
    "Download",
    "Entry",
    "FileDownload",
    "LocalLocation",
    "Location",
    "ObjectChangedError",
    "ObjectTooLargeError",
    "PendingUpload",
    "RedirectDownload",
    "S3Location",
    "SizedReader",
    "join",
    "open_location",
]


def open_location(url: str, *, s3_endpoint_url: str | None = None) -> Location:
    """Open a root URL: a local path (relative paths are made absolute) or ``s3://…``."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol == "file":
        local = url.removeprefix("file://")
        return LocalLocation(os.path.abspath(os.path.expanduser(local)).replace(os.sep, "/"))
    if protocol in ("s3", "s3a"):
        bucket, _, prefix = url.split("://", 1)[1].strip("/").partition("/")
        if not bucket:
            raise ValueError(f"{url}: no bucket")
        return S3Location(bucket, prefix, S3Settings.resolve(s3_endpoint_url))
    raise ValueError(f"{url}: only local paths and s3:// URLs are supported")
