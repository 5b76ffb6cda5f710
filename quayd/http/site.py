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
from twisted.web._abnf import _hexint
from twisted.web.http import (
    _ChunkedTransferDecoder,
    _chunkExtChars,
    _GenericHTTPChannelProtocol,
    _MalformedChunkedDataError,
    maxChunkSizeLineLength,
)
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


#: Most bytes of trailer fields after a chunked body, as Twisted's own decoder allows.
MAX_TRAILER_BYTES = 2**16

# States of ChunkedBodyDecoder.
_SIZE_LINE = 0
_DATA = 1
_DATA_END = 2
_TRAILER = 3
_FINISHED = 4


class BodySink(Protocol):
    """Receives a request body as it arrives."""

    def write(self, data: bytes | memoryview) -> None:
        """
        One chunk of the body (reactor thread). A C{memoryview} is a read-only
        view of the received bytes: it stays valid, and nobody changes it.
        """

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


class ChunkedBodyDecoder:
    """
    Decodes a C{Transfer-Encoding: chunked} upload body without copying it.

    Twisted's C{_ChunkedTransferDecoder} appends every read to a buffer and
    copies each chunk out of it again: two copies of every body byte on the
    reactor thread. This decoder hands on read-only views of the received
    bytes instead; only a chunk-size line, chunk end or trailer line split
    between two reads is buffered (a few bytes).

    It accepts and rejects exactly what Twisted's decoder does, at the same
    point of the stream: the chunk size is 1*HEXDIG, chunk extensions may only
    hold the characters Twisted allows, a chunk-size line is shorter than
    C{maxChunkSizeLineLength}, each chunk ends with CR LF, and trailer fields
    (read and discarded) total at most L{MAX_TRAILER_BYTES}. Malformed framing
    raises C{_MalformedChunkedDataError}, which C{HTTPChannel} answers with
    400 before it closes the connection. The bytes after the last chunk's
    trailers (a pipelined next request) go to C{finish_callback}.
    """

    def __init__(
        self, data_callback: Callable[[memoryview], None], finish_callback: Callable[[bytes], None]
    ) -> None:
        """
        @param data_callback: Receives the body, piece by piece.
        @param finish_callback: Called once after the last chunk and its
            trailers, with the bytes that followed them.
        """
        self._data_callback = data_callback
        self._finish_callback = finish_callback
        self._state = _SIZE_LINE
        self._remaining = 0
        self._partial = bytearray()
        self._trailer_bytes = 0

    def dataReceived(self, data: bytes) -> None:
        """
        Decode the next bytes of the body.

        @raise _MalformedChunkedDataError: On malformed framing.
        @raise RuntimeError: If called after the last chunk.
        """
        if self._state == _FINISHED:
            raise RuntimeError("ChunkedBodyDecoder.dataReceived called after the last chunk")
        view = memoryview(data)
        position = 0
        end = len(data)
        while position < end:
            state = self._state
            if state == _DATA:
                stop = position + self._remaining
                if stop <= end:
                    self._state = _DATA_END
                    self._remaining = 0
                    self._data_callback(view[position:stop])
                    position = stop
                else:
                    self._remaining = stop - end
                    self._data_callback(view[position:] if position else view)
                    return
            elif state == _DATA_END:
                partial = self._partial
                if not partial and end - position >= 2:
                    if data[position] != 13 or data[position + 1] != 10:
                        raise _MalformedChunkedDataError("Chunk did not end with CRLF")
                    position += 2
                else:
                    take = min(2 - len(partial), end - position)
                    partial += view[position : position + take]
                    position += take
                    if len(partial) < 2:
                        return
                    if partial != b"\r\n":
                        raise _MalformedChunkedDataError("Chunk did not end with CRLF")
                    partial.clear()
                self._state = _SIZE_LINE
            elif state == _SIZE_LINE:
                line, position = self._take_line(data, position, maxChunkSizeLineLength - 1)
                if line is None:
                    if len(self._partial) > maxChunkSizeLineLength:
                        raise _MalformedChunkedDataError(
                            f"Chunk size line exceeds maximum of {maxChunkSizeLineLength} bytes."
                        )
                    return
                self._chunk_size(line)
            else:
                room = MAX_TRAILER_BYTES - self._trailer_bytes - 2
                line, position = self._take_line(data, position, room)
                if line is None:
                    partial = self._partial
                    if len(partial) + (1 if partial[-1] == 13 else 2) > room + 2:
                        raise _MalformedChunkedDataError("Trailer headers data is too long.")
                    return
                if line:
                    if len(line) > room:
                        raise _MalformedChunkedDataError("Trailer headers data is too long.")
                    self._trailer_bytes += len(line) + 2
                    continue
                self._state = _FINISHED
                self._finish_callback(data[position:])
                return

    def _take_line(self, data: bytes, position: int, room: int) -> tuple[bytes | None, int]:
        """
        Read the line at C{position}, looking for its CR LF only as far as a
        line of C{room} bytes (an empty line always fits).

        @return: The line without its CR LF and the position after it; or
            C{None} and the end of C{data} when no line ends within reach. The
            bytes looked at are then kept in C{_partial}: all of them when the
            line may still end within C{room} bytes, else more than C{room} + 1,
            for the caller to reject.
        """
        partial = self._partial
        window = max(room, 0) + 2
        if partial and partial[-1] == 13 and data[position] == 10:
            line = bytes(partial[:-1])
            partial.clear()
            return line, position + 1
        eol = data.find(b"\r\n", position, position + window - len(partial))
        if eol < 0:
            partial += data[position : position + window]
            return None, len(data)
        line = bytes(partial) + data[position:eol] if partial else data[position:eol]
        partial.clear()
        return line, eol + 2

    def _chunk_size(self, line: bytes) -> None:
        """Parse a chunk-size line (size, then optional extensions) and move to the chunk's data."""
        semicolon = line.find(b";")
        size = line if semicolon < 0 else line[:semicolon]
        try:
            length = _hexint(size)
        except ValueError:
            raise _MalformedChunkedDataError("Chunk-size must be an integer.") from None
        if semicolon >= 0:
            extensions = line[semicolon + 1 :]
            if extensions and extensions.translate(None, _chunkExtChars) != b"":
                raise _MalformedChunkedDataError(f"Invalid characters in chunk extensions: {extensions!r}.")
        if length == 0:
            self._state = _TRAILER
        else:
            self._state = _DATA
            self._remaining = length


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
                    self._decode_without_copies(sink)
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

    def _decode_without_copies(self, sink: BodySink) -> None:
        """
        Swap Twisted's chunked decoder for a L{ChunkedBodyDecoder} feeding C{sink}.

        The channel chose its decoder from the headers (C{_transferDecoder},
        private) and has not given it any body bytes yet. Only Twisted's own
        chunked decoder is replaced; anything else keeps decoding as it was.
        """
        channel = self.channel
        decoder = getattr(channel, "_transferDecoder", None)
        if type(decoder) is not _ChunkedTransferDecoder:
            return
        # Read defensively: these are Twisted's private attributes; another shape keeps its decoder.
        fresh = getattr(decoder, "state", None) == "CHUNK_LENGTH" and getattr(decoder, "_buffer", None) == b""
        finish = getattr(decoder, "finishCallback", None)
        if fresh and callable(finish):
            channel._transferDecoder = ChunkedBodyDecoder(sink.write, finish)

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
