"""
Background housekeeping on the reactor clock: expiring abandoned uploads.
"""

from __future__ import annotations

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from quayd.registry.uploads import UploadService

_log = Logger()


class UploadJanitor(TimerService):
    """
    Removes upload sessions untouched for longer than C{expiry} seconds.
    """

    def __init__(self, uploads: UploadService, clock: IReactorTime, expiry: float, interval: float) -> None:
        super().__init__(interval, self._tick)  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self.clock = clock
        self._uploads = uploads
        self._clock = clock
        self._expiry = expiry

    def _tick(self) -> Deferred[int]:
        return Deferred.fromCoroutine(self.expire_stale())

    async def expire_stale(self) -> int:
        """Expire stale sessions now; returns how many were removed."""
        try:
            count = await self._uploads.expire(self._clock.seconds() - self._expiry)
        except Exception:
            _log.failure("expiring upload sessions failed")
            return 0
        if count:
            _log.info("expired {count} abandoned upload sessions", count=count)
        return count
