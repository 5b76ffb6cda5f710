"""
Running blocking work (disk I/O, fsync, hashing) off the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, Protocol, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

P = ParamSpec("P")
T = TypeVar("T")


class BlockingRunner(Protocol):
    """Run a blocking callable somewhere that is not the reactor thread."""

    def __call__(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        """Run C{f(*args, **kwargs)}; the Deferred fires with its result."""


class ThreadPoolService(Service):
    """
    A bounded thread pool owned by the service tree, started and stopped with it.

    It is itself a L{BlockingRunner}.
    """

    def __init__(self, reactor: IReactorFromThreads, minthreads: int = 2, maxthreads: int = 8) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads, maxthreads, name="quayd-blocking")

    def startService(self) -> None:
        """Start the pool's threads."""
        super().startService()  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self._pool.start()

    def stopService(self) -> None:
        """Stop the pool once queued work is done."""
        super().stopService()  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self._pool.stop()

    def __call__(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        """Run C{f} in the pool."""
        return deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)


def run_synchronously(f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
    """
    A L{BlockingRunner} that runs work at once in the calling thread (unit tests only).
    """
    return maybeDeferred(f, *args, **kwargs)
