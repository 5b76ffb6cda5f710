"""
Serving blob bytes: a push producer reading 1 MiB at a time, with Range support.
"""

from __future__ import annotations

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

    async def _run(self) -> None:
        while self._remaining > 0 and not self._stopped:
            if self._paused:
                self._waiting = Deferred()
                await self._waiting
                continue
            data = await self._reader.read(self._offset, min(CHUNK, self._remaining))
            if self._stopped:
                break
            if not data:
                raise OSError(f"blob ended {self._remaining} bytes early")
            self._offset += len(data)
            self._remaining -= len(data)
            self._request.write(data)
        self._close()
        if not self._stopped:
            self._request.unregisterProducer()
            self._request.finish()
        if not self.done.called:
            self.done.callback(None)

    def _crashed(self, failure: Failure) -> None:
        _log.failure("streaming a blob failed", failure)
        self._close()
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
