"""libdeflate through a compressor kept per thread: the same bytes as the ``deflate``
package's own call, from any thread, at any level, and freed with its thread."""

from __future__ import annotations

import gc
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import deflate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zipkit import noise, text

from course_exports.zipstream import libdeflate


def test_the_installed_package_exports_libdeflate() -> None:
    # The fast path is in use with the pinned wheel: if a new build stops exporting the
    # functions, this says so instead of a silent fallback.
    assert libdeflate.compress is libdeflate._reused


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=70_000), level=st.integers(min_value=1, max_value=12))
def test_same_bytes_as_the_package(data: bytes, level: int) -> None:
    ours = libdeflate.compress(data, level)
    assert bytes(ours) == bytes(deflate.deflate_compress(data, level))
    assert zlib.decompress(ours, -15) == data


@pytest.mark.parametrize("size", [0, 1, 1_000, 2**20, 5 * 2**20])
def test_one_compressor_serves_any_size_after_another(size: int) -> None:
    # The output buffer grows with the largest input; a small one after it still fits.
    for data in (text(size, seed=size), noise(size, seed=size), text(10, seed=1)):
        assert zlib.decompress(libdeflate.compress(data, 6), -15) == data


def test_threads_compress_at_once_each_with_its_own_compressor() -> None:
    blobs = [text(3_000 + i, seed=i) for i in range(64)] + [noise(5_000, seed=i) for i in range(64)]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            outs = list(pool.map(lambda b: libdeflate.compress(b, 1 + len(b) % 12), blobs))
    for data, out in zip(blobs, outs, strict=True):
        assert bytes(out) == bytes(deflate.deflate_compress(data, 1 + len(data) % 12))


def test_a_threads_compressors_are_freed_when_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    api = libdeflate._API
    assert api is not None
    freed: list[int] = []
    real_free = api.free

    def free(handle: int) -> None:
        freed.append(handle)
        real_free(handle)

    monkeypatch.setattr(api, "free", free)

    def work() -> None:
        libdeflate.compress(b"abc" * 100, 1)
        libdeflate.compress(b"abc" * 100, 6)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    del thread
    gc.collect()
    assert len(freed) == 2


def test_other_buffers_go_through_the_package() -> None:
    data = bytearray(text(5_000, seed=9))
    assert bytes(libdeflate.compress(data, 6)) == bytes(deflate.deflate_compress(data, 6))
