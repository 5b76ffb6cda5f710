"""
The registry HTTP API end to end, as the OCI distribution spec describes it.

Every test talks HTTP/1.1 over a loopback socket to the real app (see
C{conftest.py}); bodies are streamed by the real site.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError
from twisted.internet.threads import deferToThread
from twisted.web.client import RequestGenerationFailed, ResponseNeverReceived

from quayd.errors import JSONValue
from quayd.registry.blobs import NUDGE
from quayd.registry.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    OCI_INDEX,
    OCI_MANIFEST,
)
from quayd.registry.uploads import UploadLimits
from tests.http.conftest import MAX_MANIFEST_BYTES, Registry, RegistryFactory, sleep, wait_until
from tests.support.http import Response, StreamingBody
from tests.support.manifests import DOCKER_SCHEMA1_DOCUMENT, encode, image_manifest, index_manifest

REPO = "library/app"
OTHER = "other/app"
MIB = 1024 * 1024
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = b"layer bytes " * 100


def digest_of(data: bytes) -> str:
    """The sha256 digest of C{data} as the registry spells it."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Reproducible incompressible bytes."""
    return random.Random(seed).randbytes(size)


def chunks_of(data: bytes, size: int) -> Iterator[bytes]:
    """C{data} in pieces of C{size} bytes."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def assert_error(response: Response, status: int, code: str | tuple[str, ...]) -> dict[str, JSONValue]:
    """
    Check a spec error response: the status, a JSON body of exactly
    C{{"errors": [{"code", "message"[, "detail"]}]}}, and no traceback.

    @param code: The error code, or the codes the spec leaves a choice between.
    @return: The one error entry.
    """
    assert response.code == status, (response.code, response.body)
    assert (response.header("Content-Type") or "").startswith("application/json")
    assert b"Traceback" not in response.body
    assert b'File "' not in response.body
    document = json.loads(response.body)
    assert list(document) == ["errors"]
    assert len(document["errors"]) == 1
    entry: dict[str, JSONValue] = document["errors"][0]
    assert entry["code"] in ((code,) if isinstance(code, str) else code), entry
    assert isinstance(entry["message"], str)
    assert entry["message"]
    assert set(entry) <= {"code", "message", "detail"}
    return entry


async def push_blob(registry: Registry, repo: str, data: bytes) -> str:
    """Upload C{data} monolithically to C{repo}; returns its digest."""
    digest = digest_of(data)
    response = await registry.client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", body=data)
    assert response.code == 201, response.body
    return digest


async def start_upload(registry: Registry, repo: str = REPO) -> str:
    """Open an upload session; returns its location."""
    response = await registry.client.request("POST", f"/v2/{repo}/blobs/uploads/")
    assert response.code == 202, response.body
    location = response.header("Location")
    assert location is not None
    return location


async def retry_while_busy(
    registry: Registry, send: Callable[[], Awaitable[Response]], attempts: int = 100
) -> Response:
    """
    Send a request on an upload session, again while the session is still
    held by an earlier request that the server has not yet let go of.
    """
    for _ in range(attempts - 1):
        response = await send()
        if response.code != 400 or b"being written by another request" not in response.body:
            return response
        await sleep(0.02)
    return await send()


def _join(location: str, query: str) -> str:
    """Add a query parameter to an upload location (which may carry a query already)."""
    return f"{location}{'&' if '?' in location else '?'}{query}"


async def put_manifest(
    registry: Registry, repo: str, reference: str, content: bytes, media_type: str | None
) -> Response:
    """PUT a manifest's exact bytes."""
    headers = {"Content-Type": media_type} if media_type is not None else {}
    return await registry.client.request(
        "PUT", f"/v2/{repo}/manifests/{reference}", headers=headers, body=content
    )


async def push_image(
    registry: Registry, repo: str, tag: str, media_type: str = OCI_MANIFEST, layer: bytes = LAYER
) -> bytes:
    """Push an image's blobs and its manifest under C{tag}; returns the manifest bytes."""
    await push_blob(registry, repo, CONFIG)
    await push_blob(registry, repo, layer)
    content = image_manifest(media_type, CONFIG, [layer])
    response = await put_manifest(registry, repo, tag, content, media_type)
    assert response.code == 201, response.body
    return content


# Base


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_base_answers_with_version(registry: Registry) -> None:
    """C{GET /v2/} answers 200 with the API version header."""
    response = await registry.client.request("GET", "/v2/")
    assert response.code == 200
    assert response.header("Docker-Distribution-API-Version") == "registry/2.0"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_base_without_slash_is_not_an_error(registry: Registry) -> None:
    """C{GET /v2} redirects to C{/v2/} (or answers it) instead of failing."""
    response = await registry.client.request("GET", "/v2")
    assert response.code in (200, 301, 308), response.body
    if response.code != 200:
        assert (response.header("Location") or "").endswith("/v2/")


