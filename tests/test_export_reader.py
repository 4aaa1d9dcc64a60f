"""A course export read back by Import Project is proven before it is used.

Every way the archive can be damaged or altered is a refusal (``UnsafeArchiveError``,
an ``ExportError``: never retried) naming the problem and the entry, and nothing is
written. The property test damages a valid export at random.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from importkit import (
    GOOD,
    TOP,
    archive,
    build,
    entry,
    good_files,
    import_,
    nothing_imported,
    publish,
    reserve,
    run,
    snapshot,
    workspace_files,
)
from seaweed import SeaweedFS

from course_exports.errors import ExportError
from course_exports.export_reader import ImportLimits, UnsafeArchiveError
from course_exports.registry import file_path
from course_exports.storage import Location, ObjectChangedError, open_location


@pytest.fixture
def exports(tmp_path: Path) -> Location:
    return open_location(str(tmp_path / "exports"))


# -- item 5: manifest.json is capped and parsed as a stream ----------------------------------


def test_a_manifest_out_of_proportion_is_refused_unread(exports: Location) -> None:
    # The hostile review's archive: a few hundred KB whose manifest inflates ~1000x (a
    # 306 KB one drove the importer from 72 to 672 MB). Valid JSON of the right schema,
    # so only its size tells it apart.
    padded = archive(good_files(), edit=lambda doc: doc | {"padding": "a" * (24 * 2**20)})
    with pytest.raises(UnsafeArchiveError, match=r"manifest\.json is 25,\d+,\d+ bytes, more"):
        run(exports, padded)
    assert nothing_imported(exports)


def test_the_manifest_cap_grows_with_the_entries(exports: Location) -> None:
    limits = ImportLimits(manifest_base_bytes=2000, manifest_bytes_per_entry=200)
    many = [(f"workspaces/Loops/ana/f{i}.txt", b"x") for i in range(40)]
    assert run(exports, archive(many), limits=limits).files == 40  # 8 KB of 10 allowed
    with pytest.raises(UnsafeArchiveError, match="allowed for 41 entries"):
        run(exports, archive(many, edit=lambda d: d | {"pad": "a" * 3000}), limits=limits)


def test_entries_of_other_workspaces_are_checked_but_not_kept(exports: Location) -> None:
    files = [*good_files(), ("workspaces/Loops/bob/x.py", b"bob\n")]
    entries = [entry(n, d) for n, d in files]
    entries[-1]["source"] |= {"user_id": 10, "path": "x.py"}
    assert workspace_files(run(exports, archive(files, entries))) == GOOD
    entries[-1]["sha256"] = "not a hash"
    with pytest.raises(UnsafeArchiveError, match=r"entries\.3\.sha256: String should"):
        run(exports, archive(files, entries))


# -- item 6: the archive is the one the export registered ------------------------------------


def test_a_consistently_rewritten_archive_is_refused(exports: Location) -> None:
    record = reserve(exports)
    # Another main.py of the same size, with a manifest that agrees with it: every
    # per-entry check passes, and so would a size check of the whole archive.
    evil = [(n, b"import os#!\n" if n.endswith("main.py") else d) for n, d in good_files()]
    stored: dict[str, Any] = {"compression": zipfile.ZIP_STORED}
    record = publish(exports, record, build(record.export_id, good_files(), **stored))
    Path(record.file_url).write_bytes(build(record.export_id, evil, **stored))
    with pytest.raises(UnsafeArchiveError, match="sha256 is not the one the export recorded"):
        import_(exports, record)
    Path(record.file_url).write_bytes(build(record.export_id, good_files(), **stored)[:-7])
    with pytest.raises(UnsafeArchiveError, match="truncated or altered"):
        import_(exports, record)
    assert nothing_imported(exports)


def test_an_archive_replaced_after_its_hash_is_never_read_on_s3(s3_server: SeaweedFS) -> None:
    """The archive is hashed, then read again by the zip reader: an object replaced in
    between (by a consistently rewritten archive of the same size) fails the read
    instead of being imported; it used to be read as if it had been hashed."""
    bucket = s3_server.make_bucket("reader")
    exports = open_location(f"s3://{bucket}/exports", s3_endpoint_url=s3_server.endpoint_url)
    record = reserve(exports)
    evil = [(n, b"import os#!\n" if n.endswith("main.py") else d) for n, d in good_files()]
    stored: dict[str, Any] = {"compression": zipfile.ZIP_STORED}
    record = publish(exports, record, build(record.export_id, good_files(), **stored))
    path = file_path(exports, record)
    replacement = build(record.export_id, evil, **stored)
    assert len(replacement) == record.size_bytes

    class ReplacedAfterTheHash:
        def __init__(self, location: Location) -> None:
            self.location = location

        def open_seekable(self, *parts: Any) -> Any:
            raw = self.location.open_seekable(*parts)
            location = self.location

            class Stream(io.BufferedIOBase):
                def __getattr__(self, name: str) -> Any:
                    return getattr(raw, name)

                def read(self, n: int | None = -1) -> bytes:
                    return raw.read(-1 if n is None else n)

                def seek(self, offset: int, whence: int = 0) -> int:
                    if (offset, whence) == (0, 0) and raw.tell() == record.size_bytes:
                        location.write_bytes_atomic(replacement, *parts)  # hashed: swap
                    return raw.seek(offset, whence)

                def close(self) -> None:
                    raw.close()

            return Stream()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.location, name)

    with pytest.raises(ObjectChangedError, match="replaced while it was being read"):
        import_(ReplacedAfterTheHash(exports), record)  # type: ignore[arg-type]
    assert exports.read_bytes(path) == replacement  # it was swapped, and never imported
    assert nothing_imported(exports)


def test_a_manifest_of_another_export_is_refused(exports: Location) -> None:
    with pytest.raises(UnsafeArchiveError, match="belongs to export 'f00'"):
        run(exports, lambda _: build("f00", good_files()))


# -- item 7: every kind of damage is a refusal that names it -----------------------------------


def flip_in(data: bytes, needle: bytes) -> bytes:
    at = data.index(needle) + len(needle) // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def stored_main_with_bad_crc(export_id: str) -> bytes:
    return flip_in(build(export_id, good_files(), compression=zipfile.ZIP_STORED), b"print('hi')")


def deflated_main_corrupted(export_id: str) -> bytes:
    files = [(n, d * 200 if n.endswith("main.py") else d) for n, d in good_files()]
    data = build(export_id, files)
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(f"{TOP}/workspaces/Loops/ana/main.py")
    start = info.header_offset + 30 + len(info.filename.encode()) + 4
    return data[:start] + b"\xff\xff\xff\xff" + data[start + 4 :]


def truncated_directory(export_id: str) -> bytes:
    return build(export_id, good_files())[:-30]


def duplicate_names(export_id: str) -> bytes:
    def add(zf: zipfile.ZipFile) -> None:
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr(f"{TOP}/workspaces/Loops/ana/main.py", b"print('other')\n")

    return build(export_id, good_files(), tweak=add)


def file_and_folder(export_id: str) -> bytes:
    files = [("workspaces/Loops/ana/a", b"1"), ("workspaces/Loops/ana/a_/b", b"2")]
    entries = [entry(files[0][0], b"1"), entry(files[1][0], b"2", source="a/b")]
    return build(export_id, files, entries)


def lzma_entry(export_id: str) -> bytes:
    return build(export_id, good_files(), compression=zipfile.ZIP_LZMA)


def encrypted_entry(export_id: str) -> bytes:
    data = bytearray(build(export_id, good_files()))
    name = f"{TOP}/workspaces/Loops/ana/main.py".encode()
    local = data.index(name)  # the name follows a 30-byte local header...
    central = data.index(name, local + 1)  # ...and a 46-byte central directory record
    data[local - 30 + 6] |= 0x01  # general purpose flags: bit 0, encrypted
    data[central - 46 + 8] |= 0x01
    return bytes(data)


def source_without_path(export_id: str) -> bytes:
    entries = [entry(n, d) for n, d in good_files()]
    del entries[0]["source"]["path"]
    return build(export_id, good_files(), entries)


def without_manifest(export_id: str) -> bytes:
    data = build(export_id, good_files())
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                if not info.filename.endswith("manifest.json"):
                    dst.writestr(info, src.read(info))
    return out.getvalue()


DAMAGE: dict[str, tuple[Any, str]] = {
    "not a zip": (lambda _: b"PK\x03\x04 certainly not a zip", r"zip directory is damaged"),
    "empty file": (lambda _: b"", r"zip directory is damaged"),
    "truncated directory": (truncated_directory, r"zip directory is damaged"),
    "bad CRC": (stored_main_with_bad_crc, r"main\.py' is damaged \(BadZipFile: Bad CRC-32"),
    "corrupt deflate": (deflated_main_corrupted, r"main\.py' is damaged \(error: Error -3"),
    "no manifest": (without_manifest, "no manifest.json"),
    "manifest not JSON": (
        archive(good_files(), manifest_bytes=b'{"format": 1, "export_id": '),
        r"manifest\.json: the value of 'export_id' is not a JSON value",
    ),
    "manifest not UTF-8": (
        archive(good_files(), manifest_bytes=b'{"format": "\xff\xfe"}'),
        r"manifest\.json: not UTF-8",
    ),
    "manifest a list": (
        archive(good_files(), manifest_bytes=b"[]"),
        r"manifest\.json: expected one of '\{', found '\['",
    ),
    "manifest format 2": (
        archive(good_files(), edit=lambda d: d | {"format": 2}),
        "format '2', this importer reads 1",
    ),
    "manifest key twice": (
        lambda eid: build(
            eid,
            good_files(),
            manifest_bytes=b'{"format": 1, "format": 1, "export_id": "'
            + eid.encode()
            + b'", "assignments": [], "workspaces": []}',
        ),
        r"manifest\.json: 'format' appears 2 times, not once",
    ),
    "assignments not a list": (
        archive(good_files(), edit=lambda d: d | {"assignments": {"5": {}}}),
        r"manifest\.json: 'assignments' is not a list",
    ),
    "entry without a source path": (
        source_without_path,
        r"manifest\.json: entries\.0\.source\.path: Field required",
    ),
    "entry not an object": (
        archive(good_files(), edit=lambda d: d | {"entries": [*d["entries"], 7]}),
        r"entries\.3: Input should be",
    ),
    "workspace count off": (
        archive(
            good_files(), edit=lambda d: d | {"workspaces": [d["workspaces"][0] | {"files": 4}]}
        ),
        "lists 4 files, the manifest has 3",
    ),
    "entry missing from the zip": (
        archive(good_files()[:2], [entry(n, d) for n, d in good_files()]),
        r"notes with space\.md' is not a file in the archive",
    ),
    "duplicate names": (duplicate_names, r"main\.py' appears twice"),
    "a file and a folder": (file_and_folder, "'a' as a file and as a folder"),
    "lzma": (lzma_entry, "uses compression method 14"),
    "encrypted": (encrypted_entry, r"main\.py' is encrypted"),
    "size off": (
        archive(good_files(), [entry(n, d + b"!") for n, d in good_files()]),
        r"main\.py' is 12 bytes, the manifest says 13",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damage_is_a_refusal_naming_it(exports: Location, damage: str) -> None:
    make, problem = DAMAGE[damage]
    with pytest.raises(UnsafeArchiveError, match=problem) as refused:
        run(exports, make)  # the record's sha256 is the damaged file's: the zip is judged
    assert refused.value.reason == "the export file is damaged or was altered"
    assert nothing_imported(exports)


def test_a_storage_failure_is_not_taken_for_damage(exports: Location) -> None:
    """A read error of the storage propagates as itself, so the task retries it."""
    record = reserve(exports)
    record = publish(exports, record, build(record.export_id, good_files()))

    class Flaky:
        def __init__(self, location: Location) -> None:
            self.location = location
            self.reads = 0

        def open_seekable(self, *parts: Any) -> Any:
            raw = self.location.open_seekable(*parts)
            outer = self

            class Stream:
                def __enter__(self) -> Any:
                    return self

                def __exit__(self, *exc: Any) -> None:
                    raw.close()

                def __getattr__(self, name: str) -> Any:
                    return getattr(raw, name)

                def read(self, n: int = -1) -> bytes:
                    outer.reads += 1
                    if outer.reads == 5:  # after the hash, inside the zip reader
                        raise ConnectionResetError("connection reset by peer (injected)")
                    return raw.read(n)

            return Stream()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.location, name)

    with pytest.raises(ConnectionResetError, match="injected"):
        import_(Flaky(exports), record)  # type: ignore[arg-type]
    assert nothing_imported(exports)


# -- property: random damage to a valid export is refused, never a crash, never outside ------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from(["../x", "/etc/passwd", "a/b", "", "main.py", "x" * 300, "\u202e", "0" * 64])
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_MANIFEST_PATHS = [
    ("format",),
    ("export_id",),
    ("assignments",),
    ("assignments", 0),
    ("assignments", 0, "id"),
    ("assignments", 0, "stack"),
    ("workspaces",),
    ("workspaces", 0, "files"),
    ("workspaces", 0, "user_id"),
    ("workspaces", 0, "username"),
    ("entries",),
    ("entries", 0),
    ("entries", 1, "path"),
    ("entries", 0, "size"),
    ("entries", 2, "sha256"),
    ("entries", 0, "source"),
    ("entries", 1, "source", "path"),
    ("entries", 2, "source", "user_id"),
]


def _edit(document: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    target = document
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


damage = st.one_of(
    st.tuples(
        st.just("flip"),
        st.lists(st.tuples(st.integers(0), st.integers(1, 255)), min_size=1, max_size=6),
    ),
    st.tuples(st.just("truncate"), st.integers(0)),
    st.tuples(st.just("insert"), st.integers(0), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("manifest"), st.sampled_from(_MANIFEST_PATHS), _JSON, st.booleans()),
)


def damaged(export_id: str, how: tuple[Any, ...]) -> bytes:
    data = build(export_id, good_files())
    kind = how[0]
    if kind == "flip":
        out = bytearray(data)
        for at, mask in how[1]:
            out[at % len(out)] ^= mask
        return bytes(out)
    if kind == "truncate":
        return data[: how[1] % len(data)]
    if kind == "insert":
        at = how[1] % (len(data) + 1)
        return data[:at] + how[2] + data[at:]
    _, path, value, delete = how
    return build(export_id, good_files(), edit=lambda d: _edit(d, path, value, delete))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(how=damage, record_follows=st.booleans())
def test_random_damage_is_refused_or_harmless(how: tuple[Any, ...], record_follows: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        exports = open_location(str(site / "exports"))
        record = reserve(exports)
        good = build(record.export_id, good_files())
        bad = damaged(record.export_id, how)
        # Either the record follows the damage (whoever altered the file altered the
        # record too, so the zip itself is judged) or it still describes the good file.
        record = publish(exports, record, bad if record_follows else good)
        Path(record.file_url).write_bytes(bad)
        before = snapshot(site)
        try:
            project = import_(exports, record)
        except ExportError:
            assert snapshot(site) == before  # nothing half-written, nothing anywhere
            return
        assert bad == good or record_follows  # an altered file never passes the record
        root = Path(project.project_url)
        after = snapshot(site)
        added = {p for p in after if p not in before or after[p] != before[p]}
        prefix = root.relative_to(site).as_posix() + "/"
        assert all(p.startswith(prefix) for p in added)  # only inside the project
        assert not any(p.is_symlink() for p in root.rglob("*"))
        files = workspace_files(project)
        assert len(files) == project.files and sum(map(len, files.values())) == project.bytes
        document = json.loads(zipfile.ZipFile(io.BytesIO(bad)).read(f"{TOP}/manifest.json"))
        promised = {
            e["source"]["path"]: e["sha256"] for e in document["entries"] if e.get("source")
        }
        assert {p: hashlib.sha256(d).hexdigest() for p, d in files.items()} == promised
