"""Student workspaces: text and binary files of every awkward kind."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from course_exports.storage import Location
from sample_lake.names import (
    BINARY_FILE_NAMES,
    CODE_WORDS,
    SPECIAL_WORKSPACE_FILES,
    TEXT_FILE_NAMES,
)
from sample_lake.people import People, SampleCourse
from sample_lake.spec import STREAM_WORKSPACES, LakeSpec, rng_for
from sample_lake.tables import open_for_write

MISSING_WORKSPACE_P = 0.15
BINARY_FILE_P = 0.2
ZERO_BYTE_FILE_P = 0.04
FILE_SIZE_SIGMA = 1.0
TEXT_BLOCK_BYTES = 64 * 1024
WRITE_CHUNK_BYTES = 1024 * 1024
LEFT_USER_WORKSPACE_P = 0.5
PIPE_FILE_BYTES = 4 * 1024 * 1024
PIPE_BATCH_FILES = 64
PIPE_BATCH_BYTES = 32 * 1024 * 1024

# --------------------------------------------------------------------------- workspaces


def _text_block(rng: np.random.Generator) -> bytes:
    """Code-like ASCII text, generated once and sliced for every text file (compressible)."""
    words = np.array(CODE_WORDS)
    out = io.StringIO()
    size = 0
    while size < TEXT_BLOCK_BYTES:
        indent = "    " * int(rng.integers(0, 4))
        line = (
            indent + " ".join(words[rng.integers(0, len(words), int(rng.integers(2, 12)))]) + "\n"
        )
        out.write(line)
        size += len(line)
    return out.getvalue().encode("ascii")[:TEXT_BLOCK_BYTES]


@dataclass
class _WorkspaceWriter:
    """Writes workspace files; small files go in batches (``Location.write_many``).

    One PUT at a time would make tens of thousands of files take many minutes on S3, and
    a synced write per file as many on a disk; a batch goes up concurrently (S3) or
    unsynced (disk). Memory is bounded by the batch, large files are streamed.
    """

    lake: Location
    rng: np.random.Generator
    block: bytes
    files: int = 0
    written_bytes: int = 0
    pending: dict[str, bytes] = field(default_factory=dict)
    pending_bytes: int = 0

    def write(self, path: str, kind: str, size: int) -> None:
        if size <= PIPE_FILE_BYTES:
            self.pending[self.lake.relative(path)] = b"".join(self._chunks(kind, size))
            self.pending_bytes += size
            if len(self.pending) >= PIPE_BATCH_FILES or self.pending_bytes >= PIPE_BATCH_BYTES:
                self.flush()
        else:
            with open_for_write(self.lake, path) as fh:
                for chunk in self._chunks(kind, size):
                    fh.write(chunk)
        self.files += 1
        self.written_bytes += size

    def flush(self) -> None:
        if self.pending:
            self.lake.write_many(self.pending)
        self.pending = {}
        self.pending_bytes = 0

    def _chunks(self, kind: str, size: int) -> Iterator[bytes | memoryview]:
        if kind == "binary":
            remaining = size
            while remaining:
                n = min(remaining, WRITE_CHUNK_BYTES)
                yield self.rng.bytes(n)
                remaining -= n
        elif kind == "text":
            # Slices of one shared block, starting anywhere: compressible, never stored twice.
            view = memoryview(self.block)
            offset = int(self.rng.integers(0, len(self.block)))
            remaining = size
            while remaining:
                n = min(remaining, len(view) - offset)
                yield view[offset : offset + n]
                remaining -= n
                offset = 0


def _file_size(rng: np.random.Generator, mean: int) -> int:
    if rng.random() < ZERO_BYTE_FILE_P or mean <= 0:
        return 0
    mu = math.log(mean / (1 - ZERO_BYTE_FILE_P)) - FILE_SIZE_SIGMA**2 / 2
    return max(1, round(float(rng.lognormal(mu, FILE_SIZE_SIGMA))))


def _workspace_files(rng: np.random.Generator, spec: LakeSpec) -> list[tuple[str, str, int]]:
    """(relative path, kind, size) of one ordinary workspace."""
    n = max(1, int(rng.poisson(spec.files_per_workspace)))
    text_order = rng.permutation(len(TEXT_FILE_NAMES)).tolist()
    binary_order = rng.permutation(len(BINARY_FILE_NAMES)).tolist()
    files = []
    for k in range(n):
        if rng.random() < BINARY_FILE_P:
            name = BINARY_FILE_NAMES[binary_order.pop()] if binary_order else f"data/extra_{k}.bin"
            kind = "binary"
        else:
            name = TEXT_FILE_NAMES[text_order.pop()] if text_order else f"src/extra_{k}.py"
            kind = "text"
        files.append((name, kind, _file_size(rng, spec.file_bytes)))
    return files


def write_workspaces(
    lake: Location, spec: LakeSpec, courses: list[SampleCourse], people: People
) -> tuple[int, int, dict[int, list[int]]]:
    block = _text_block(rng_for(spec, STREAM_WORKSPACES, 0))
    files = total_bytes = 0
    without: dict[int, list[int]] = {}
    for course in courses:
        rng = rng_for(spec, STREAM_WORKSPACES, 1, course.index)
        writer = _WorkspaceWriter(lake, rng, block)
        never = course.never_started
        without[course.course_id] = [] if never is None else [int(people.user_ids[never])]
        for a_pos, aid in enumerate(course.assignment_ids):
            for s_pos, user in enumerate(course.students + course.left):
                uid = int(people.user_ids[user])
                root = lake.path("workspaces", course.course_id, aid, uid)
                if a_pos == 0 and s_pos == 0:
                    for rel, kind in SPECIAL_WORKSPACE_FILES:
                        size = 0 if kind == "empty" else max(1, spec.file_bytes)
                        writer.write(f"{root}/{rel}", kind, size)
                    continue
                if user == never:
                    continue
                skip_p = (
                    LEFT_USER_WORKSPACE_P if s_pos >= len(course.students) else MISSING_WORKSPACE_P
                )
                if rng.random() < skip_p:
                    continue
                for rel, kind, size in _workspace_files(rng, spec):
                    writer.write(f"{root}/{rel}", kind, size)
        writer.flush()
        files += writer.files
        total_bytes += writer.written_bytes
    return files, total_bytes, without
