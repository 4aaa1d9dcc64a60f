"""An entry made while other entries are written (the manifest), deflated in the
background and added in one call: the same bytes back, the right sums, failures that
surface in the caller, nothing left behind."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zipkit import DATE_TIME, NonSeekable, check_zip, text

from course_exports.zipstream import DeferredEntry, ZipStreamWriter


def test_an_entry_made_between_others_goes_in_whole(tmp_path: Path) -> None:
    pieces = [text(100_000, seed=i) for i in range(5)] + [b"", b"tail\n"]
    out = io.BytesIO()
    writer = ZipStreamWriter(NonSeekable(out).stream, date_time=DATE_TIME)
    others = {f"c/{i}.txt": text(5_000, seed=100 + i) for i in range(len(pieces))}
    with DeferredEntry("c/manifest.json", block_bytes=64 * 1024) as manifest:
        for piece, (name, data) in zip(pieces, others.items(), strict=True):
            manifest.write(piece)
            writer.add_bytes(name, data)  # the zip goes on while the entry is made
        entry = manifest.write_to(writer)
    writer.close()
    whole = b"".join(pieces)
    assert (entry.arcname, entry.size, entry.method) == ("c/manifest.json", len(whole), "deflate")
    assert entry.sha256 == hashlib.sha256(whole).hexdigest()
    assert entry.compressed_size < len(whole) // 2
    check_zip(out.getvalue(), {**others, "c/manifest.json": whole}, tmp_path)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=3_000), max_size=12),
    st.sampled_from([1, 100, 4096]),
    st.sampled_from([0, 1, 6]),
)
def test_any_pieces_in_any_blocks_give_back_their_bytes(
    pieces: list[bytes], block_bytes: int, level: int
) -> None:
    out = io.BytesIO()
    writer = ZipStreamWriter(out, level=level, date_time=DATE_TIME)
    with DeferredEntry("m.json", level=level, block_bytes=block_bytes) as deferred:
        for piece in pieces:
            deferred.write(piece)
        entry = deferred.write_to(writer)
    writer.close()
    whole = b"".join(pieces)
    with zipfile.ZipFile(out) as zf:
        assert zf.read("m.json") == whole
        assert zf.getinfo("m.json").compress_type == (
            zipfile.ZIP_STORED if level == 0 else zipfile.ZIP_DEFLATED
        )
    assert (entry.size, entry.sha256) == (len(whole), hashlib.sha256(whole).hexdigest())


def test_a_failure_in_the_background_surfaces_in_the_caller() -> None:
    writer = ZipStreamWriter(io.BytesIO())
    with DeferredEntry("c/manifest.json", block_bytes=10) as deferred:
        stored = deferred._file

        class FullDisk:
            def write(self, data: bytes) -> int:
                raise OSError(28, "No space left on device")

            def close(self) -> None:
                stored.close()

        deferred._file = FullDisk()  # type: ignore[assignment]
        deferred.write(b"x" * 20)  # the first block goes to the thread, which fails there
        with pytest.raises(OSError, match="No space left"):
            deferred.write(b"y" * 20)  # ...and the next hand-off says so
    assert stored.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("zip-deferred")]
    writer.add_bytes("c/a.txt", b"a")  # the zip itself was never touched
    writer.close()


def test_nothing_is_left_behind_when_the_zip_fails_midway() -> None:
    with pytest.raises(RuntimeError), DeferredEntry("c/manifest.json", block_bytes=10) as d:
        d.write(b"z" * 100)
        raise RuntimeError("the pipeline failed")
    assert d._file.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("zip-deferred")]


def test_an_entry_goes_into_the_zip_once() -> None:
    writer = ZipStreamWriter(io.BytesIO())
    with DeferredEntry("c/m.json") as deferred:
        deferred.write(b"{}")
        deferred.write_to(writer)
        with pytest.raises(ValueError, match="written to the zip already"):
            deferred.write(b"more")
        with pytest.raises(ValueError, match="written to the zip already"):
            deferred.write_to(writer)
