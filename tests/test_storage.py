"""The storage interface, the same tests on a local folder and on S3 (SeaweedFS)."""

from __future__ import annotations

import io
import posixpath
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seaweed import SeaweedFS
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from course_exports.storage import (
    FileDownload,
    LocalLocation,
    Location,
    ObjectChangedError,
    ObjectTooLargeError,
    RedirectDownload,
    SizedReader,
    open_location,
)
from course_exports.storage.base import join as storage_join


@pytest.fixture(params=["local", "s3"])
def loc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Location]:
    if request.param == "local":
        yield open_location(str(tmp_path / "root"))
    else:
        s3: SeaweedFS = request.getfixturevalue("s3_server")
        bucket = s3.make_bucket("storage")
        yield open_location(f"s3://{bucket}/some/root", s3_endpoint_url=s3.endpoint_url)


def test_small_objects(loc: Location) -> None:
    assert not loc.exists("a", "b.txt")
    with pytest.raises(FileNotFoundError):
        loc.read_bytes("a", "b.txt")
    loc.write_bytes_atomic(b"hello", "a", "b.txt")
    loc.write_bytes_atomic(b"hello again", "a/b.txt")  # a part may hold slashes
    assert loc.exists("a", "b.txt")
    assert not loc.exists("a")  # a folder is not an object
    assert loc.read_bytes("a", "b.txt") == b"hello again"
    assert loc.read_bytes("a", "b.txt", max_bytes=11) == b"hello again"
    with pytest.raises(ObjectTooLargeError) as caught:
        loc.read_bytes("a", "b.txt", max_bytes=10)
    assert caught.value.size == 11 and caught.value.url == loc.url_for("a", "b.txt")
    assert loc.read_many(["a/b.txt", "a/b.txt"]) == [b"hello again"] * 2
    with loc.open_read("a", "b.txt") as fh:
        assert fh.read() == b"hello again"


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["/", "/srv/lake", "/srv/lake/", "relative/root", "//net"]),
    st.lists(
        st.one_of(st.text(alphabet="ab/.", max_size=6), st.integers(0, 99)),
        min_size=1,
        max_size=3,
    ),
)
def test_a_local_path_is_the_root_joined_with_the_parts(root: str, parts: list[Any]) -> None:
    # join's one-relative-path shortcut (what the zip takes 100,000 times) and the root
    # put in front must give what the rule says, whatever the root and the parts.
    location = LocalLocation(root)
    rel = "/".join(str(p).strip("/") for p in parts if str(p) not in ("", "/"))
    assert storage_join(*parts) == rel
    want = posixpath.join(location.root, rel) if rel else location.root
    assert location._abs(*parts) == want
    if len(parts) == 1 and isinstance(parts[0], str):
        assert location.shared_path(parts[0]) == want


def test_a_shared_path_reads_the_same_bytes_in_another_process(loc: Location) -> None:
    """Where storage gives a path, the zip's packer processes read the file by it."""
    loc.write_bytes_atomic(b"shared bytes", "w", "f.txt")
    path = loc.shared_path("w/f.txt")
    if isinstance(loc, LocalLocation):
        assert path is not None
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys; sys.stdout.buffer.write(open({path!r}, 'rb').read())",
            ],
            capture_output=True,
            check=True,
        )
        assert child.stdout == loc.read_file("w/f.txt", 12) == b"shared bytes"
    else:
        assert path is None  # S3 reads go through a client


def test_create_exclusive_is_one_winner(loc: Location) -> None:
    assert loc.create_exclusive(b"first", "claims", "c.json")
    assert not loc.create_exclusive(b"second", "claims", "c.json")
    assert loc.read_bytes("claims", "c.json") == b"first"

    wins: list[int] = []
    barrier = threading.Barrier(6)

    def claim(n: int) -> None:
        barrier.wait()
        if loc.create_exclusive(str(n).encode(), "claims", "race.json"):
            wins.append(n)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert loc.read_bytes("claims", "race.json") == str(wins[0]).encode()
    assert sorted(e.path for e in loc.iter_files("claims")) == ["claims/c.json", "claims/race.json"]


