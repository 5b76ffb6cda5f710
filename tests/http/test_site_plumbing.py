"""
Per-request plumbing of L{quayd.http.site.QuaydSite}: only methods that can
carry an upload are offered to the body sink factory, a streamed body is read
from the socket in large pieces (and, when chunked, decoded without copies,
rejecting malformed framing with 400), and access-log events are only built
when the configured level lets them out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import pytest_twisted
import treq
from klein import Klein
from twisted.internet.interfaces import IListeningPort, IPushProducer
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import Request
from zope.interface import implementer

from quayd.http.site import (
    STREAMABLE_METHODS,
    UPLOAD_READ_SIZE,
    BodySink,
    QuaydSite,
)
from tests.support.http import raw_exchange


@dataclass
class _RecordingSink:
    """A body sink noting the transport's read size at each chunk."""

    transport: IPushProducer
    received: bytearray = field(default_factory=bytearray)
    read_sizes: list[int] = field(default_factory=list)
    finished: bool = False

    def write(self, data: bytes | memoryview) -> None:
        """Keep the chunk and the current read size."""
        self.received += data
        self.read_sizes.append(self.transport.bufferSize)  # type: ignore[attr-defined]  # a tcp.Server

    def finish(self) -> None:
        """The body is complete."""
        self.finished = True

    def abort(self, reason: Failure) -> None:
        """Not expected here."""
        raise AssertionError(f"body aborted: {reason}")


class _Offers:
    """
    A body sink factory that records what it was offered; it streams the
    bodies sent to C{stream_path} into sinks of C{sink_type} (L{_RecordingSink}s
    by default), and buffers the rest.
    """

    def __init__(
        self, stream_path: bytes | None = None, sink_type: type[_RecordingSink] = _RecordingSink
    ) -> None:
        self.methods: list[bytes] = []
        self.sinks: list[_RecordingSink] = []
        self._stream_path = stream_path
        self._sink_type = sink_type

    def __call__(
        self,
        method: bytes,
        path: bytes,
        headers: Headers,
        length: int | None,
        producer: IPushProducer,
        client: str = "-",
    ) -> BodySink | None:
        """Record the method; stream or buffer the body."""
        self.methods.append(method)
        if path != self._stream_path:
            return None
        sink = self._sink_type(producer)
        self.sinks.append(sink)
        return sink


async def _serve(site: QuaydSite) -> tuple[IListeningPort, str]:
    """Listen on a loopback port; returns the port and its base URL."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    return port, f"http://127.0.0.1:{port.getHost().port}"


def _app() -> Klein:
    """One route answering every method with the body's length."""
    app = Klein()

    @app.route("/thing", methods=["GET", "HEAD", "DELETE", "POST", "PATCH", "PUT"])
    def thing(request: Request) -> bytes:
        assert request.content is not None
        return b"%d" % len(request.content.read())

    return app


@implementer(ILogObserver)
class _AccessLog:
    """Keeps the access-log events."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        """Keep C{event} if it is an access-log event."""
        if event.get("log_system") == "access":
            self.events.append(event)


@pytest.fixture
def access_events() -> Iterator[list[LogEvent]]:
    """Access-log events emitted while the test runs."""
    observer = _AccessLog()
    globalLogPublisher.addObserver(observer)
    yield observer.events
    globalLogPublisher.removeObserver(observer)


async def _stop(port: IListeningPort) -> None:
    """Stop listening."""
    stopped = port.stopListening()
    if stopped is not None:
        await stopped


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_only_upload_methods_are_offered_to_the_sink_factory() -> None:
    """GET, HEAD and DELETE skip the factory's route matching; POST, PATCH and PUT are offered."""
    offers = _Offers()
    port, base = await _serve(QuaydSite(_app().resource(), body_sink_factory=offers))
    try:
        for method in ("GET", "HEAD", "DELETE", "POST", "PATCH", "PUT"):
            body = b"abc" if method in ("POST", "PATCH", "PUT") else None
            response = await treq.request(method, f"{base}/thing", data=body, persistent=False)
            assert response.code == 200
            if method != "HEAD":
                assert await response.text() == ("3" if method in ("POST", "PATCH", "PUT") else "0")
            else:
                await response.content()
        assert offers.methods == [b"POST", b"PATCH", b"PUT"]
        assert set(offers.methods) == STREAMABLE_METHODS
    finally:
        await _stop(port)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
