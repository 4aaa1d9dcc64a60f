"""Download handles: how the download service hands an export's file to a browser,
without knowing where it is stored."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response


@dataclass(frozen=True)
class Download(ABC):
    #: The stored object's size, for the caller to compare with its manifest.
    size: int

    @abstractmethod
    def respond(
        self, request: Request, *, headers: dict[str, str], media_type: str, etag: str | None
    ) -> Response:
        """The response that delivers the file (``headers`` go on it)."""


@dataclass(frozen=True)
class RedirectDownload(Download):
    """A presigned URL: the browser fetches the object from S3 itself."""

    url: str

    def respond(
        self, request: Request, *, headers: dict[str, str], media_type: str, etag: str | None
    ) -> Response:
        return RedirectResponse(self.url, status_code=307, headers=headers)


@dataclass(frozen=True)
class FileDownload(Download):
    """A regular file inside the local root, already resolved (no symlink left)."""

    path: str
    stat: os.stat_result

    def respond(
        self, request: Request, *, headers: dict[str, str], media_type: str, etag: str | None
    ) -> Response:
        headers = dict(headers)
        if etag:
            headers["ETag"] = etag
            if_none_match = request.headers.get("if-none-match")
            if if_none_match and _matches(if_none_match, etag):
                return Response(status_code=304, headers=headers)
        # FileResponse answers HEAD and Range/If-Range itself. It opens the resolved
        # path, the one checked, not the manifest's (which may be a symlink).
        return FileResponse(
            self.path, media_type=media_type, headers=headers, stat_result=self.stat
        )


def _matches(header: str, etag: str) -> bool:
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or etag in tags
