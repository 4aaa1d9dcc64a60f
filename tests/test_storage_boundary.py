"""Nothing above the storage package reaches for a filesystem or asks which backend it
has: every storage operation goes through :class:`course_exports.storage.Location`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("course_exports", "sample_lake", "tasks", "flows", "deployments")
STORAGE = ROOT / "course_exports" / "storage"
# A filesystem object (``lake.fs``), a backend test, or an fsspec/s3fs client of our own.
FORBIDDEN = re.compile(r"\.fs\b|\bis_local\b|^\s*(import|from)\s+(fsspec|s3fs|obstore|botocore)\b")


def offenders() -> list[str]:
    found = []
    for top in CHECKED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if STORAGE in path.parents:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if FORBIDDEN.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_no_filesystem_calls_above_storage() -> None:
    assert offenders() == []


def test_the_check_finds_what_it_looks_for() -> None:
    for line in ("x = lake.fs.cat_file(p)", "if exports.is_local:", "import fsspec"):
        assert FORBIDDEN.search(line), line
    for line in ("x = lake.read_bytes(p)", "refs = self.fsx", "# is_localized"):
        assert not FORBIDDEN.search(line), line
