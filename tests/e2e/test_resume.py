"""
Resuming a chunked blob upload after quayd was killed and restarted.

A client uploads a 300 MiB blob in 32 MiB C{PATCH} chunks. quayd is SIGKILLed
while a chunk is still streaming in; once it is restarted with the same config
and data, the upload's status must count exactly the chunks that were
acknowledged (202) before the kill, the client must be able to carry on from
there, and the finished blob must have the right digest.

Bodies are streamed from a file with L{http.client}, one MiB at a time, so the
blob never sits in memory. Every request carries the superuser's Basic
credentials, which quayd accepts on the C{/v2} routes.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import BinaryIO, Final
from urllib.parse import urljoin, urlsplit

import pytest

from tests.support.clients import HTTPResult, QuaydProcess, http_download, http_request

pytestmark = pytest.mark.e2e

MiB: Final = 1024 * 1024
BLOB_SIZE: Final = 300 * MiB
CHUNK_SIZE: Final = 32 * MiB
#: Chunks acknowledged before the one that the kill interrupts.
CHUNKS_BEFORE_KILL: Final = 3
#: How much of the interrupted chunk is sent before quayd is killed.
SENT_BEFORE_KILL: Final = 16 * MiB
REPOSITORY: Final = "resume/app"
_PIECE: Final = MiB
_TIMEOUT: Final = 120.0


def _write_random_file(path: Path, size: int) -> str:
    """
    Write incompressible random bytes to a file, a few MiB at a time.

    @param path: The file to create.
    @param size: Its size in bytes.
    @return: Its digest, C{sha256:<hex>}.
    """
    digest = hashlib.sha256()
    with path.open("wb") as stream:
        remaining = size
        while remaining:
            data = os.urandom(min(4 * MiB, remaining))
            digest.update(data)
            stream.write(data)
            remaining -= len(data)
    return "sha256:" + digest.hexdigest()


def _open_request(url: str, method: str, headers: Mapping[str, str]) -> http.client.HTTPConnection:
    """
    Open a connection and send a request's line and headers; the caller sends the body.

    @param url: Absolute C{http://} URL.
    @param method: HTTP method.
    @param headers: Request headers (C{Content-Length} included).
    @return: The connection, for the body and the response.
    """
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname is not None, url
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=_TIMEOUT)
    connection.putrequest(method, target, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    return connection


def _send_file_range(
    connection: http.client.HTTPConnection, source: BinaryIO, first: int, length: int
) -> None:
    """
    Send part of a file as (part of) a request body, one MiB at a time.

    @param connection: A connection whose request headers have been sent.
    @param source: The file.
    @param first: Offset of the first byte to send.
    @param length: How many bytes to send.
    """
    source.seek(first)
    remaining = length
    while remaining:
        piece = source.read(min(_PIECE, remaining))
        assert piece, "the source file is shorter than the upload"
        connection.send(piece)
        remaining -= len(piece)


def _chunk_headers(server: QuaydProcess, first: int, length: int) -> dict[str, str]:
    """
    @param server: The quayd, for its credentials.
    @param first: Offset of the chunk's first byte in the blob.
    @param length: The chunk's size.
    @return: The headers of a C{PATCH} carrying that chunk.
    """
    return {
        **server.auth_headers,
        "Content-Type": "application/octet-stream",
        "Content-Length": str(length),
        "Content-Range": f"{first}-{first + length - 1}",
    }


def _patch_chunk(
    server: QuaydProcess, location: str, source: BinaryIO, first: int, length: int
) -> HTTPResult:
    """
    C{PATCH} one chunk of the file to an upload session, streaming it.

    @param server: The quayd.
    @param location: The session's absolute URL.
    @param source: The file being uploaded.
    @param first: Offset of the chunk in the file (and in the blob).
    @param length: The chunk's size.
    @return: The whole response.
    """
    with closing(_open_request(location, "PATCH", _chunk_headers(server, first, length))) as connection:
        _send_file_range(connection, source, first, length)
        response = connection.getresponse()
        return HTTPResult(status=response.status, headers=response.headers, body=response.read())


def _staged_size(server: QuaydProcess, upload_id: str) -> int:
    """
    @param server: The quayd.
    @param upload_id: An upload session's id.
    @return: The size of the session's staged file in quayd's filesystem
        store (C{blobs/uploads/<id>}), 0 while it is missing.
    """
    try:
        return (server.data_dir / "blobs" / "uploads" / upload_id).stat().st_size
    except FileNotFoundError:
        return 0


def _patch_killed_midway(
    server: QuaydProcess, location: str, upload_id: str, source: BinaryIO, first: int
) -> int:
    """
    Start C{PATCH}ing a chunk, and SIGKILL quayd once part of it is on disk.

    The chunk's headers announce C{CHUNK_SIZE} bytes, of which only
    C{SENT_BEFORE_KILL} are sent; quayd is killed as soon as its staged file
    has grown past C{first}, so the kill lands while it is writing this
    chunk's body and can never have acknowledged it.

    @param server: The running quayd.
    @param location: The session's absolute URL.
    @param upload_id: The session's id, to watch its staged file.
    @param source: The file being uploaded.
    @param first: Offset of the chunk, which is what the session holds so far.
    @return: The staged file's size when quayd was killed.
    """
    with closing(_open_request(location, "PATCH", _chunk_headers(server, first, CHUNK_SIZE))) as connection:
        _send_file_range(connection, source, first, SENT_BEFORE_KILL)
        deadline = time.monotonic() + 60.0
        while (staged := _staged_size(server, upload_id)) <= first:
            assert time.monotonic() < deadline, f"quayd staged no byte of the chunk at {first} within 60 s"
            time.sleep(0.01)
        server.kill()
    return staged


def test_chunked_upload_resumes_after_quayd_is_killed(quayd_server: QuaydProcess, tmp_path: Path) -> None:
    """After SIGKILL mid-PATCH and a restart, the upload resumes from the last acknowledged chunk."""
    source_path = tmp_path / "blob.bin"
    digest = _write_random_file(source_path, BLOB_SIZE)
    started = http_request(
        "POST",
        f"{quayd_server.url}/v2/{REPOSITORY}/blobs/uploads/",
        headers=quayd_server.auth_headers,
        body=b"",
    )
    assert started.status == 202, started.body
    upload_id = started.headers["Docker-Upload-UUID"]
    location = urljoin(quayd_server.url, started.headers["Location"])

    with source_path.open("rb") as source:
        acknowledged = 0
        for _ in range(CHUNKS_BEFORE_KILL):
            patched = _patch_chunk(quayd_server, location, source, acknowledged, CHUNK_SIZE)
            assert patched.status == 202, patched.body
            acknowledged += CHUNK_SIZE
            assert patched.headers["Range"] == f"0-{acknowledged - 1}"
            location = urljoin(quayd_server.url, patched.headers["Location"])
        staged_at_kill = _patch_killed_midway(quayd_server, location, upload_id, source, acknowledged)
        assert not quayd_server.running
        assert acknowledged < staged_at_kill <= acknowledged + SENT_BEFORE_KILL

        quayd_server.start()

        status = http_request("GET", location, headers=quayd_server.auth_headers)
        assert status.status == 204, status.body
        assert status.headers["Range"] == f"0-{acknowledged - 1}"
        assert status.headers["Docker-Upload-UUID"] == upload_id
        location = urljoin(quayd_server.url, status.headers["Location"])

        # A client that counted the interrupted chunk is told where the upload really ends.
        skipped = _patch_chunk(quayd_server, location, source, acknowledged + CHUNK_SIZE, MiB)
        assert skipped.status == 416, skipped.body
        assert skipped.headers["Range"] == f"0-{acknowledged - 1}"

        while acknowledged < BLOB_SIZE:
            length = min(CHUNK_SIZE, BLOB_SIZE - acknowledged)
            patched = _patch_chunk(quayd_server, location, source, acknowledged, length)
            assert patched.status == 202, patched.body
            acknowledged += length
            assert patched.headers["Range"] == f"0-{acknowledged - 1}"
            location = urljoin(quayd_server.url, patched.headers["Location"])

    separator = "&" if urlsplit(location).query else "?"
    finished = http_request(
        "PUT",
        f"{location}{separator}digest={digest}",
        headers={**quayd_server.auth_headers, "Content-Length": "0"},
        body=b"",
    )
    assert finished.status == 201, finished.body
    assert finished.headers["Docker-Content-Digest"] == digest
    assert urlsplit(finished.headers["Location"]).path == f"/v2/{REPOSITORY}/blobs/{digest}"

    fetched = http_download(quayd_server.blob_url(REPOSITORY, digest), headers=quayd_server.auth_headers)
    assert (fetched.status, fetched.size, fetched.digest) == (200, BLOB_SIZE, digest)
    assert _staged_size(quayd_server, upload_id) == 0
    gone = http_request("GET", location, headers=quayd_server.auth_headers)
    assert gone.status == 404, gone.body
