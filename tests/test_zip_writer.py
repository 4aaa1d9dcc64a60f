"""The writer alone: names, whole entries, streamed entries, closing and misuse."""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from pathlib import Path

import pytest
from zipkit import DATE_TIME, NonSeekable, build, check_zip, noise, source, text

from course_exports.zipstream import ArchiveError, ZipStreamWriter
from course_exports.zipstream import writer as zip_writer
from course_exports.zipstream.records import STORED


def test_names_are_flagged_utf8_and_validated() -> None:
    data, _ = build([source("cours/été/ß.txt", b"x"), source("plain.txt", b"y")])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert [i.filename for i in zf.infolist()] == ["cours/été/ß.txt", "plain.txt"]
        assert all(i.flag_bits & 0x800 for i in zf.infolist())
    writer = ZipStreamWriter(io.BytesIO())
    for bad in ("", "/etc/passwd", "a\\b.txt"):
        with pytest.raises(ArchiveError):
            writer.add_bytes(bad, b"x")
    writer.add_bytes("dup.txt", b"1")
    with pytest.raises(ArchiveError, match="two entries"):
        writer.add_bytes("dup.txt", b"2")
    writer.add_bytes("other.txt", b"3")  # a refused name does not spoil the archive
    writer.close()


# -- store or deflate --------------------------------------------------------------------


def test_deflates_what_shrinks_and_stores_what_does_not() -> None:
    files = {
        "c/code.py": text(40_000),
        "c/noext": text(40_000, seed=1),
        "c/random.bin": noise(40_000),
        "c/random-text-suffix.txt": noise(40_000, seed=2),  # no probe, but not worth it
        "c/small-random.bin": noise(3_000),
        "c/empty.py": b"",
        "c/tiny.txt": b"aaaaaaaaaaaaaaaaaaaa",
        "c/photo.PNG": text(40_000, seed=3),  # trusted: already compressed
        "c/big.log": text(3_000_000, seed=4),
        "c/big.bin": noise(3_000_000, seed=5),
        "c/big.zip": text(3_000_000, seed=6),
    }
    _, entries = build([source(n, d) for n, d in files.items()], chunk_bytes=1 << 20)
    methods = {e.arcname: e.method for e in entries}
    assert methods == {
        "c/code.py": "deflate",
        "c/noext": "deflate",
        "c/random.bin": "store",
        "c/random-text-suffix.txt": "store",
        "c/small-random.bin": "store",
        "c/empty.py": "store",
        "c/tiny.txt": "deflate",
        "c/photo.PNG": "store",
        "c/big.log": "deflate",
        "c/big.bin": "store",
        "c/big.zip": "store",
    }
    for e in entries:
        if e.method == "store":
            assert e.compressed_size == e.size
        else:
            assert e.compressed_size < e.size * 0.97
    # A caller may force either way.
    writer = ZipStreamWriter(io.BytesIO())
    assert writer.add_bytes("r.bin", noise(1000), compress=True).method == "deflate"
    assert writer.add_bytes("t.txt", text(1000), compress=False).method == "store"
    stored = ZipStreamWriter(io.BytesIO(), level=0)
    assert stored.add_bytes("t.txt", text(1000)).method == "store"


# -- entries begun by hand ----------------------------------------------------------------


def test_entries_begun_by_hand_must_be_finished_one_at_a_time() -> None:
    writer = ZipStreamWriter(io.BytesIO())
    with pytest.raises(ArchiveError, match="no entry"):
        writer.write_data(b"x")
    writer.begin_entry("c/a.bin", STORED, 10)
    with pytest.raises(ArchiveError, match="already being written"):
        writer.begin_entry("c/b.bin", STORED, 10)
    writer.write_data(b"abc")
    with pytest.raises(ArchiveError, match="mid-entry"):
        writer.close()
    entry = writer.end_entry(3, zlib.crc32(b"abc"), hashlib.sha256(b"abc").hexdigest())
    assert (entry.size, entry.compressed_size, entry.method) == (3, 3, "store")
    writer.close()


def test_the_central_directory_spills_to_disk_and_comes_back_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(zip_writer, "_DIRECTORY_IN_MEMORY", 4096)  # spills after ~60 entries
    files = {f"c/{i:04d}/entry with a long name {i}.txt": b"%d" % i for i in range(500)}
    out = io.BytesIO()
    writer = ZipStreamWriter(NonSeekable(out).stream, date_time=DATE_TIME)
    for name, data in files.items():
        writer.add_bytes(name, data)
    assert writer.entry_count == 500
    writer.close()
    check_zip(out.getvalue(), files, tmp_path)
