"""
Chunked upload bodies against a running registry, over real sockets: a body
with chunk extensions and trailers is staged exactly, and malformed framing
answers 400 and leaves nothing of the request's bytes in the session.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted

from tests.http.conftest import Registry, wait_until
from tests.support.http import raw_exchange

REPO = "library/app"


async def _start(registry: Registry) -> str:
    """Open an upload session; returns its path."""
    response = await registry.client.request("POST", f"/v2/{REPO}/blobs/uploads/")
    assert response.code == 202, response.body
    location = response.header("Location")
    assert location is not None
    return location


def _patch(location: str, body: bytes) -> bytes:
    """A chunked PATCH of C{body} (already framed) that asks the server to close afterwards."""
    return (
        f"PATCH {location} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    ).encode() + body


def _framed(*chunks: bytes) -> bytes:
    """Chunks with extensions, the last chunk, and trailer fields."""
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return framed + b"0\r\nX-Trailer: yes\r\n\r\n"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_chunked_patch_with_extensions_and_trailers_is_staged_exactly(registry: Registry) -> None:
    """A chunked PATCH is accepted (202, full Range) and completes into the blob of exactly its chunks."""
    location = await _start(registry)
    chunks = [os.urandom(70_000), b"!", os.urandom(1_500_000)]
    data = b"".join(chunks)
    answer = await raw_exchange(registry.port, _patch(location, _framed(*chunks)))
    assert answer.startswith(b"HTTP/1.1 202 Accepted\r\n"), answer[:200]
    assert f"Range: 0-{len(data) - 1}\r\n".encode() in answer
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = await registry.client.request("PUT", f"{location}?digest={digest}")
    assert response.code == 201, response.body
    blob = await registry.client.request("GET", f"/v2/{REPO}/blobs/{digest}")
    assert blob.body == data


@pytest.mark.parametrize(
    "bad_end",
    [
        pytest.param(b"zz\r\nmore\r\n0\r\n\r\n", id="size-not-hex"),
        pytest.param(b"4\r\nmoreX\r\n0\r\n\r\n", id="data-longer-than-size"),
        pytest.param(b"4;a\\b\r\nmore\r\n0\r\n\r\n", id="bad-extension-character"),
    ],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_malformed_chunked_patch_leaves_nothing_partial(registry: Registry, bad_end: bytes) -> None:
    """
    Valid chunks followed by malformed framing answer 400; the session stays
    at its recorded size, and the next PATCH and PUT commit only their own bytes.
    """
    location = await _start(registry)
    first = os.urandom(300_000)
    answer = await raw_exchange(
        registry.port, _patch(location, b"%x\r\n%s\r\n" % (len(first), first) + bad_end)
    )
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:200]

    status = await registry.client.request("GET", location)
    assert status.code == 204
    assert status.header("Range") == "0-0"
    upload_id = location.rsplit("/", 1)[1]
    # The session is given back once the aborted request's writer is closed.
    await wait_until(lambda: upload_id not in registry.uploads._busy)

    data = os.urandom(50_000)
    answer = await raw_exchange(registry.port, _patch(location, _framed(data)))
    assert answer.startswith(b"HTTP/1.1 202 Accepted\r\n"), answer[:200]
    assert registry.staged_size(upload_id) == len(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = await registry.client.request("PUT", f"{location}?digest={digest}")
    assert response.code == 201, response.body
