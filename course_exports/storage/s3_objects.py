"""S3's answers in the shape the storage interface promises: errors as the OSErrors any
backend raises, GET bodies and multipart writers as file objects, and which keys each
client can name."""

from __future__ import annotations

import errno
import functools
import io
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import obstore
from obstore.exceptions import (
    BaseError,
    GenericError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

if TYPE_CHECKING:
    from obstore import GetOptions

from course_exports.storage.base import ObjectChangedError, SizedReader

F = TypeVar("F", bound=Callable[..., Any])


def os_error(exc: BaseError) -> Exception:
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


def storage_errors(method: F) -> F:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except BaseError as exc:
            raise os_error(exc) from exc

    return wrapper  # type: ignore[return-value]


def obstore_can_name(key: str) -> bool:
    """Whether ``object_store`` can address ``key`` as it is: it refuses ASCII control
    characters and empty, ``.`` and ``..`` segments (and would strip an outer ``/``);
    U+FFFE and U+FFFF do not survive its XML listings."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch in "\ufffe\uffff" for ch in key):
        return False
    return not any(part in ("", ".", "..") for part in key.split("/"))


def bare_etag(etag: str | None) -> str | None:
    """An ETag without its quotes."""
    return etag.strip('"') if etag else None


def xml_safe(key: str) -> bool:
    """Whether ``key`` can be written in an XML request body as it is."""
    return not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\ufffe\uffff" for ch in key)


def unsatisfiable(exc: BaseError) -> bool:
    """A 416 answer: the range starts past the object's end (or the object is empty)."""
    text = str(exc)
    return "416 Range Not Satisfiable" in text or "<Code>InvalidRange</Code>" in text


def boto_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def is_boto_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return boto_code(exc) in ("404", "NoSuchKey", "NotFound", "NoSuchUpload") or status == 404


class BodyStream(io.RawIOBase):
    """A sequential reader over one GET's body, pulled chunk by chunk."""

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    @storage_errors
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


class PinnedObject(SizedReader):
    """One version of an object as a seekable file: ranged GETs that each carry the
    ``If-Match`` of the ETag seen when it was opened, so an object replaced while it is
    read fails the next read (412) instead of mixing two versions' bytes."""

    def __init__(self, store: S3Store, key: str, url: str) -> None:
        meta = obstore.head(store, key)
        super().__init__(int(meta["size"]), url)
        self._store, self._key, self._url = store, key, url
        self._etag: str | None = meta["e_tag"]

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
            raise os_error(exc) from exc
        n = len(data)
        out[:n] = memoryview(data)
        self._position += n
        return n


class UploadFile(io.RawIOBase):
    """obstore's writer as a standard binary file (pyarrow and zip writers check
    ``closed`` as an attribute; obstore has it as a method). Closing it only flushes:
    the upload completes, or aborts, when :meth:`.s3.S3Location.open_write` ends."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer
        self._position = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    @storage_errors
    def write(self, data: Any) -> int:
        n = int(self._writer.write(data))
        self._position += n
        return n
