"""
A small HTTP client for driving quayd over a real loopback socket in tests.

It owns its treq L{HTTPClient} and L{HTTPConnectionPool} (closed by
L{RegistryClient.close}), puts a timeout on every request and on reading
every body, and returns whole responses as L{Response} values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from treq.client import HTTPClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IConsumer, IListeningPort, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from quayd.errors import JSONValue

#: Seconds any one request (and reading its body) may take.
DEFAULT_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """A complete HTTP response."""

    code: int
    headers: Headers
    body: bytes
    length: int | None

    @property
    def content_length(self) -> int | None:
        """
        The response's C{Content-Length}.

        Twisted's client keeps that header out of C{headers} (it is connection
        control) except for responses to HEAD, so both places are consulted.
        """
        value = self.header("Content-Length")
        return int(value) if value is not None else self.length

    def header(self, name: str) -> str | None:
        """The first value of header C{name}, or C{None}."""
        values = self.headers.getRawHeaders(name.encode("latin-1"))
        return values[0].decode("latin-1") if values else None

    def json(self) -> JSONValue:
        """The body decoded as JSON."""
        return json.loads(self.body)


class RegistryClient:
    """
    Requests against one base URL with its own connection pool.

    @ivar base_url: C{http://host:port}, without a trailing slash.
    """

    def __init__(self, reactor: IReactorTime, base_url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url
        self._reactor = reactor
        self._timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 4
        self._http = HTTPClient(Agent(reactor, pool=self._pool, connectTimeout=5))

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | IBodyProducer | None = None,
        seconds: float | None = None,
    ) -> Response:
        """
        Send one request and read the whole response.

        @param path: The path and query, starting with C{/}; sent as given.
        @param seconds: The timeout, if not the client's default.
        @param body: The request body: bytes (sent with C{Content-Length}) or
            a producer (sent chunked when its length is unknown).
        """
        seconds = self._timeout if seconds is None else seconds
        raw_headers = Headers({name: [value] for name, value in (headers or {}).items()})
        response = await self._http.request(
            method,
            self.base_url + path,
            headers=raw_headers,
            data=body,
            allow_redirects=False,
            timeout=seconds,
        )
        content: Deferred[bytes] = response.content()
        content.addTimeout(seconds, self._reactor)
        length = response.length
        return Response(
            code=response.code,
            headers=response.headers,
            body=await content,
            length=length if isinstance(length, int) else None,
        )

    def start(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | IBodyProducer | None = None,
        seconds: float | None = None,
    ) -> Deferred[Response]:
        """Like L{request}, as a Deferred that the test may cancel."""
        return Deferred.fromCoroutine(self.request(method, path, headers=headers, body=body, seconds=seconds))

    async def close(self) -> None:
        """Close the pooled connections."""
        await self._pool.closeCachedConnections()


@implementer(IBodyProducer)
class StreamingBody:
    """
    A request body of unknown length (so sent chunked), produced chunk by
    chunk with a turn of the reactor between chunks.

    It honours C{pauseProducing}, so the server's backpressure reaches it. It
    can stop once it has sent C{hold_after} bytes until the test calls
    L{release}, so a test can look at the server while the body is still
    arriving.

    @ivar sent: Bytes handed to the connection so far.
    @ivar holding: Fires when the body stops at C{hold_after}.
    @ivar finished: Whether every chunk was sent.
    """

    length = UNKNOWN_LENGTH

    def __init__(
        self,
        clock: IReactorTime,
        chunks: Iterable[bytes],
        *,
        hold_after: int | None = None,
        delay: float = 0.0,
    ) -> None:
        self._clock = clock
        self._chunks = chunks
        self._hold_after = hold_after
        self._delay = delay
        self._released: Deferred[None] = Deferred()
        self._resumed: Deferred[None] | None = None
        self._paused = False
        self._stopped = False
        self._done: Deferred[None] = Deferred()
        self.sent = 0
        self.finished = False
        self.holding: Deferred[None] = Deferred()

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """Start writing chunks to C{consumer}."""
        Deferred.fromCoroutine(self._produce(consumer)).addErrback(self._done.errback)
        return self._done

    async def _produce(self, consumer: IConsumer) -> None:
        for chunk in self._chunks:
            while self._paused and not self._stopped:
                self._resumed = Deferred()
                await self._resumed
            if self._stopped:
                return
            consumer.write(chunk)
            self.sent += len(chunk)
            if self._hold_after is not None and self.sent >= self._hold_after and not self.holding.called:
                self.holding.callback(None)
                await self._released
                if self._stopped:
                    return
            await deferLater(self._clock, self._delay, lambda: None)
        if not self._stopped:
            self.finished = True
            self._done.callback(None)

    def release(self) -> None:
        """Continue after C{hold_after}."""
        if not self._released.called:
            self._released.callback(None)

    def pauseProducing(self) -> None:
        """The connection's buffer is full."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The connection's buffer drained."""
        self._paused = False
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.callback(None)

    def stopProducing(self) -> None:
        """The request was cancelled or its connection lost: stop, never firing C{startProducing}'s result."""
        self._stopped = True
        self.resumeProducing()
        self.release()


class _RawClient(Protocol):
    """Sends raw bytes and keeps everything the server answers until it closes the connection."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        """Keep the answer's bytes."""
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The server closed the connection."""
        self.closed.callback(None)


async def raw_exchange(port: IListeningPort, request: bytes) -> bytes:
    """
    Send C{request} as raw bytes on a new connection to the loopback C{port}; return
    everything that came back before the server closed the connection.
    """
    from twisted.internet import reactor

    client = _RawClient()
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", address.port), client)
    assert client.transport is not None
    client.transport.write(request)
    # A safety net against a hung test, not a timing assertion.
    await client.closed.addTimeout(60, reactor)
    return bytes(client.received)
