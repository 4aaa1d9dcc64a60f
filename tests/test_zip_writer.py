"""The writer alone: names, whole entries, streamed entries, closing and misuse."""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zipkit import DATE_TIME, NonSeekable, build, check_zip, noise, source, text

from course_exports.zipstream import ZIP64_LIMIT, ArchiveError, ZipStreamWriter
from course_exports.zipstream import writer as zip_writer
from course_exports.zipstream.compression import PackedEntry, pack
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


# -- a batch of whole entries -------------------------------------------------------------


def _one_by_one_and_batched(
    entries: list[PackedEntry], cuts: list[int], threshold: int
) -> tuple[bytes, bytes, list[object], list[object]]:
    outputs, written = [], []
    for batched in (False, True):
        out = io.BytesIO()
        writer = ZipStreamWriter(
            NonSeekable(out).stream, zip64_threshold=threshold, date_time=DATE_TIME
        )
        if batched:
            got: list[object] = []
            for start, end in zip([0, *cuts], [*cuts, len(entries)], strict=True):
                got += writer.add_packed_all(entries[start:end])
        else:
            got = [writer.add_packed(entry) for entry in entries]
        writer.close()
        outputs.append(out.getvalue())
        written.append(got)
    return outputs[0], outputs[1], written[0], written[1]


@settings(max_examples=60, deadline=None)
@given(
    files=st.lists(
        st.tuples(
            st.text(
                # Names a zip can hold: UTF-8 (no lone surrogates), relative, no NUL.
                st.characters(codec="utf-8", blacklist_characters="\\/\x00"),
                min_size=1,
                max_size=12,
            ),
            st.binary(max_size=300) | st.sampled_from([b"", b"a" * 500, b"abc" * 200]),
        ),
        max_size=25,
        unique_by=lambda f: f[0].casefold(),
    ),
    cut_at=st.lists(st.integers(0, 25), max_size=4),
    threshold=st.sampled_from([ZIP64_LIMIT, 600, 2_000, 100]),
)
def test_a_batch_writes_the_same_bytes_as_its_entries_one_by_one(
    files: list[tuple[str, bytes]], cut_at: list[int], threshold: int
) -> None:
    """Whatever the names, sizes, batches and ZIP64 threshold (low ones send some entries
    and offsets the general way mid-batch), the same archive as add_packed's."""
    entries = [pack(f"d/{name}", data, 6) for name, data in files]
    cuts = sorted(min(cut, len(entries)) for cut in cut_at)
    single, batched, single_entries, batched_entries = _one_by_one_and_batched(
        entries, cuts, threshold
    )
    assert batched == single
    assert batched_entries == single_entries
    with zipfile.ZipFile(io.BytesIO(batched)) as zf:
        assert zf.testzip() is None
        assert [zf.read(i) for i in zf.infolist()] == [data for _, data in files]


def test_a_batch_of_large_entries_is_written_as_it_goes() -> None:
    """Whatever a caller passes, the batch is not joined whole in memory: it goes out in
    pieces of about the writer's buffer."""
    writes: list[int] = []

    class Sizes(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            writes.append(len(memoryview(data)))  # type: ignore[arg-type]
            return writes[-1]

    writer = ZipStreamWriter(Sizes(), date_time=DATE_TIME)  # type: ignore[arg-type]
    blobs = [noise(700_000, seed=i) for i in range(6)]
    writer.add_packed_all([pack(f"big{i}.bin", blob, 6) for i, blob in enumerate(blobs)])
    assert max(writes) < 2 * 700_000 + 1024
    assert sum(writes) + len(writer._buffer) == writer.bytes_written


def test_a_refused_name_mid_batch_leaves_the_entries_before_it_written() -> None:
    """As one by one: the batch's entries before the duplicate are in the archive, the
    writer stays usable, and nothing after it was written."""
    entries = [pack(name, name.encode(), 6) for name in ("a.txt", "b.txt", "a.txt", "c.txt")]
    out = io.BytesIO()
    writer = ZipStreamWriter(NonSeekable(out).stream, date_time=DATE_TIME)
    with pytest.raises(ArchiveError, match="two entries"):
        writer.add_packed_all(entries)
    assert writer.entry_count == 2
    writer.add_packed_all([pack("d.txt", b"d", 6)])
    writer.close()
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as zf:
        assert zf.namelist() == ["a.txt", "b.txt", "d.txt"]
        assert zf.testzip() is None


def test_a_batch_that_cannot_be_written_spoils_the_writer() -> None:
    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            raise OSError(28, "No space left on device")

    writer = ZipStreamWriter(Full(), date_time=DATE_TIME)  # type: ignore[arg-type]
    big = pack("big.bin", noise(2 << 20), 6)  # past the writer's buffer: written at once
    with pytest.raises(OSError, match="No space"):
        writer.add_packed_all([pack("a.txt", b"a", 6), big])
    with pytest.raises(ArchiveError, match="unusable"):
        writer.add_packed_all([pack("b.txt", b"b", 6)])


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