# Errors


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/Upper/tags/list", 400, "NAME_INVALID"),
        ("GET", "/v2/a//b/tags/list", 400, "NAME_INVALID"),
        ("GET", "/v2/../x/tags/list", 400, "NAME_INVALID"),
        ("GET", f"/v2/{'a' * 256}/tags/list", 400, "NAME_INVALID"),
        ("GET", f"/v2/Bad/blobs/{digest_of(b'')}", 400, "NAME_INVALID"),
        ("POST", "/v2/Bad/blobs/uploads/", 400, "NAME_INVALID"),
        ("PUT", "/v2/library/app/manifests/-bad", 400, "TAG_INVALID"),
        ("PUT", f"/v2/library/app/manifests/{'t' * 129}", 400, "TAG_INVALID"),
        ("PUT", "/v2/library/app/manifests/.bad", 400, "TAG_INVALID"),
        # No manifest can exist under an invalid tag, so reading one is "unknown".
        ("GET", "/v2/library/app/manifests/-bad", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/library/app/manifests/{'t' * 129}", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/library/app/manifests/sha256:abc", 400, "DIGEST_INVALID"),
        ("GET", "/v2/library/app/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        ("HEAD", "/v2/library/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400, "DIGEST_INVALID"),
        ("GET", f"/v2/library/app/blobs/sha256:{'A' * 64}", 400, "DIGEST_INVALID"),
        ("POST", "/v2/library/app/blobs/uploads/?mount=sha256:abc&from=x", 400, "DIGEST_INVALID"),
        ("GET", "/v2/library/app/manifests/latest", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/library/app/blobs/{digest_of(b'none')}", 404, "BLOB_UNKNOWN"),
        ("GET", "/v2/library/app/blobs/uploads/no-such-upload", 404, "BLOB_UPLOAD_UNKNOWN"),
        ("GET", "/v2/library/app/tags/list", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/library/app/tags/list?n=abc", 404, "NAME_UNKNOWN"),
        ("GET", "/nothing/here", 404, "UNSUPPORTED"),
        ("GET", "/v2/library/app/nothing", 404, "UNSUPPORTED"),
        ("DELETE", "/v2/", 405, "UNSUPPORTED"),
    ],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_errors_are_spec_json(
    registry: Registry, method: str, path: str, status: int, code: str
) -> None:
    """Invalid names, tags and digests, unknown objects and unknown routes answer the spec's JSON error."""
    response = await registry.client.request(method, path, body=b"" if method in ("PUT", "POST") else None)
    if method == "HEAD":
        assert response.code == status
        assert response.body == b""
    else:
        assert_error(response, status, code)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/v2/Bad/blobs/uploads/some-id"),
        ("PUT", f"/v2/Bad/blobs/uploads/some-id?digest={digest_of(b'x')}"),
        ("POST", f"/v2/Bad/blobs/uploads/?digest={digest_of(b'x')}"),
    ],
    ids=["patch", "put", "post"],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_streamed_body_to_invalid_name(registry: Registry, method: str, path: str) -> None:
    """An upload body sent to an invalid repository name answers 400 NAME_INVALID and logs no crash."""
    response = await registry.client.request(method, path, body=b"x")
    assert_error(response, 400, "NAME_INVALID")
    await registry.assert_no_failures()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_tags_list_invalid_n(registry: Registry) -> None:
    """A malformed C{n} on a known repository answers 400 PAGINATION_NUMBER_INVALID."""
    await push_image(registry, REPO, "latest")
    response = await registry.client.request("GET", f"/v2/{REPO}/tags/list?n=-1")
    assert_error(response, 400, "PAGINATION_NUMBER_INVALID")


