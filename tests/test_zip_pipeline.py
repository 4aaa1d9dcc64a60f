"""The read/deflate/write pipeline: round trips, bounded memory, ZIP64 through it, retries
and failures, order and determinism."""

from __future__ import annotations

import hashlib
import io
import random
import subprocess
import threading
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from zipkit import (
    DATE_TIME,
    UNZIP,
    NonSeekable,
    build,
    check_zip,
    noise,
    source,
    text,
    walk_local_records,
)

from course_exports.errors import ExportError
from course_exports.zipstream import (
    ArchiveError,
    Source,
    ZipStreamWriter,
    reading,
    write_entries,
)
from course_exports.zipstream import writer as zip_writer


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "RETRY_BACKOFF_S", 0.001)


# -- round trips -----------------------------------------------------------------------


def test_round_trip_of_mixed_entries(tmp_path: Path) -> None:
    deep = "course/" + "/".join(f"level{i}" for i in range(25)) + "/leaf.txt"
    files = {
        "course/readme.txt": text(5_000),
        "course/data/random.bin": noise(30_000),
        "course/empty.txt": b"",
        "course/élève/日本語 ü.py": text(20_000, seed=1),
        deep: b"deep\n",
        "course/with spaces/a file (2).md": text(70_000, seed=2),
        "course/big/log.txt": text(3_000_000, seed=3),  # streamed: larger than a chunk
        "course/big/blob.dat": noise(2_500_000, seed=4),  # streamed and stored
    }
    sources = [source(name, data) for name, data in files.items()]
    sources.append(Source.of_bytes("course/manifest.json", b'{"files": 8}'))
    files["course/manifest.json"] = b'{"files": 8}'
    data, entries = build(sources, chunk_bytes=1 << 20, window_bytes=4 << 20)
    check_zip(data, files, tmp_path)
    assert [e.arcname for e in entries] == list(files)
    for e in entries:
        content = files[e.arcname]
        assert (e.size, e.crc32) == (len(content), zlib.crc32(content))
        assert e.sha256 == hashlib.sha256(content).hexdigest()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        big = zf.getinfo("course/big/log.txt")
        assert big.flag_bits & 0x8 and big.compress_type == zipfile.ZIP_DEFLATED
        assert zf.getinfo("course/big/blob.dat").compress_type == zipfile.ZIP_STORED
        assert not zf.getinfo("course/readme.txt").flag_bits & 0x8
    assert b"PK\x06\x06" not in data  # no ZIP64 records when nothing needs them
    assert walk_local_records(data) == (0, 2)


