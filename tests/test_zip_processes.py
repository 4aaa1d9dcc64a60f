"""Small files packed in a pool process: the same zip as with threads, failures that stop
the pipeline all the same, and a pool only where it pays."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from zipkit import build, check_zip, noise, source, text

from course_exports.zipstream import ArchiveError, Source
from course_exports.zipstream.processes import SMALL_AVERAGE_BYTES, SmallFilePacker


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


def test_a_failure_in_a_process_packed_batch_stops_the_zip() -> None:
    def gone() -> Any:
        raise FileNotFoundError("no such file")

    sources = [source(f"c/{i}.txt", text(500, seed=i)) for i in range(600)]
    sources.insert(400, Source("c/gone.txt", 3, gone))
    with pytest.raises(ArchiveError, match="disappeared"):
        build(sources, small_file_processes=1, processes_after_files=0)


def test_a_pool_only_for_many_small_files() -> None:
    packers = SmallFilePacker(workers=2, after_files=1_000)
    try:
        small = 100 * (SMALL_AVERAGE_BYTES - 1)
        assert packers.packer_for(100, 100 * SMALL_AVERAGE_BYTES) is None  # not small
        assert [packers.packer_for(100, small) for _ in range(9)] == [None] * 9  # not many yet
        first, second, third = (packers.packer_for(100, small) for _ in range(3))
        assert first is not None and second is not None and first is not second
        assert third is first  # taken in turn
    finally:
        packers.shutdown()
    never = SmallFilePacker(workers=0, after_files=0)
    assert never.packer_for(100, 100) is None


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