# Uploads


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_monolithic_post_creates_blob(registry: Registry) -> None:
    """A POST with C{?digest=} and a body stores the blob at once (201)."""
    data = b"monolithic blob"
    digest = digest_of(data)
    response = await registry.client.request("POST", f"/v2/{REPO}/blobs/uploads/?digest={digest}", body=data)
    assert response.code == 201
    assert response.header("Location") == f"/v2/{REPO}/blobs/{digest}"
    assert response.header("Docker-Content-Digest") == digest
    blob = await registry.client.request("GET", f"/v2/{REPO}/blobs/{digest}")
    assert (blob.code, blob.body) == (200, data)
    assert registry.staged_files() == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_monolithic_post_without_slash(registry: Registry) -> None:
    """The upload path without its trailing slash works the same."""
    data = b"no slash"
    digest = digest_of(data)
    response = await registry.client.request("POST", f"/v2/{REPO}/blobs/uploads?digest={digest}", body=data)
    assert response.code == 201
    assert response.header("Docker-Content-Digest") == digest


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_monolithic_post_digest_mismatch(registry: Registry) -> None:
    """A monolithic upload whose body does not match answers 400 DIGEST_INVALID and stores nothing."""
    claimed = digest_of(b"claimed")
    response = await registry.client.request(
        "POST", f"/v2/{REPO}/blobs/uploads/?digest={claimed}", body=b"actual"
    )
    assert_error(response, 400, "DIGEST_INVALID")
    head = await registry.client.request("HEAD", f"/v2/{REPO}/blobs/{claimed}")
    assert head.code == 404
    assert registry.staged_files() == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_monolithic_post_invalid_digest_leaves_nothing(registry: Registry) -> None:
    """A monolithic upload with a malformed digest answers 400 DIGEST_INVALID and leaves no session behind."""
    from twisted.internet import reactor

    response = await registry.client.request("POST", f"/v2/{REPO}/blobs/uploads/?digest=sha256:zz", body=b"x")
    assert_error(response, 400, "DIGEST_INVALID")
    # Give the sink's session preparation time to finish, then expire everything not in use.
    await sleep(0.3)
    await registry.uploads.expire(reactor.seconds() + 3600)
    assert registry.staged_files() == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_post_chunked_patch_put(registry: Registry) -> None:
    """POST, then a chunked PATCH streaming the whole blob, then PUT with the digest."""
    from twisted.internet import reactor

    data = random_bytes(3 * MIB + 17)
    location = await start_upload(registry)
    patched = await registry.client.request(
        "PATCH", location, body=StreamingBody(reactor, chunks_of(data, 256 * 1024))
    )
    assert patched.code == 202
    assert patched.header("Range") == f"0-{len(data) - 1}"
    assert patched.header("Location") == location
    assert patched.header("Docker-Upload-UUID") == location.rsplit("/", 1)[1]
    digest = digest_of(data)
    put = await registry.client.request("PUT", _join(location, f"digest={digest}"), body=b"")
    assert put.code == 201
    assert put.header("Docker-Content-Digest") == digest
    assert put.header("Location") == f"/v2/{REPO}/blobs/{digest}"
    blob = await registry.client.request("GET", f"/v2/{REPO}/blobs/{digest}")
    assert blob.body == data


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_post_put_with_body(registry: Registry) -> None:
    """POST, then a single PUT carrying the whole blob."""
    data = b"put with body"
    location = await start_upload(registry)
    put = await registry.client.request("PUT", _join(location, f"digest={digest_of(data)}"), body=data)
    assert put.code == 201
    assert put.header("Docker-Content-Digest") == digest_of(data)
    status = await registry.client.request("GET", location)
    assert_error(status, 404, "BLOB_UPLOAD_UNKNOWN")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_chunked_upload_with_content_range(registry: Registry) -> None:
    """Several PATCHes with Content-Range append in order; a final PUT chunk completes the blob."""
    data = random_bytes(10_000, seed=1)
    location = await start_upload(registry)
    offset = 0
    for size in (4000, 1, 2999):
        chunk = data[offset : offset + size]
        response = await registry.client.request(
            "PATCH",
            location,
            headers={
                "Content-Range": f"{offset}-{offset + size - 1}",
                "Content-Type": "application/octet-stream",
            },
            body=chunk,
        )
        assert response.code == 202, response.body
        offset += size
        assert response.header("Range") == f"0-{offset - 1}"
    last = data[offset:]
    put = await registry.client.request(
        "PUT",
        _join(location, f"digest={digest_of(data)}"),
        headers={"Content-Range": f"{offset}-{len(data) - 1}"},
        body=last,
    )
    assert put.code == 201, put.body
    blob = await registry.client.request("GET", f"/v2/{REPO}/blobs/{digest_of(data)}")
    assert blob.body == data


