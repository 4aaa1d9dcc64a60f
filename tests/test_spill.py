"""Records spilled to disk come back as they went in, by span."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from course_exports import spill as spill_module
from course_exports.spill import Spill

records = st.lists(
    st.tuples(st.text(), st.integers(min_value=0, max_value=2**63), st.booleans()), max_size=60
)


@settings(max_examples=40, deadline=None)
@given(records, st.integers(min_value=1, max_value=300))
def test_spans_give_back_every_record(rows: list[tuple[str, int, bool]], block: int) -> None:
    original = spill_module._FLUSH_BYTES
    spill_module._FLUSH_BYTES = block  # small blocks: early flushes
    try:
        spill = Spill()
        spans = [spill.append(list(row)) for row in rows]
        assert [spill.read(span) for span in spans] == [[list(row)] for row in rows]
        if spans:
            assert spill.read((spans[0][0], spans[-1][1])) == [list(row) for row in rows]
        assert spill.size == sum(
            len(json.dumps(list(row), ensure_ascii=False).encode()) + 1 for row in rows
        )  # one line each, as json.dumps writes it
        spill.close()
    finally:
        spill_module._FLUSH_BYTES = original


def test_names_with_newlines_and_any_unicode_stay_one_record() -> None:
    spill = Spill()
    span = spill.append(["a\nb\r\u2028c", "\x00", "😀"])
    raw = spill.append_line(b'{"raw": true}')
    assert spill.read(span) == [["a\nb\r\u2028c", "\x00", "😀"]]
    assert spill.read(raw) == [{"raw": True}]
    spill.close()