def test_listing_is_relative_and_streamed(loc: Location) -> None:
    names = ["w/1/a.txt", "w/1/b/c.txt", "w/1-x/d.txt", "w/10/e.txt", "w/1.txt", "other/f.txt"]
    for i, name in enumerate(names):
        loc.write_bytes_atomic(b"x" * i, name)
    entries = list(loc.iter_files("w"))
    # In no promised order: AWS lists in key order, SeaweedFS folder by folder.
    assert sorted(e.path for e in entries) == sorted(n for n in names if n.startswith("w/"))
    assert {e.path: e.size for e in entries} == {
        n: i for i, n in enumerate(names) if n.startswith("w/")
    }
    assert all(e.mtime.tzinfo is not None and e.etag for e in entries)
    assert sorted(e.path for e in loc.iter_files("w", 1)) == [
        "w/1/a.txt",
        "w/1/b/c.txt",
    ]  # not w/10
    assert list(loc.iter_files("nothing", "here")) == []
    assert len(list(loc.iter_files())) == len(names)
    assert loc.list_names("w") == ["1", "1-x", "1.txt", "10"]
    assert loc.list_names() == ["other", "w"]
    assert loc.list_names("nothing") == []
    listing = loc.iter_files("w")
    assert next(listing).path in names  # an iterator, not a list
    # Paths and sizes (and tags) alone: the same listing, in the same order.
    for parts in (("w",), ("w", 1), ("nothing",), ()):
        assert list(loc.iter_sizes(*parts)) == [(e.path, e.size) for e in loc.iter_files(*parts)]
        assert list(loc.iter_tags(*parts)) == [
            (e.path, e.size, e.etag) for e in loc.iter_files(*parts)
        ]


def test_etag_changes_with_content(loc: Location) -> None:
    loc.write_bytes_atomic(b"one", "t.bin")
    [before] = loc.iter_files()
    loc.write_bytes_atomic(b"two!", "t.bin")
    [after] = loc.iter_files()
    assert before.etag != after.etag and after.size == 4


