"""The course zip's manifest pieces as plain functions: each entry line is exactly the
JSON of its fields, and the pieces join into one JSON document."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from course_exports.course_export import entry_line, manifest_chunks
from course_exports.workspace import WorkspaceFile
from course_exports.zipstream import WrittenEntry

names = st.text(min_size=1).filter(lambda s: "\x00" not in s)


@given(names, names, st.integers(0, 2**40), st.booleans())
def test_an_entry_line_is_the_json_of_its_fields(
    path: str, source: str, size: int, from_workspace: bool
) -> None:
    entry = WrittenEntry(f"top/{path}", size, size, 0, "ab" * 32, "store")
    file = WorkspaceFile(501, 7, source, "/lake/x", size, path) if from_workspace else None
    expected: dict[str, Any] = {"path": path, "size": size, "sha256": "ab" * 32}
    if file is not None:
        expected["source"] = {"assignment_id": 501, "user_id": 7, "path": source}
    line = entry_line(entry, "top", file)
    assert line == json.dumps(expected, ensure_ascii=False).encode()
    assert b"\n" not in line  # one line each: the spill and the manifest rely on it


def test_the_manifest_pieces_make_one_document() -> None:
    header = {"format": 1, "course": {"id": 1042, "name": "Ünïcode\n"}}
    lines = [json.dumps({"path": f"p{i}"}).encode() for i in range(3)]
    document = json.loads(b"".join(manifest_chunks(header, iter(lines))))
    assert document == {**header, "entries": [{"path": "p0"}, {"path": "p1"}, {"path": "p2"}]}
    assert json.loads(b"".join(manifest_chunks(header, iter([]))))["entries"] == []
