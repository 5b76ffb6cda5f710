"""
A L{quayd.blocking.BlockingRunner} for unit tests that need blocking work to lag.

L{quayd.blocking.run_synchronously} runs work at once, which hides anything
that depends on work still being in flight (backpressure, for example).
L{SteppingRunner} runs the very same functions, in the calling thread, but
only when the test says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred

P = ParamSpec("P")
T = TypeVar("T")


class SteppingRunner:
    """
    Runs blocking work in the calling thread, immediately or when stepped.

    While L{held} is false it behaves like L{quayd.blocking.run_synchronously}.
    While it is true, calls queue up and run, in order, on L{step}.

    @ivar held: Whether new calls wait for L{step}.
    """

    def __init__(self) -> None:
        self.held = False
        self._pending: list[Callable[[], None]] = []

    def __call__(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        """Run C{f} now, or queue it while held."""
        if not self.held:
            return maybeDeferred(f, *args, **kwargs)
        d: Deferred[T] = Deferred()

        def run() -> None:
            maybeDeferred(f, *args, **kwargs).chainDeferred(d)

        self._pending.append(run)
        return d

    @property
    def pending(self) -> int:
        """How many calls are waiting."""
        return len(self._pending)

    def step(self) -> int:
        """
        Run the calls queued so far (not those they queue in turn).

        @return: How many calls ran.
        """
        batch, self._pending = self._pending, []
        for run in batch:
            run()
        return len(batch)