def test_streaming_write_appears_only_when_complete(loc: Location) -> None:
    big = bytes(range(256)) * (12 * 2**20 // 256)  # 12 MiB: three 5 MiB parts on S3
    with loc.open_write("out", "big.bin", part_bytes=5 * 2**20) as out:
        for start in range(0, len(big), 2**20):
            out.write(big[start : start + 2**20])
    assert loc.read_bytes("out", "big.bin") == big
    with loc.open_read("out", "big.bin") as fh:  # streamed, larger than one whole read
        got = b"".join(iter(lambda: fh.read(300_001), b""))
    assert got == big

    with (
        pytest.raises(RuntimeError),
        loc.open_write("out", "failed.bin", part_bytes=5 * 2**20) as out,
    ):
        out.write(big)
        raise RuntimeError("the pipeline failed")
    assert not loc.exists("out", "failed.bin")
    assert [e.path for e in loc.iter_files("out")] == ["out/big.bin"]  # no temporary file left
    assert list(loc.pending_uploads()) == []  # the multipart upload was aborted


def test_writers_take_open_write(loc: Location) -> None:
    """pyarrow and zipfile write into it as into a file (they check closed, call tell)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"x": list(range(1000))})
    with loc.open_write("t.parquet") as out:
        pq.write_table(table, out)
    with loc.open_seekable("t.parquet") as fh:
        assert pq.read_table(fh).equals(table)
    with loc.open_write("t.zip") as out, zipfile.ZipFile(out, "w") as zf:
        zf.writestr("a.txt", "zipped")
    with loc.open_seekable("t.zip") as fh, zipfile.ZipFile(fh) as zf:
        assert zf.read("a.txt") == b"zipped"


def test_seekable_reads(loc: Location) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("x/y.txt", "inside")
    loc.write_bytes_atomic(buffer.getvalue(), "a.zip")
    with loc.open_seekable("a.zip") as fh, zipfile.ZipFile(fh) as zf:
        assert zf.read("x/y.txt") == b"inside"


def test_a_seekable_file_never_mixes_two_versions(loc: Location) -> None:
    """An object replaced while it is read (an import's archive, hashed and then read
    again): the open file goes on reading the version it opened, or refuses."""
    old, new = bytes(range(256)) * 8_192, bytes(reversed(range(256))) * 8_192  # 2 MiB each
    loc.write_bytes_atomic(old, "v.bin")
    with loc.open_seekable("v.bin") as fh:
        assert fh.read(1000) == old[:1000]
        loc.write_bytes_atomic(new, "v.bin")
        try:
            fh.seek(0)
            rest = fh.read()
        except ObjectChangedError as exc:
            assert exc.url == loc.url_for("v.bin") and "replaced" in str(exc)
            assert isinstance(exc, OSError)  # read again from the start: an I/O error
        else:
            assert rest == old  # the open file kept the old version (a folder)
    with loc.open_seekable("v.bin") as fh:
        assert fh.read() == new


@pytest.mark.parametrize("name", ["plain.bin", "odd\x01name.bin"], ids=["obstore", "botocore"])
def test_tail_and_range_reads(loc: Location, name: str) -> None:
    """One request each: the end of an object with its size, and a byte range; past
    the end they give what is there. The odd name is one object_store cannot name."""
    data = bytes(range(256)) * 40  # 10,240 bytes
    loc.write_bytes_atomic(data, "r", name)
    path = f"r/{name}"
    assert loc.read_tail(path, 100) == (data[-100:], len(data))
    assert loc.read_tail(path, 1) == (data[-1:], len(data))
    assert loc.read_tail(path, len(data)) == (data, len(data))
    assert loc.read_tail(path, 10**9) == (data, len(data))  # more than the object holds
    assert loc.read_range(path, 300, 4_000) == data[300:4_000]
    assert loc.read_range(path, 10_000, 20_000) == data[10_000:]  # runs past the end
    assert loc.read_range(path, len(data), len(data) + 5) == b""  # starts past it
    loc.write_bytes_atomic(b"", "r", f"empty-{name}")
    assert loc.read_tail(f"r/empty-{name}", 64) == (b"", 0)  # S3 answers 416 to any range
    assert loc.read_range(f"r/empty-{name}", 0, 10) == b""
    for missing in ("r/absent", "absent\x01"):
        with pytest.raises(FileNotFoundError):
            loc.read_tail(missing, 10)
        with pytest.raises(FileNotFoundError):
            loc.read_range(missing, 0, 10)
    with pytest.raises(ValueError):
        loc.read_tail(path, 0)
    with pytest.raises(ValueError):
        loc.read_range(path, 5, 5)


def test_many_range_reads_each_with_its_own_outcome(loc: Location) -> None:
    """Each range its bytes, in order, or the error its read raised: one object gone
    does not take the others' bytes with it."""
    data = bytes(range(256)) * 8
    for name in ("a", "b"):
        loc.write_bytes_atomic(name.encode() + data, "m", name)
    got = loc.read_ranges(
        [("m/b", 0, 10), ("m/absent", 0, 10), ("m/a", 1, 300), ("m/a", 5_000, 6_000)]
    )
    assert got[0] == (b"b" + data)[:10] and got[2] == data[:299] and got[3] == b""
    assert isinstance(got[1], FileNotFoundError)
    assert loc.read_ranges([]) == []
    with pytest.raises(ValueError):  # a caller's mistake is raised, not an outcome
        loc.read_ranges([("m/a", 0, 10), ("m/a", 5, 5)])


def test_deletes(loc: Location) -> None:
    for name in ["d/1/a", "d/1/b", "d/2/c", "keep/x"]:
        loc.write_bytes_atomic(b"1", name)
    loc.delete("d", "1", "a")
    loc.delete("d", "1", "a")  # absent: fine
    loc.delete_many(["d/1/b", "d/missing"])
    assert [e.path for e in loc.iter_files("d")] == ["d/2/c"]
    loc.write_bytes_atomic(b"1", "d/3/deep/e")
    assert loc.delete_tree("d") == 2
    assert loc.delete_tree("d") == 0
    assert [e.path for e in loc.iter_files()] == ["keep/x"]


def test_pending_uploads_listed_and_aborted(s3_server: SeaweedFS) -> None:
    bucket = s3_server.make_bucket("uploads")
    loc = open_location(f"s3://{bucket}/exports", s3_endpoint_url=s3_server.endpoint_url)
    client = s3_server.client()
    ids = {}
    for key in ("exports/7/abc/course.zip", "elsewhere/x.zip"):
        ids[key] = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    [upload] = loc.pending_uploads()
    assert upload.path == "7/abc/course.zip" and upload.upload_id == ids[f"exports/{upload.path}"]
    assert upload.initiated.tzinfo is not None
    assert list(loc.pending_uploads("8")) == []
    loc.abort_upload(upload.path, upload.upload_id)
    loc.abort_upload(upload.path, upload.upload_id)  # gone already: fine
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["elsewhere/x.zip"]
    assert list(open_location(str(Path("/nonexistent"))).pending_uploads()) == []


def _fetch(download: Any, headers: dict[str, str]) -> httpx.Response:
    """What a browser gets from the handle's response, served by a real app."""

    async def endpoint(request: Request) -> Response:
        return download.respond(  # type: ignore[no-any-return]
            request, headers={"X-Test": "1"}, media_type="application/zip", etag='"e1"'
        )

    app = Starlette(routes=[Route("/d", endpoint)])
    transport = httpx.ASGITransport(app=app)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/d", headers=headers)

    import asyncio

    return asyncio.run(go())


def test_download_handles(loc: Location) -> None:
    disposition = "attachment; filename=\"x.zip\"; filename*=UTF-8''%C3%A4.zip"
    kwargs = {
        "content_disposition": disposition,
        "content_type": "application/zip",
        "expires_s": 60,
    }
    assert loc.download("missing.zip", **kwargs) is None  # type: ignore[arg-type]
    loc.write_bytes_atomic(b"PK data", "7", "e", "x.zip")
    handle = loc.download("7", "e", "x.zip", **kwargs)  # type: ignore[arg-type]
    assert handle is not None and handle.size == 7
    response = _fetch(handle, {})
    if isinstance(handle, RedirectDownload):
        assert response.status_code == 307
        assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in handle.url
        fetched = httpx.get(handle.url, timeout=30)
        assert fetched.content == b"PK data"
        assert fetched.headers["content-disposition"] == disposition
        assert fetched.headers["content-type"] == "application/zip"
        tampered = httpx.get(handle.url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
        assert tampered.status_code == 403
    else:
        assert isinstance(handle, FileDownload)
        assert response.status_code == 200 and response.content == b"PK data"
        assert response.headers["etag"] == '"e1"' and response.headers["x-test"] == "1"
        assert _fetch(handle, {"If-None-Match": '"e1"'}).status_code == 304


def test_local_listing_leaves_links_out(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret").write_text("no")
    loc = open_location(str(tmp_path / "root"))
    loc.write_bytes_atomic(b"1", "w", "file")
    (tmp_path / "root" / "w" / "dir-link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "root" / "w" / "file-link").symlink_to(tmp_path / "elsewhere" / "secret")
    assert [e.path for e in loc.iter_files()] == ["w/file"]


def test_local_download_never_leaves_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("no")
    loc = open_location(str(tmp_path / "root"))
    (tmp_path / "root" / "7").mkdir(parents=True)
    (tmp_path / "root" / "7" / "link.zip").symlink_to(outside)
    kwargs = {"content_disposition": "attachment", "content_type": "text/plain", "expires_s": 60}
    assert loc.download("7", "link.zip", **kwargs) is None  # type: ignore[arg-type]
    (tmp_path / "root" / "7" / "dir.zip").mkdir()
    assert loc.download("7", "dir.zip", **kwargs) is None  # type: ignore[arg-type]


# Names a student may give a file: any text, including what S3 clients trip over
# (control characters, which object_store refuses to name, percent signs, spaces).
# Not a backslash: SeaweedFS stores it as "/" (AWS does not).
_NAMES = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="/\\\x00"),
    min_size=1,
    max_size=20,
).filter(lambda n: n not in (".", "..") and len(n.encode()) < 200)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=st.lists(_NAMES, min_size=1, max_size=4, unique=True))
def test_any_file_name_round_trips(loc: Location, names: list[str]) -> None:
    folder = "names"
    loc.delete_tree(folder)
    for i, name in enumerate(names):
        loc.write_bytes_atomic(str(i).encode(), folder, "u", name)
    listed = {e.path: e for e in loc.iter_files(folder)}
    assert sorted(listed) == sorted(f"{folder}/u/{n}" for n in names)
    for i, name in enumerate(names):
        path = f"{folder}/u/{name}"
        assert loc.read_bytes(path) == str(i).encode()
        with loc.open_read(path) as fh:
            assert fh.read() == str(i).encode()
    loc.delete_many(listed)
    assert list(loc.iter_files(folder)) == []


def test_s3_faults_are_retried_then_raised_as_os_errors(s3_server: SeaweedFS) -> None:
    """A 500 is retried by the client; past its retries it is an OSError (which the zip
    pipeline retries again), not a client-specific exception."""
    from faults import faulty_proxy

    bucket = s3_server.make_bucket("faults")
    with faulty_proxy(s3_server.endpoint_url) as proxy:
        loc = open_location(f"s3://{bucket}/r", s3_endpoint_url=proxy.url)
        loc.write_bytes_atomic(b"data", "a.txt")
        few = proxy.fail(lambda method, path: method == "GET" and "a.txt" in path, times=2)
        assert loc.read_bytes("a.txt") == b"data" and len(few.hits) == 2
        proxy.fail(lambda method, path: method == "GET" and "a.txt" in path, times=100)
        with pytest.raises(OSError) as caught:
            loc.read_bytes("a.txt")
        assert not isinstance(caught.value, FileNotFoundError)
        with pytest.raises(FileNotFoundError):
            loc.read_bytes("missing.txt")


def test_s3_failed_write_leaves_no_upload_even_through_an_outage(s3_server: SeaweedFS) -> None:
    """The write fails while S3 answers 503 to everything, so the abort fails too: the
    upload is aborted once S3 is back, not left stored."""
    import time

    from faults import faulty_proxy

    bucket = s3_server.make_bucket("outage")
    direct = open_location(f"s3://{bucket}/r", s3_endpoint_url=s3_server.endpoint_url)
    with faulty_proxy(s3_server.endpoint_url) as proxy:
        loc = open_location(f"s3://{bucket}/r", s3_endpoint_url=proxy.url)
        with pytest.raises(RuntimeError), loc.open_write("big.bin", part_bytes=5 * 2**20) as out:
            out.write(b"x" * 11 * 2**20)  # the multipart upload starts
            deadline = time.monotonic() + 30
            while not list(direct.pending_uploads()):
                assert time.monotonic() < deadline, "no multipart upload was started"
                time.sleep(0.2)
            proxy.outage(20)  # longer than the client's own retries
            raise RuntimeError("the pipeline failed during the outage")
    assert list(direct.pending_uploads()) == []
    assert not direct.exists("big.bin")


def test_a_sized_reader_seeks_by_arithmetic_and_refuses_before_the_start() -> None:
    class Letters(SizedReader):
        def readinto(self, out: Any) -> int:
            n = max(0, min(len(out), self._size - self._position))
            out[:n] = b"abcdefghij"[self._position : self._position + n]
            self._position += n
            return n

    raw = Letters(10, "s3://bucket/letters")
    assert (raw.seek(3), raw.read(2), raw.tell()) == (3, b"de", 5)
    assert (raw.seek(2, io.SEEK_CUR), raw.read()) == (7, b"hij")
    assert (raw.seek(-4, io.SEEK_END), raw.read(1)) == (6, b"g")
    assert raw.seek(20) == 20 and raw.read() == b""  # past the end reads nothing, as files do
    with pytest.raises(OSError, match="s3://bucket/letters: seek before the start"):
        raw.seek(-11, io.SEEK_END)
    assert io.BufferedReader(Letters(10, "x")).read() == b"abcdefghij"