@pytest.mark.parametrize("content_range", ["12-21", "0-9", "5-14"], ids=["gap", "repeat", "overlap"])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_out_of_order_chunk_416(registry: Registry, content_range: str) -> None:
    """A chunk that does not start at the current end answers 416 with the current Range and is not kept."""
    location = await start_upload(registry)
    first = await registry.client.request(
        "PATCH", location, headers={"Content-Range": "0-9"}, body=b"0123456789"
    )
    assert first.code == 202
    response = await registry.client.request(
        "PATCH", location, headers={"Content-Range": content_range}, body=b"abcdefghij"
    )
    assert_error(response, 416, "RANGE_INVALID")
    assert response.header("Range") == "0-9"
    assert response.header("Location") == location
    status = await registry.client.request("GET", location)
    assert status.header("Range") == "0-9"
    # The session is still usable from where it was.
    second = await registry.client.request("PATCH", location, headers={"Content-Range": "10-12"}, body=b"abc")
    assert second.header("Range") == "0-12"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_upload_status(registry: Registry) -> None:
    """GET on a session answers 204 with its Range, Location and id."""
    location = await start_upload(registry)
    empty = await registry.client.request("GET", location)
    assert empty.code == 204
    assert empty.header("Range") == "0-0"
    assert empty.header("Location") == location
    assert empty.header("Docker-Upload-UUID") == location.rsplit("/", 1)[1]
    await registry.client.request("PATCH", location, body=b"12345")
    status = await registry.client.request("GET", location)
    assert (status.code, status.header("Range"), status.body) == (204, "0-4", b"")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_cancel_upload(registry: Registry) -> None:
    """DELETE on a session answers 204; afterwards the session is unknown and its data gone."""
    location = await start_upload(registry)
    await registry.client.request("PATCH", location, body=b"abc")
    cancelled = await registry.client.request("DELETE", location)
    assert cancelled.code == 204
    assert registry.staged_files() == []
    assert_error(await registry.client.request("GET", location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await registry.client.request("DELETE", location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await registry.client.request("PATCH", location, body=b"x"), 404, "BLOB_UPLOAD_UNKNOWN")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_upload_in_other_repository_unknown(registry: Registry) -> None:
    """A session is reachable only through the repository it was opened in."""
    location = await start_upload(registry)
    upload_id = location.rsplit("/", 1)[1]
    response = await registry.client.request("GET", f"/v2/{OTHER}/blobs/uploads/{upload_id}")
    assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_put_digest_mismatch_drops_session(registry: Registry) -> None:
    """A PUT whose digest does not match answers 400 DIGEST_INVALID; the session and its data are gone."""
    location = await start_upload(registry)
    await registry.client.request("PATCH", location, body=b"actual content")
    claimed = digest_of(b"other content")
    response = await registry.client.request("PUT", _join(location, f"digest={claimed}"), body=b"")
    assert_error(response, 400, "DIGEST_INVALID")
    assert_error(await registry.client.request("GET", location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert registry.staged_files() == []
    assert (await registry.client.request("HEAD", f"/v2/{REPO}/blobs/{claimed}")).code == 404


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_put_without_digest(registry: Registry) -> None:
    """A PUT without C{?digest=} answers 400 BLOB_UPLOAD_INVALID and keeps the session as recorded."""
    location = await start_upload(registry)
    await registry.client.request("PATCH", location, body=b"abc")
    response = await registry.client.request("PUT", location, body=b"def")
    assert_error(response, 400, "BLOB_UPLOAD_INVALID")
    status = await registry.client.request("GET", location)
    assert status.header("Range") == "0-2"
    put = await registry.client.request("PUT", _join(location, f"digest={digest_of(b'abcdef')}"), body=b"def")
    assert put.code == 201


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_blob_over_limit_413(start_registry: RegistryFactory) -> None:
    """An upload beyond the configured blob limit answers 413 SIZE_INVALID; the session stays usable."""
    registry = await start_registry(limits=UploadLimits(max_blob_bytes=1000))
    location = await start_upload(registry)
    response = await registry.client.request("PATCH", location, body=b"x" * 5000)
    assert_error(response, 413, "SIZE_INVALID")
    # The session is released only after the 413 is sent (see the unit test
    # test_upload_sink_result_fails_after_session_released), so retry briefly.
    small = await retry_while_busy(
        registry, lambda: registry.client.request("PATCH", location, body=b"y" * 10)
    )
    assert small.code == 202, small.body
    assert small.header("Range") == "0-9"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_chunked_blob_over_limit_413(start_registry: RegistryFactory) -> None:
    """A chunked body that grows past the blob limit answers 413 once it ends."""
    from twisted.internet import reactor

    registry = await start_registry(limits=UploadLimits(max_blob_bytes=100_000))
    location = await start_upload(registry)
    body = StreamingBody(reactor, chunks_of(b"z" * 300_000, 10_000))
    response = await registry.client.request("PATCH", location, body=body)
    assert_error(response, 413, "SIZE_INVALID")
    status = await registry.client.request("GET", location)
    assert status.header("Range") == "0-0"


# Blobs


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_blob_head_and_get_headers(registry: Registry) -> None:
    """HEAD and GET on a blob answer its length, digest and ETag; GET answers its bytes."""
    data = random_bytes(2 * MIB + 3, seed=2)
    digest = await push_blob(registry, REPO, data)
    head = await registry.client.request("HEAD", f"/v2/{REPO}/blobs/{digest}")
    get = await registry.client.request("GET", f"/v2/{REPO}/blobs/{digest}")
    for response in (head, get):
        assert response.code == 200
        assert response.content_length == len(data)
        assert response.header("Docker-Content-Digest") == digest
        assert response.header("ETag") == f'"{digest}"'
        assert response.header("Content-Type") == "application/octet-stream"
        assert response.header("Accept-Ranges") == "bytes"
    assert head.body == b""
    assert get.body == data


def _record_sendfile(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record every C{os.sendfile} call as C{(bytes offered, bytes sent)}; a full socket sent 0."""
    calls: list[tuple[int, int]] = []
    real_sendfile = os.sendfile

    def recording_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        try:
            result = real_sendfile(out_fd, in_fd, offset, count)
        except BlockingIOError:
            calls.append((count, 0))
            raise
        calls.append((count, result))
        return result

    monkeypatch.setattr(os, "sendfile", recording_sendfile)
    return calls


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_blob_get_uses_sendfile(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over plain TCP a large blob, whole or a Range of it, goes out with os.sendfile, byte-exact."""
    calls = _record_sendfile(monkeypatch)
    data = random_bytes(5 * MIB + 7, seed=9)
    digest = await push_blob(registry, REPO, data)
    whole = await registry.client.request("GET", f"/v2/{REPO}/blobs/{digest}")
    ranged = await registry.client.request(
        "GET", f"/v2/{REPO}/blobs/{digest}", headers={"Range": "bytes=100000-4999999"}
    )
    assert (whole.code, ranged.code) == (200, 206)
    assert whole.body == data
    assert ranged.body == data[100000:5000000]
    assert sum(sent for _, sent in calls) > 4 * MIB


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_blob_get_slow_reader_sendfile_only(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A client reading slower than quayd sends fills the socket again and again: quayd waits
    for room each time and goes on with sendfile, so only the first NUDGE bytes (sent with
    the headers) pass through Python, and the body is byte-exact.
    """
    calls = _record_sendfile(monkeypatch)
    data = random_bytes(8 * MIB + 3, seed=12)
    digest = await push_blob(registry, REPO, data)
    port = registry.port.getHost().port  # type: ignore[attr-defined]  # an IPv4Address
    request = f"GET /v2/{REPO}/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

    def read_slowly() -> bytes:
        received = bytearray()
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            client.settimeout(20)
            client.connect(("127.0.0.1", port))
            client.sendall(request.encode())
            next_pause = 256 * 1024
            while chunk := client.recv(16 * 1024):
                received += chunk
                if len(received) >= next_pause:
                    next_pause += 256 * 1024
                    time.sleep(0.002)
        return bytes(received)

    response = await deferToThread(read_slowly)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == data
    assert any(sent < count for count, sent in calls), "the socket never filled: the test did not slow quayd"
    assert sum(sent for _, sent in calls) == len(data) - NUDGE
    await registry.assert_no_failures()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_blob_get_client_gone_mid_body(registry: Registry) -> None:
    """A client that hangs up during a large download is no error: nothing is logged, serving goes on."""
    data = random_bytes(16 * MIB, seed=11)
    digest = await push_blob(registry, REPO, data)
    port = registry.port.getHost().port  # type: ignore[attr-defined]  # an IPv4Address
    request = f"GET /v2/{REPO}/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()

    def hang_up_early() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(request)
            head = client.recv(65536)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return head

    head = await deferToThread(hang_up_early)
    assert head.startswith(b"HTTP/1.1 200")
    await sleep(0.5)
    await registry.assert_no_failures()
    again = await registry.client.request("GET", f"/v2/{REPO}/blobs/{digest}")
    assert again.body == data


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_empty_blob(registry: Registry) -> None:
    """The empty blob can be pushed and pulled."""
    digest = await push_blob(registry, REPO, b"")
    response = await registry.client.request("GET", f"/v2/{REPO}/blobs/{digest}")
    assert (response.code, response.body, response.content_length) == (200, b"", 0)


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [("bytes=0-9", 0, 9), ("bytes=100-", 100, 999), ("bytes=-10", 990, 999), ("bytes=990-5000", 990, 999)],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_blob_range_206(registry: Registry, range_header: str, start: int, end: int) -> None:
    """A satisfiable Range answers 206 with Content-Range and exactly those bytes."""
    data = random_bytes(1000, seed=3)
    digest = await push_blob(registry, REPO, data)
    response = await registry.client.request(
        "GET", f"/v2/{REPO}/blobs/{digest}", headers={"Range": range_header}
    )
    assert response.code == 206
    assert response.header("Content-Range") == f"bytes {start}-{end}/1000"
    assert response.content_length == end - start + 1
    assert response.body == data[start : end + 1]


@pytest.mark.parametrize("range_header", ["bytes=1000-", "bytes=2000-3000", "bytes=5-2", "bytes=0-1,5-6"])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_blob_range_unsatisfiable_416(registry: Registry, range_header: str) -> None:
    """An unsatisfiable or unsupported Range answers 416 with C{Content-Range: bytes */size}."""
    digest = await push_blob(registry, REPO, random_bytes(1000, seed=4))
    response = await registry.client.request(
        "GET", f"/v2/{REPO}/blobs/{digest}", headers={"Range": range_header}
    )
    assert_error(response, 416, "RANGE_INVALID")
    assert response.header("Content-Range") == "bytes */1000"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_blob_zero_suffix_range_416(registry: Registry) -> None:
    """C{Range: bytes=-0} selects nothing and answers 416."""
    digest = await push_blob(registry, REPO, random_bytes(1000, seed=5))
    response = await registry.client.request(
        "GET", f"/v2/{REPO}/blobs/{digest}", headers={"Range": "bytes=-0"}
    )
    assert response.code == 416


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_blob_if_none_match_304(registry: Registry) -> None:
    """A GET whose If-None-Match names the blob's ETag answers 304 without a body."""
    digest = await push_blob(registry, REPO, b"cached")
    for value in (f'"{digest}"', f'"sha256:{"0" * 64}", "{digest}"'):
        response = await registry.client.request(
            "GET", f"/v2/{REPO}/blobs/{digest}", headers={"If-None-Match": value}
        )
        assert response.code == 304
        assert response.body == b""
        assert response.header("ETag") == f'"{digest}"'
    other = await registry.client.request(
        "GET", f"/v2/{REPO}/blobs/{digest}", headers={"If-None-Match": f'"sha256:{"0" * 64}"'}
    )
    assert (other.code, other.body) == (200, b"cached")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_blob_in_other_repository_unknown(registry: Registry) -> None:
    """A blob pushed to one repository is unknown in another."""
    digest = await push_blob(registry, OTHER, b"private to other")
    assert_error(await registry.client.request("GET", f"/v2/{REPO}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    head = await registry.client.request("HEAD", f"/v2/{REPO}/blobs/{digest}")
    assert (head.code, head.body) == (404, b"")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_cross_repository_mount(registry: Registry) -> None:
    """POST with C{?mount=&from=} links a blob from another repository (201) without an upload."""
    data = b"shared layer"
    digest = await push_blob(registry, OTHER, data)
    response = await registry.client.request("POST", f"/v2/{REPO}/blobs/uploads/?mount={digest}&from={OTHER}")
    assert response.code == 201
    assert response.header("Location") == f"/v2/{REPO}/blobs/{digest}"
    assert response.header("Docker-Content-Digest") == digest
    blob = await registry.client.request("GET", f"/v2/{REPO}/blobs/{digest}")
    assert blob.body == data
    assert registry.staged_files() == []


@pytest.mark.parametrize("source", [OTHER, "empty/repo"])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_cross_repository_mount_fallback(registry: Registry, source: str) -> None:
    """Mounting a blob the source does not have falls back to a new upload session (202)."""
    await push_blob(registry, OTHER, b"something else")
    missing = digest_of(b"not anywhere")
    response = await registry.client.request(
        "POST", f"/v2/{REPO}/blobs/uploads/?mount={missing}&from={source}"
    )
    assert response.code == 202
    location = response.header("Location")
    assert location is not None
    assert location.startswith(f"/v2/{REPO}/blobs/uploads/")
    assert (await registry.client.request("GET", location)).code == 204


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_mount_without_auto_mount_falls_back(start_registry: RegistryFactory) -> None:
    """Without C{from}, and with automatic mounting off, a mount request opens an upload."""
    registry = await start_registry(auto_mount=False)
    digest = await push_blob(registry, OTHER, b"elsewhere")
    response = await registry.client.request("POST", f"/v2/{REPO}/blobs/uploads/?mount={digest}")
    assert response.code == 202


# Manifests

MEDIA_TYPES = [DOCKER_MANIFEST, OCI_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX]
_CHILD_TYPE = {DOCKER_MANIFEST_LIST: DOCKER_MANIFEST, OCI_INDEX: OCI_MANIFEST}


async def _manifest_for(registry: Registry, media_type: str) -> bytes:
    """Push what a manifest of C{media_type} needs, and return its bytes."""
    if media_type in _CHILD_TYPE:
        child_type = _CHILD_TYPE[media_type]
        children = [
            await push_image(registry, REPO, f"child-{n}", child_type, layer=f"layer {n}".encode())
            for n in range(2)
        ]
        return index_manifest(media_type, children)
    await push_blob(registry, REPO, CONFIG)
    await push_blob(registry, REPO, LAYER)
    return image_manifest(media_type, CONFIG, [LAYER])


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_manifest_round_trip(registry: Registry, media_type: str) -> None:
    """A manifest PUT by tag is served by tag and by digest, byte for byte, with its media type."""
    content = await _manifest_for(registry, media_type)
    digest = digest_of(content)
    put = await put_manifest(registry, REPO, "v1", content, media_type)
    assert put.code == 201, put.body
    assert put.header("Docker-Content-Digest") == digest
    assert put.header("Location") == f"/v2/{REPO}/manifests/{digest}"
    assert put.header("OCI-Subject") is None
    for reference in ("v1", digest):
        get = await registry.client.request("GET", f"/v2/{REPO}/manifests/{reference}")
        assert get.code == 200
        assert get.body == content
        assert get.header("Content-Type") == media_type
        assert get.header("Docker-Content-Digest") == digest
        assert get.content_length == len(content)
        head = await registry.client.request("HEAD", f"/v2/{REPO}/manifests/{reference}")
        assert (head.code, head.body) == (200, b"")
        assert head.header("Content-Type") == media_type
        assert head.header("Docker-Content-Digest") == digest
        assert head.content_length == len(content)


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_manifest_put_by_digest(registry: Registry, media_type: str) -> None:
    """A manifest PUT by its own digest is stored without a tag."""
    content = await _manifest_for(registry, media_type)
    digest = digest_of(content)
    put = await put_manifest(registry, REPO, digest, content, media_type)
    assert put.code == 201, put.body
    get = await registry.client.request("GET", f"/v2/{REPO}/manifests/{digest}")
    assert get.body == content


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_manifest_put_by_wrong_digest(registry: Registry) -> None:
    """A manifest PUT under a digest that is not its own answers 400 and is not stored."""
    content = await _manifest_for(registry, OCI_MANIFEST)
    wrong = digest_of(b"something else")
    response = await put_manifest(registry, REPO, wrong, content, OCI_MANIFEST)
    assert_error(response, 400, ("DIGEST_INVALID", "MANIFEST_INVALID"))
    assert (await registry.client.request("GET", f"/v2/{REPO}/manifests/{digest_of(content)}")).code == 404


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_manifest_missing_layer(registry: Registry) -> None:
    """A manifest naming a layer the repository lacks answers 400 MANIFEST_BLOB_UNKNOWN."""
    await push_blob(registry, REPO, CONFIG)
    await push_blob(registry, OTHER, LAYER)
    content = image_manifest(OCI_MANIFEST, CONFIG, [LAYER])
    response = await put_manifest(registry, REPO, "latest", content, OCI_MANIFEST)
    entry = assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert entry["detail"] == {"digest": digest_of(LAYER)}
    assert_error(
        await registry.client.request("GET", f"/v2/{REPO}/manifests/latest"), 404, "MANIFEST_UNKNOWN"
    )


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_MANIFEST_LIST])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_index_missing_child(registry: Registry, media_type: str) -> None:
    """An index naming a child manifest the repository lacks answers 400 MANIFEST_UNKNOWN."""
    child = image_manifest(_CHILD_TYPE[media_type], CONFIG, [LAYER])
    content = index_manifest(media_type, [child])
    response = await put_manifest(registry, REPO, "multi", content, media_type)
    entry = assert_error(response, 400, "MANIFEST_UNKNOWN")
    assert entry["detail"] == {"digest": digest_of(child)}


@pytest.mark.parametrize(
    ("content", "media_type"),
    [
        (b"{not json", OCI_MANIFEST),
        (b"[]", OCI_MANIFEST),
        (b"\xff\xfe", OCI_MANIFEST),
        (b"", OCI_MANIFEST),
        (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}', OCI_MANIFEST),
        (encode(DOCKER_SCHEMA1_DOCUMENT), DOCKER_SCHEMA1),
        (encode(DOCKER_SCHEMA1_DOCUMENT), None),
        (
            encode({**DOCKER_SCHEMA1_DOCUMENT, "signatures": []}),
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ),
    ],
    ids=[
        "truncated",
        "array",
        "not-utf8",
        "empty",
        "no-config",
        "schema1",
        "schema1-untyped",
        "schema1-signed",
    ],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_manifest_invalid(registry: Registry, content: bytes, media_type: str | None) -> None:
    """Invalid JSON, invalid documents and Docker schema 1 answer 400 MANIFEST_INVALID."""
    response = await put_manifest(registry, REPO, "latest", content, media_type)
    assert_error(response, 400, "MANIFEST_INVALID")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_manifest_too_large_413(registry: Registry, chunked: bool) -> None:
    """A manifest over the size limit answers 413 SIZE_INVALID, however it is sent."""
    from twisted.internet import reactor

    document = json.loads(image_manifest(OCI_MANIFEST, CONFIG, [LAYER]))
    document["annotations"] = {"padding": "x" * MAX_MANIFEST_BYTES}
    content = encode(document)
    body = StreamingBody(reactor, chunks_of(content, 8192)) if chunked else content
    response = await registry.client.request(
        "PUT", f"/v2/{REPO}/manifests/latest", headers={"Content-Type": OCI_MANIFEST}, body=body
    )
    assert_error(response, 413, "SIZE_INVALID")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_manifest_subject_header(registry: Registry) -> None:
    """A manifest with a subject is accepted (even before its subject exists) and answers OCI-Subject."""
    subject = image_manifest(OCI_MANIFEST, CONFIG, [b"not pushed"])
    await push_blob(registry, REPO, CONFIG)
    await push_blob(registry, REPO, LAYER)
    content = image_manifest(
        OCI_MANIFEST, CONFIG, [LAYER], subject=subject, artifact_type="application/x.sig"
    )
    response = await put_manifest(registry, REPO, digest_of(content), content, OCI_MANIFEST)
    assert response.code == 201, response.body
    assert response.header("OCI-Subject") == digest_of(subject)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_manifest_tag_moves(registry: Registry) -> None:
    """Pushing another manifest under a tag moves the tag; the old one stays reachable by digest."""
    old = await push_image(registry, REPO, "latest")
    new = await push_image(registry, REPO, "latest", layer=b"new layer")
    latest = await registry.client.request("GET", f"/v2/{REPO}/manifests/latest")
    assert latest.body == new
    assert (await registry.client.request("GET", f"/v2/{REPO}/manifests/{digest_of(old)}")).body == old


# Tags


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_tags_list(registry: Registry) -> None:
    """The tag list is lexical and complete without pagination."""
    content = await push_image(registry, REPO, "b")
    for tag in ("a", "c", "B", "10"):
        assert (await put_manifest(registry, REPO, tag, content, OCI_MANIFEST)).code == 201
    response = await registry.client.request("GET", f"/v2/{REPO}/tags/list")
    assert response.code == 200
    assert response.json() == {"name": REPO, "tags": ["10", "B", "a", "b", "c"]}
    assert response.header("Link") is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_tags_list_pagination(registry: Registry) -> None:
    """C{n} and C{last} page through the tags; a Link header names the next page until the end."""
    content = await push_image(registry, REPO, "t1")
    for tag in ("t2", "t3", "t4", "t5"):
        await put_manifest(registry, REPO, tag, content, OCI_MANIFEST)
    seen: list[str] = []
    path: str | None = f"/v2/{REPO}/tags/list?n=2"
    pages = 0
    while path is not None:
        response = await registry.client.request("GET", path)
        assert response.code == 200
        page = response.json()["tags"]
        assert len(page) <= 2
        seen.extend(page)
        pages += 1
        link = response.header("Link")
        if link is None:
            path = None
        else:
            assert link.endswith('>; rel="next"')
            path = link[1 : link.index(">")]
            assert path == f"/v2/{REPO}/tags/list?n=2&last={page[-1]}"
    assert seen == ["t1", "t2", "t3", "t4", "t5"]
    assert pages == 3
    after = await registry.client.request("GET", f"/v2/{REPO}/tags/list?last=t3")
    assert after.json()["tags"] == ["t4", "t5"]
    none = await registry.client.request("GET", f"/v2/{REPO}/tags/list?n=0")
    assert none.json()["tags"] == []


# Streaming and resumption


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_large_chunked_patch_digest(registry: Registry) -> None:
    """A 20 MiB blob streamed in one chunked PATCH is stored with the right digest."""
    from twisted.internet import reactor

    data = random_bytes(20 * MIB, seed=6)
    location = await start_upload(registry)
    response = await registry.client.request(
        "PATCH", location, body=StreamingBody(reactor, chunks_of(data, 512 * 1024)), seconds=60
    )
    assert response.code == 202
    assert response.header("Range") == f"0-{len(data) - 1}"
    digest = digest_of(data)
    put = await registry.client.request("PUT", _join(location, f"digest={digest}"), body=b"")
    assert put.code == 201
    assert put.header("Docker-Content-Digest") == digest
    head = await registry.client.request("HEAD", f"/v2/{REPO}/blobs/{digest}")
    assert head.content_length == len(data)
    tail = await registry.client.request(
        "GET", f"/v2/{REPO}/blobs/{digest}", headers={"Range": f"bytes={len(data) - MIB}-"}
    )
    assert tail.body == data[-MIB:]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_patch_body_is_streamed_not_spooled(registry: Registry) -> None:
    """While a 30 MiB chunked PATCH is still arriving, its bytes are already in the staged file."""
    from twisted.internet import reactor

    data = random_bytes(30 * MIB, seed=7)
    location = await start_upload(registry)
    upload_id = location.rsplit("/", 1)[1]
    body = StreamingBody(reactor, chunks_of(data, 256 * 1024), hold_after=4 * MIB, delay=0.001)
    response = registry.client.start("PATCH", location, body=body, seconds=60)
    await body.holding
    await wait_until(lambda: (registry.staged_size(upload_id) or 0) > 0)
    assert not body.finished
    assert not response.called
    staged_early = registry.staged_size(upload_id) or 0
    assert 0 < staged_early <= body.sent < len(data)
    body.release()
    patched = await response
    assert patched.code == 202
    assert patched.header("Range") == f"0-{len(data) - 1}"
    assert registry.staged_size(upload_id) == len(data)
    put = await registry.client.request("PUT", _join(location, f"digest={digest_of(data)}"), body=b"")
    assert put.code == 201


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_api_disconnect_mid_patch_keeps_session_resumable(registry: Registry) -> None:
    """A client gone mid-PATCH leaves the session at its last recorded size, no blob, and resumable."""
    from twisted.internet import reactor

    data = random_bytes(6 * MIB, seed=8)
    recorded = 1000
    location = await start_upload(registry)
    upload_id = location.rsplit("/", 1)[1]
    first = await registry.client.request(
        "PATCH", location, headers={"Content-Range": f"0-{recorded - 1}"}, body=data[:recorded]
    )
    assert first.header("Range") == f"0-{recorded - 1}"

    body = StreamingBody(reactor, chunks_of(data[recorded:], 256 * 1024), hold_after=2 * MIB)
    interrupted = registry.client.start("PATCH", location, body=body, seconds=60)
    await body.holding
    await wait_until(lambda: (registry.staged_size(upload_id) or 0) > recorded)
    interrupted.cancel()
    with pytest.raises((CancelledError, RequestGenerationFailed, ResponseNeverReceived)):
        await interrupted

    status = await registry.client.request("GET", location)
    assert (status.code, status.header("Range")) == (204, f"0-{recorded - 1}")
    head = await registry.client.request("HEAD", f"/v2/{REPO}/blobs/{digest_of(data)}")
    assert head.code == 404

    # The server may still be releasing the interrupted request's hold on the session.
    resumed = await retry_while_busy(
        registry,
        lambda: registry.client.request(
            "PATCH", location, headers={"Content-Range": f"{recorded}-{len(data) - 1}"}, body=data[recorded:]
        ),
    )
    assert resumed.code == 202, resumed.body
    assert resumed.header("Range") == f"0-{len(data) - 1}"
    put = await registry.client.request("PUT", _join(location, f"digest={digest_of(data)}"), body=b"")
    assert put.code == 201
    blob = await registry.client.request("GET", f"/v2/{REPO}/blobs/{digest_of(data)}")
    assert blob.body == data
