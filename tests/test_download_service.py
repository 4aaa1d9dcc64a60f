"""The download service against real servers: uvicorn for the app, SeaweedFS for S3."""

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from course_exports import export_records, links, registry
from course_exports.errors import SettingsError
from course_exports.export_records import ExportKind, ExportRecord, ExportStatus
from course_exports.settings import Settings
from course_exports.storage import Location
from deployments.download_service import content_disposition, create_app, main

KEY = "download-service-test-key-0123456789"
OTHER_KEY = b"o" * 32
TTL = timedelta(days=7)


@dataclass
class Service:
    base_url: str
    settings: Settings
    exports: Location
    key: bytes

    def link(self, record: ExportRecord, expires_at: datetime | None = None) -> str:
        return links.download_url(
            self.base_url,
            self.key,
            record.course_id,
            record.export_id,
            expires_at or record.expires_at,
        )

    def publish(
        self,
        data: bytes,
        *,
        course_id: int = 1042,
        file_name: str = "access.csv",
        kind: ExportKind = ExportKind.ACCESS_DATA,
        now: datetime | None = None,
        ready: bool = True,
    ) -> ExportRecord:
        """An export made by the registry's own code, as a flow makes it."""
        record = registry.begin_export(
            self.exports,
            kind=kind,
            course_id=course_id,
            course_name="Intro to Python",
            requested_by=7,
            request_id=None,
            parameters={},
            file_name=file_name,
            ttl=TTL,
            now=now,
        )
        with registry.open_export_file(self.exports, record) as out:
            out.write(data)
        if not ready:
            return record
        return registry.publish(
            self.exports,
            record,
            size_bytes=out.size,
            sha256=out.sha256,
            counts={"events": data.count(b"\n")},
        )


def _start(
    serve_app: Callable[..., Any], port: int, exports_url: str, endpoint: str | None = None
) -> Iterator[Service]:
    base_url = f"http://127.0.0.1:{port}"
    settings = Settings(
        lake_url="./unused-lake",
        exports_url=exports_url,
        signing_key=KEY,  # type: ignore[arg-type]
        public_url=base_url,
        s3_endpoint_url=endpoint,
    )
    with serve_app(create_app(settings), port=port) as served:
        assert served == base_url
        yield Service(base_url, settings, settings.exports(), KEY.encode())


