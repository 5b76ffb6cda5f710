"""
Bodies that L{quayd.http.site.QuaydSite} buffers (not uploads): small ones in
memory, larger ones in a temporary file, each read back exactly, over a real socket.
"""

from __future__ import annotations

import io
import os

import pytest
import pytest_twisted
import treq
from klein import Klein
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.web.server import Request

from quayd.http.site import QuaydSite


def _site() -> QuaydSite:
    """One route answering with where the body was kept, then the body itself."""
    app = Klein()

    @app.route("/echo", methods=["GET", "POST", "PUT"])
    def echo(request: Request) -> bytes:
        content = request.content
        assert content is not None
        kept = b"memory" if isinstance(content, io.BytesIO) else b"file"
        data: bytes = content.read()
        return kept + b" " + data

    return QuaydSite(app.resource(), access_log=False)


@pytest.mark.parametrize(
    ("method", "size", "kept"),
    [
        ("GET", 0, b"memory"),
        ("PUT", 99_999, b"memory"),
        ("POST", 100_000, b"file"),
        ("PUT", 1_500_000, b"file"),
    ],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_buffered_body_kept_by_size(method: str, size: int, kept: bytes) -> None:
    """Bodies under 100 kB stay in memory, others go to a temporary file; both arrive whole."""
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(_site())
    body = os.urandom(size)
    try:
        response = await treq.request(
            method, f"http://127.0.0.1:{port.getHost().port}/echo", data=body if size else None
        )
        answer = await response.content()
    finally:
        await port.stopListening()
    assert response.code == 200
    assert answer == kept + b" " + body
