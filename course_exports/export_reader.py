"""Reading back a course export that may have been altered or damaged (Import Project).

Nothing in the archive is trusted until it is proven, in this order:

1. its bytes are the ones the export registered: size and sha256 against the export
   record, hashed as a stream (a consistently rewritten archive passes every check
   below, so this one comes first);
2. the zip's directory: one top folder, unique and safe names, no links, no encryption,
   only stored or deflated entries, sizes in proportion to the archive;
3. ``manifest.json``: at most :meth:`ImportLimits.max_manifest_bytes`, parsed as a
   stream (:mod:`course_exports.json_stream`) that keeps only what the import asks
   for, every item checked against a schema;
4. each extracted entry, hashed while it streams out, against the manifest.

A damaged archive is an :class:`UnsafeArchiveError` naming the problem and the entry;
it is an ``ExportError``, so the task's retry policy never retries it. zipfile reports
damage with a dozen exception types (``BadZipFile``, ``zlib.error``, ``EOFError``,
``OSError``, ``NotImplementedError``, ``RuntimeError``...), some of which are also what
a storage hiccup raises. :class:`_ArchiveStream` remembers what the storage itself
raised: only that propagates unchanged (and is retried); anything else the zip reader
raises on bytes that matched the record is damage.
"""

from __future__ import annotations

import errno
import hashlib
import stat
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from course_exports.course_export import ZIP_FORMAT, ZIP_MANIFEST
from course_exports.errors import ExportError
from course_exports.export_records import ExportRecord
from course_exports.json_stream import JsonStreamError, read_object
from course_exports.text import one_line
from course_exports.zipstream import CHUNK_BYTES

_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_ENCRYPTED = 0x1  # general purpose flag bit 0


class UnsafeArchiveError(ExportError):
    """The archive is damaged, altered, or holds something an import must not write."""

    def __init__(self, archive: str, problem: str) -> None:
        super().__init__(
            f"{archive}: {problem}", reason="the export file is damaged or was altered"
        )
        self.problem = problem


@dataclass(frozen=True)
class ImportLimits:
    """What an archive may claim before it is refused as a bomb."""

    max_entries: int = 500_000
    max_total_bytes: int = 50 * 2**30
    max_ratio: float = 1100.0  # deflate cannot exceed ~1032:1; more means overlap tricks
    #: manifest.json: its header (course, assignments, workspaces: a few hundred bytes
    #: each) plus one line per entry (two paths, a hash, ids: ~300 bytes, 4 KB allowed).
    manifest_base_bytes: int = 16 * 2**20
    manifest_bytes_per_entry: int = 4096
    #: Parsing holds one of these at a time: a top-level value of the manifest (course,
    #: selection, counts...), or one item of its lists (an assignment, a workspace, an entry).
    manifest_value_chars: int = 4 * 2**20
    manifest_item_chars: int = 64 * 2**10

    def max_manifest_bytes(self, entries: int) -> int:
        return self.manifest_base_bytes + self.manifest_bytes_per_entry * entries


def quoted(name: str) -> str:
    """A name from the archive as it may appear in a message: escaped, one line, short."""
    return one_line(repr(name), limit=160)


def safe_relative(path: str) -> bool:
    """A relative POSIX path with no way out of the folder it is written into."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        return False
    if len(path) > 2 and path[0].isalpha() and path[1] == ":" and path[2] == "/":  # C:/x
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


# -- manifest schema: only what an import reads; other fields are ignored ------------------


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)


class ManifestStack(_Strict):
    id: str
    name: str | None = None


class ManifestAssignment(_Strict):
    id: int
    name: str
    stack: ManifestStack | None = None


class ManifestWorkspace(_Strict):
    assignment_id: int
    user_id: int
    username: str | None = None
    files: int = Field(ge=0)


class EntrySource(_Strict):
    assignment_id: int
    user_id: int
    path: str


class ManifestEntry(_Strict):
    path: str
    size: int = Field(ge=0)
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    source: EntrySource | None = None


#: The manifest's lists, read item by item.
_ITEMS: dict[str, TypeAdapter[Any]] = {
    "assignments": TypeAdapter(ManifestAssignment),
    "workspaces": TypeAdapter(ManifestWorkspace),
    "entries": TypeAdapter(ManifestEntry),
}


@dataclass(frozen=True)
class Manifest:
    """What an import reads of the manifest: every assignment, and one workspace."""

    assignments: list[ManifestAssignment]
    workspaces: list[ManifestWorkspace]
    entries: list[ManifestEntry]


def _problem(exc: ValidationError, *within: str | int) -> str:
    """The first schema error, located (``entries.7.source.path: Field required``)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in (*within, *first["loc"]))
    return one_line(f"{where}: {first['msg']} ({exc.error_count()} problems)")


