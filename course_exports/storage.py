"""fsspec URLs to filesystems: one place that knows local folders and S3.

A :class:`Location` is a root URL opened once (``./var/lake``, ``s3://bucket/prefix``);
everything else joins relative paths onto it, so the same code runs on both.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import posixpath
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, BinaryIO, NamedTuple

import fsspec
from fsspec.implementations.local import LocalFileSystem

# Timeouts live on the client: a Prefect task timeout cannot interrupt a blocked read.
S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 60
S3_RETRIES = 5
# Objects up to this size are fetched in one GET; larger ones are read in blocks.
WHOLE_READ_BYTES = 4 * 2**20


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


class TooLargeError(ValueError):
    """A metadata object is larger than its reader allows (it was not read)."""

    def __init__(self, path: str, limit: int) -> None:
        super().__init__(f"{path} is larger than {limit:,} bytes")
        self.path = path
        self.limit = limit


class Entry(NamedTuple):
    """One object of a listing: its path relative to the location's root, its size, its
    modification time, and a tag that changes when its content does (the ETag on S3;
    a stamp of mtime, size and inode on a local disk)."""

    path: str
    size: int
    mtime: datetime
    etag: str | None


def content_tag(info: dict[str, Any]) -> str | None:
    """:attr:`Entry.etag` from an fsspec listing entry (``find(detail=True)``)."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag).strip('"')
    mtime, ino = info.get("mtime"), info.get("ino")
    if mtime is None:
        return None
    return f"{int(float(mtime) * 1e9):x}-{int(info.get('size') or 0):x}-{int(ino or 0):x}"


