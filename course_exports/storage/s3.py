"""The S3 backend of :class:`~course_exports.storage.base.Location`.

Two clients, both built here from the same settings and the same credentials:

- **obstore** (Rust ``object_store``) carries the data path: listings, GETs, PUTs,
  conditional PUTs, multipart uploads and bulk deletes. It costs about 0.3 ms of CPU per
  small GET where s3fs/aiobotocore costs about 8 ms, which on a course of 60,000 files is
  the difference between the client and the network being the bottleneck.
- **botocore** does the few control-plane calls obstore has no API for: presigned GET
  URLs that carry ``response-content-disposition`` (the browser saves the file under
  its real name), listing and aborting pending multipart uploads, and the keys
  ``object_store`` refuses to name (ASCII control characters, empty or dot segments),
  which the LMS may still have written.

Credentials come from botocore's chain (the usual ``AWS_*`` variables, profiles, SSO,
instance roles), so both clients always sign as the same identity.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    GenericError,
    InvalidPathError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

if TYPE_CHECKING:
    from obstore import GetOptions

from course_exports.storage.base import (
    Entry,
    Location,
    ObjectChangedError,
    ObjectTooLargeError,
    Part,
    PendingUpload,
    join,
    validate_range,
    validate_tail,
)
from course_exports.storage.download import Download, RedirectDownload

# Timeouts and retries live on the clients: a Prefect task timeout cannot interrupt a
# blocked read.
S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 60
S3_RETRIES = 5
#: How long one request may keep retrying before its error is raised.
S3_RETRY_TIMEOUT_S = 120
#: Concurrent GETs of :meth:`S3Location.read_many` (small objects: latency-bound).
READ_CONCURRENCY = 16
#: Objects up to this size are fetched whole by :meth:`S3Location.open_read`.
WHOLE_READ_BYTES = 4 * 2**20
DEFAULT_REGION = "us-east-1"
#: How long a failed streaming write keeps trying to abort its multipart upload.
ABORT_DEADLINE_S = 150
#: A conditional PUT that meets a racing one in flight (409) is tried again this often.
CONDITIONAL_PUT_ATTEMPTS = 5
F = TypeVar("F", bound=Callable[..., Any])


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
        region = _session().get_config_variable("region") or DEFAULT_REGION
        return cls(endpoint, region)


log = logging.getLogger(__name__)
_SESSION_LOCK = threading.Lock()
_SESSIONS: dict[int, Any] = {}


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool() -> ThreadPoolExecutor:
    """The threads of concurrent small reads and writes, one pool per process (shared by
    every location: a worker opens locations per task)."""
    with _SESSION_LOCK:
        pool = _POOLS.get(os.getpid())
        if pool is None:
            pool = _POOLS[os.getpid()] = ThreadPoolExecutor(
                READ_CONCURRENCY, thread_name_prefix="s3-io"
            )
        return pool


def _session() -> Any:
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
        credentials = _session().get_credentials()
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

    return _session().create_client(
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


def _os_error(exc: BaseError) -> Exception:
    """obstore's error as the OSError the code above expects of any storage: what is
    left after the client's own retries (a 5xx, a timeout, a reset) is an I/O error the
    caller may retry; a refusal is a PermissionError; absence a FileNotFoundError."""
    if isinstance(exc, NotFoundError):
        return FileNotFoundError(errno.ENOENT, str(exc))
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        return PermissionError(errno.EACCES, str(exc))
    if isinstance(exc, GenericError):
        return OSError(errno.EIO, str(exc))
    return exc


def _storage_errors(method: F) -> F:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except BaseError as exc:
            raise _os_error(exc) from exc

    return wrapper  # type: ignore[return-value]


def _obstore_can_name(key: str) -> bool:
    """Whether ``object_store`` can address ``key`` as it is: it refuses ASCII control
    characters and empty, ``.`` and ``..`` segments (and would strip an outer ``/``);
    U+FFFE and U+FFFF do not survive its XML listings."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch in "\ufffe\uffff" for ch in key):
        return False
    return not any(part in ("", ".", "..") for part in key.split("/"))


def _tag(etag: str | None) -> str | None:
    """An ETag without its quotes."""
    return etag.strip('"') if etag else None


def _xml_safe(key: str) -> bool:
    """Whether ``key`` can be written in an XML request body as it is."""
    return not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\ufffe\uffff" for ch in key)