def _owner(item: ManifestWorkspace | ManifestEntry) -> tuple[int, int] | None:
    if isinstance(item, ManifestWorkspace):
        return item.assignment_id, item.user_id
    return (item.source.assignment_id, item.source.user_id) if item.source else None


# -- verification of the bytes --------------------------------------------------------------


def verify_bytes(stream: IO[bytes], record: ExportRecord, name: str) -> None:
    """Refuse an archive whose size or sha256 is not the one its export registered.

    Hashed as a stream, never held; the stream is left at its start for the zip reader.
    Storage errors propagate as they are (transient).
    """
    if not record.sha256:
        raise UnsafeArchiveError(name, "the export record has no sha256 to check it against")
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK_BYTES):
        size += len(chunk)
        digest.update(chunk)
    if size != record.size_bytes:
        raise UnsafeArchiveError(
            name,
            f"is {size:,} bytes, the export recorded {record.size_bytes:,}: truncated or altered",
        )
    if digest.hexdigest() != record.sha256:
        raise UnsafeArchiveError(
            name, "its sha256 is not the one the export recorded: it was altered after the export"
        )
    stream.seek(0)


class _ArchiveStream:
    """The archive as zipfile reads it, telling storage failures apart from damage.

    What the storage raises is remembered (see :meth:`raised`); a seek before the start
    of the file, which only a corrupt directory asks for, is refused here as the
    ``OSError`` zipfile expects, before it reaches the storage.
    """

    def __init__(self, raw: IO[bytes], size: int) -> None:
        self._raw = raw
        self._size = size
        self._failure: BaseException | None = None

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._call(self._raw.tell)  # type: ignore[no-any-return]

    def read(self, n: int = -1) -> bytes:
        return self._call(self._raw.read, n)  # type: ignore[no-any-return]

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.tell(), 2: self._size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "seek before the start of the archive")
        return self._call(self._raw.seek, base + offset)  # type: ignore[no-any-return]

    def failure_behind(self, exc: BaseException) -> BaseException | None:
        """The storage failure ``exc`` is, or was raised while handling (zipfile turns
        an OSError while it looks for the directory into BadZipFile), if any."""
        seen: BaseException | None = exc
        while seen is not None:
            if seen is self._failure:
                return seen
            seen = seen.__cause__ or seen.__context__
        return None

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except Exception as exc:
            self._failure = exc
            raise


def check_directory(
    infos: list[zipfile.ZipInfo], archive_size: int, name: str, limits: ImportLimits
) -> str:
    """The top folder, once every entry of the zip's directory is safe to read.

    Refuses too many entries, out-of-proportion sizes, duplicate or escaping names,
    links, encrypted entries, compression methods the exporter never uses, entries
    outside one top folder, and an archive without its manifest.
    """
    if not infos:
        raise UnsafeArchiveError(name, "the archive holds no entries")
    if len(infos) > limits.max_entries:
        raise UnsafeArchiveError(name, f"{len(infos):,} entries, more than {limits.max_entries:,}")
    total = sum(i.file_size for i in infos)
    if total > limits.max_total_bytes or total > max(archive_size, 1) * limits.max_ratio:
        raise UnsafeArchiveError(
            name, f"expands to {total:,} bytes from {archive_size:,}: out of proportion"
        )
    names: set[str] = set()
    for info in infos:
        problem = _entry_problem(info, names, limits)
        if problem:  # the name is quoted only then: 500,000 of them would take seconds
            raise UnsafeArchiveError(name, f"entry {quoted(info.filename)} {problem}")
        names.add(info.filename)
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1:
        raise UnsafeArchiveError(name, "entries are not under one top folder")
    top = tops.pop()
    if f"{top}/{ZIP_MANIFEST}" not in names:
        raise UnsafeArchiveError(name, f"no {ZIP_MANIFEST} in the archive")
    return top


def _entry_problem(info: zipfile.ZipInfo, seen: set[str], limits: ImportLimits) -> str | None:
    """What is wrong with one entry of the zip's directory, if anything."""
    if info.filename in seen:
        return "appears twice"
    if not safe_relative(info.filename.rstrip("/")):
        return "has an unsafe path"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if info.flag_bits & _ENCRYPTED:
        return "is encrypted"
    if info.compress_type not in _METHODS:
        return f"uses compression method {info.compress_type}"
    if info.file_size > max(info.compress_size, 1) * limits.max_ratio:
        return f"expands {info.file_size:,} from {info.compress_size:,} bytes"
    return None


