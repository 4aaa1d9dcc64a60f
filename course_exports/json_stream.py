"""A JSON object read member by member from a stream, in bounded memory.

``json.loads`` needs the whole document, and a manifest of a large course is 150 MB of
JSON (a hostile one, 300 MB from a 300 KB zip). :func:`read_object` walks the top-level
object itself and hands each member's value, or each item of the lists named
``streamed``, to Python's C decoder as soon as it is complete; nothing larger than one
value (``max_value_chars``) or one item (``max_item_chars``) plus one chunk is ever
held. Incremental parsers such as ijson do the same, but tokenize in Python-visible
steps and were 4x slower than this on a 100,000-entry manifest.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Collection, Iterator
from typing import Any

_SPACE = re.compile(r"[ \t\n\r]*")
_NUMBER_TAIL = 3  # the most a number's decodable prefix can lack: "e+" after "1"


class JsonStreamError(ValueError):
    """The document is not a JSON object, or one of its values is larger than allowed."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


class _Reader:
    def __init__(self, read: Callable[[int], bytes], chunk: int) -> None:
        self._read = read
        self._chunk = chunk
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.base = 0  # characters dropped before ``text``: positions in messages are absolute
        self.eof = False

    def fill(self) -> None:
        if self.eof:
            raise JsonStreamError(f"the document ends early (at {self.at:,})")
        data = self._read(self._chunk)
        try:
            more = self._utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise JsonStreamError(f"not UTF-8 ({exc.reason})") from None
        self.eof = not data
        self.base += self.pos
        self.text = self.text[self.pos :] + more
        self.pos = 0

    @property
    def at(self) -> int:
        return self.base + self.pos

    def next_char(self) -> str:
        """The next character after white space, not consumed ("" at the end)."""
        while True:
            self.pos = _SPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text) or self.eof:
                return self.text[self.pos : self.pos + 1]
            self.fill()

    def expect(self, chars: str) -> str:
        found = self.next_char()
        if not found or found not in chars:
            shown = repr(found) if found else "the end"
            raise JsonStreamError(f"expected one of {chars!r}, found {shown} at {self.at:,}")
        self.pos += 1
        return found

    def value(self, limit: int, what: str) -> Any:
        """The next complete JSON value, read in as many chunks as it needs (up to ``limit``)."""
        self.next_char()
        while True:
            problem = ""
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except (ValueError, RecursionError) as exc:
                problem, end = f" ({exc})", -1
            # A number may go on in the next chunk, and a cut one can still decode ("1." is
            # 1, "1e" is 1): a value this close to the end of the text is read again.
            if end == -1 or (len(self.text) - end < _NUMBER_TAIL and not self.eof):
                if self.eof or len(self.text) - self.pos > limit:
                    raise JsonStreamError(
                        f"{what} is not a JSON value of at most {limit:,} characters{problem}"
                    )
                self.fill()
                continue
            if end - self.pos > limit:
                raise JsonStreamError(f"{what} is longer than {limit:,} characters")
            self.pos = end
            return value


def read_object(
    read: Callable[[int], bytes],
    *,
    streamed: Collection[str],
    max_value_chars: int,
    max_item_chars: int,
    chunk: int = 1 << 20,
) -> Iterator[tuple[str, int | None, Any]]:
    """The members of the JSON object ``read`` returns, in document order.

    Yields ``(key, None, value)`` for each member; a member named in ``streamed`` must
    be a list, its value is given as ``[]`` and its items follow as ``(key, index,
    item)``. Raises
    :class:`JsonStreamError` on anything that is not one JSON object (trailing data,
    bad UTF-8, NaN, a value over its limit), at the point it is found.
    """
    reader = _Reader(read, chunk)
    reader.expect("{")
    if reader.next_char() == "}":
        reader.pos += 1
    else:
        while True:
            key = reader.value(max_item_chars, "a key")
            if not isinstance(key, str):
                raise JsonStreamError(f"a key is not a string: {key!r:.40}")
            reader.expect(":")
            if key in streamed:
                yield from _items(reader, key, max_item_chars)
            else:
                yield key, None, reader.value(max_value_chars, f"the value of {key!r:.40}")
            if reader.expect(",}") == "}":
                break
    if reader.next_char():
        raise JsonStreamError(f"data after the end of the object at {reader.at:,}")


def _items(reader: _Reader, key: str, limit: int) -> Iterator[tuple[str, int | None, Any]]:
    if reader.next_char() != "[":
        raise JsonStreamError(f"{key!r:.40} is not a list")
    reader.pos += 1
    yield key, None, []
    if reader.next_char() == "]":
        reader.pos += 1
        return
    index = 0
    while True:
        yield key, index, reader.value(limit, f"{key}[{index}]")
        if reader.expect(",]") == "]":
            return
        index += 1
