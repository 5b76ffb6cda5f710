"""
The HTTP site: a Request that streams upload bodies instead of spooling them.

Stock C{twisted.web} copies every request body into a temporary file before
the resource sees it. L{StreamingRequest} asks the site's body sink factory,
once all headers are in, whether the request is an upload; if so, each body
chunk goes straight to the sink (which hashes and stages it, applying
backpressure to the socket). Other bodies are buffered as usual, up to a
limit.
"""

from __future__ import annotations

import io
import tempfile
import weakref
from collections.abc import Callable
from typing import BinaryIO, Protocol

from twisted.internet.interfaces import IAddress, IPushProducer, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import _GenericHTTPChannelProtocol
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource

_log = Logger()

_TLS_HANDSHAKE = b"\x16"
_PLAIN_HTTP_ONLY = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
    b"Client sent an HTTPS request to a plain HTTP listener.\n"
)

#: Largest non-upload body buffered in memory (manifests, JSON documents).
DEFAULT_MAX_BUFFERED_BODY = 4 * 1024 * 1024
#: The methods whose bodies a L{BodySinkFactory} is asked about; other requests
#: (GET, HEAD, DELETE, ...) never carry an upload, and skip the factory's route matching.
STREAMABLE_METHODS = frozenset({b"POST", b"PATCH", b"PUT"})
#: Socket read size while an upload body streams in. Twisted reads 64 KiB per C{recv}
#: (C{FileDescriptor.bufferSize}), and everything per read (the HTTP parser, the decoder,
#: the sink) is Python; 1 MiB reads halve the reactor's CPU time per uploaded GiB.
UPLOAD_READ_SIZE = 1024 * 1024

#: Buffered request bodies shorter than this are kept in memory, longer ones in a temporary file.
_IN_MEMORY_BODY = 100_000

#: Whether each open connection uses TLS (see L{StreamingRequest.isSecure}).
_SECURE_CHANNELS: weakref.WeakKeyDictionary[object, bool] = weakref.WeakKeyDictionary()


class BodySink(Protocol):
    """Receives a request body as it arrives."""

    def write(self, data: bytes) -> None:
        """One chunk of the body (reactor thread)."""

    def finish(self) -> None:
        """The whole body has arrived."""

    def abort(self, reason: Failure) -> None:
        """The connection was lost before the body was complete."""


class BodySinkFactory(Protocol):
    """Decides, from the request line and headers, whether a body is streamed."""

    def __call__(
        self,
        method: bytes,
        path: bytes,
        headers: Headers,
        length: int | None,
        producer: IPushProducer,
        client: str = "-",
    ) -> BodySink | None:
        """
        Return a sink for the body, or C{None} to buffer it normally. Only
        requests whose method is in L{STREAMABLE_METHODS} are offered.

        @param producer: The transport, to pause while the sink lags behind.
        """


class StreamingRequest(server.Request):
    """
    A request whose upload bodies stream into a L{BodySink}.

    @ivar body_sink: The sink receiving this request's body, if streamed.
    @ivar body_too_large: Whether a buffered body exceeded the site's limit
        (its bytes were discarded).
    """

    body_sink: BodySink | None = None
    body_too_large: bool = False
    _body_complete: bool = False
    _body_received: int = 0
    _saved_read_size: int | None = None

    def _site(self) -> QuaydSite | None:
        site = getattr(self.channel, "site", None)
        return site if isinstance(site, QuaydSite) else None

    def isSecure(self) -> bool:
        """
        Whether the connection uses TLS, found once per connection.

        Klein asks on every request, and Twisted answers by adapting the transport to
        C{ISSLTransport} each time; a connection's transport never changes.
        """
        if self._forceSSL:
            return True
        channel = self.channel
        if channel is None:
            return False
        secure = _SECURE_CHANNELS.get(channel)
        if secure is None:
            secure = _SECURE_CHANNELS[channel] = bool(channel.isSecure())
        return secure

    def gotLength(self, length: int | None) -> None:
        """
        All headers are in: pick a sink for upload bodies, else buffer (bounded).

        The method and path are read from the channel's private attributes;
        when they are missing (HTTP/2) the body is buffered as usual.
        """
        site = self._site()
        method = getattr(self.channel, "_command", None)
        path = getattr(self.channel, "_path", None)
        if site is not None and isinstance(method, bytes) and isinstance(path, bytes):
            factory = site.body_sink_factory
            if factory is not None and method in STREAMABLE_METHODS:
                transport = getattr(self.channel, "transport", None)
                peer = self.getClientAddress()  # type: ignore[no-untyped-call]  # unannotated in Twisted
                client = str(getattr(peer, "host", "-"))
                sink = factory(method, path, self.requestHeaders, length, IPushProducer(transport), client)
                if sink is not None:
                    self.body_sink = sink
                    self.content = io.BytesIO()
                    self._widen_reads(transport)
                    return
            if length is not None and length > site.max_buffered_body:
                self.body_too_large = True
                self.content = io.BytesIO()
                return
        super().gotLength(length)  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated

    def _widen_reads(self, transport: object) -> None:
        """
        Read the socket in L{UPLOAD_READ_SIZE} pieces until the body is complete.

        C{bufferSize} is also the transport's write-buffer threshold for pausing
        producers, so L{_restore_reads} puts the old value back afterwards.
        """
        size = getattr(transport, "bufferSize", None)
        if isinstance(size, int) and size < UPLOAD_READ_SIZE:
            self._saved_read_size = size
            transport.bufferSize = UPLOAD_READ_SIZE  # type: ignore[attr-defined]  # checked just above

    def _restore_reads(self) -> None:
        saved, self._saved_read_size = self._saved_read_size, None
        transport = getattr(self.channel, "transport", None)
        if saved is not None and transport is not None:
            transport.bufferSize = saved

    def handleContentChunk(self, data: bytes) -> None:
        """Hand a body chunk to the sink, or buffer it within the limit."""
        if self.body_sink is not None:
            self.body_sink.write(data)
            return
        if self.body_too_large:
            return
        self._body_received += len(data)
        site = self._site()
        if site is not None and self._body_received > site.max_buffered_body:
            self.body_too_large = True
            if self.content is not None:
                self.content.close()
            self.content = io.BytesIO()
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """The body is complete: tell the sink, then route and render."""
        if self.body_sink is not None:
            self._body_complete = True
            self._restore_reads()
            self.body_sink.finish()
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated

    def connectionLost(self, reason: Failure) -> None:
        """Abort a streamed body that did not complete."""
        if self.body_sink is not None and not self._body_complete:
            self._body_complete = True
            self.body_sink.abort(reason)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated


