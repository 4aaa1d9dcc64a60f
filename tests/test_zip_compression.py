"""Store or deflate: decided by name and by a cheap look at the data, whatever the name
claims (lakes mislabel files both ways)."""

from __future__ import annotations

import hashlib
import zlib

import deflate
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from zipkit import noise, text

from course_exports.zipstream import compression
from course_exports.zipstream.records import DEFLATED, STORED


@pytest.mark.parametrize(
    ("name", "data", "method"),
    [
        ("c/code.py", text(40_000), DEFLATED),
        ("c/noext", text(40_000, seed=1), DEFLATED),
        ("c/random.bin", noise(40_000), STORED),
        ("c/notes.txt", noise(40_000, seed=2), STORED),  # random bytes behind a text name
        ("c/data.json", noise(200_000, seed=3), STORED),
        ("c/photo.png", noise(40_000, seed=4), STORED),
        ("c/photo.PNG", text(40_000, seed=3), STORED),  # the name is trusted for media
        ("c/café.md", ("é" * 20_000).encode(), DEFLATED),  # UTF-8 text: probed, shrinks
        ("c/tiny.txt", b"a" * 20, DEFLATED),
        ("c/empty.py", b"", STORED),
    ],
)
def test_the_method_follows_the_data(name: str, data: bytes, method: int) -> None:
    packed = compression.pack(name, data, 6)
    assert packed.method == method
    if method == DEFLATED:
        assert zlib.decompress(packed.payload, -15) == data
    else:
        assert packed.payload == data


def test_streamed_files_are_decided_on_their_first_chunk() -> None:
    assert compression.streamed_method("c/big.log", text(1 << 20), 6) == DEFLATED
    assert compression.streamed_method("c/big.log", noise(1 << 20), 6) == STORED
    assert compression.streamed_method("c/big.zip", text(1 << 20), 6) == STORED
    assert compression.streamed_method("c/big.log", text(1 << 20), 0) == STORED


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=5_000), min_size=1, max_size=6), st.booleans())
def test_chunks_deflated_apart_make_one_stream(pieces: list[bytes], textual: bool) -> None:
    if textual:
        pieces = [text(len(p), seed=i) for i, p in enumerate(pieces)]
    out, primer = [], None
    for index, piece in enumerate(pieces):
        out.append(compression.deflate_chunk(piece, primer, 6, index == len(pieces) - 1))
        primer = compression.primer_of(piece)
    assert zlib.decompress(b"".join(out), -15) == b"".join(pieces)
    bound = compression.max_deflated_size(sum(map(len, pieces)), len(pieces))
    assert len(b"".join(out)) <= bound


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=20_000),
        st.integers(0, 20_000).map(lambda n: text(n, seed=n)),
        st.tuples(st.binary(min_size=1, max_size=8), st.integers(1, 5_000)).map(
            lambda t: (t[0] * t[1])[: t[1]]
        ),
    ),
    st.integers(1, 9),
    st.sampled_from(["c/a.txt", "c/a.bin", "c/a.png", "c/noext"]),
)
# Found by this test in CI: 8 bytes that deflate to 8 were kept deflated (1/32 of 8 is 0).
@example(b"\x90\x90\x00\x90\x90\x00\x90\x90", 2, "c/a.txt")
def test_a_packed_entry_always_gives_back_its_bytes(data: bytes, level: int, name: str) -> None:
    # Whole files go through libdeflate, tiny ones through zlib-ng: either way a zip
    # reader's inflate must give back the very bytes, the sums must be of the data, and
    # an entry is only deflated if that makes it smaller.
    packed = compression.pack(name, data, level)
    assert (packed.size, packed.crc32) == (len(data), zlib.crc32(data))
    assert packed.sha256 == hashlib.sha256(data).hexdigest()
    if packed.method == DEFLATED:
        assert zlib.decompress(bytes(packed.payload), -15) == data
        assert len(packed.payload) < len(data)
    else:
        assert packed.method == STORED and bytes(packed.payload) == data


def test_small_files_are_deflated_greedily_and_larger_ones_at_the_level() -> None:
    # Below SMALL_FILE_BYTES lazy matching costs 1.4-1.7x the CPU for 1-2% of the bytes:
    # level 1 there (a course of 100,000 tiny files waits on it), the level above.
    small = text(compression.SMALL_FILE_BYTES - 1, seed=5)
    large = text(compression.SMALL_FILE_BYTES, seed=5)
    for data, level in ((small, 1), (large, 6)):
        packed = compression.pack("c/a.txt", data, 6)
        assert packed.method == DEFLATED
        assert bytes(packed.payload) == bytes(deflate.deflate_compress(data, level))
    assert compression.pack("c/a.txt", small, 0).method == STORED  # level 0 still stores


@pytest.mark.parametrize("size", [1, 20, 63, 64, 65, 1_000, 100_000])
def test_repetitive_data_is_deflated_at_any_size(size: int) -> None:
    # libdeflate stores inputs of a few dozen bytes as they are; those go through zlib-ng,
    # so even a 20-byte run of one letter is deflated, as zipfile would.
    data = b"a" * size
    packed = compression.pack("c/run.txt", data, 6)
    assert packed.method == (DEFLATED if size >= 20 else STORED)
    if packed.method == DEFLATED:
        assert zlib.decompress(bytes(packed.payload), -15) == data
