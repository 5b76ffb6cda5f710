"""
Serving blob bytes: a push producer with Range support.

Over plain TCP, when the blob is a local file, the body goes out with
C{os.sendfile}: the kernel hands page-cache pages to the socket, with no
C{pread} copy into Python and no copy from Python into the socket. When the
socket is full, the producer pauses until the reactor sees it writable again.
Otherwise (TLS, other stores) it reads and writes 1 MiB at a time.
"""

from __future__ import annotations

import os

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from quayd.storage.interfaces import IBlobReader

_log = Logger()

#: Bytes read per chunk.
CHUNK = 1 << 20
#: Largest C{sendfile} call (like L{CHUNK}, bounds the reactor's time per call on a cold file).
SENDFILE_CHUNK = 1 << 20
#: Bytes written through the transport before the first C{sendfile} (with the headers), and
#: whenever the socket is full and the transport cannot be asked to wait for room
#: (L{_wait_for_room}). More than the transport's C{bufferSize} (64 KiB), so that the
#: transport pauses this producer and resumes it once the socket has taken them all.
NUDGE = 128 * 1024


def _sendfile_socket(request: Request) -> int | None:
    """
    The socket to C{sendfile} to: plain TCP or UNIX only (not TLS, not HTTP/2),
    and only for a body with a C{Content-Length} (a chunked body needs framing).
    """
    transport = getattr(getattr(request, "channel", None), "transport", None)
    if request.isSecure() or not isinstance(transport, tcp.Connection) or request.chunked:
        return None
    return transport.getHandle().fileno()


def _transport_drained(request: Request) -> bool:
    """
    Whether everything written through the transport has reached the socket.

    C{dataBuffer} and C{_tempDataLen} are C{FileDescriptor} internals (Twisted 26.10);
    if they are missing, this says no and the producer keeps reading and writing.
    """
    transport = getattr(request.channel, "transport", None)
    return getattr(transport, "dataBuffer", b"-") == b"" and getattr(transport, "_tempDataLen", 1) == 0


def _wait_for_room(request: Request) -> bool:
    """
    Pause the request's producer until the socket can take more, writing nothing.

    This is what C{FileDescriptor.write} does when its buffer passes C{bufferSize}: mark
    the transport's producer (the HTTP channel, which passes it on to this request's
    producer) paused and pause it. C{startWriting} then has the reactor call C{doWrite}
    once the socket is writable; with nothing buffered it resumes the producer. The
    C{producer} and C{producerPaused} attributes belong to Twisted's C{FileDescriptor}.

    @return: Whether the wait is arranged; if not, the caller nudges (L{NUDGE}).
    """
    transport = getattr(request.channel, "transport", None)
    producer = getattr(transport, "producer", None)
    if transport is None or producer is None or not hasattr(transport, "producerPaused"):
        return False
    transport.producerPaused = True
    producer.pauseProducing()
    transport.startWriting()
    return True


@implementer(IPushProducer)
class BlobProducer:
    """
    Streams a byte range of a blob to a request.

    Registered as a push producer: the transport pauses it when its buffer is
    full and resumes it when the buffer drains; a lost connection stops it and
    closes the reader.

    @ivar done: Fires when the body is written or the client went away.
    """

    def __init__(self, request: Request, reader: IBlobReader, offset: int, length: int) -> None:
        self._request = request
        self._reader = reader
        self._offset = offset
        self._remaining = length
        self._paused = False
        self._stopped = False
        self._waiting: Deferred[None] | None = None
        self.done: Deferred[None] = Deferred()

    def start(self) -> Deferred[None]:
        """Register with the request and start streaming."""
        self._request.registerProducer(self, True)
        self._request.notifyFinish().addErrback(lambda _: self.stopProducing())
        Deferred.fromCoroutine(self._run()).addErrback(self._crashed)
        return self.done

    def _sendfile(self, sock: int, fd: int) -> bool:
        """
        Send from the file straight to the socket until it is full.

        @return: Whether the socket took everything offered (call again).
        """
        offered = min(SENDFILE_CHUNK, self._remaining)
        try:
            sent = os.sendfile(sock, fd, self._offset, offered)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            # Socket full, or the client is gone: the next write through the transport
            # waits for room, or makes Twisted notice the loss and stop this producer.
            sent = 0
        self._offset += sent
        self._remaining -= sent
        self._request.sentLength += sent  # what request.write would count, for the access log
        return sent == offered

    async def _run(self) -> None:
        fd = self._reader.fileno()
        sock = _sendfile_socket(self._request) if fd is not None else None
        chunk = CHUNK if sock is None else NUDGE
        while self._remaining > 0 and not self._stopped:
            if self._paused:
                self._waiting = Deferred()
                await self._waiting
                continue
            if (
                sock is not None
                and fd is not None
                and self._request.startedWriting
                and _transport_drained(self._request)
                and (self._sendfile(sock, fd) or not self._remaining or _wait_for_room(self._request))
            ):
                continue
            data = await self._reader.read(self._offset, min(chunk, self._remaining))
            if self._stopped:
                break
            if not data:
                raise OSError(f"blob ended {self._remaining} bytes early")
            self._offset += len(data)
            self._remaining -= len(data)
            self._request.write(data)
        self._close()
        self._unregister()
        if not self._stopped:
            self._request.finish()
        if not self.done.called:
            self.done.callback(None)

    def _unregister(self) -> None:
        """
        Unregister from the request, also when the connection is going away.

        When the client hangs up, the transport stops this producer before the
        request hears of the loss, so Klein still finishes the request once
        L{done} fires; a producer left registered then makes Twisted log a
        critical "Producer was not unregistered" failure.
        """
        if self._request.producer is not None and getattr(self._request, "channel", None) is not None:
            self._request.unregisterProducer()

    def _crashed(self, failure: Failure) -> None:
        _log.failure("streaming a blob failed", failure)
        self._close()
        self._unregister()
        transport = getattr(getattr(self._request, "channel", None), "transport", None)
        if transport is not None:
            transport.abortConnection()
        if not self.done.called:
            self.done.callback(None)

    def _close(self) -> None:
        self._reader.close()

    def pauseProducing(self) -> None:
        """The transport's buffer is full."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The transport's buffer drained."""
        self._paused = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def stopProducing(self) -> None:
        """The connection is gone."""
        if self._stopped:
            return
        self._stopped = True
        self.resumeProducing()