class QuaydSite(server.Site):
    """
    A site serving quayd's resource with streaming uploads and structured access logs.
    """

    requestFactory = StreamingRequest

    def __init__(
        self,
        resource: IResource,
        body_sink_factory: BodySinkFactory | None = None,
        max_buffered_body: int = DEFAULT_MAX_BUFFERED_BODY,
        access_log: bool = True,
    ) -> None:
        """
        @param access_log: Whether to emit the access-log events (at level
            C{info}); when the configured level filters them out anyway, not
            building them saves their cost on every request.
        """
        super().__init__(resource)  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self.body_sink_factory = body_sink_factory
        self.max_buffered_body = max_buffered_body
        self.access_log = access_log
        self.displayTracebacks = False

    def getContentFile(self, length: int | None) -> BinaryIO:
        """
        Where a buffered request body is kept: memory below 100 kB, else a temporary file, as
        Twisted's default does. Defining it saves Twisted's request an C{AttributeError} raised
        and caught on every request while it looks for this hook.
        """
        if length is not None and length < _IN_MEMORY_BODY:
            return io.BytesIO()
        return tempfile.TemporaryFile()

    def buildProtocol(self, addr: IAddress | None) -> _GenericHTTPChannelProtocol | None:
        """
        Build the HTTP protocol, answering a TLS handshake on this plain-HTTP
        listener with an immediate 400, as Go's servers do.

        Clients configured for an insecure registry try HTTPS first; without
        an answer they would wait for their handshake timeout before falling
        back to plain HTTP.
        """
        protocol: _GenericHTTPChannelProtocol | None = super().buildProtocol(addr)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        if protocol is None:
            return None
        original: Callable[[bytes], None] = protocol.dataReceived
        original_connect: Callable[[ITransport], None] = protocol.makeConnection
        connection: list[ITransport] = []

        def make_connection(transport: ITransport) -> None:
            connection.append(transport)
            del protocol.makeConnection
            original_connect(transport)

        def first_data(data: bytes) -> None:
            del protocol.dataReceived  # back to the class's method for the rest
            if data[:1] == _TLS_HANDSHAKE and connection:
                connection[0].write(_PLAIN_HTTP_ONLY)
                connection[0].loseConnection()
                return
            original(data)

        protocol.makeConnection = make_connection  # see the transport

        protocol.dataReceived = first_data  # type: ignore[method-assign]  # sniff only the first bytes
        return protocol

    def log(self, request: server.Request) -> None:  # type: ignore[override]  # twisted's own annotation is looser
        """Emit one structured access-log event per request (unless L{access_log} is off)."""
        if not self.access_log:
            return
        _log.info(
            "{client} {method} {uri} {status} {length}",
            client=request.getClientAddress().__dict__.get("host", "-"),
            method=request.method.decode("ascii", "replace"),
            uri=request.uri.decode("ascii", "replace")[:512],
            status=request.code,
            length=request.sentLength,
            log_system="access",
        )