@pytest.mark.parametrize("enabled", [True, False])
async def test_access_log_follows_the_flag(enabled: bool, access_events: list[LogEvent]) -> None:
    """With C{access_log} on, one event per request; off (level above info), none is built."""
    port, base = await _serve(QuaydSite(_app().resource(), access_log=enabled))
    try:
        response = await treq.get(f"{base}/thing?x=1", persistent=False)
        assert await response.text() == "0"
    finally:
        await _stop(port)
    if enabled:
        assert [(e["method"], e["uri"], e["status"]) for e in access_events] == [("GET", "/thing?x=1", 200)]
    else:
        assert access_events == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_site_reads_upload_bodies_in_large_pieces() -> None:
    """
    While an upload body streams into a sink, the socket is read in
    UPLOAD_READ_SIZE pieces; afterwards the transport's usual size is back
    (it is also its write-buffer threshold), for the next request on the connection.
    """
    app = Klein()

    @app.route("/upload", methods=["PUT"])
    def upload(request: Request) -> bytes:
        return b"%d" % (request.channel.transport.bufferSize,)  # type: ignore[union-attr]  # a tcp.Server

    offers = _Offers(stream_path=b"/upload")
    port, base = await _serve(QuaydSite(app.resource(), body_sink_factory=offers))
    try:
        body = bytes(range(256)) * 16384  # 4 MiB
        response = await treq.put(f"{base}/upload", data=body)
        during = int(await response.text())
    finally:
        await _stop(port)
    assert response.code == 200
    [sink] = offers.sinks
    assert sink.finished
    assert bytes(sink.received) == body
    assert set(sink.read_sizes) == {UPLOAD_READ_SIZE}
    assert during < UPLOAD_READ_SIZE


class _AbortRecordingSink(_RecordingSink):
    """A recording sink that notes an abort instead of failing."""

    aborted: Failure | None = None

    def abort(self, reason: Failure) -> None:
        """Note the abort."""
        self.aborted = reason


def _upload_app() -> Klein:
    """C{PUT /upload} answers C{streamed}; C{GET /next} answers C{next}."""
    app = Klein()

    @app.route("/upload", methods=["PUT"])
    def upload(request: Request) -> bytes:
        return b"streamed"

    @app.route("/next", methods=["GET"])
    def following(request: Request) -> bytes:
        return b"next"

    return app


def _chunked(*chunks: bytes) -> bytes:
    """A chunked body of C{chunks}, with chunk extensions, a last chunk and trailer fields."""
    framed = b"".join(b"%x;name=value\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return framed + b"0\r\nX-Trailer: one\r\nX-Other: two\r\n\r\n"


async def _chunked_put(offers: _Offers, rest: bytes, close: bool = False) -> bytes:
    """
    Serve L{_upload_app} with C{offers}, send C{PUT /upload} with a chunked body
    followed by C{rest} (the framed body and anything after it) on one raw
    connection, and return everything the server answered before it closed.
    """
    port, _ = await _serve(QuaydSite(_upload_app().resource(), body_sink_factory=offers))
    head = b"PUT /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
    try:
        return await raw_exchange(port, head + (b"Connection: close\r\n" if close else b"") + b"\r\n" + rest)
    finally:
        await _stop(port)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_site_chunked_upload_streams_views_and_keeps_the_connection() -> None:
    """
    A chunked upload body (extensions, trailers) reaches the sink exactly, as
    views of the received bytes (no decoder copies), and the request pipelined
    after it on the same connection is answered too.
    """
    offers = _Offers(stream_path=b"/upload")
    chunks = [bytes(range(256)) * 40, b"x", os.urandom(3 * 1024 * 1024 + 17), b"tail"]
    answer = await _chunked_put(
        offers, _chunked(*chunks) + b"GET /next HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    [sink] = offers.sinks
    assert sink.finished
    assert bytes(sink.received) == b"".join(chunks)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert answer.index(b"streamed") < answer.index(b"next")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_site_chunked_upload_uses_the_copy_free_decoder() -> None:
    """Streamed chunked bodies are decoded by ChunkedBodyDecoder, which hands on memoryviews."""
    seen: set[type] = set()

    class _TypeSink(_RecordingSink):
        """Notes the type of every chunk."""

        def write(self, data: bytes | memoryview) -> None:
            """Note the chunk's type, then keep it."""
            seen.add(type(data))
            super().write(data)

    offers = _Offers(stream_path=b"/upload", sink_type=_TypeSink)
    answer = await _chunked_put(offers, _chunked(b"abc", b"defg"), close=True)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert seen == {memoryview}
    assert bytes(offers.sinks[0].received) == b"abcdefg"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"zz\r\nabc\r\n0\r\n\r\n", id="size-not-hex"),
        pytest.param(b"+3\r\nabc\r\n0\r\n\r\n", id="size-with-sign"),
        pytest.param(b"3\r\nabcX\r\n0\r\n\r\n", id="data-longer-than-size"),
        pytest.param(b"3;a\\b\r\nabc\r\n0\r\n\r\n", id="bad-extension-character"),
        pytest.param(b"3" + b";" * 1100 + b"\r\nabc\r\n0\r\n\r\n", id="size-line-too-long"),
        pytest.param(b"3\r\nabc\r\n0\r\nX: " + b"y" * 70000 + b"\r\n\r\n", id="trailers-too-long"),
    ],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_site_malformed_chunked_upload_answers_400(body: bytes) -> None:
    """Malformed chunked framing of a streamed body answers 400, closes the connection and aborts the sink."""
    offers = _Offers(stream_path=b"/upload", sink_type=_AbortRecordingSink)
    answer = await _chunked_put(offers, body + b"GET /next HTTP/1.1\r\nHost: test\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"next" not in answer
    [sink] = offers.sinks
    assert isinstance(sink, _AbortRecordingSink)
    assert not sink.finished
    assert sink.aborted is not None
