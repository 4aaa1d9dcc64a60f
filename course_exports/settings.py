"""Settings (CONTRACT section 1): read once from the environment or a ``.env`` file."""

from __future__ import annotations

import unicodedata
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from course_exports import webhook
from course_exports.errors import SettingsError
from course_exports.storage import Location, open_location

ENV_PREFIX = "COURSE_EXPORT_"
#: Roots the storage layer knows: a local path (``file://`` or none) or S3.
STORAGE_SCHEMES = ("file", "s3", "s3a")
#: A secret must have at least this many different characters: 32 random hex digits
#: have about 14 (fewer than 8 happens about once in 25 million keys), ``kkkk…`` or
#: ``abab…`` have 1 or 2.
MIN_DISTINCT_SECRET_CHARS = 8
MIN_SIGNING_KEY_CHARS = 32


def _has_control(value: str) -> bool:
    # urlsplit silently drops CR, LF and tab, so a URL is checked before it is parsed.
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value)


def _web_url(value: str, *, credentials: bool = False, query: bool = False) -> SplitResult:
    """``value`` as an http(s) URL, or ValueError saying what is wrong with it."""
    if _has_control(value) or " " in value:
        raise ValueError("must not contain spaces or control characters (CR, LF, tab)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if not credentials and (parts.username is not None or parts.password is not None):
        raise ValueError("must not hold credentials (user:password@); set them elsewhere")
    if not query and (parts.query or "?" in value):
        raise ValueError("must not have a query (?…)")
    if not query and (parts.fragment or "#" in value):
        raise ValueError("must not have a fragment (#…)")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"has an invalid port ({exc})") from None
    return parts


def _storage_url(value: str) -> str:
    """A local path, ``file://…`` or ``s3://bucket[/prefix]``; anything else is refused
    here rather than failing (or writing to memory) in the middle of a run."""
    if _has_control(value):
        raise ValueError("must not contain control characters (CR, LF, tab)")
    if "://" not in value:
        return value  # a local path
    scheme, rest = value.split("://", 1)
    if scheme.lower() not in STORAGE_SCHEMES:
        raise ValueError(
            f"has an unsupported scheme {scheme!r}: use a local path, file:// or s3://bucket"
        )
    if scheme.lower() == "file":
        if not rest.strip("/"):
            raise ValueError("file:// needs a path")
        return value
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise ValueError(f"{scheme}:// needs a bucket: {scheme}://bucket[/prefix]")
    if "@" in bucket or ":" in bucket:
        raise ValueError("must be s3://bucket[/prefix], without credentials or a port")
    return value


def _secret_text(value: str, *, min_chars: int) -> None:
    """A secret typed by a person: long, varied, and without white space around it
    (which a .env file or an LMS form may keep or drop, giving two different keys)."""
    if not value.strip():
        raise ValueError("is only white space")
    if value != value.strip():
        raise ValueError("must not start or end with white space")
    if len(value) < min_chars:
        raise ValueError(f"must be at least {min_chars} characters")
    if len(set(value)) < MIN_DISTINCT_SECRET_CHARS:
        raise ValueError(
            f"must have at least {MIN_DISTINCT_SECRET_CHARS} different characters "
            "(use a random string)"
        )


def _single_mailbox(value: str) -> str:
    """Exactly one address with a local part and a domain (a display name is fine)."""
    if _has_control(value):
        raise ValueError("must not contain control characters (CR, LF, tab)")
    try:
        header = default_policy.header_factory("From", value)
        addresses: tuple[Address, ...] = tuple(getattr(header, "addresses", ()))
    except (HeaderParseError, IndexError, ValueError):
        raise ValueError("must be one e-mail address, name@domain") from None
    if len(addresses) != 1:
        raise ValueError(f"must be exactly one e-mail address (found {len(addresses)})")
    address = addresses[0]
    if header.defects or not address.username or not address.domain:
        raise ValueError("must be one e-mail address, name@domain")
    return value


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
    busy_retry_seconds: int = Field(
        30,
        ge=1,
        le=3600,
        description="how long an export waiting for a busy course or a shared export gives "
        "back its worker before it looks again",
    )
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

    @field_validator("lake_url", "exports_url")
    @classmethod
    def _storage_root(cls, value: str) -> str:
        return _storage_url(value)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        # Every link is this plus a path: a query, fragment or line break would break (or
        # forge) every link and mail.
        _web_url(value)
        return value.rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        # The LMS may protect its endpoint with basic auth or a query key.
        _web_url(value.strip(), credentials=True, query=True)
        return value.strip()

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        secret = value.get_secret_value() if value is not None else ""
        if not secret:
            if info.data.get("webhook_url"):
                raise ValueError(f"is required when {ENV_PREFIX}WEBHOOK_URL is set")
            return None
        webhook.parse_secrets(secret)  # whsec_<base64>, space-separated; says what is wrong
        return SecretStr(secret.strip())

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        # Credentials go in AWS_* variables: a URL ends up in logs and error messages.
        _web_url(value.strip())
        return value.strip()

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
        return _single_mailbox(value)

    @field_validator("signing_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        _secret_text(value.get_secret_value(), min_chars=MIN_SIGNING_KEY_CHARS)
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