def _mtime(info: dict[str, Any]) -> datetime:
    value = info.get("LastModified", info.get("mtime"))
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value or 0), UTC)


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

    def read_bytes(self, *parts: str | int, max_bytes: int | None = None) -> bytes:
        """The whole object; with ``max_bytes``, raise :class:`TooLargeError` rather than
        hold more than that (never more than ``max_bytes + 1`` bytes are read)."""
        path = self.path(*parts)
        if max_bytes is None:
            data: bytes = self.fs.cat_file(path)
            return data
        with self.fs.open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise TooLargeError(self.url_of(path), max_bytes)
        return data

    def open_write(self, *parts: str | int) -> IO[bytes]:
        """A new object for writing, its folders made as needed. Readers may see it half
        written: put it somewhere only a commit file points at (or write it atomically)."""
        path = self.path(*parts)
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        stream: IO[bytes] = self.fs.open(path, "wb")
        return stream

    def list_names(self, *parts: str | int) -> list[str]:
        """Names of the files and folders directly in a folder (listed afresh, not from a
        cache); none if it does not exist."""
        try:
            found = self.fs.ls(self.path(*parts), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(str(p).rstrip("/")) for p in found)

    def glob(self, *parts: str | int) -> list[str]:
        """Paths (relative to the root) matching a pattern of ``parts`` (``*`` per level)."""
        return sorted(self.relative(p) for p in self.fs.glob(self.path(*parts)))

    def remove_tree(self, *parts: str | int) -> None:
        """Delete a folder and everything in it (nothing if it is not there)."""
        path = self.path(*parts)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def write_bytes_atomic(self, data: bytes, *parts: str | int) -> None:
        """Write a small object so that readers see the old or the new content, never half.

        S3 PUTs are atomic already; a local file is written beside and renamed over.
        """
        target = self.path(*parts)
        if self.is_local:
            os.replace(self._write_temp(data, target), target)
        else:
            self.fs.pipe_file(target, data)

    @property
    def parallel_reads(self) -> int:
        """How many reads are worth running at once: S3 reads wait on the network, so
        many overlap; local reads hardly wait, and every thread costs a malloc arena."""
        return 4 if self.is_local else 16

    def open_read(self, path: str, size: int) -> BinaryIO:
        """Open a file of this storage whose size is known (from a listing) for reading."""
        if self.is_local:
            # Unbuffered: the reader asks for the whole file (or a chunk) at once, and
            # open()'s buffer costs more than fs.open saves; 500,000 files add up.
            return io.FileIO(path, "r")
        if size <= WHOLE_READ_BYTES:
            # One GET per object. s3fs's own ways cost two: ``open`` HEADs the object to
            # learn its ETag even when told its size, ``cat_file`` HEADs it to decide
            # whether to split the download. On a course of 60,000 small files that HEAD
            # is half of all requests (and of the server's and our CPU).
            return io.BytesIO(self.fs.cat_file(path, max_concurrency=1))
        block = min(size, 8 * 2**20)
        return self.fs.open(path, "rb", size=size, block_size=block, cache_type="readahead")  # type: ignore[no-any-return]

    def read_file(self, path: str, size: int) -> bytes:
        """A file whose size a listing gave, read whole in one call (one GET on S3). At
        most ``size + 1`` bytes are asked for locally, so a file that grew shows it."""
        if self.is_local:
            fd = os.open(path, os.O_RDONLY)
            try:
                data = os.read(fd, size + 1)  # a regular file reads whole unless it changed
                while len(data) <= size and (more := os.read(fd, size + 1 - len(data))):
                    data += more
                return data
            finally:
                os.close(fd)
        whole: bytes = self.fs.cat_file(path, max_concurrency=1)  # one GET, no HEAD
        return whole

    def iter_files(self, *parts: str | int) -> Iterator[tuple[str, int]]:
        """``(path, size)`` of every file under ``parts``, streamed: nothing is kept per
        file, so a folder of 500,000 files costs no more memory than one of ten. Files of
        one folder come one after another (as an S3 listing, in key order, gives them)."""
        root = self.path(*parts)
        if self.is_local:
            yield from _walk_local(root)
            return
        self.refresh()
        if not self.fs.exists(root):
            return
        found = self.fs.find(root, detail=True)
        # s3fs keeps every listed object in its cache, and the filesystem object outlives
        # the export in a worker: 60,000 entries would stay in memory for nothing.
        self.refresh()
        for path, info in found.items():
            if info.get("type") == "file":
                yield path, int(info.get("size") or 0)

    def create_exclusive(self, data: bytes, *parts: str | int) -> bool:
        """Create a small object only if nothing is there yet; False if something was.

        The one atomic claim both storages offer: locally a fsynced file hard-linked into
        place (``link`` refuses an existing name, as ``O_EXCL`` does, and no reader sees
        half of it), on S3 a conditional PUT (``If-None-Match: *``). Of two writers
        racing for one name, exactly one gets True.
        """
        target = self.path(*parts)
        if self.is_local:
            # Written whole beside, then hard-linked into place: link() fails if the name
            # exists (the O_EXCL of a rename), and no reader ever sees half a claim.
            tmp = self._write_temp(data, target)
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            finally:
                os.remove(tmp)
            return True
        for attempt in range(_CONDITIONAL_PUT_ATTEMPTS):
            try:
                self.fs.pipe_file(target, data, mode="create")
            except FileExistsError:
                return False
            except OSError as exc:
                status = _s3_status(exc)
                if status == 412:  # s3fs maps only AWS's exact error to FileExistsError
                    return False
                if status == 409 and attempt + 1 < _CONDITIONAL_PUT_ATTEMPTS:
                    # ConditionalRequestConflict: a racing conditional PUT is in flight;
                    # once it lands, ours gets its 412.
                    time.sleep(0.1 * (attempt + 1))
                    continue
                raise
            return True
        raise RuntimeError("unreachable")  # the last attempt returns or raises

    def remove(self, *parts: str | int) -> None:
        """Delete one object; nothing there is not an error."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(*parts))

    def _write_temp(self, data: bytes, target: str) -> str:
        """A fsynced temporary file beside ``target`` (local only), named so the purge
        recognises a leftover."""
        parent = posixpath.dirname(target)
        self.fs.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(target)}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def url_for(self, *parts: str | int) -> str:
        """The URL of ``parts`` under the root, for messages (``s3://…`` or a local path)."""
        return self.url_of(self.path(*parts))

    def list(self, *parts: str | int) -> Iterator[Entry]:
        """Every object under the folder ``parts`` (recursively), paths relative to the
        root, in key order. Empty if the folder is absent."""
        try:
            found: dict[str, dict[str, Any]] = self.fs.find(self.path(*parts), detail=True)
        except FileNotFoundError:
            return
        for path in sorted(found):
            info = found[path]
            if info.get("type") == "directory":
                continue
            yield Entry(
                self.relative(path), int(info.get("size") or 0), _mtime(info), content_tag(info)
            )

    def read_many(self, paths: Iterable[str]) -> builtins.list[bytes]:
        """The objects at ``paths`` (relative), in that order (fetched concurrently on S3)."""
        full = [self.path(p) for p in paths]
        if not full:
            return []
        if self.is_local:
            return [self.fs.cat_file(p) for p in full]
        blobs: dict[str, bytes] = self.fs.cat(full, on_error="raise")
        return [blobs[p] for p in full]

    def scan_sources(self, paths: builtins.list[str]) -> builtins.list[str] | builtins.list[bytes]:
        """What a Polars or Arrow scan of ``paths`` (relative) reads: the local files'
        paths, or the remote objects' bytes (fetched concurrently)."""
        if self.is_local:
            return [self.path(p) for p in paths]
        return self.read_many(paths)

    def open_seekable(self, *parts: str | int) -> BinaryIO:
        """A seekable file of the object (ranged reads on S3), e.g. for a parquet footer."""
        handle: BinaryIO = self.fs.open(self.path(*parts), "rb")
        return handle

    def delete(self, *parts: str | int) -> None:
        """Remove one object; nothing happens if it is absent."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(*parts))

    def refresh(self) -> None:
        """Forget cached listings (s3fs caches them; another client may have written)."""
        self.fs.invalidate_cache()


def _walk_local(root: str) -> Iterator[tuple[str, int]]:
    """Depth first (a folder's whole subtree before its siblings'), sizes from ``scandir``."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with entries:
            # Links are left out: a link in a workspace could point anywhere on this machine.
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    size = entry.stat(follow_symlinks=False).st_size
                    yield entry.path.replace(os.sep, "/"), size


#: A conditional PUT that meets a racing one in flight (409) is tried again this often.
_CONDITIONAL_PUT_ATTEMPTS = 5


def _s3_status(exc: BaseException) -> int | None:
    """The HTTP status of the S3 error behind an s3fs exception, if there is one."""
    cause: BaseException | None = exc
    while cause is not None:
        response = getattr(cause, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return int(status) if status is not None else None
        cause = cause.__cause__ or cause.__context__
    return None


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