class ExportArchive:
    """A course export's zip, opened only once its bytes match the export record and its
    directory passed :func:`check_directory`. Use as a context manager."""

    def __init__(
        self, raw: IO[bytes], record: ExportRecord, name: str, limits: ImportLimits
    ) -> None:
        verify_bytes(raw, record, name)
        self.name = name
        self.export_id = record.export_id
        self._limits = limits
        self._stream = _ArchiveStream(raw, record.size_bytes)
        with self._damage("the zip directory"):
            self._zip = zipfile.ZipFile(self._stream)  # type: ignore[arg-type]
            infos = self._zip.infolist()
        try:
            self.top = check_directory(infos, record.size_bytes, name, limits)
        except BaseException:
            self._zip.close()
            raise
        self._entries = len(infos)

    def __enter__(self) -> ExportArchive:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._zip.close()

    def manifest(self, assignment_id: int, user_id: int) -> Manifest:
        """The manifest, read as a stream (:func:`read_object`): every assignment, and only
        the workspace and the entries of ``user_id`` in ``assignment_id``; every item is
        still checked against the schema."""
        info = self._zip.getinfo(f"{self.top}/{ZIP_MANIFEST}")  # names are unique: checked
        cap = self._limits.max_manifest_bytes(self._entries)
        if info.file_size > cap:
            raise UnsafeArchiveError(
                self.name,
                f"{ZIP_MANIFEST} is {info.file_size:,} bytes, more than the {cap:,} "
                f"allowed for {self._entries:,} entries",
            )
        where = f"entry {quoted(info.filename)}"
        with self._damage(where):
            source = self._zip.open(info)
        members: Counter[str] = Counter()
        scalars: dict[str, Any] = {}
        kept: dict[str, list[Any]] = {key: [] for key in _ITEMS}
        wanted = (assignment_id, user_id)
        with source, self._damage(where):
            try:
                for key, index, value in read_object(
                    source.read,
                    streamed=_ITEMS,
                    max_value_chars=self._limits.manifest_value_chars,
                    max_item_chars=self._limits.manifest_item_chars,
                ):
                    if index is None:
                        members[key] += 1
                        scalars[key] = value
                        continue
                    item = self._item(key, index, value)
                    if key == "assignments" or _owner(item) == wanted:
                        kept[key].append(item)
            except JsonStreamError as exc:
                raise UnsafeArchiveError(self.name, f"{ZIP_MANIFEST}: {exc}") from None
        for key in ("format", "export_id", *_ITEMS):
            if members[key] != 1:
                raise UnsafeArchiveError(
                    self.name, f"{ZIP_MANIFEST}: {key!r} appears {members[key]} times, not once"
                )
        if type(scalars["format"]) is not int or scalars["format"] != ZIP_FORMAT:
            raise UnsafeArchiveError(
                self.name,
                f"{ZIP_MANIFEST}: format {quoted(str(scalars['format']))}, "
                f"this importer reads {ZIP_FORMAT}",
            )
        if scalars["export_id"] != self.export_id:
            raise UnsafeArchiveError(
                self.name,
                f"{ZIP_MANIFEST} belongs to export {quoted(str(scalars['export_id']))}, "
                f"not {self.export_id}",
            )
        return Manifest(kept["assignments"], kept["workspaces"], kept["entries"])

    def _item(self, key: str, index: int, value: Any) -> Any:
        try:
            return _ITEMS[key].validate_python(value)
        except ValidationError as exc:
            raise UnsafeArchiveError(
                self.name, f"{ZIP_MANIFEST}: {_problem(exc, key, index)}"
            ) from None

    def copy_entry(self, path: str, entry: ManifestEntry, out: IO[bytes]) -> int:
        """Stream the entry at ``<top>/<path>`` into ``out``, checking it against ``entry``."""
        info = self._zip.NameToInfo.get(f"{self.top}/{path}")
        if info is None or info.is_dir():
            raise UnsafeArchiveError(
                self.name, f"manifest entry {quoted(path)} is not a file in the archive"
            )
        where = f"entry {quoted(info.filename)}"
        if info.file_size != entry.size:
            raise UnsafeArchiveError(
                self.name, f"{where} is {info.file_size:,} bytes, the manifest says {entry.size:,}"
            )
        digest, size = hashlib.sha256(), 0
        with self._damage(where):
            source = self._zip.open(info)
        with source:
            while True:
                with self._damage(where):
                    chunk = source.read(CHUNK_BYTES)
                if not chunk:
                    break
                size += len(chunk)
                digest.update(chunk)
                out.write(chunk)  # a storage error here is the storage's: not caught
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise UnsafeArchiveError(self.name, f"{where} does not match the manifest")
        return size

    @contextmanager
    def _damage(self, where: str) -> Iterator[None]:
        """Whatever the zip or JSON reader raises here is damage at ``where``, except a
        storage failure, which propagates unchanged to be retried."""
        try:
            yield
        except UnsafeArchiveError:
            raise
        except Exception as exc:
            failure = self._stream.failure_behind(exc)
            if failure is exc:
                raise
            if failure is not None:
                raise failure from exc  # the storage's error, not the zip reader's
            problem = one_line(f"{type(exc).__name__}: {exc}")
            raise UnsafeArchiveError(self.name, f"{where} is damaged ({problem})") from exc
