"""
Synchronous inspection of Deferreds, in the manner of trial's C{SynchronousTestCase}.

Unit tests that drive code with a L{task.Clock} and a synchronous
L{quayd.blocking.BlockingRunner} use these to read a Deferred's outcome
without running the reactor.
"""

from __future__ import annotations

from typing import TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


def _outcome(d: Deferred[T]) -> list[T | Failure]:
    """
    Take the current result of C{d}, if it has one.

    The result is consumed (the Deferred is left holding C{None}), so a
    failure inspected here is never reported as unhandled.

    @return: An empty list if C{d} has not fired, else its one result.
    """
    outcome: list[T | Failure] = []

    def take(result: T | Failure) -> None:
        outcome.append(result)

    d.addBoth(take)
    return outcome


def success_result_of(d: Deferred[T]) -> T:
    """
    Return the result C{d} has already succeeded with.

    @raise pytest.fail.Exception: If C{d} has no result yet or failed.
    """
    outcome = _outcome(d)
    if not outcome:
        pytest.fail(f"success result expected on {d!r}, found no result instead")
    result = outcome[0]
    if isinstance(result, Failure):
        pytest.fail(f"success result expected on {d!r}, found failure instead:\n{result.getTraceback()}")
    return result


def failure_result_of(d: Deferred[T], *types: type[BaseException]) -> Failure:
    """
    Return the failure C{d} has already failed with.

    @param types: If given, the failure must wrap one of these exception types.
    @raise pytest.fail.Exception: If C{d} has no result yet, succeeded, or
        failed with another exception type.
    """
    outcome = _outcome(d)
    if not outcome:
        pytest.fail(f"failure result expected on {d!r}, found no result instead")
    result = outcome[0]
    if not isinstance(result, Failure):
        pytest.fail(f"failure result expected on {d!r}, found success result ({result!r}) instead")
    if types and not result.check(*types):
        expected = " or ".join(t.__qualname__ for t in types)
        pytest.fail(
            f"failure of type {expected} expected on {d!r}, found {result.type!r} instead:\n"
            f"{result.getTraceback()}"
        )
    return result


def assert_no_result(d: Deferred[T]) -> None:
    """
    Assert that C{d} has not fired yet.

    The Deferred is left as it was: a result it gets later still reaches
    callbacks added afterwards.

    @raise pytest.fail.Exception: If C{d} already has a result.
    """
    outcome: list[T | Failure] = []

    def peek(result: T | Failure) -> T | Failure:
        outcome.append(result)
        return result

    d.addBoth(peek)
    if outcome:
        # The test fails anyway; don't also report the failure as unhandled.
        d.addErrback(lambda _: None)
        pytest.fail(f"no result expected on {d!r}, found {outcome[0]!r} instead")
