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
]


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
        f"COURSE_EXPORT_SIGNING_KEY={'k' * 32}\n"
    )
    clean_env.setenv("COURSE_EXPORT_MAIL_FROM", "env-wins@school.example")
    settings = load_settings()
    assert settings.export_ttl_days == 3
    assert settings.require_signing_key() == b"k" * 32
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
