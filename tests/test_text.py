"""Names from the lake made safe for logs, markdown and file names."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from course_exports.text import BIDI_CONTROLS, markdown_text, one_line, strip_bidi


def test_one_line_escapes_line_breaks_and_bidi() -> None:
    assert one_line("Intro\r\nINFO forged") == "Intro\\r\\nINFO forged"
    assert one_line("a\u202etxt.exe") == "a\\u202etxt.exe"
    assert one_line("x" * 500, limit=10) == "x" * 9 + "…"


def test_markdown_text_is_inert() -> None:
    assert markdown_text("[click](http://evil)") == r"\[click\]\(http\:\/\/evil\)".replace(
        r"\/", "/"
    )
    assert markdown_text("a | b") == r"a \| b"
    assert markdown_text("# h\n<img>") == r"\# h\\n\<img\>"


def test_strip_bidi() -> None:
    assert strip_bidi("report\u202egpj.exe") == "reportgpj.exe"


@given(st.text())
def test_one_line_never_breaks_a_line(text: str) -> None:
    line = one_line(text, limit=10_000)
    assert "\n" not in line and "\r" not in line
    assert not any(ch in BIDI_CONTROLS for ch in line)
    assert len(line.splitlines()) <= 1


@given(st.text())
def test_markdown_text_has_no_unescaped_specials(text: str) -> None:
    out = markdown_text(text, limit=10_000)
    i = 0
    while i < len(out):
        if out[i] == "\\":
            i += 2
            continue
        assert out[i] not in "[]()<>|`*_#!", out
        i += 1
