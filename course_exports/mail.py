"""The ready and failure mails (CONTRACT section 6), and their delivery.

Building a mail and delivering it are separate so a flow can build the mail where it
has the data and deliver it last: :func:`deliver` never raises, because a mail that
cannot be sent must never fail (and so roll back) an export that is already finished.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import smtplib
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError, MessageDefect
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from course_exports import links, mail_headers
from course_exports.export_records import ExportKind, ExportResult
from course_exports.humanize import human_size
from course_exports.lake import Person
from course_exports.mail_headers import plain_text
from course_exports.settings import Settings, SmtpConfig
from course_exports.text import one_line as log_line

log = logging.getLogger(__name__)

# smtplib blocks forever without one; a stuck server must not hold a flow run.
SMTP_TIMEOUT_S = 30.0
# A failure reason is shown to a teacher: one short line, never a traceback.
MAX_REASON_CHARS = 300
GENERIC_REASON = "the export could not be produced"

_KIND_LABELS = {
    ExportKind.COURSE: "course export",
    ExportKind.ACCESS_DATA: "access data export",
    ExportKind.LTI_SETTINGS: "LTI settings export",
}
# English names on purpose: strftime's %A/%B follow the process locale.
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


@dataclass(frozen=True)
class Delivery:
    """What became of one mail."""

    delivered: bool
    transport: Literal["smtp", "outbox"]
    where: str  # "host:port" of the SMTP server, or the .eml path
    attempts: int
    error: str | None = None


# -- formatting helpers ------------------------------------------------------------------


def one_line(text: str) -> str:
    """``text`` as one line of words for a mail: LMS names may hold newlines, tabs and
    bidi controls."""
    return plain_text(text)


def kind_label(kind: str) -> str:
    try:
        return _KIND_LABELS[ExportKind(kind)]
    except ValueError:
        return f"{one_line(kind)} export"


def _long_date(moment: datetime) -> str:
    return f"{_DAYS[moment.weekday()]} {moment.day} {_MONTHS[moment.month - 1]} {moment.year}"


def format_expiry(expires_at: datetime, timezone: str | None = None) -> str:
    """``Saturday 5 December 2026, 18:17 UTC (13:17 America/New_York)``.

    The local time repeats the date when it falls on another day than in UTC. An
    unknown time zone is left out rather than failing the mail.
    """
    utc = (expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)).astimezone(UTC)
    text = f"{_long_date(utc)}, {utc:%H:%M} UTC"
    if timezone and timezone.upper() != "UTC":
        try:
            local = utc.astimezone(ZoneInfo(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("unknown time zone %r; the expiry is shown in UTC only", timezone)
        else:
            when = (
                f"{local:%H:%M}"
                if local.date() == utc.date()
                else (f"{_long_date(local)}, {local:%H:%M}")
            )
            text += f" ({when} {timezone})"
    return text


def _recipient(person: Person) -> str | None:
    """The person's registered address, or None when it is unusable."""
    email = (person.email or "").strip()
    if not email:
        log.warning("user %s has no registered e-mail address", person.user_id)
        return None
    if not email.isascii():  # would need SMTPUTF8, which we cannot count on
        log.warning("user %s has a non-ASCII e-mail address", person.user_id)
        return None
    try:
        address = Address(addr_spec=email)
    except (ValueError, IndexError, HeaderParseError, MessageDefect) as exc:
        log.warning("user %s has an unusable e-mail address (%s)", person.user_id, exc)
        return None
    if not address.username or not address.domain:
        log.warning("user %s has an unusable e-mail address", person.user_id)
        return None
    return address.addr_spec


def _new_message(settings: Settings, recipient: Person, subject: str) -> EmailMessage:
    msg = EmailMessage(policy=mail_headers.POLICY)
    mail_headers.set_from(msg, settings.mail_from)
    to = _recipient(recipient)
    if to is not None:
        mail_headers.set_to(msg, recipient.display_name, to)
    mail_headers.set_subject(msg, subject)
    msg["Date"] = format_datetime(datetime.now(UTC))
    # make_msgid() without a domain does a DNS lookup of this host, which can hang.
    domain = settings.mail_from.rsplit("@", 1)[-1].strip(" >") or "localhost"
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    return msg


def _subject_name(course: str) -> str:
    return plain_text(course, mail_headers.MAX_SUBJECT_NAME)


def _greeting(person: Person) -> str:
    name = one_line(person.first_name) or one_line(person.display_name)
    return f"Hello {name}," if name else "Hello,"


