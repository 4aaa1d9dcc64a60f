"""read_object: a JSON object member by member, item by item, in bounded memory."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_exports.json_stream import JsonStreamError, read_object

_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_DOCUMENTS = st.dictionaries(
    st.sampled_from(["a", "b", "entries", 'é "x"', ""]) | st.text(), _VALUES
)


def read(
    data: bytes, chunk: int, streamed: frozenset[str] = frozenset(), limit: int = 10**6
) -> Any:
    return list(
        read_object(
            io.BytesIO(data).read,
            streamed=streamed,
            max_value_chars=limit,
            max_item_chars=limit,
            chunk=chunk,
        )
    )


def rebuild(members: list[tuple[str, int | None, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, index, value in members:
        if index is None:
            document[key] = value
        else:
            document[key].append(value)
    return document


@settings(max_examples=300, deadline=None)
@given(
    document=_DOCUMENTS,
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
    chunk=st.integers(1, 64),
)
def test_any_object_reads_back_as_json_loads_does(
    document: dict[str, Any], indent: int | None, ascii_only: bool, chunk: int
) -> None:
    data = json.dumps(document, indent=indent, ensure_ascii=ascii_only).encode()
    streamed = frozenset(k for k, v in document.items() if isinstance(v, list))
    assert rebuild(read(data, chunk, streamed)) == json.loads(data)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200), chunk=st.integers(1, 16))
def test_any_bytes_read_or_are_refused(data: bytes, chunk: int) -> None:
    try:
        members = read(data, chunk, frozenset({"entries"}), limit=100)
    except JsonStreamError:
        return
    assert rebuild(members) == json.loads(data)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "expected one of '{', found the end at 0"),
        (b'{"a": 1} {}', "data after the end of the object at 9"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b'{"a": [1, 2', "not a JSON value"),
        (b'{"a": 1,}', "a key is not a JSON value"),
        (b'{"entries": {}}', "'entries' is not a list"),
        (b'{"entries": [1 2]}', "expected one of ',]', found '2'"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b'{"a": "' + b"x" * 200 + b'"}', "the value of 'a' is not a JSON value of at most 100"),
        (
            b'{"entries": ["' + b"x" * 200 + b'"]}',
            r"entries\[0\] is not a JSON value of at most 100",
        ),
        (b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "recursion"),
    ],
)
def test_refusals_say_what_and_where(data: bytes, problem: str) -> None:
    limit = 100 if len(data) < 1000 else 10**6
    with pytest.raises(JsonStreamError, match=problem):
        read(data, 7, frozenset({"entries"}), limit=limit)


def test_memory_is_one_value_not_the_document() -> None:
    """A 20 MB list streamed item by item never needs more than one item's room."""
    items = [{"path": f"f{i}", "sha256": "0" * 64} for i in range(200_000)]
    data = json.dumps({"format": 1, "entries": items}).encode()
    seen = sum(
        1
        for _, index, _ in read(data, 1 << 16, frozenset({"entries"}), limit=200)
        if index is not None
    )
    assert seen == len(items)
