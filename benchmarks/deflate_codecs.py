"""Deflate libraries on real and generated files: CPU per file and size (not a test).

    .venv/bin/python benchmarks/deflate_codecs.py                 # every corpus below
    .venv/bin/python benchmarks/deflate_codecs.py --limit 5000    # at most 5,000 files each

Why a whole file read into memory is deflated by libdeflate and a streamed one by zlib-ng
(``course_exports/zipstream/compression.py``): each library deflates the same files, one
call per file as the zip's packer does, single-threaded, in this process. Sizes count a
file that does not shrink as stored (as the zip does); CPU is process time. Columns are
relative to zlib at level 6, which is what ``zipfile`` (the course-zip baseline) uses.

Corpora, grouped by file size (< 2 KB, 2-4 KB, 4-64 KB, 64 KB-4 MB; larger files are
streamed). Below 2 KB the zip deflates at level 1 whatever its level: the ``libdeflate 1``
rows there are what it does, the others what it would cost otherwise.

- ``text``, ``tiny``: benchmarks/course_mixes.py's generated mixes (made if missing);
- ``packages``: the installed packages that uv.lock pins (course_mixes.SOURCE_PACKAGES:
  real Python, C extensions, JSON, JavaScript): files no generator of ours made;
- ``stdlib``: this interpreter's standard library (real code, whatever Python this is).
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import deflate  # noqa: E402
from zlib_ng import zlib_ng  # noqa: E402

#: A whole file larger than this is streamed in chunks by the zip (pipeline.CHUNK_BYTES).
WHOLE_FILE_LIMIT = 4 * 2**20
BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("< 2 KB", 0, 2048),  # deflated at level 1 by the zip (compression.SMALL_FILE_BYTES)
    ("2-4 KB", 2048, 4096),
    ("4-64 KB", 4096, 65536),
    ("64 KB-4 MB", 65536, WHOLE_FILE_LIMIT + 1),
)
CODECS: dict[str, Callable[[bytes], bytes | bytearray]] = {
    "zlib 6 (zipfile)": lambda data: zlib.compress(data, 6, wbits=-15),
    "zlib-ng 6": lambda data: zlib_ng.compress(data, 6, wbits=-15),
    "libdeflate 6": lambda data: deflate.deflate_compress(data, 6),
    "libdeflate 5": lambda data: deflate.deflate_compress(data, 5),
    "libdeflate 1": lambda data: deflate.deflate_compress(data, 1),
}


def corpus_files(name: str) -> Iterator[Path]:
    import course_mixes

    if name in ("text", "tiny"):
        yield from sorted(
            (course_mixes.ensure_lake(course_mixes.MIXES[name]) / "workspaces").rglob("*")
        )
    elif name == "packages":
        site = Path(sysconfig.get_paths()["purelib"])
        for package in course_mixes.SOURCE_PACKAGES:
            yield from sorted((site / package).rglob("*"))
    else:
        yield from sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*"))


def read_corpus(name: str, limit: int) -> list[bytes]:
    blobs = []
    for path in corpus_files(name):
        if "__pycache__" in path.parts or path.is_symlink() or not path.is_file():
            continue
        if 0 < path.stat().st_size <= WHOLE_FILE_LIMIT:
            blobs.append(path.read_bytes())
            if len(blobs) >= limit:
                break
    return blobs


def measure(blobs: list[bytes], codec: Callable[[bytes], bytes | bytearray]) -> tuple[float, int]:
    started = time.process_time()
    size = sum(min(len(codec(data)), len(data)) for data in blobs)
    return time.process_time() - started, size


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpora", default="text,tiny,packages,stdlib")
    parser.add_argument("--limit", type=int, default=40_000, help="files per corpus at most")
    args = parser.parse_args()
    print(
        "| corpus | files by size | files | MB | codec | µs CPU per file | MB/s "
        "| CPU vs zlib | size vs zlib |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for corpus in args.corpora.split(","):
        blobs = read_corpus(corpus, args.limit)
        for label, low, high in BUCKETS:
            group = [data for data in blobs if low <= len(data) < high]
            if not group:
                continue
            megabytes = sum(map(len, group)) / 1e6
            base: tuple[float, int] | None = None
            for codec, compress in CODECS.items():
                seconds, size = measure(group, compress)
                base = base or (seconds, size)
                print(
                    f"| {corpus} | {label} | {len(group):,} | {megabytes:.1f} | {codec} "
                    f"| {seconds / len(group) * 1e6:,.1f} | {megabytes / seconds:.1f} "
                    f"| {seconds / base[0]:.2f}x | {size / base[1] - 1:+.2%} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