class _Stream(io.RawIOBase):
    """A sequential reader over one GET's body, pulled chunk by chunk."""

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    @_storage_errors
    def readinto(self, out: Any) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = memoryview(bytes(chunk))
        n = min(len(out), len(self._buffer))
        out[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


class _Pinned(io.RawIOBase):
    """One version of an object as a seekable file: ranged GETs that each carry the
    ``If-Match`` of the ETag seen when it was opened, so an object replaced while it is
    read fails the next read (412) instead of mixing two versions' bytes."""

    def __init__(self, store: S3Store, key: str, url: str) -> None:
        meta = obstore.head(store, key)
        self._store, self._key, self._url = store, key, url
        self._size = int(meta["size"])
        self._etag: str | None = meta["e_tag"]
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, f"{self._url}: seek before the start")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, out: Any) -> int:
        end = min(self._position + len(out), self._size)
        if end <= self._position:
            return 0
        options: GetOptions = {"range": (self._position, end)}
        if self._etag:
            options["if_match"] = self._etag
        try:
            data = obstore.get(self._store, self._key, options=options).bytes()
        except PreconditionError as exc:
            raise ObjectChangedError(self._url) from exc
        except BaseError as exc:
            raise _os_error(exc) from exc
        n = len(data)
        out[:n] = memoryview(data)
        self._position += n
        return n