# -- the mails ---------------------------------------------------------------------------


def ready_mail(
    *,
    settings: Settings,
    recipient: Person,
    course_name: str,
    result: ExportResult,
    contents: str,
    timezone: str | None = None,
) -> EmailMessage:
    """The mail telling the requester their export is ready, with its link and expiry."""
    course = one_line(course_name)
    label = kind_label(result.kind)
    size = human_size(result.size_bytes)
    expiry = format_expiry(result.expires_at, timezone)
    holds = contents.strip().rstrip(".")  # the sentence gets its full stop here
    page = links.course_page_url(settings.public_url, result.course_id)  # no secret in it
    msg = _new_message(settings, recipient, f"Your {label} of “{_subject_name(course)}” is ready")
    text = (
        f"{_greeting(recipient)}\n\n"
        f"The {label} of the course “{course}” that you asked for is ready.\n\n"
        f"It holds {holds}.\n"
        f"File: {result.file_name} ({size})\n\n"
        f"Download it here:\n{result.download_url}\n\n"
        f"The link works until {expiry}.\n"
        "After that the file is deleted; ask for a new export if you need it again.\n"
        "Anyone who has this link can download the file, so do not forward it.\n\n"
        "The course's exports are also listed, to download again or to export anew, on its "
        f"Course Data page (the course's Admin tab in the LMS):\n{page}\n\n"
        f"SHA-256 of the file: {result.sha256}\n"
        f"Export id: {result.export_id}\n"
    )
    msg.set_content(text)
    e = html.escape
    body = (
        f"<p>{e(_greeting(recipient))}</p>"
        f"<p>The {e(label)} of the course <strong>{e(course)}</strong> that you asked for "
        "is ready.</p>"
        f"<p>It holds {e(holds)}.<br>File: {e(result.file_name)} ({e(size)})</p>"
        f'<p><a href="{e(result.download_url, quote=True)}">Download the export</a></p>'
        f"<p>The link works until <strong>{e(expiry)}</strong>. After that the file is "
        "deleted; ask for a new export if you need it again. Anyone who has this link can "
        "download the file, so do not forward it.</p>"
        "<p>The course's exports are also listed, to download again or to export anew, on "
        f'its <a href="{e(page, quote=True)}">Course Data page</a> (the course\'s Admin tab '
        "in the LMS).</p>"
        f"<p><small>SHA-256: {e(result.sha256)}<br>Export id: {e(result.export_id)}</small></p>"
    )
    msg.add_alternative(f"<!DOCTYPE html><html><body>{body}</body></html>", subtype="html")
    return msg


def teacher_reason(reason: str) -> str:
    """A reason fit for a teacher: one short line, and nothing that looks like a traceback."""
    lines = [one_line(line) for line in (reason or "").splitlines()]
    first = next((line for line in lines if line), "")
    if not first or first.startswith("Traceback") or 'File "' in first:
        return GENERIC_REASON
    if len(first) > MAX_REASON_CHARS:
        first = first[: MAX_REASON_CHARS - 1].rstrip() + "…"
    return first


def failure_mail(
    *, settings: Settings, recipient: Person, course_name: str, kind: str, reason: str
) -> EmailMessage:
    """The mail telling the requester their export failed, and what they can do."""
    course = one_line(course_name)
    label = kind_label(kind)
    why = teacher_reason(reason)
    msg = _new_message(
        settings, recipient, f"Your {label} of “{_subject_name(course)}” could not be produced"
    )
    msg.set_content(
        f"{_greeting(recipient)}\n\n"
        f"The {label} of the course “{course}” that you asked for could not be produced.\n\n"
        f"Reason: {why}\n\n"
        "Nothing was exported. You can ask for the export again (Course Data, in the "
        "course's Admin tab) once the reason above is resolved; if it keeps failing, contact your platform's support and quote the "
        "course name and the time of this mail.\n"
    )
    return msg


# -- delivery ----------------------------------------------------------------------------


def _recipients(message: EmailMessage) -> list[str]:
    """The envelope recipients: the addresses of To, parsed by the email package."""
    to = message["To"]
    return [a.addr_spec for a in (to.addresses if to is not None else ()) if a.addr_spec]


def _subject(message: EmailMessage) -> str:
    """The subject for a log line (it holds a course name)."""
    return log_line(message.get("Subject", ""))


def log_recipients(message: EmailMessage) -> str:
    """The recipient for a log line: the address only, never the directory's name."""
    return log_line(", ".join(_recipients(message)))


