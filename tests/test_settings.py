from pathlib import Path

import pytest

from course_exports.errors import SettingsError
from course_exports.settings import SmtpConfig, load_settings


def test_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.lake_url == "./var/lake"
    assert settings.exports_url == "./var/exports"
    assert settings.s3_endpoint_url is None
    assert settings.public_url == "http://127.0.0.1:8765"
    assert settings.signing_key is None
    assert settings.smtp_url is None and settings.smtp is None
    assert settings.outbox_path() == tmp_path / "var" / "outbox"
    assert settings.mail_from == "exports@localhost"
    assert settings.export_ttl_days == 7
    assert settings.access_retention_months == 6
    with pytest.raises(SettingsError) as err:
        settings.require_signing_key()
    assert "COURSE_EXPORT_SIGNING_KEY" in str(err.value)


INVALID = [
    ("LAKE_URL", "   "),
    ("EXPORTS_URL", ""),
    ("S3_ENDPOINT_URL", "ftp://minio:9000"),
    ("PUBLIC_URL", "downloads.example.org"),
    ("SIGNING_KEY", "too-short"),
    ("SMTP_URL", "http://mail.example.org"),
    ("SMTP_URL", "smtp://mail.example.org?starttls=maybe"),
    ("SMTP_URL", "smtp://mail.example.org:99999"),
    ("SMTP_URL", "smtp://"),
    ("OUTBOX", " "),
    ("MAIL_FROM", "nobody"),
    ("MAIL_FROM", "a@b.org\nBcc: everyone@b.org"),
    ("EXPORT_TTL_DAYS", "0"),
    ("EXPORT_TTL_DAYS", "a week"),
    ("ACCESS_RETENTION_MONTHS", "0"),
    ("ACCESS_RETENTION_MONTHS", "6.5"),
    ("WEBHOOK_URL", "lms.example.org/hooks"),
    ("WEBHOOK_SECRET", "too-short"),
    ("BUSY_RETRY_SECONDS", "0"),
    ("BUSY_RETRY_SECONDS", "soon"),
    # issue 8.12: accepted before, each now stops the run at start
    ("LAKE_URL", "ftp://files.example/lake"),
    ("LAKE_URL", "memory://lake"),
    ("LAKE_URL", "nosuchproto://lake"),
    ("LAKE_URL", "s3://"),
    ("LAKE_URL", "s3:///prefix"),
    ("EXPORTS_URL", "memory://exports"),
    ("EXPORTS_URL", "s3://"),
    ("EXPORTS_URL", "gs://bucket/exports"),
    ("SIGNING_KEY", " " * 40),
    ("SIGNING_KEY", "\t" * 40),
    ("SIGNING_KEY", "k" * 40),
    ("SIGNING_KEY", "abababababababababababababababab"),
    ("SIGNING_KEY", " " + "0123456789abcdef" * 2),
    ("WEBHOOK_SECRET", " " * 40),
    ("WEBHOOK_SECRET", "x" * 40),
    ("MAIL_FROM", "a@b.example, evil@x.example"),
    ("MAIL_FROM", "Exports <a@b.example>, evil@x.example"),
    ("MAIL_FROM", "@"),
    ("MAIL_FROM", "a@"),
    ("MAIL_FROM", "<>"),
    ("PUBLIC_URL", "https://downloads.example\r\nX-Injected: 1"),
    ("PUBLIC_URL", "https://downloads.example/\n"),
    ("PUBLIC_URL", "https://downloads.example/?token=1"),
    ("PUBLIC_URL", "https://downloads.example/#top"),
    ("PUBLIC_URL", "https://user:pw@downloads.example"),
    ("S3_ENDPOINT_URL", "http://AKIA123:secret@minio:9000"),
    ("S3_ENDPOINT_URL", "http://AKIA123@minio:9000"),
    ("S3_ENDPOINT_URL", "http://minio:9000/?X-Amz-Credential=AKIA123"),
]

VALID = [
    ("LAKE_URL", "s3://bucket"),
    ("LAKE_URL", "s3://bucket/lake"),
    ("LAKE_URL", "file:///srv/lake"),
    ("LAKE_URL", "/srv/lake"),
    ("LAKE_URL", "relative/lake"),
    ("EXPORTS_URL", "s3a://bucket/exports/"),
    ("SIGNING_KEY", "0123456789abcdef" * 2),
    ("SIGNING_KEY", "test-signing-key-" + "x" * 32),
    ("MAIL_FROM", "Course Exports <exports@school.example>"),
    ("MAIL_FROM", '"Exports, School" <exports@school.example>'),
    ("PUBLIC_URL", "https://downloads.example/exports/"),
    ("S3_ENDPOINT_URL", "http://127.0.0.1:9000"),
]


@pytest.mark.parametrize(("name", "value"), VALID)
def test_valid_setting_is_accepted(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    clean_env.setenv(f"COURSE_EXPORT_{name}", value)
    load_settings()


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_invalid_setting_names_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(f"COURSE_EXPORT_{name}", value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert err.value.variable == f"COURSE_EXPORT_{name}"
    assert f"COURSE_EXPORT_{name}" in str(err.value)


def test_every_variable_has_an_invalid_case() -> None:
    from course_exports.settings import Settings

    assert {name.lower() for name, _ in INVALID} == set(Settings.model_fields)


def test_env_file_in_working_directory(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "COURSE_EXPORT_EXPORT_TTL_DAYS=3\n"
        "COURSE_EXPORT_MAIL_FROM=robot@school.example\n"
        f"COURSE_EXPORT_SIGNING_KEY={'0123456789abcdef' * 2}\n"
    )
    clean_env.setenv("COURSE_EXPORT_MAIL_FROM", "env-wins@school.example")
    settings = load_settings()
    assert settings.export_ttl_days == 3
    assert settings.require_signing_key() == b"0123456789abcdef" * 2
    assert settings.mail_from == "env-wins@school.example"  # the environment beats .env


def test_invalid_value_in_env_file_names_the_variable(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("COURSE_EXPORT_EXPORT_TTL_DAYS=-1\n")
    with pytest.raises(SettingsError, match="COURSE_EXPORT_EXPORT_TTL_DAYS"):
        load_settings()


def test_smtp_url_parsing(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(
        "COURSE_EXPORT_SMTP_URL",
        "smtp://me%40school.example:p%3Aw%2F@mail.example:587?starttls=true",
    )
    smtp = load_settings().smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.ssl, smtp.starttls) == ("mail.example", 587, False, True)
    assert (smtp.username, smtp.password) == ("me@school.example", "p:w/")


@pytest.mark.parametrize(
    ("url", "port", "ssl", "starttls"),
    [
        ("smtp://mail.example", 25, False, False),
        ("smtp://mail.example?starttls=false", 25, False, False),
        ("smtp://mail.example:2525?starttls=1", 2525, False, True),
        ("smtp://mail.example?starttls=YES", 25, False, True),
        ("smtps://mail.example", 465, True, False),
    ],
)
def test_smtp_flags(url: str, port: int, ssl: bool, starttls: bool) -> None:
    smtp = SmtpConfig(url)
    assert (smtp.port, smtp.ssl, smtp.starttls) == (port, ssl, starttls)
    assert smtp.username is None and smtp.password is None