class _Writable(io.RawIOBase):
    """obstore's writer as a standard binary file (pyarrow and zip writers check
    ``closed`` as an attribute; obstore has it as a method). Closing it only flushes:
    the upload completes, or aborts, when :meth:`S3Location.open_write` ends."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer
        self._position = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    @_storage_errors
    def write(self, data: Any) -> int:
        n = int(self._writer.write(data))
        self._position += n
        return n


class S3Location(Location):
    def __init__(self, bucket: str, prefix: str, settings: S3Settings) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.settings = settings
        self.root = f"{bucket}/{self.prefix}" if self.prefix else bucket
        self.url = f"s3://{self.root}"
        self.store = build_store(settings, bucket, self.prefix)

    def __repr__(self) -> str:
        return f"S3Location({self.url!r}, endpoint={self.settings.endpoint_url!r})"

    @cached_property
    def _boto(self) -> Any:
        return build_botocore_client(self.settings)

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    #: How many reads are worth running at once: S3 reads wait on the network, so many overlap.
    parallel_reads = 16

    # -- reads -------------------------------------------------------------------------

    @_storage_errors
    def exists(self, *parts: Part) -> bool:
        rel = join(*parts)
        try:
            if _obstore_can_name(rel):
                obstore.head(self.store, rel)
            else:
                self._boto.head_object(Bucket=self.bucket, Key=self._key(rel))
        except FileNotFoundError:
            return False
        except Exception as exc:
            if _is_boto_missing(exc):
                return False
            raise
        return True

    def _boto_get(self, rel: str, **options: Any) -> Any:
        try:
            return self._boto.get_object(Bucket=self.bucket, Key=self._key(rel), **options)
        except Exception as exc:
            if _is_boto_missing(exc):
                raise FileNotFoundError(self.url_for(rel)) from None
            raise

    @_storage_errors
    def read_bytes(self, *parts: Part, max_bytes: int | None = None) -> bytes:
        rel = join(*parts)
        if not _obstore_can_name(rel):
            response = self._boto_get(rel)
            size = int(response["ContentLength"])
            if max_bytes is not None and size > max_bytes:
                response["Body"].close()
                raise ObjectTooLargeError(self.url_for(rel), size, max_bytes)
            data: bytes = response["Body"].read()
            return data
        result = obstore.get(self.store, rel)
        size = result.meta["size"]
        if max_bytes is not None and size > max_bytes:
            raise ObjectTooLargeError(self.url_for(rel), size, max_bytes)  # body never read
        return bytes(result.bytes())

    def read_file(self, path: str, size: int) -> bytes:
        return self.read_bytes(path)  # one GET, no HEAD

    @_storage_errors
    def open_read(self, *parts: Part) -> BinaryIO:
        rel = join(*parts)
        if not _obstore_can_name(rel):
            return io.BytesIO(self._boto_get(rel)["Body"].read())
        result = obstore.get(self.store, rel)
        if result.meta["size"] <= WHOLE_READ_BYTES:
            return io.BytesIO(bytes(result.bytes()))
        return io.BufferedReader(_Stream(iter(result.stream(min_chunk_size=2**20))), 2**20)

    @_storage_errors
    def open_seekable(self, *parts: Part) -> BinaryIO:
        rel = join(*parts)
        if not _obstore_can_name(rel):
            return io.BytesIO(self._boto_get(rel)["Body"].read())
        return io.BufferedReader(_Pinned(self.store, rel, self.url_for(rel)), 2**20)

    @_storage_errors
    def read_tail(self, path: str, n: int) -> tuple[bytes, int]:
        validate_tail(n)
        if _obstore_can_name(path):
            try:
                result = obstore.get(self.store, path, options={"range": {"suffix": n}})
                return bytes(result.bytes()), int(result.meta["size"])
            except GenericError as exc:
                if not _unsatisfiable(exc):
                    raise
        else:
            response = self._boto_range(path, f"bytes=-{n}")
            if response is not None:
                data: bytes = response["Body"].read()
                content_range = response.get("ContentRange")  # "bytes 6-9/10"
                if content_range:
                    return data, int(content_range.rsplit("/", 1)[1])
                return data[-n:], len(data)  # the server ignored the range
        # S3 refuses any range of an empty object (416), while a suffix of any other
        # object is satisfiable: make sure it is empty (it may have been replaced).
        if self._size(path) != 0:
            raise OSError(errno.EIO, f"{self.url_for(path)}: 416 for the last {n} bytes")
        return b"", 0

    @_storage_errors
    def read_range(self, path: str, start: int, end: int) -> bytes:
        validate_range(start, end)
        if _obstore_can_name(path):
            try:
                return bytes(obstore.get(self.store, path, options={"range": (start, end)}).bytes())
            except GenericError as exc:
                if _unsatisfiable(exc):
                    return b""  # the object ends before start
                raise
        response = self._boto_range(path, f"bytes={start}-{end - 1}")
        if response is None:
            return b""
        body: bytes = response["Body"].read()
        # A server that ignores Range sends the whole object.
        return body if response.get("ContentRange") else body[start:end]

    def _boto_range(self, path: str, header: str) -> Any:
        """A ranged GetObject's response, or None when S3 answers 416 (nothing there)."""
        try:
            return self._boto_get(path, Range=header)
        except FileNotFoundError:
            raise
        except Exception as exc:
            if _boto_code(exc) == "InvalidRange":
                return None
            raise

    def _size(self, path: str) -> int:
        if _obstore_can_name(path):
            return int(obstore.head(self.store, path)["size"])
        try:
            head = self._boto.head_object(Bucket=self.bucket, Key=self._key(path))
        except Exception as exc:
            if _is_boto_missing(exc):
                raise FileNotFoundError(self.url_for(path)) from None
            raise
        return int(head["ContentLength"])

    def read_many(self, paths: Iterable[str]) -> list[bytes]:
        return list(_pool().map(self.read_bytes, paths))

    def scan_sources(self, paths: list[str]) -> list[bytes]:
        return self.read_many(paths)

    # -- listings ----------------------------------------------------------------------

    def iter_files(self, *parts: Part) -> Iterator[Entry]:
        rel = join(*parts)
        done = 0
        try:
            for chunk in obstore.list(self.store, rel or None, chunk_size=1000):
                if any("\ufffd" in meta["path"] for meta in chunk):
                    break  # maybe a key the XML parser could not take as it is
                for meta in chunk:
                    yield Entry(
                        meta["path"], meta["size"], meta["last_modified"], _tag(meta["e_tag"])
                    )
                done += len(chunk)
            else:
                return
        except InvalidPathError:
            pass  # a key object_store cannot name (a control character...)
        except BaseError as exc:
            raise _os_error(exc) from exc
        # botocore asks for URL-encoded keys, which carry any character. The server lists
        # in the same order for both clients, so the first ``done`` keys were yielded.
        for n, entry in enumerate(self._boto_list(rel)):
            if n >= done:
                yield entry

    def _boto_list(self, rel: str) -> Iterator[Entry]:
        paginator = self._boto.get_paginator("list_objects_v2")
        prefix = self._key(rel) + "/" if rel else (self.prefix + "/" if self.prefix else "")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield Entry(
                    self._rel(item["Key"]).rstrip("/"),  # as obstore names a "folder/" marker
                    int(item["Size"]),
                    item["LastModified"].astimezone(UTC),
                    _tag(item.get("ETag")),
                )

    @_storage_errors
    def list_names(self, *parts: Part) -> list[str]:
        rel = join(*parts)
        if rel and not _obstore_can_name(rel):
            return []  # nothing we write lives under such a name
        found = obstore.list_with_delimiter(self.store, rel or None)
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in found["common_prefixes"]]
        names += [m["path"].rsplit("/", 1)[-1] for m in found["objects"]]
        return sorted(set(names))

    # -- writes ------------------------------------------------------------------------

    @_storage_errors
    def write_bytes_atomic(self, data: bytes, *parts: Part) -> None:
        # A single PUT is atomic on S3: readers see the old object or the new one.
        rel = join(*parts)
        if _obstore_can_name(rel):
            obstore.put(self.store, rel, data, use_multipart=False)
        else:
            self._boto.put_object(Bucket=self.bucket, Key=self._key(rel), Body=data)

    @_storage_errors
    def write_many(self, items: Mapping[str, bytes]) -> None:
        list(_pool().map(lambda item: self.write_bytes_atomic(item[1], item[0]), items.items()))

    @_storage_errors
    def create_exclusive(self, data: bytes, *parts: Part) -> bool:
        for attempt in range(CONDITIONAL_PUT_ATTEMPTS):
            try:
                obstore.put(self.store, join(*parts), data, mode="create")
            except (AlreadyExistsError, PreconditionError):
                return False  # 412: the object is there
            except GenericError as exc:
                # 409 ConditionalRequestConflict: a racing conditional PUT is in flight;
                # once it lands, ours gets its 412.
                if "409" not in str(exc) or attempt + 1 == CONDITIONAL_PUT_ATTEMPTS:
                    raise
                time.sleep(0.1 * (attempt + 1))
                continue
            return True
        raise AssertionError("unreachable: the last attempt returns or raises")

    @contextlib.contextmanager
    def open_write(self, *parts: Part, part_bytes: int = 16 * 2**20) -> Iterator[BinaryIO]:
        # obstore buffers up to part_bytes, then switches to a multipart upload with
        # parts of that size; leaving its block by an exception aborts the upload.
        writer = obstore.open_writer(
            self.store, join(*parts), buffer_size=part_bytes, max_concurrency=4
        )
        writer.__enter__()
        try:
            yield _Writable(writer)  # type: ignore[misc]
        except BaseException as exc:
            with contextlib.suppress(BaseError):  # the abort failed too: see below
                writer.__exit__(type(exc), exc, exc.__traceback__)
            # obstore's abort is one request: during an outage it fails and the upload's
            # parts would stay stored (and billed). Make sure, for a while, that no
            # upload to this key is left; a cancelled run gets one attempt.
            self._abort_uploads_to(
                join(*parts), ABORT_DEADLINE_S if isinstance(exc, Exception) else 0
            )
            raise
        try:
            writer.__exit__(None, None, None)  # the last part, then the completion
        except BaseError as exc:
            raise _os_error(exc) from exc

    def _abort_uploads_to(self, rel: str, deadline_s: float) -> None:
        key = self._key(rel)
        give_up = time.monotonic() + deadline_s
        pause = 1.0
        while True:
            try:
                for upload in self.pending_uploads(*rel.split("/")[:-1]):
                    if upload.path == rel:
                        self.abort_upload(upload.path, upload.upload_id)
                return
            except Exception as exc:
                if time.monotonic() + pause > give_up:
                    log.warning("multipart upload to %s may be left: %s", key, exc)
                    return  # the purge aborts it once it is a day old
                time.sleep(pause)
                pause = min(pause * 2, 15.0)

    # -- deletes -----------------------------------------------------------------------

    def delete(self, *parts: Part) -> None:
        self.delete_many([join(*parts)])

    @_storage_errors
    def delete_many(self, paths: Iterable[str]) -> None:
        bulk: list[str] = []
        for path in paths:
            if _obstore_can_name(path) and _xml_safe(path):
                bulk.append(path)
            else:
                # DeleteObjects names its keys in XML, which cannot carry control
                # characters: such a key goes in a request of its own.
                self._boto.delete_object(Bucket=self.bucket, Key=self._key(path))
        for start in range(0, len(bulk), 1000):
            obstore.delete(self.store, bulk[start : start + 1000])  # DeleteObjects

    # -- multipart uploads -------------------------------------------------------------

    def pending_uploads(self, *parts: Part) -> Iterator[PendingUpload]:
        rel = join(*parts)
        prefix = self._key(rel) + "/" if rel else (self.prefix + "/" if self.prefix else "")
        paginator = self._boto.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                yield PendingUpload(
                    self._rel(upload["Key"]),
                    upload["UploadId"],
                    upload["Initiated"].astimezone(UTC),
                )

    def abort_upload(self, path: str, upload_id: str) -> None:
        try:
            self._boto.abort_multipart_upload(
                Bucket=self.bucket, Key=self._key(path), UploadId=upload_id
            )
        except Exception as exc:
            if not _is_boto_missing(exc):
                raise

    # -- downloads ---------------------------------------------------------------------

    def download(
        self, *parts: Part, content_disposition: str, content_type: str, expires_s: int
    ) -> Download | None:
        key = self._key(join(*parts))
        try:
            head = self._boto.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _is_boto_missing(exc):
                return None
            raise
        url: str = self._boto.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                # S3 echoes these back, so the browser saves the file under its real name.
                "ResponseContentDisposition": content_disposition,
                "ResponseContentType": content_type,
            },
            ExpiresIn=expires_s,
        )
        return RedirectDownload(int(head["ContentLength"]), url)


def _unsatisfiable(exc: BaseError) -> bool:
    """A 416 answer: the range starts past the object's end (or the object is empty)."""
    text = str(exc)
    return "416 Range Not Satisfiable" in text or "<Code>InvalidRange</Code>" in text


def _boto_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _is_boto_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _boto_code(exc) in ("404", "NoSuchKey", "NotFound", "NoSuchUpload") or status == 404
