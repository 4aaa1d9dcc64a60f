"""The From, To and Subject headers of our mails, rendered and folded here, not by ``email``.

They carry names from the LMS directory, which may hold anything. Python's email
package (3.11, 3.12) refolds a long To header by splitting the quoted display name and
dropping its quotes, so a name holding ``"``, ``<``, ``,`` or ``@`` turned into extra
recipients (issue 8.3); its encoded-word folding also inserts spaces into names. So
these two headers are rendered here as RFC 5322 / RFC 2047 text, in lines of at most 78
characters, and stored with ``Message.set_raw`` under a policy that never refolds a
stored value (``refold_source="none"``).

- An ASCII display name is one quoted-string (``"`` and ``\\`` escaped), folded only at
  its own spaces: unfolding gives the name back exactly.
- Anything else (non-ASCII, or ``=?`` that a client would decode) is a run of RFC 2047
  ``B`` encoded words of whole characters; a decoder drops the folding between them.
"""

from __future__ import annotations

import base64
import re
from email import policy as email_policy
from email.message import EmailMessage

from course_exports.text import strip_bidi

#: Lines we write stay within RFC 5322's recommended 78 characters.
MAX_LINE = 78
#: Longest encoded word we emit: it fits on a first line after ``Subject: `` (RFC 2047
#: allows 75).
MAX_ENCODED_WORD = 66
_EW_PREFIX, _EW_SUFFIX = "=?utf-8?b?", "?="
#: A display name longer than this is cut (with ``…``): a directory entry of kilobytes
#: must not become a header of kilobytes.
MAX_DISPLAY_NAME = 100
#: Course names in a subject are cut at this many characters.
MAX_SUBJECT_NAME = 150

#: Policy of every mail we build: values stored with ``set_raw`` are written as they are.
POLICY = email_policy.default.clone(refold_source="none")

_SPACE_RUN = re.compile(r"\s+")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


def plain_text(text: str, limit: int | None = None) -> str:
    """``text`` as one line of words for a person: no bidi controls, every other control
    or run of white space one space, cut at ``limit`` characters with ``…`` (``...`` when
    the text is ASCII)."""
    cleaned = "".join(
        " " if (ch.isspace() or not ch.isprintable()) else ch for ch in strip_bidi(text)
    )
    line = _SPACE_RUN.sub(" ", cleaned).strip()
    if limit is not None and len(line) > limit:
        # "..." keeps an ASCII name ASCII (a quoted string in a header, not encoded words)
        mark = "..." if line.isascii() else "…"
        line = line[: limit - len(mark)].rstrip() + mark
    return line


def encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 ``B`` encoded words of UTF-8, each holding whole characters
    and at most :data:`MAX_ENCODED_WORD` characters long."""
    room = (MAX_ENCODED_WORD - len(_EW_PREFIX) - len(_EW_SUFFIX)) // 4 * 3  # bytes a word holds
    words: list[str] = []
    chunk = b""
    for ch in text:
        encoded = ch.encode()
        if chunk and len(chunk) + len(encoded) > room:
            words.append(_EW_PREFIX + base64.b64encode(chunk).decode("ascii") + _EW_SUFFIX)
            chunk = b""
        chunk += encoded
    if chunk:
        words.append(_EW_PREFIX + base64.b64encode(chunk).decode("ascii") + _EW_SUFFIX)
    return words


def _needs_encoding(text: str) -> bool:
    return not _PRINTABLE_ASCII.fullmatch(text) or "=?" in text


def fold(name: str, tokens: list[str]) -> str:
    """``tokens`` joined by single spaces, with a line break before a token that would
    make its line longer than :data:`MAX_LINE` (unfolding restores the space)."""
    lines: list[str] = []
    current = ""
    taken = len(name) + 2  # "Name: " on the first line, the folding space after it
    for token in tokens:
        if not current:
            current = token
        elif taken + len(current) + 1 + len(token) <= MAX_LINE:
            current += " " + token
        else:
            lines.append(current)
            current, taken = token, 1
    lines.append(current)
    return "\n ".join(lines)


def _quoted_tokens(name: str) -> list[str]:
    """An ASCII display name as one quoted-string, split at its spaces."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    words = escaped.split(" ")
    words[0] = '"' + words[0]
    words[-1] += '"'
    return words


def address_value(display_name: str, addr_spec: str, header: str = "To") -> str:
    """The folded value of an address header naming one mailbox: ``"Name" <addr>``."""
    name = plain_text(display_name, MAX_DISPLAY_NAME)
    mailbox = f"<{addr_spec}>"
    if not name:
        return addr_spec
    words = encoded_words(name) if _needs_encoding(name) else _quoted_tokens(name)
    return fold(header, [*words, mailbox])


def unstructured_value(name: str, text: str) -> str:
    """The folded value of an unstructured header (a Subject) holding ``text``."""
    line = plain_text(text)
    return fold(name, encoded_words(line) if _needs_encoding(line) else line.split(" "))


def set_to(message: EmailMessage, display_name: str, addr_spec: str) -> None:
    message.set_raw("To", address_value(display_name, addr_spec))


def set_from(message: EmailMessage, mailbox: str) -> None:
    """From, given as a setting (``Exports <exports@school.edu>``, checked to be one
    mailbox): rendered like To, so a long display name cannot split into two either."""
    [address] = email_policy.default.header_factory("From", mailbox).addresses
    message.set_raw("From", address_value(address.display_name, address.addr_spec, "From"))


def set_subject(message: EmailMessage, subject: str) -> None:
    message.set_raw("Subject", unstructured_value("Subject", subject))
