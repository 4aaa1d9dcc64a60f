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

Both are built in :mod:`.s3_clients`, from the same settings and credentials; S3's
answers are turned into what every backend gives (OSErrors, file objects) in
:mod:`.s3_objects`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC
from functools import cached_property
from typing import Any, BinaryIO

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    GenericError,
    InvalidPathError,
    PreconditionError,
)

from course_exports.storage.base import (
    Entry,
    Location,
    ObjectTooLargeError,
    Part,
    PendingUpload,
    join,
    read_or_error,
    validate_range,
    validate_ranges,
    validate_tail,
)
from course_exports.storage.download import Download, RedirectDownload
from course_exports.storage.s3_clients import (
    IO_CONCURRENCY,
    S3_CONNECT_TIMEOUT_S,
    S3_READ_TIMEOUT_S,
    S3_RETRIES,
    S3Settings,
    build_botocore_client,
    build_store,
    shared_pool,
)
from course_exports.storage.s3_objects import (
    BodyStream,
    PinnedObject,
    UploadFile,
    bare_etag,
    boto_code,
    is_boto_missing,
    obstore_can_name,
    os_error,
    storage_errors,
    unsatisfiable,
    xml_safe,
)

__all__ = ["S3_CONNECT_TIMEOUT_S", "S3_READ_TIMEOUT_S", "S3_RETRIES", "S3Location", "S3Settings"]

#: Objects up to this size are fetched whole by :meth:`S3Location.open_read`.
WHOLE_READ_BYTES = 4 * 2**20
#: How long a failed streaming write keeps trying to abort its multipart upload.
ABORT_DEADLINE_S = 150
#: A conditional PUT that meets a racing one in flight (409) is tried again this often.
CONDITIONAL_PUT_ATTEMPTS = 5

log = logging.getLogger(__name__)


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
    parallel_reads = IO_CONCURRENCY

    # -- reads -------------------------------------------------------------------------

    @storage_errors
    def exists(self, *parts: Part) -> bool:
        rel = join(*parts)
        try:
            if obstore_can_name(rel):
                obstore.head(self.store, rel)
            else:
                self._boto.head_object(Bucket=self.bucket, Key=self._key(rel))
        except FileNotFoundError:
            return False
        except Exception as exc:
            if is_boto_missing(exc):
                return False
            raise
        return True

    def _boto_get(self, rel: str, **options: Any) -> Any:
        try:
            return self._boto.get_object(Bucket=self.bucket, Key=self._key(rel), **options)
        except Exception as exc:
            if is_boto_missing(exc):
                raise FileNotFoundError(self.url_for(rel)) from None
            raise

    @storage_errors
    def read_bytes(self, *parts: Part, max_bytes: int | None = None) -> bytes:
        rel = join(*parts)
        if not obstore_can_name(rel):
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

    @storage_errors
    def open_read(self, *parts: Part) -> BinaryIO:
        rel = join(*parts)
        if not obstore_can_name(rel):
            return io.BytesIO(self._boto_get(rel)["Body"].read())
        result = obstore.get(self.store, rel)
        if result.meta["size"] <= WHOLE_READ_BYTES:
            return io.BytesIO(bytes(result.bytes()))
        return io.BufferedReader(BodyStream(iter(result.stream(min_chunk_size=2**20))), 2**20)

    @storage_errors
    def open_seekable(self, *parts: Part) -> BinaryIO:
        rel = join(*parts)
        if not obstore_can_name(rel):
            return io.BytesIO(self._boto_get(rel)["Body"].read())
        return io.BufferedReader(PinnedObject(self.store, rel, self.url_for(rel)), 2**20)

    @storage_errors
    def read_tail(self, path: str, n: int) -> tuple[bytes, int]:
        validate_tail(n)
        if obstore_can_name(path):
            try:
                result = obstore.get(self.store, path, options={"range": {"suffix": n}})
                return bytes(result.bytes()), int(result.meta["size"])
            except GenericError as exc:
                if not unsatisfiable(exc):
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

    @storage_errors
    def read_range(self, path: str, start: int, end: int) -> bytes:
        validate_range(start, end)
        if obstore_can_name(path):
            try:
                return bytes(obstore.get(self.store, path, options={"range": (start, end)}).bytes())
            except GenericError as exc:
                if unsatisfiable(exc):
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
            if boto_code(exc) == "InvalidRange":
                return None
            raise

    def _size(self, path: str) -> int:
        if obstore_can_name(path):
            return int(obstore.head(self.store, path)["size"])
        try:
            head = self._boto.head_object(Bucket=self.bucket, Key=self._key(path))
        except Exception as exc:
            if is_boto_missing(exc):
                raise FileNotFoundError(self.url_for(path)) from None
            raise
        return int(head["ContentLength"])

    def read_many(self, paths: Iterable[str]) -> list[bytes]:
        return list(shared_pool().map(self.read_bytes, paths))

    def read_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes | Exception]:
        validate_ranges(ranges)
        return list(shared_pool().map(lambda item: read_or_error(self.read_range, *item), ranges))

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
                        meta["path"], meta["size"], meta["last_modified"], bare_etag(meta["e_tag"])
                    )
                done += len(chunk)
            else:
                return
        except InvalidPathError:
            pass  # a key object_store cannot name (a control character...)
        except BaseError as exc:
            raise os_error(exc) from exc
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
                    bare_etag(item.get("ETag")),
                )

    @storage_errors
    def list_names(self, *parts: Part) -> list[str]:
        rel = join(*parts)
        if rel and not obstore_can_name(rel):
            return []  # nothing we write lives under such a name
        found = obstore.list_with_delimiter(self.store, rel or None)
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in found["common_prefixes"]]
        names += [m["path"].rsplit("/", 1)[-1] for m in found["objects"]]
        return sorted(set(names))

    # -- writes ------------------------------------------------------------------------

    @storage_errors
    def write_bytes_atomic(self, data: bytes, *parts: Part) -> None:
        # A single PUT is atomic on S3: readers see the old object or the new one.
        rel = join(*parts)
        if obstore_can_name(rel):
            obstore.put(self.store, rel, data, use_multipart=False)
        else:
            self._boto.put_object(Bucket=self.bucket, Key=self._key(rel), Body=data)

    @storage_errors
    def write_many(self, items: Mapping[str, bytes]) -> None:
        list(
            shared_pool().map(lambda item: self.write_bytes_atomic(item[1], item[0]), items.items())
        )

    @storage_errors
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
            yield UploadFile(writer)  # type: ignore[misc]
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
            raise os_error(exc) from exc

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

    @storage_errors
    def delete_many(self, paths: Iterable[str]) -> None:
        bulk: list[str] = []
        for path in paths:
            if obstore_can_name(path) and xml_safe(path):
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
            if not is_boto_missing(exc):
                raise

    # -- downloads ---------------------------------------------------------------------

    def download(
        self, *parts: Part, content_disposition: str, content_type: str, expires_s: int
    ) -> Download | None:
        key = self._key(join(*parts))
        try:
            head = self._boto.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if is_boto_missing(exc):
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
