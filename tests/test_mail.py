import email
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from course_exports import mail, mail_headers
from course_exports.export_records import ExportKind, ExportResult, ExportStatus
from course_exports.humanize import human_size
from course_exports.lake import Person
from course_exports.settings import Settings

EXPIRES = datetime(2026, 12, 5, 18, 17, 42, tzinfo=UTC)
LINK = "http://127.0.0.1:8765/d/eyJ0ZXN0Ijp0cnVlfQ.c2lnbmF0dXJl"
ZOE = Person(
    user_id=42,
    username="zoe",
    email="zoe@school.example",
    first_name='Zoë "Z"',
    last_name="O'Brien, Jr.\nthe 2nd",
)


def result(**changes: object) -> ExportResult:
    values: dict[str, object] = {
        "export_id": "0123456789abcdef0123456789abcdef",
        "course_id": 1042,
        "course_name": "Intro to Python",
        "kind": ExportKind.ACCESS_DATA,
        "status": ExportStatus.READY,
        "requested_by": 42,
        "file_name": "intro-to-python-access.csv",
        "file_url": "/srv/exports/1042/0123456789abcdef0123456789abcdef/a.csv",
        "created_at": EXPIRES - timedelta(days=7),
        "expires_at": EXPIRES,
        "size_bytes": 3_400_000,
        "sha256": "ab" * 32,
        "counts": {"events": 12345},
        "download_url": LINK,
    }
    values.update(changes)
    return ExportResult.model_validate(values)


def settings_for(tmp_path: Path, smtp_url: str | None = None) -> Settings:
    return Settings(
        exports_url=str(tmp_path / "exports"),
        outbox=str(tmp_path / "outbox"),
        smtp_url=smtp_url,  # type: ignore[arg-type]
        mail_from="Course Exports <exports@school.example>",
    )


def ready(settings: Settings, recipient: Person = ZOE, **changes: object) -> EmailMessage:
    return mail.ready_mail(
        settings=settings,
        recipient=recipient,
        course_name="Intro to Python",
        result=result(**changes),
        contents="12,345 access events from 2026-05-28 to 2026-11-28",
        timezone="America/New_York",
    )


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (999, "999 bytes"),
        (1000, "1.0 kB"),
        (3_400_000, "3.4 MB"),
        (999_960, "1.0 MB"),
        (2_500_000_000, "2.5 GB"),
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


def test_expiry_in_utc_and_course_time_zone() -> None:
    assert mail.format_expiry(EXPIRES, "America/New_York") == (
        "Saturday 5 December 2026, 18:17 UTC (13:17 America/New_York)"
    )
    assert mail.format_expiry(EXPIRES, "Asia/Tokyo") == (
        "Saturday 5 December 2026, 18:17 UTC (Sunday 6 December 2026, 03:17 Asia/Tokyo)"
    )
    assert mail.format_expiry(EXPIRES) == "Saturday 5 December 2026, 18:17 UTC"
    assert mail.format_expiry(EXPIRES, "Mars/Olympus") == "Saturday 5 December 2026, 18:17 UTC"


def test_ready_mail_delivered_by_smtp(smtp_server: Any, tmp_path: Path) -> None:
    smtp_server.clear()
    settings = settings_for(tmp_path, smtp_server.url)
    delivery = mail.deliver(ready(settings), settings)
    assert delivery == mail.Delivery(True, "smtp", f"127.0.0.1:{smtp_server.port}", 1, None)

    [received] = smtp_server.messages
    assert smtp_server.envelopes[0].rcpt_tos == ["zoe@school.example"]
    [to] = received["To"].addresses
    assert to.addr_spec == "zoe@school.example"
    assert to.display_name == 'Zoë "Z" O\'Brien, Jr. the 2nd'  # newline folded to a space
    assert received["From"].addresses[0].addr_spec == "exports@school.example"
    assert received["Subject"] == "Your access data export of “Intro to Python” is ready"
    assert received["Message-ID"].endswith("@school.example>")
    assert received["Date"].datetime.tzinfo is not None
    body = text_of(received)
    for expected in (
        "Intro to Python",
        "12,345 access events from 2026-05-28 to 2026-11-28",
        "3.4 MB",
        LINK,
        "Saturday 5 December 2026, 18:17 UTC (13:17 America/New_York)",
        "Course Data page (the course's Admin tab in the LMS):",
        f"{settings.public_url}/courses/1042\r\n",
    ):
        assert expected in body
    html = received.get_body(preferencelist=("html",))
    assert html is not None and f'href="{LINK}"' in html.get_content()
    assert f'href="{settings.public_url}/courses/1042">Course Data page' in html.get_content()