def deliver(
    message: EmailMessage, settings: Settings, *, attempts: int = 3, backoff_s: float = 1.0
) -> Delivery:
    """Send ``message`` by SMTP, or write it to the outbox when no server is set.

    Never raises: the outcome, including any error, is in the returned :class:`Delivery`.
    """
    transport: Literal["smtp", "outbox"] = "smtp" if settings.smtp_url else "outbox"
    where = ""
    try:
        smtp = settings.smtp
        where = f"{smtp.host}:{smtp.port}" if smtp else str(settings.outbox_path())
        if not _recipients(message):
            error = "not sent: the recipient has no valid registered e-mail address"
            log.error("mail %r %s", _subject(message), error)
            return Delivery(False, transport, where, 0, error)
        if smtp is None:
            return _write_outbox(message, settings.outbox_path())
        return _send_smtp(message, smtp, attempts=max(1, attempts), backoff_s=backoff_s)
    except Exception as exc:  # the promise is "never raises": an export must not fail here
        log.exception("mail %r could not be delivered", _subject(message))
        return Delivery(False, transport, where, 0, f"{type(exc).__name__}: {exc}")


def _write_outbox(message: EmailMessage, outbox: Path) -> Delivery:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = outbox / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
    # Whatever picks mails up from the outbox must never see half a file.
    tmp = outbox / f".{target.name}.tmp"
    try:
        outbox.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(message.as_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        log.error("mail %r could not be written to %s: %s", _subject(message), outbox, exc)
        return Delivery(False, "outbox", str(target), 1, f"{type(exc).__name__}: {exc}")
    log.info("mail %r written to %s", _subject(message), target)
    return Delivery(True, "outbox", str(target), 1, None)


def _connect(config: SmtpConfig) -> smtplib.SMTP:
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if config.ssl:
        client = smtplib.SMTP_SSL(config.host, config.port, timeout=SMTP_TIMEOUT_S, context=context)
    else:
        client = smtplib.SMTP(config.host, config.port, timeout=SMTP_TIMEOUT_S)
    try:
        client.ehlo()
        if config.starttls:
            client.starttls(context=context)
            client.ehlo()
        if config.username:
            client.login(config.username, config.password or "")
    except BaseException:
        client.close()
        raise
    return client


def _is_transient(exc: Exception) -> bool:
    """Whether trying again later may help: 4xx replies and network trouble, not 5xx."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return False  # e.g. STARTTLS asked of a server without it: a setting to fix
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    # SMTPServerDisconnected, refused/reset connections, DNS failures and timeouts.
    return isinstance(exc, OSError)


def _describe(exc: Exception) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = "; ".join(
            f"{addr}: {code} {msg.decode(errors='replace')}"
            for addr, (code, msg) in exc.recipients.items()
        )
        return f"recipient refused ({refused})"
    if isinstance(exc, smtplib.SMTPResponseException):
        msg = exc.smtp_error
        text = msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
        return f"{type(exc).__name__}: {exc.smtp_code} {text}"
    return f"{type(exc).__name__}: {exc}"


def _quit(client: smtplib.SMTP) -> None:
    # Once the server took the message, a failing QUIT must not make us send it twice.
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def _send_smtp(
    message: EmailMessage, config: SmtpConfig, *, attempts: int, backoff_s: float
) -> Delivery:
    where = f"{config.host}:{config.port}"
    error = ""
    for attempt in range(1, attempts + 1):
        try:
            client = _connect(config)
            try:
                # The envelope names the recipient we chose, whatever the headers say.
                client.send_message(message, to_addrs=_recipients(message))
            finally:
                _quit(client)
        except Exception as exc:
            error = log_line(_describe(exc), limit=500)  # server replies span lines
            transient = _is_transient(exc)
            if not transient or attempt == attempts:
                log.error(
                    "mail %r to %s via %s failed on attempt %d/%d, giving up: %s",
                    _subject(message),
                    log_recipients(message),
                    where,
                    attempt,
                    attempts,
                    error,
                )
                return Delivery(False, "smtp", where, attempt, error)
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning(
                "mail %r to %s via %s failed on attempt %d/%d, retrying in %.1fs: %s",
                _subject(message),
                log_recipients(message),
                where,
                attempt,
                attempts,
                delay,
                error,
            )
            time.sleep(delay)
        else:
            log.info("mail %r sent to %s via %s", _subject(message), log_recipients(message), where)
            return Delivery(True, "smtp", where, attempt, None)
    raise AssertionError("unreachable")  # the loop always returns on its last attempt
