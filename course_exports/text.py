"""Names from the lake made safe for the places we interpolate them into.

Course, assignment and user names are whatever the LMS stored: they may hold CR/LF
(which would forge extra log lines), markdown syntax (which would turn an artifact's
table into a link to anywhere) and bidirectional-override characters (which make
``exe.txt`` display as ``txt.exe``). Every name that reaches a log line, a markdown
artifact or a file/entry name we make goes through one of these functions.
"""

from __future__ import annotations

import re
import unicodedata

#: Explicit bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069)
#: plus the implicit marks (LRM, RLM, ALM): none belongs in a name we make.
BIDI_CONTROLS = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)
_BIDI_RE = re.compile("[" + "".join(sorted(BIDI_CONTROLS)) + "]")
# Every character markdown (CommonMark + GFM tables) gives a meaning to somewhere.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&:\"'=^$])")


def strip_bidi(text: str) -> str:
    """``text`` without bidirectional control characters."""
    return _BIDI_RE.sub("", text)


def _is_control(ch: str) -> bool:
    # Cc: C0/C1 controls (CR, LF, ESC...); Zl/Zp: the Unicode line and paragraph separators.
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def one_line(text: object, *, limit: int = 200) -> str:
    """``text`` as a single printable line for a log or a subject: controls and bidi
    characters become visible escapes (``\\n``, ``\\u202e``), long text is cut with ``…``."""
    out = []
    for ch in str(text):
        if _is_control(ch) or ch in BIDI_CONTROLS:
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    line = "".join(out)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def markdown_text(text: object, *, limit: int = 200) -> str:
    """``text`` as inert markdown: one line, every markdown character backslash-escaped,
    so a name renders as itself inside a paragraph or a table cell."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", one_line(text, limit=limit))