def test_add_bytes_and_write_entries_mix_and_close_returns_size(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = ZipStreamWriter(NonSeekable(out).stream, date_time=DATE_TIME, comment="course 1042")
    first = writer.add_bytes("c/course.json", b'{"id": 1042}')
    write_entries(writer, [source("c/a.txt", text(100))])
    writer.add_bytes("c/manifest.json", b"{}")
    assert writer.close() == len(out.getvalue()) == writer.bytes_written
    assert writer.close() == len(out.getvalue())  # closing twice is harmless
    assert first.method == "store" and first.size == 12  # too small to shrink
    check_zip(
        out.getvalue(),
        {"c/course.json": b'{"id": 1042}', "c/a.txt": text(100), "c/manifest.json": b"{}"},
        tmp_path,
    )
    assert zipfile.ZipFile(io.BytesIO(out.getvalue())).comment == b"course 1042"
    with pytest.raises(ArchiveError):
        writer.add_bytes("c/late.txt", b"x")


def test_writes_only_forward_into_a_non_seekable_file(tmp_path: Path) -> None:
    path = tmp_path / "out.zip"
    files = {f"c/f{i}.txt": text(10_000 + i, seed=i) for i in range(50)}
    files["c/big.txt"] = text(2_200_000)
    with open(path, "wb", buffering=0) as raw:
        out = NonSeekable(raw)
        writer = ZipStreamWriter(out.stream, date_time=DATE_TIME)
        write_entries(
            writer,
            [source(n, d) for n, d in files.items()],
            chunk_bytes=512 * 1024,
            window_bytes=1 << 20,
        )
        assert writer.close() == out.written
    check_zip(path.read_bytes(), files, tmp_path)


# -- large files, memory -----------------------------------------------------------------


def test_big_file_is_streamed_in_chunks_in_bounded_memory(tmp_path: Path) -> None:
    content = b"".join(
        noise(1 << 20, seed=i) if i % 4 == 3 else text(1 << 20, seed=i) for i in range(24)
    )
    path = tmp_path / "big.zip"
    tracemalloc.start()
    try:
        with open(path, "wb") as raw:
            writer = ZipStreamWriter(NonSeekable(raw).stream, date_time=DATE_TIME)
            [entry] = write_entries(
                writer,
                [Source("c/big.dat", len(content), lambda: io.BytesIO(content))],
                chunk_bytes=1 << 20,
                window_bytes=3 << 20,
            )
            writer.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 24 MiB went through; at most ~3 MiB of chunks (plus their deflated copies and the
    # 1 MiB output buffer) were ever held.
    assert peak < 9 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert entry.method == "deflate" and entry.size == len(content)
    assert entry.sha256 == hashlib.sha256(content).hexdigest()
    check_zip(path.read_bytes(), {"c/big.dat": content}, tmp_path)


class CountingReads:
    """Counts bytes read by every source, to compare with bytes reaching the output."""

    def __init__(self) -> None:
        self.read = 0
        self.lock = threading.Lock()
        self.max_ahead = 0
        self.out: NonSeekable | None = None

    def opener(self, data: bytes) -> Callable[[], BinaryIO]:
        counter = self

        class Reader(io.BytesIO):
            def read(self, n: int | None = -1) -> bytes:
                chunk = super().read(n)
                with counter.lock:
                    counter.read += len(chunk)
                    assert counter.out is not None
                    counter.max_ahead = max(counter.max_ahead, counter.read - counter.out.written)
                return chunk

        return lambda: Reader(data)


def test_reads_never_run_ahead_of_the_window() -> None:
    counter = CountingReads()
    sink = NonSeekable(io.BytesIO())
    counter.out = sink
    files = [noise(40_000, seed=i) for i in range(300)]  # stored: output bytes ~ input bytes
    files.insert(100, noise(3_000_000, seed=999))  # streamed in chunks
    sources = [Source(f"c/{i}.bin", len(d), counter.opener(d)) for i, d in enumerate(files)]
    window, chunk = 1 << 20, 256 * 1024
    writer = ZipStreamWriter(sink.stream)
    write_entries(writer, sources, window_bytes=window, chunk_bytes=chunk, read_workers=8)
    writer.close()
    assert counter.read == sum(map(len, files))
    # The window, plus the writer's own output buffer not yet flushed.
    assert counter.max_ahead <= window + zip_writer._OUT_BUFFER + 64 * 1024


# -- ZIP64 -------------------------------------------------------------------------------


def test_zip64_fields_and_end_records_past_the_threshold(tmp_path: Path) -> None:
    files = {
        "c/small.txt": b"small",  # below the threshold but at an offset past it later
        "c/known.txt": text(50_000),  # sizes past the threshold: ZIP64 local extra
        "c/known.bin": noise(30_000),
        "c/streamed.txt": text(600_000, seed=1),  # data descriptor with 8-byte sizes
        "c/streamed.bin": noise(300_000, seed=2),
        "c/late.txt": b"late",  # offset past the threshold: ZIP64 central extra
    }
    data, _ = build(
        [source(n, d) for n, d in files.items()],
        threshold=20_000,
        chunk_bytes=128 * 1024,
        window_bytes=512 * 1024,
    )
    check_zip(data, files, tmp_path)
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # ZIP64 end record and locator
    # known.txt, known.bin, and both streamed files (8-byte sizes in their descriptors)
    assert walk_local_records(data) == (4, 2)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        late = zf.getinfo("c/late.txt")
        assert late.header_offset > 20_000 and late.extra[:2] == b"\x01\x00"
        assert zf.getinfo("c/small.txt").extra == b""


def test_more_than_65535_entries_use_the_zip64_end_record(tmp_path: Path) -> None:
    count = 70_000
    sources = (Source.of_bytes(f"c/{i // 1000}/{i}", b"%d" % i) for i in range(count))
    data, entries = build(list(sources), read_workers=4)
    assert len(entries) == count
    assert b"PK\x06\x06" in data
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        assert len(infos) == count
        assert zf.read("c/69/69999") == b"69999"
    path = tmp_path / "many.zip"
    path.write_bytes(data)
    if UNZIP:
        tested = subprocess.run([UNZIP, "-tq", str(path)], capture_output=True, text=True)
        assert tested.returncode == 0, tested.stdout[-500:] + tested.stderr


# -- failures --------------------------------------------------------------------------


def flaky(
    data: bytes, *, failing_opens: int = 0, fail_at_read: int | None = None
) -> tuple[Callable[[], BinaryIO], list[int]]:
    """An opener whose first opens fail, or whose first file fails at its n-th read."""
    opens = [0]

    class Flaky(io.BytesIO):
        reads = 0

        def read(self, n: int | None = -1) -> bytes:
            self.reads += 1
            if fail_at_read is not None and opens[0] == 1 and self.reads == fail_at_read:
                raise TimeoutError("read timed out")
            return super().read(n)

    def open_() -> BinaryIO:
        opens[0] += 1
        if opens[0] <= failing_opens:
            raise ConnectionResetError("connection reset by peer")
        return Flaky(data)

    return open_, opens


def test_transient_read_failures_are_retried(tmp_path: Path) -> None:
    small, big = text(5_000), text(3_000_000, seed=1)
    open_small, small_opens = flaky(small, failing_opens=2)
    open_big, big_opens = flaky(big, fail_at_read=2)  # fails mid-file: resumes at the offset
    files = {"c/small.txt": small, "c/big.txt": big}
    data, entries = build(
        [Source("c/small.txt", len(small), open_small), Source("c/big.txt", len(big), open_big)],
        chunk_bytes=1 << 20,
        read_attempts=3,
    )
    assert small_opens == [3] and big_opens == [2]
    check_zip(data, files, tmp_path)
    assert entries[1].sha256 == hashlib.sha256(big).hexdigest()


def test_a_read_that_keeps_failing_raises_and_spoils_the_writer() -> None:
    open_bad, opens = flaky(b"x", failing_opens=99)
    writer = ZipStreamWriter(io.BytesIO())
    sources = [source(f"c/{i}.txt", text(1000, seed=i)) for i in range(200)]
    sources.insert(50, Source("c/bad.txt", 1, open_bad))
    with pytest.raises(ArchiveError) as caught:
        write_entries(writer, sources, read_attempts=3)
    assert opens == [3]
    assert caught.value.arcname == "c/bad.txt"
    assert "3 times" in str(caught.value) and "connection reset" in str(caught.value)
    assert isinstance(caught.value, ExportError) and caught.value.reason
    with pytest.raises(ArchiveError, match="unusable"):
        writer.close()
    with pytest.raises(ArchiveError, match="unusable"):
        writer.add_bytes("c/more.txt", b"x")


def test_a_missing_file_fails_at_once() -> None:
    def gone() -> BinaryIO:
        raise FileNotFoundError("no such file")

    with pytest.raises(ArchiveError, match="disappeared"):
        build([Source("c/gone.txt", 3, gone)], read_attempts=5)


@pytest.mark.parametrize("listed", [9_999, 10_001])
def test_a_small_file_that_changed_size_is_an_error(listed: int) -> None:
    with pytest.raises(ArchiveError, match="changed during the export") as caught:
        build([source("c/a.txt", b"a"), source("c/changed.txt", text(10_000), size=listed)])
    assert caught.value.arcname == "c/changed.txt"


@pytest.mark.parametrize("listed", [2_999_999, 3_000_001, 5_000_000])
def test_a_streamed_file_that_changed_size_is_an_error(listed: int) -> None:
    with pytest.raises(ArchiveError, match="changed during the export"):
        build([source("c/big.txt", text(3_000_000), size=listed)], chunk_bytes=1 << 20)


def test_a_failure_in_a_streamed_file_stops_the_pipeline() -> None:
    open_bad, _ = flaky(b"", failing_opens=99)
    sources = [source(f"c/{i}.txt", text(1000, seed=i)) for i in range(20)]
    sources.append(Source("c/big.txt", 3_000_000, open_bad))
    sources += [source(f"d/{i}.txt", text(1000, seed=i)) for i in range(20)]
    started = time.monotonic()
    with pytest.raises(ArchiveError, match=r"c/big\.txt"):
        build(sources, chunk_bytes=1 << 20)
    assert time.monotonic() - started < 5
    assert not [t for t in threading.enumerate() if t.name.startswith("zip-")]


# -- order, determinism, progress ------------------------------------------------------


def test_entries_come_back_and_are_written_in_source_order() -> None:
    rng = random.Random(7)

    def slow(data: bytes, delay: float) -> Callable[[], BinaryIO]:
        def open_() -> BinaryIO:
            time.sleep(delay)
            return io.BytesIO(data)

        return open_

    files = {f"c/{rng.random():.6f}.txt": text(rng.randint(0, 30_000), seed=i) for i in range(120)}
    sources = [Source(n, len(d), slow(d, rng.random() / 500)) for n, d in files.items()]
    data, entries = build(sources, read_workers=16, window_bytes=1 << 20, chunk_bytes=64 * 1024)
    assert [e.arcname for e in entries] == list(files)
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == list(files)


def test_same_inputs_give_the_same_bytes() -> None:
    files = {f"c/{i}.txt": text(5_000 * i, seed=i) for i in range(30)}
    files["c/big.txt"] = text(2_500_000, seed=99)
    files["c/big.bin"] = noise(1_500_000, seed=98)

    def run(**kwargs: Any) -> bytes:
        return build([source(n, d) for n, d in files.items()], chunk_bytes=512 * 1024, **kwargs)[0]

    first = run(read_workers=16, compress_workers=2)
    assert run(read_workers=1, compress_workers=1) == first
    assert run(read_workers=3, compress_workers=4, window_bytes=1 << 20) == first


def test_progress_is_reported_from_the_calling_thread() -> None:
    calls: list[tuple[int, int, int]] = []
    files = [text(1000 * i) for i in range(40)]

    def progress(files_done: int, bytes_done: int) -> None:
        calls.append((files_done, bytes_done, threading.get_ident()))

    build([source(f"c/{i}", d) for i, d in enumerate(files)], on_progress=progress)
    assert calls[-1][:2] == (40, sum(map(len, files)))
    assert {c[2] for c in calls} == {threading.get_ident()}
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


def test_arguments_are_checked() -> None:
    writer = ZipStreamWriter(io.BytesIO())
    with pytest.raises(ValueError):
        write_entries(writer, [], window_bytes=1 << 20, chunk_bytes=2 << 20)
    with pytest.raises(ValueError):
        write_entries(writer, [], read_workers=0)
    with pytest.raises(ValueError):
        ZipStreamWriter(io.BytesIO(), level=10)
    assert write_entries(writer, []) == []


def test_sources_read_whole_through_their_read_callable(tmp_path: Path) -> None:
    from functools import partial

    from course_exports.storage import open_location

    lake = open_location(str(tmp_path))
    files = {name: text(3_000 + i, seed=i) for i, name in enumerate(["a.txt", "b.py", "c.md"])}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    attempts = [0]

    def flaky_read(path: str, size: int) -> bytes:
        attempts[0] += 1
        if attempts[0] == 1:
            raise ConnectionResetError("reset")
        return lake.read_file(path, size)

    def never_opened() -> BinaryIO:
        raise AssertionError("files read whole are not opened")

    sources = [
        Source(f"c/{n}", len(d), never_opened, read=partial(flaky_read, n, len(d)))
        for n, d in files.items()
    ]
    data, _ = build(sources)
    check_zip(data, {f"c/{n}": d for n, d in files.items()}, tmp_path)
    (tmp_path / "a.txt").write_bytes(files["a.txt"] + b"grown")
    grown = Source("c/a.txt", len(files["a.txt"]), never_opened, read=partial(
        lake.read_file, "a.txt", len(files["a.txt"])
    ))  # fmt: skip
    with pytest.raises(ArchiveError, match="changed during the export"):
        build([grown])


def test_a_read_that_keeps_failing_is_a_storage_problem_worth_a_later_try() -> None:
    """The task retry policy retries it (an unreadable *file* is not retried: see above)."""
    from course_exports.zipstream.reading import ReadFailedError
    from tasks.retry import transient

    open_bad, _ = flaky(b"x", failing_opens=99)
    with pytest.raises(ReadFailedError) as caught:
        write_entries(
            ZipStreamWriter(io.BytesIO()), [Source("c/bad.txt", 1, open_bad)], read_attempts=2
        )
    assert caught.value.transient and "storage service" in caught.value.reason

    class Failed:
        def result(self) -> None:
            raise caught.value

    assert transient(None, None, Failed())
