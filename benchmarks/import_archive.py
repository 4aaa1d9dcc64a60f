"""Benchmark: memory and time of Import Project on a hostile and on a large archive.

    .venv/bin/python benchmarks/import_archive.py                  # 100,000-entry export
    .venv/bin/python benchmarks/import_archive.py --entries 300000

Two archives are written under ``benchmarks/out/import`` and registered as exports:

* **manifest bomb** — the hostile review's: a ~306 KB zip whose ``manifest.json``
  inflates to 300 MB (valid JSON, one long string);
* **large export** — ``--entries`` small files in workspaces of 100 files each, with the
  manifest the exporter writes (one line per entry).

Each case runs in a fresh subprocess, so its peak RSS (``VmHWM``) is its own,
interpreter and imports included. The baseline, in the same run, reads the manifest
whole and parses it with ``json.loads``, as the importer did before 0.3.0; the import
rows are the real :func:`course_exports.project.import_workspace` (sha256 of the whole
archive, directory checks, streamed manifest, one workspace extracted and verified);
"size cap lifted" runs it with the manifest's size cap out of the way, to show that the
streaming reader alone bounds memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness import peak_rss_mb  # noqa: E402

from course_exports import export_records, registry  # noqa: E402
from course_exports.course_export import ZIP_FORMAT  # noqa: E402
from course_exports.errors import ExportError  # noqa: E402
from course_exports.export_records import ExportKind, ExportRecord  # noqa: E402
from course_exports.project import ImportLimits, import_workspace  # noqa: E402
from course_exports.storage import Location, open_location  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "import"
TOP = "Benchmark (1) 2026-11-30 120000 UTC"
FILES_PER_WORKSPACE = 100
BOMB_BYTES = 300 * 2**20


def _publish(exports: Location, write: Any) -> ExportRecord:
    record = registry.begin_export(
        exports,
        kind=ExportKind.COURSE,
        course_id=1,
        course_name="Benchmark",
        requested_by=1,
        request_id=None,
        parameters={},
        file_name="course.zip",
        ttl=timedelta(days=1),
    )
    with registry.open_export_file(exports, record) as out:
        write(out, record.export_id)
    return registry.publish(exports, record, size_bytes=out.size, sha256=out.sha256, counts={})


def _header(export_id: str, workspaces: int) -> dict[str, Any]:
    return {
        "format": ZIP_FORMAT,
        "export_id": export_id,
        "assignments": [{"id": 1, "name": "Loops", "stack": {"id": "py", "name": "Python"}}],
        "workspaces": [
            {"assignment_id": 1, "user_id": u, "username": f"s{u}", "files": FILES_PER_WORKSPACE}
            for u in range(1, workspaces + 1)
        ],
    }


def write_bomb(out: Any, export_id: str) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr(f"{TOP}/course.json", b"{}")
        with zf.open(f"{TOP}/manifest.json", "w") as fh:
            document = _header(export_id, 1)
            fh.write(json.dumps(document).removesuffix("}").encode() + b', "padding": "')
            for _ in range(BOMB_BYTES // 2**20):
                fh.write(b"a" * 2**20)
            fh.write(b'", "entries": []}')


def write_large(entries: int) -> Any:
    def write(out: Any, export_id: str) -> None:
        workspaces = entries // FILES_PER_WORKSPACE
        lines = []
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for u in range(1, workspaces + 1):
                for f in range(FILES_PER_WORKSPACE):
                    data = f"print({u}, {f})  # {'x' * (f % 50)}\n".encode()
                    path = f"workspaces/Loops/s{u}/src/module_{f:03d}.py"
                    zf.writestr(f"{TOP}/{path}", data)
                    entry = {
                        "path": path,
                        "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "source": {"assignment_id": 1, "user_id": u, "path": path.split("/", 3)[3]},
                    }
                    lines.append(json.dumps(entry))
            header = json.dumps(_header(export_id, workspaces), indent=2).removesuffix("\n}")
            body = header + ',\n  "entries": [\n    ' + ",\n    ".join(lines) + "\n  ]\n}\n"
            zf.writestr(f"{TOP}/manifest.json", body.encode())

    return write


def run_case(case: str, exports_url: str, course: int, export_id: str) -> None:
    exports = open_location(exports_url)
    record = export_records.read_record(exports, course, export_id)
    assert record is not None
    started = time.perf_counter()
    outcome = "imported"
    if case == "whole":
        with zipfile.ZipFile(registry.file_path(exports, record)) as zf:
            json.loads(zf.read(f"{TOP}/manifest.json"))
        outcome = "parsed"
    else:
        # "uncapped": the size cap lifted, to show that the streaming reader alone keeps
        # memory bounded (it holds one value at a time).
        limits = ImportLimits(manifest_base_bytes=2**40) if case == "uncapped" else None
        try:
            project = import_workspace(
                exports,
                record,
                assignment_id=1,
                student_id=1,
                stack=None,
                requested_by=1,
                limits=limits,
            )
            outcome = f"imported {project.files} files"
        except ExportError as exc:
            outcome = f"refused: {getattr(exc, 'problem', exc)}"[:70]
    print(
        json.dumps(
            {"seconds": time.perf_counter() - started, "peak": peak_rss_mb(), "outcome": outcome}
        )
    )


def measure(case: str, exports: Location, record: ExportRecord) -> dict[str, Any]:
    command = [sys.executable, __file__, "--case", case, "--exports", exports.url]
    command += ["--course", str(record.course_id), "--export-id", record.export_id]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def manifest_mb(exports: Location, record: ExportRecord) -> float:
    with zipfile.ZipFile(registry.file_path(exports, record)) as zf:
        return zf.getinfo(f"{TOP}/manifest.json").file_size / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--exports", help=argparse.SUPPRESS)
    parser.add_argument("--course", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--export-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        run_case(args.case, args.exports, args.course, args.export_id)
        return 0
    shutil.rmtree(OUT, ignore_errors=True)
    exports = open_location(str(OUT))
    archives = {
        "manifest bomb": _publish(exports, write_bomb),
        f"{args.entries:,} entries": _publish(exports, write_large(args.entries)),
    }
    print("| archive | zip MB | manifest MB | reader | peak RSS MB | seconds | outcome |")
    print("|---|---:|---:|---|---:|---:|---|")
    for label, record in archives.items():
        cases = [("whole", "read whole + json.loads (before)"), ("import", "import")]
        cases += [("uncapped", "import, size cap lifted")] if label == "manifest bomb" else []
        for case, reader in cases:
            result = measure(case, exports, record)
            print(
                f"| {label} | {record.size_bytes / 2**20:.2f} | {manifest_mb(exports, record):.1f} "
                f"| {reader} | {result['peak']:.0f} | {result['seconds']:.2f} | {result['outcome']} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