def test_smtp_login(smtp_server: Any, tmp_path: Path) -> None:
    smtp_server.clear()
    settings = settings_for(tmp_path, smtp_server.url_with_login())
    assert mail.deliver(ready(settings), settings).delivered
    assert len(smtp_server.messages) == 1


def test_wrong_password_is_not_retried(smtp_server: Any, tmp_path: Path) -> None:
    smtp_server.clear()
    settings = settings_for(tmp_path, smtp_server.url_with_login(password="wrong"))
    delivery = mail.deliver(ready(settings), settings, attempts=3, backoff_s=0.01)
    assert not delivery.delivered and delivery.attempts == 1
    assert delivery.error is not None and "535" in delivery.error
    assert smtp_server.messages == []


def test_outbox_writes_a_parseable_eml(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    delivery = mail.deliver(ready(settings), settings)
    assert delivery.delivered and delivery.transport == "outbox" and delivery.attempts == 1
    path = Path(delivery.where)
    assert path.parent == tmp_path / "outbox" and path.suffix == ".eml"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    parsed = email.message_from_bytes(path.read_bytes(), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    assert parsed["To"].addresses[0].display_name == 'Zoë "Z" O\'Brien, Jr. the 2nd'
    assert LINK in text_of(parsed)


def test_transient_421_is_retried(smtp_server: Any, tmp_path: Path) -> None:
    smtp_server.clear()
    smtp_server.fail_next("421 4.3.2 service busy, try again later")
    settings = settings_for(tmp_path, smtp_server.url)
    delivery = mail.deliver(ready(settings), settings, attempts=3, backoff_s=0.01)
    assert delivery.delivered and delivery.attempts == 2
    assert len(smtp_server.messages) == 1


def test_permanent_recipient_refusal_is_not_retried(
    smtp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    smtp_server.clear()
    settings = settings_for(tmp_path, smtp_server.url)
    person = Person(7, "gone", f"gone@{smtp_server.refused_domain}", "Gone", "User")
    with caplog.at_level(logging.WARNING, logger="course_exports.mail"):
        delivery = mail.deliver(ready(settings, person), settings, attempts=3, backoff_s=0.01)
    assert not delivery.delivered and delivery.attempts == 1
    assert delivery.error is not None and "550" in delivery.error
    assert any("giving up" in r.getMessage() for r in caplog.records)


def test_unreachable_server_gives_up_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, get_free_port: Callable[[], int]
) -> None:
    port = get_free_port()  # nothing listens there any more
    settings = settings_for(tmp_path, f"smtp://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING, logger="course_exports.mail"):
        delivery = mail.deliver(ready(settings), settings, attempts=3, backoff_s=0.001)
    assert not delivery.delivered
    assert delivery.transport == "smtp" and delivery.where == f"127.0.0.1:{port}"
    assert delivery.attempts == 3
    assert delivery.error is not None and "Connection" in delivery.error
    assert len([r for r in caplog.records if r.name == "course_exports.mail"]) == 3


def test_starttls_against_a_server_without_it_fails_cleanly(
    smtp_server: Any, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, smtp_server.url + "?starttls=true")
    delivery = mail.deliver(ready(settings), settings, attempts=3, backoff_s=0.01)
    assert not delivery.delivered and delivery.attempts == 1
    assert delivery.error is not None and "STARTTLS" in delivery.error


@pytest.mark.parametrize("address", ["", "   ", "not-an-address"])
def test_recipient_without_usable_email(tmp_path: Path, address: str) -> None:
    settings = settings_for(tmp_path)
    person = Person(9, "noemail", address, "No", "Mail")
    message = ready(settings, person)
    assert message["To"] is None
    delivery = mail.deliver(message, settings)
    assert not delivery.delivered and delivery.attempts == 0
    assert delivery.error is not None and "e-mail address" in delivery.error
    assert not (tmp_path / "outbox").exists()


def test_failure_mail_names_course_and_reason_but_no_traceback(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    message = mail.failure_mail(
        settings=settings,
        recipient=ZOE,
        course_name="Intro\nto Python",
        kind="course",
        reason="only a teacher of the course may request this export",
    )
    assert message["Subject"] == "Your course export of “Intro to Python” could not be produced"
    body = text_of(message)
    assert "Intro to Python" in body
    assert "only a teacher of the course may request this export" in body

    leaky = mail.failure_mail(
        settings=settings,
        recipient=ZOE,
        course_name="Intro",
        kind="access-data",
        reason='Traceback (most recent call last):\n  File "/srv/x.py", line 1\nKeyError: 1',
    )
    body = text_of(leaky)
    assert "Traceback" not in body and "/srv/x.py" not in body
    assert mail.GENERIC_REASON in body


def test_deliver_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "outbox"
    blocker.write_text("a file where the outbox folder should be")
    settings = settings_for(tmp_path)
    delivery = mail.deliver(ready(settings), settings)
    assert not delivery.delivered and delivery.error


# -- headers carrying directory names (issue 8.3) ------------------------------------------

INJECTION = 'Eve Bcc: attacker@evil.example "attacker@evil.example" <attacker@evil.example>, x'
#: Every header a mail of ours has: a name must never add one.
MAIL_HEADERS = {
    "From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version",
    "Content-Type", "Content-Transfer-Encoding",
}  # fmt: skip


def reparse(message: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(message.as_bytes(), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


def rfc2047_display_name(message: EmailMessage) -> str:
    """The To display name as an RFC 2047 decoder sees it (``email.header`` drops the
    folding between adjacent encoded words; the newer parser keeps a space there)."""
    from email.header import decode_header, make_header
    from email.policy import compat32
    from email.utils import getaddresses

    raw = email.message_from_bytes(message.as_bytes(), policy=compat32)
    unfolded = re.sub(r"\r?\n(?=[ \t])", "", str(raw["To"]))
    [(name, _)] = getaddresses([unfolded])
    return str(make_header(decode_header(name)))


def test_display_name_cannot_add_recipients(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    eve = Person(66, "eve", "teacher@school.edu", INJECTION, "")
    parsed = reparse(ready(settings, eve))
    [to] = parsed["To"].addresses
    assert to.addr_spec == "teacher@school.edu"
    assert "evil" not in to.addr_spec and rfc2047_display_name(parsed) == INJECTION
    assert set(parsed.keys()) <= MAIL_HEADERS


#: Any text, heavy in what RFC 5322 gives a meaning to, sometimes long enough to fold.
name_text = st.text(
    alphabet=st.one_of(st.sampled_from('"<>,:;@\\()[]=? .\r\n\t\u202e'), st.characters()),
    max_size=300,
)


@examples(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=name_text, last=name_text, course=name_text)
@example(first=INJECTION, last="", course=INJECTION)
@example(first="Zoë " * 40, last="\u202eexe.txt", course="Ünïcode " * 30)
def test_any_directory_name_is_one_display_name(first: str, last: str, course: str) -> None:
    config = Settings(mail_from="Course Exports <exports@school.example>")
    person = Person(7, "someone", "teacher@school.edu", first, last)
    for message in (
        mail.ready_mail(
            settings=config, recipient=person, course_name=course, result=result(),
            contents="things",
        ),
        mail.failure_mail(
            settings=config, recipient=person, course_name=course, kind="course",
            reason="because",
        ),
    ):  # fmt: skip
        raw = message.as_bytes()
        assert all(len(line) <= 78 for line in raw.split(b"\n\n", 1)[0].splitlines())
        parsed = reparse(message)
        assert set(parsed.keys()) <= MAIL_HEADERS
        [to] = parsed["To"].addresses
        assert to.addr_spec == "teacher@school.edu"
        name = mail_headers.plain_text(person.display_name, mail_headers.MAX_DISPLAY_NAME)
        assert rfc2047_display_name(parsed) == name
        assert "".join(to.display_name.split()) == "".join(name.split())
        subject_course = mail_headers.plain_text(course, mail_headers.MAX_SUBJECT_NAME)
        assert f"“{subject_course}”" in parsed["Subject"]
        assert parsed["Subject"] == mail_headers.plain_text(message["Subject"])


def test_a_long_sender_name_stays_one_sender() -> None:
    name = '"Course Exports, School of Computing <and> Data Science: Department" ' * 2
    config = Settings(mail_from=f'"{name.replace(chr(34), "")}" <exports@school.example>')
    parsed = reparse(
        mail.failure_mail(settings=config, recipient=ZOE, course_name="c", kind="course",
                          reason="r")
    )  # fmt: skip
    [sender] = parsed["From"].addresses
    assert sender.addr_spec == "exports@school.example"
    assert sender.display_name == mail_headers.plain_text(
        name.replace('"', ""), mail_headers.MAX_DISPLAY_NAME
    )
    assert sender.display_name.endswith("...")


@examples(max_examples=200, deadline=None)
@given(address=st.emails().filter(lambda a: a.isascii()))
def test_any_valid_address_is_the_one_recipient(address: str) -> None:
    config = Settings(mail_from="exports@school.example")
    person = Person(7, "someone", address, "Zoë", '"Z", <x@y>')
    parsed = reparse(
        mail.failure_mail(
            settings=config, recipient=person, course_name="c", kind="course", reason="r"
        )
    )
    [to] = parsed["To"].addresses
    assert to.addr_spec == address.strip()
