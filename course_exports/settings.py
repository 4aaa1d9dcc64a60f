"""Settings (CONTRACT section 1): read once from the environment or a ``.env`` file."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from course_exports.errors import SettingsError
from course_exports.storage import Location, open_location

ENV_PREFIX = "COURSE_EXPORT_"


class SmtpConfig:
    """A parsed ``smtp://`` / ``smtps://`` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("has no host")
        self.ssl = parts.scheme == "smtps"
        self.host: str = parts.hostname
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"has an invalid port ({exc})") from None
        self.port: int = port or (465 if self.ssl else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        query = parse_qs(parts.query)
        starttls = query.get("starttls", ["false"])[-1].lower()
        if starttls not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"starttls={starttls!r} is not true or false")
        self.starttls = starttls in ("true", "1", "yes")


class Settings(BaseSettings):
    """Every setting of CONTRACT section 1. Field names are the variables without the prefix."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    lake_url: str = Field("./var/lake", description="root of the LMS data")
    exports_url: str = Field("./var/exports", description="root under which exports are written")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint for s3:// URLs")
    public_url: str = Field("http://127.0.0.1:8765", description="base URL of the download service")
    signing_key: SecretStr | None = Field(None, description="secret for download links")
    smtp_url: SecretStr | None = Field(None, description="SMTP server URL; unset: write .eml files")
    outbox: str = Field("./var/outbox", description="folder for .eml files")
    mail_from: str = Field("exports@localhost", description="sender address")
    export_ttl_days: int = Field(
        7, ge=1, le=3650, description="how long an export and its link live"
    )
    access_retention_months: int = Field(6, ge=1, le=120, description="access events kept")
    webhook_url: str | None = Field(None, description="LMS endpoint told when an export ends")
    # validate_default: an unset secret must still be checked against a set URL.
    webhook_secret: SecretStr | None = Field(
        None, validate_default=True, description="HMAC key signing the webhook"
    )

    @field_validator("lake_url", "exports_url", "outbox")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value.strip()

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        secret = value.get_secret_value() if value is not None else ""
        if not secret:
            if info.data.get("webhook_url"):
                raise ValueError(f"is required when {ENV_PREFIX}WEBHOOK_URL is set")
            return None
        if len(secret) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        SmtpConfig(value.get_secret_value())
        return value

    @field_validator("mail_from")
    @classmethod
    def _address(cls, value: str) -> str:
        if "@" not in value or any(c in value for c in "\r\n"):
            raise ValueError("must be an e-mail address")
        return value

    @field_validator("signing_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (use `make secret`)")
        return value

    # -- derived --------------------------------------------------------------------

    def require_signing_key(self) -> bytes:
        if self.signing_key is None:
            raise SettingsError(
                f"{ENV_PREFIX}SIGNING_KEY",
                "is not set; download links cannot be signed (run `make demo` once, "
                "or set it to a random string of 32+ characters)",
            )
        return self.signing_key.get_secret_value().encode()

    @property
    def smtp(self) -> SmtpConfig | None:
        return SmtpConfig(self.smtp_url.get_secret_value()) if self.smtp_url else None

    def lake(self) -> Location:
        return open_location(self.lake_url, s3_endpoint_url=self.s3_endpoint_url)

    def exports(self) -> Location:
        return open_location(self.exports_url, s3_endpoint_url=self.s3_endpoint_url)

    def outbox_path(self) -> Path:
        return Path(self.outbox).expanduser().resolve()


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into an error naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise SettingsError(f"{ENV_PREFIX}{field.upper()}", first["msg"]) from None