@pytest.fixture(scope="module")
def local(
    serve_app: Callable[..., Any],
    get_free_port: Callable[[], int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("local-service")
    yield from _start(serve_app, get_free_port(), str(root / "exports"))


@pytest.fixture(scope="module")
def s3(
    serve_app: Callable[..., Any], get_free_port: Callable[[], int], s3_server: Any
) -> Iterator[Service]:
    bucket = s3_server.make_bucket("exports")
    yield from _start(serve_app, get_free_port(), f"s3://{bucket}/exports", s3_server.endpoint_url)


def payload(size: int = 50_000) -> bytes:
    row = 'Zoë,zoe@school.example,"O\'Brien, Jr.",2026-05-01T13:45:12+00:00\r\n'.encode()
    return (row * (size // len(row) + 1))[:size]


# -- local storage ------------------------------------------------------------------------


def test_healthz(local: Service) -> None:
    response = httpx.get(f"{local.base_url}/healthz")
    assert (response.status_code, response.text) == (200, "ok")


def test_local_download_is_byte_identical(local: Service) -> None:
    data = payload()
    record = local.publish(data, file_name="Einführung – Zugriffe.csv")
    response = httpx.get(local.link(record))
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-disposition"] == (
        'attachment; filename="Einfuhrung Zugriffe.csv"; '
        "filename*=UTF-8''Einf%C3%BChrung%20%E2%80%93%20Zugriffe.csv"
    )
    assert "no-store" in response.headers["cache-control"]


def test_zip_content_type(local: Service) -> None:
    record = local.publish(
        b"PK\x05\x06" + bytes(18), file_name="course.zip", kind=ExportKind.COURSE
    )
    response = httpx.get(local.link(record))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"


def test_range_request(local: Service) -> None:
    data = payload()
    record = local.publish(data)
    response = httpx.get(local.link(record), headers={"Range": "bytes=100-199"})
    assert response.status_code == 206
    assert response.content == data[100:200]
    assert response.headers["content-range"] == f"bytes 100-199/{len(data)}"
    # Resuming with If-Range: the ETag (the sha256) still matches, so the range is served.
    etag = f'"{record.sha256}"'
    resumed = httpx.get(local.link(record), headers={"Range": "bytes=49000-", "If-Range": etag})
    assert resumed.status_code == 206 and resumed.content == data[49000:]


def test_head_and_conditional_get(local: Service) -> None:
    data = payload(1234)
    record = local.publish(data)
    head = httpx.head(local.link(record))
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == "1234"
    assert head.headers["etag"] == f'"{record.sha256}"'
    cached = httpx.get(local.link(record), headers={"If-None-Match": head.headers["etag"]})
    assert cached.status_code == 304 and cached.content == b""


def test_bad_tokens_get_404(local: Service) -> None:
    record = local.publish(payload(100))
    good = local.link(record)
    token = good.rsplit("/", 1)[1]
    body, mac = token.split(".")
    tampered_mac = f"{body}.{('A' if mac[0] != 'A' else 'B')}{mac[1:]}"
    other_key = links.download_url(
        local.base_url, OTHER_KEY, record.course_id, record.export_id, record.expires_at
    )
    unknown = links.download_url(
        local.base_url, local.key, record.course_id, uuid.uuid4().hex, record.expires_at
    )
    wrong_course = links.download_url(
        local.base_url, local.key, record.course_id + 1, record.export_id, record.expires_at
    )
    launch_token = links.launch_url(
        local.base_url, local.key, record.course_id, record.requested_by
    ).rsplit("token=", 1)[1]
    for url in (
        f"{local.base_url}/d/{tampered_mac}",
        f"{local.base_url}/d/{body[:-2]}{mac[:2]}.{mac}",
        f"{local.base_url}/d/not-a-token",
        f"{local.base_url}/d/{launch_token}",
        f"{local.base_url}/d/..%2F..%2Fetc%2Fpasswd",
        other_key,
        unknown,
        wrong_course,
    ):
        response = httpx.get(url)
        assert response.status_code == 404, url
        assert response.text == "Not Found"
    assert httpx.get(good).status_code == 200


def test_expired_token_gets_410(local: Service) -> None:
    record = local.publish(payload(100))
    expired = local.link(record, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert httpx.get(expired).status_code == 410


def test_pending_export_gets_404(local: Service) -> None:
    record = local.publish(payload(100), ready=False)
    assert record.status is ExportStatus.PENDING
    assert httpx.get(local.link(record)).status_code == 404


def test_export_past_expires_at_gets_410_even_with_valid_token(local: Service) -> None:
    old = datetime.now(UTC) - TTL - timedelta(hours=1)
    record = local.publish(payload(100), now=old)
    assert record.expires_at < datetime.now(UTC)
    still_valid = local.link(record, expires_at=datetime.now(UTC) + timedelta(days=1))
    assert httpx.get(still_valid).status_code == 410


def test_manifest_marked_expired_gets_410(local: Service) -> None:
    record = local.publish(payload(100))
    export_records.write_record(
        local.exports, record.model_copy(update={"status": ExportStatus.EXPIRED})
    )
    assert httpx.get(local.link(record)).status_code == 410


def test_ready_export_whose_file_is_gone_gets_404(local: Service) -> None:
    record = local.publish(payload(100))
    os.remove(local.exports.path(registry.file_path(local.exports, record)))
    assert httpx.get(local.link(record)).status_code == 404


def test_file_changed_after_publish_is_not_served(local: Service) -> None:
    record = local.publish(payload(100))
    Path(local.exports.path(registry.file_path(local.exports, record))).write_bytes(b"truncated")
    assert httpx.get(local.link(record)).status_code == 500


def test_symlink_out_of_the_exports_root_gets_404(local: Service, tmp_path: Path) -> None:
    data = payload(100)
    record = local.publish(data)
    secret = tmp_path / "outside" / "secret.csv"
    secret.parent.mkdir()
    secret.write_bytes(data)  # same size and hash: only the location is wrong
    inside = Path(local.exports.path(registry.file_path(local.exports, record)))
    inside.unlink()
    inside.symlink_to(secret)
    assert httpx.get(local.link(record)).status_code == 404
    assert httpx.head(local.link(record)).status_code == 404


def test_symlinked_export_folder_out_of_the_root_gets_404(local: Service, tmp_path: Path) -> None:
    record = local.publish(payload(100))
    folder = Path(
        local.exports.path(
            export_records.export_dir(local.exports, record.course_id, record.export_id)
        )
    )
    moved = tmp_path / "moved"
    folder.rename(moved)
    folder.symlink_to(moved, target_is_directory=True)
    assert httpx.get(local.link(record)).status_code == 404


def point_manifest_at(exports: Location, record: ExportRecord, file_name: str) -> None:
    """Rewrite ``record``'s manifest on storage as a careless or hostile writer would,
    past the model's own checks."""
    path = f"{export_records.export_dir(exports, record.course_id, record.export_id)}/manifest.json"
    document = json.loads(exports.read_bytes(path))
    exports.write_bytes_atomic(json.dumps({**document, "file_name": file_name}).encode(), path)


@pytest.mark.parametrize("shape", ["../{other}/access.csv", "..", "/etc/passwd", "a\\b.csv"])
def test_manifest_file_name_must_be_a_bare_name(local: Service, shape: str) -> None:
    data = payload(200)
    other = local.publish(data, course_id=6001)
    record = local.publish(data, course_id=6001)  # same size and hash: only the name lies
    point_manifest_at(local.exports, record, shape.format(other=other.export_id))
    assert httpx.get(local.link(record)).status_code == 404
    assert httpx.get(local.link(other)).content == data


# -- settings -----------------------------------------------------------------------------


def test_startup_needs_the_signing_key(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SettingsError, match="COURSE_EXPORT_SIGNING_KEY"):
        create_app(Settings(exports_url=str(tmp_path)))
    assert main([]) == 2
    assert "COURSE_EXPORT_SIGNING_KEY" in capsys.readouterr().err


def test_content_disposition_fallbacks() -> None:
    assert content_disposition("a.csv") == "attachment; filename=\"a.csv\"; filename*=UTF-8''a.csv"
    assert content_disposition('we"ird\\name.zip').startswith(
        'attachment; filename="we_ird_name.zip";'
    )
    assert content_disposition("数据.csv").startswith('attachment; filename="download.csv";')


def test_content_disposition_drops_bidi_controls() -> None:
    """``Intro\u202ecod.exe`` would show as ``Intro exe.doc`` in a save dialog."""
    header = content_disposition("Intro\u202egpj.exe (1042).zip")
    assert header == (
        'attachment; filename="Introgpj.exe (1042).zip"; '
        "filename*=UTF-8''Introgpj.exe%20%281042%29.zip"
    )


# -- S3 -----------------------------------------------------------------------------------


def test_s3_download_redirects_to_a_sigv4_presigned_url(s3: Service) -> None:
    data = payload(200_000)
    record = s3.publish(data, file_name="Zugriffe Ü.csv")
    response = httpx.get(s3.link(record))
    assert response.status_code == 307
    assert "no-store" in response.headers["cache-control"]
    location = response.headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["300"]
    assert "attachment" in query["response-content-disposition"][0]

    fetched = httpx.get(location)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["content-disposition"] == content_disposition("Zugriffe Ü.csv")

    assert httpx.head(s3.link(record)).status_code == 307


def test_s3_checks_the_manifest_too(s3: Service) -> None:
    pending = s3.publish(payload(10), ready=False)
    assert httpx.get(s3.link(pending)).status_code == 404
    old = s3.publish(payload(10), now=datetime.now(UTC) - TTL - timedelta(hours=1))
    later = datetime.now(UTC) + timedelta(days=1)
    assert httpx.get(s3.link(old, expires_at=later)).status_code == 410
    gone = s3.publish(payload(10))
    s3.exports.delete(registry.file_path(s3.exports, gone))
    assert httpx.get(s3.link(gone)).status_code == 404


def test_s3_manifest_file_name_must_be_a_bare_name(s3: Service) -> None:
    other = s3.publish(payload(50), course_id=6002)
    record = s3.publish(payload(50), course_id=6002)
    point_manifest_at(s3.exports, record, f"../{other.export_id}/access.csv")
    response = httpx.get(s3.link(record), follow_redirects=False)
    assert response.status_code == 404
