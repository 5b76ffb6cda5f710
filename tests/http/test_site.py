"""
Tests for L{quayd.http.site}: how a streamed upload body is read from the socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest_twisted
import treq
from klein import Klein
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from quayd.http.site import UPLOAD_READ_SIZE, BodySink, QuaydSite


@dataclass
class _RecordingSink:
    """A body sink noting the transport's read size at each event."""

    transport: IPushProducer
    received: bytearray = field(default_factory=bytearray)
    read_sizes: list[int] = field(default_factory=list)
    finished: bool = False

    def write(self, data: bytes) -> None:
        """Keep the chunk and the current read size."""
        self.received += data
        self.read_sizes.append(self.transport.bufferSize)  # type: ignore[attr-defined]  # a tcp.Server

    def finish(self) -> None:
        """The body is complete."""
        self.finished = True

    def abort(self, reason: Failure) -> None:
        """Not expected here."""
        raise AssertionError(f"body aborted: {reason}")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_site_reads_upload_bodies_in_large_pieces() -> None:
    """
    While an upload body streams into a sink, the socket is read in
    UPLOAD_READ_SIZE pieces; afterwards the transport's usual size is back
    (it is also its write-buffer threshold), for the next request on the connection.
    """
    sinks: list[_RecordingSink] = []
    app = Klein()

    @app.route("/upload", methods=["PUT"])
    def upload(request: Request) -> bytes:
        return b"%d" % (request.channel.transport.bufferSize,)  # type: ignore[union-attr]  # a tcp.Server

    def factory(
        method: bytes,
        path: bytes,
        headers: Headers,
        length: int | None,
        producer: IPushProducer,
        client: str = "-",
    ) -> BodySink | None:
        if path != b"/upload":
            return None
        sink = _RecordingSink(producer)
        sinks.append(sink)
        return sink

    site = QuaydSite(app.resource(), body_sink_factory=factory)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    try:
        body = bytes(range(256)) * 16384  # 4 MiB
        url = f"http://127.0.0.1:{port.getHost().port}/upload"
        response = await treq.put(url, data=body)
        during = int(await response.text())
        assert response.code == 200
        assert len(sinks) == 1
        sink = sinks[0]
        assert sink.finished
        assert bytes(sink.received) == body
        assert set(sink.read_sizes) == {UPLOAD_READ_SIZE}
        assert during < UPLOAD_READ_SIZE
    finally:
        await port.stopListening()
