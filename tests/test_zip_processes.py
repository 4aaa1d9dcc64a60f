"""Small files packed in a pool process: the same zip as with threads, failures that stop
the pipeline all the same, and a pool only where it pays. Files readable by path are read
by the packer itself; a file it cannot read as listed is read by the pipeline, which
names the problem."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zipkit import build, check_zip, noise, source, text

from course_exports.local_files import PIPE_BYTES
from course_exports.zipstream import ArchiveError, Source, pipeline, processes
from course_exports.zipstream.processes import SMALL_AVERAGE_BYTES, SmallFilePacker, pack_files


def mixed_files(count: int) -> dict[str, bytes]:
    rng = random.Random(5)
    files = {}
    for i in range(count):
        size = rng.randint(0, 2_000)
        files[f"c/s{i}.txt"] = text(size, seed=i) if i % 3 else noise(size, seed=i)
    files["c/medium.txt"] = text(300_000, seed=1)  # a batch of its own, packed by threads
    files["c/big.txt"] = text(1_500_000, seed=2)  # streamed in chunks
    return files


def test_a_process_packs_the_same_zip_as_threads(tmp_path: Path) -> None:
    files = mixed_files(1_500)

    def run(**kwargs: Any) -> bytes:
        sources = [source(n, d) for n, d in files.items()]
        return build(sources, chunk_bytes=512 * 1024, **kwargs)[0]

    threads = run(small_file_processes=0)
    in_process = run(small_file_processes=1, processes_after_files=0)
    assert in_process == threads
    check_zip(in_process, files, tmp_path)


@pytest.mark.parametrize("queued", [1, 3])
@pytest.mark.parametrize("by_path", [True, False])  # read by the packer, or here (S3)
def test_a_pipeline_waiting_on_busy_packers_writes_the_same_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, queued: int, by_path: bool
) -> None:
    # Few batches a packer may hold: the pipeline keeps stopping to write what came back,
    # and packs a batch of its own meanwhile.
    monkeypatch.setattr(processes, "QUEUED_BATCHES", queued)
    files = {n: d for n, d in mixed_files(1_500).items() if len(d) < 100_000}
    threads = build(on_disk(tmp_path / "t", files, by_path=False), small_file_processes=0)[0]
    waited = build(
        on_disk(tmp_path / "p", files, by_path=by_path),
        small_file_processes=2,
        processes_after_files=0,
    )
    assert waited[0] == threads


def test_while_every_packer_is_full_the_pipeline_packs_one_batch_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A packer holding one batch is full: the next batch is packed here, not waited for,
    # one at a time, and the zip is the same as if threads had packed it all.
    monkeypatch.setattr(processes, "QUEUED_BATCHES", 1)
    files = {f"c/{i}.txt": text(300, seed=i) for i in range(3_000)}
    threads = build(on_disk(tmp_path / "t", files, by_path=False), small_file_processes=0)[0]
    own: list[int] = []  # the files of each batch packed here, as they started
    running = [0, 0]  # batches packed here at once: now, at most

    def spy(arcnames: list[str], *args: Any) -> Any:
        own.append(len(arcnames))
        running[0] += 1  # += of a list item is not atomic, but a second batch would be seen
        running[1] = max(running)
        try:
            return pack_files(arcnames, *args)
        finally:
            running[0] -= 1

    monkeypatch.setattr(pipeline, "pack_files", spy)
    mixed = build(on_disk(tmp_path / "p", files), small_file_processes=1, processes_after_files=0)
    assert mixed[0] == threads
    assert 0 < sum(own) < len(files)  # some batches here, the others in the packer
    assert running[1] == 1


def test_a_failure_in_a_process_packed_batch_stops_the_zip() -> None:
    def gone() -> Any:
        raise FileNotFoundError("no such file")

    sources = [source(f"c/{i}.txt", text(500, seed=i)) for i in range(600)]
    sources.insert(400, Source("c/gone.txt", 3, gone))
    with pytest.raises(ArchiveError, match="disappeared"):
        build(sources, small_file_processes=1, processes_after_files=0)


def on_disk(root: Path, files: dict[str, bytes], *, by_path: bool = True) -> list[Source]:
    """Sources of files written under ``root``. With ``by_path`` their own reads refuse:
    only a packer reading by path can pack them."""
    sources = []
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if by_path:
            sources.append(Source(name, len(data), refuse, None, refuse, str(path)))
        else:
            sources.append(Source(name, len(data), opener(path)))
    return sources


def opener(path: Path) -> Callable[[], BinaryIO]:
    def open_file() -> BinaryIO:
        return path.open("rb")  # the pipeline closes it

    return open_file


def refuse() -> Any:
    raise AssertionError("read in the export process, not by the packer")


def test_a_packer_reads_files_by_path_into_the_same_zip(tmp_path: Path) -> None:
    files = {n: d for n, d in mixed_files(1_500).items() if len(d) < 100_000}
    threads = build(on_disk(tmp_path / "t", files, by_path=False), small_file_processes=0)[0]
    by_path = build(on_disk(tmp_path / "p", files), small_file_processes=1, processes_after_files=0)
    assert by_path[0] == threads
    check_zip(by_path[0], files, tmp_path)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda path: path.write_bytes(b"longer than listed"), "changed during the export"),
        (lambda path: path.unlink(), "disappeared"),
    ],
)
def test_a_file_the_packer_cannot_read_as_listed_is_read_and_named_here(
    tmp_path: Path, change: Any, problem: str
) -> None:
    files = {f"c/{i}.txt": text(500, seed=i) for i in range(600)}
    sources = [
        s._replace(open=opener(Path(str(s.shared_path))), read=None)
        for s in on_disk(tmp_path, files)
    ]
    change(tmp_path / "c/400.txt")
    with pytest.raises(ArchiveError, match=f"'c/400.txt': .*{problem}"):
        build(sources, small_file_processes=1, processes_after_files=0)


def test_pack_files_leaves_what_is_not_as_listed_to_the_caller(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "b").write_bytes(b"")
    packed = pack_files(["a", "b"], [str(tmp_path / "a"), str(tmp_path / "b")], [3, 0], 6)
    assert packed is not None and [(p.arcname, p.size) for p in packed] == [("a", 3), ("b", 0)]
    assert pack_files(["a"], [str(tmp_path / "a")], [2], 6) is None  # grew since listed
    assert pack_files(["a"], [str(tmp_path / "a")], [4], 6) is None  # shrank
    assert pack_files(["gone"], [str(tmp_path / "gone")], [1], 6) is None
    assert pack_files(["dir"], [str(tmp_path)], [1], 6) is None  # not a file


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=3_000), st.booleans()),
        max_size=12,
    ),
)
def test_a_batch_crosses_the_pipe_as_columns_and_comes_back_the_same(
    files: list[tuple[str, bytes, bool]],
) -> None:
    # What a packer pickles (columns) and what the writer then iterates must be the very
    # entries packing gave: names, sizes, sums, digests, methods and payload bytes.
    entries = [
        processes.pack(f"c/{i}/{name}", text(len(data), seed=i) if textual else data, 6)
        for i, (name, data, textual) in enumerate(files)
    ]
    columns = pickle.loads(pickle.dumps(processes._to_columns(entries)))
    back = list(processes.PackedColumns(columns))
    assert [(*e[:5], bytes(e.payload)) for e in back] == [
        (*e[:5], bytes(e.payload)) for e in entries
    ]


def test_a_pool_only_for_many_small_files() -> None:
    packers = SmallFilePacker(workers=2, after_files=1_000)
    try:
        small = 100 * (SMALL_AVERAGE_BYTES - 1)
        assert packers.packer_for(100, 100 * SMALL_AVERAGE_BYTES) is None  # not small
        assert [packers.packer_for(100, small) for _ in range(9)] == [None] * 9  # not many yet
        assert packers.packer_for(100, small) is not None
    finally:
        packers.shutdown()
    never = SmallFilePacker(workers=0, after_files=0)
    assert never.packer_for(100, 100) is None
    assert not never.busy()


def test_packers_start_at_once_when_the_caller_expects_many_small_files() -> None:
    small = 100 * (SMALL_AVERAGE_BYTES - 1)
    expected = SmallFilePacker(workers=1, after_files=1_000, small_files_ahead=1_000)
    too_few = SmallFilePacker(workers=1, after_files=1_000, small_files_ahead=999)
    try:
        assert expected.packer_for(100, 100 * SMALL_AVERAGE_BYTES) is None  # still not small
        assert expected.packer_for(100, small) is not None  # the first small batch
        assert too_few.packer_for(100, small) is None  # as if nothing were expected
    finally:
        expected.shutdown()
        too_few.shutdown()


def test_a_batch_goes_to_the_least_busy_packer_and_full_packers_are_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A FIFO nobody writes to holds a packer in its read: its batch stays queued.
    monkeypatch.setattr(processes, "QUEUED_BATCHES", 2)
    stuck = tmp_path / "fifo"
    os.mkfifo(stuck)
    packers = SmallFilePacker(workers=2, after_files=0)
    try:
        held = []
        for _ in range(4):
            assert not packers.busy()
            packer = packers.packer_for(1, 1)
            assert packer is not None
            held.append(packer)
            packer.submit_paths(["c/stuck"], [str(stuck)], [1], 6)
        first, second = held[0], held[1]
        assert first is not second and held == [first, second, first, second]
        second.submit_paths(["c/stuck"], [str(stuck)], [1], 6)
        assert packers.packer_for(1, 1) is first  # not in turn: by how much each holds
        assert packers.packer_for(1, 1) is first
        assert (first.queued, second.queued) == (2, 3)
        assert packers.busy()
    finally:
        packers.shutdown(cancel=True)


def test_the_pipes_to_a_packer_hold_a_packed_batch() -> None:
    # With 64 KiB pipes a packed batch (~130 KB) blocked the packer until the export
    # process's reader thread got the GIL back, once per 64 KiB.
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("pipe sizes are Linux's")
    packer = processes.PackerProcess()
    try:
        for pipe in (packer._process.stdin, packer._process.stdout):
            assert pipe is not None
            assert fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) >= min(
                PIPE_BYTES, int(Path("/proc/sys/fs/pipe-max-size").read_text())
            )
    finally:
        packer.shutdown(cancel=False)


def test_a_packer_ends_when_the_export_process_is_killed() -> None:
    """kill -9 of a flow run mid-zip must not leave packers behind: EOF on the packer's
    input ends it."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from course_exports.zipstream.processes import PackerProcess\n"
            "packer = PackerProcess()\n"
            "print(packer._process.pid, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    packer_pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(packer_pid, 0)
        except ProcessLookupError:
            return
        # A zombie until its parent (init here) reaps it: gone for our purpose.
        stat = (
            Path(f"/proc/{packer_pid}/stat").read_text()
            if Path(f"/proc/{packer_pid}").exists()
            else ""
        )
        if stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]:
            return
        time.sleep(0.1)
    os.kill(packer_pid, signal.SIGKILL)
    pytest.fail("the packer outlived the killed export process")
