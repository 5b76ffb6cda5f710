"""
Tests for L{quayd.db.store.Coalescer}: concurrent lookups answered by one
query per batch, each by a query that started after it was asked.

The fetch function is a fake whose answers the test releases, so that the
order of events is exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from quayd.db.store import Coalescer


@dataclass
class _Fetches:
    """
    A fake batch query: records the keys of every call and answers when the
    test calls L{answer} (from the table as it is then, as a real query reads
    the database when it runs).

    @ivar table: The values a query finds.
    @ivar calls: The keys of each call, in order.
    """

    table: dict[str, int] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    _pending: list[Deferred[Mapping[str, int]]] = field(default_factory=list)

    def __call__(self, keys: Sequence[str]) -> Deferred[Mapping[str, int]]:
        """Start one query for C{keys}."""
        self.calls.append(list(keys))
        d: Deferred[Mapping[str, int]] = Deferred()
        self._pending.append(d)
        return d

    def answer(self) -> None:
        """Run the oldest started query against the table now."""
        keys = self.calls[len(self.calls) - len(self._pending)]
        d = self._pending.pop(0)
        d.callback({k: self.table[k] for k in keys if k in self.table})

    def fail(self, error: Exception) -> None:
        """Fail the oldest started query."""
        self._pending.pop(0).errback(error)

    @property
    def running(self) -> int:
        """How many queries have started and not been answered."""
        return len(self._pending)


def _result(d: Deferred[int | None]) -> int | None:
    """The value C{d} fired with (it must have fired successfully)."""
    results: list[int | None] = []
    d.addCallback(results.append)
    assert results, "the lookup has not been answered"
    return results[0]


def test_idle_lookup_starts_a_query_at_once() -> None:
    """With nothing running, a lookup's query starts immediately, alone."""
    fetches = _Fetches({"a": 1})
    coalescer = Coalescer(fetches)
    d = coalescer.get("a")
    assert fetches.calls == [["a"]]
    fetches.answer()
    assert _result(d) == 1


def test_lookups_during_a_query_share_the_next_one() -> None:
    """
    Lookups asked while a query runs wait for the next query, which answers
    them all at once; a key asked for twice is looked up once.
    """
    fetches = _Fetches({"a": 1, "b": 2})
    coalescer = Coalescer(fetches)
    first = coalescer.get("a")
    waiting = [coalescer.get("b"), coalescer.get("a"), coalescer.get("c"), coalescer.get("b")]
    assert fetches.calls == [["a"]]
    fetches.answer()
    assert _result(first) == 1
    assert fetches.calls == [["a"], ["b", "a", "c"]]
    assert not any(d.called for d in waiting)
    fetches.answer()
    assert [_result(d) for d in waiting] == [2, 1, None, 2]
    assert fetches.running == 0


def test_lookup_never_joins_a_running_query() -> None:
    """
    A lookup asked after a change is answered by a query that started after
    it: the running query (which may have read the old state) does not answer
    it, so nothing stale is ever served.
    """
    fetches = _Fetches({"tag": 1})
    coalescer = Coalescer(fetches)
    before = coalescer.get("tag")
    fetches.table["tag"] = 2  # another process moves the tag; the running query missed it
    after = coalescer.get("tag")
    # The running query read the table before the change.
    d = fetches._pending.pop(0)
    d.callback({"tag": 1})
    assert _result(before) == 1
    fetches.answer()
    assert _result(after) == 2


def test_failure_reaches_every_waiter_of_its_batch_only() -> None:
    """A failed query fails the lookups it was answering; the next batch still runs."""
    fetches = _Fetches({"a": 1})
    coalescer = Coalescer(fetches)
    first = coalescer.get("a")
    second = coalescer.get("a")
    fetches.fail(RuntimeError("database gone"))
    failures: list[BaseException | None] = []

    def failed(failure: Failure) -> None:
        failures.append(failure.value)

    first.addErrback(failed)
    assert isinstance(failures[0], RuntimeError)
    assert fetches.calls == [["a"], ["a"]]
    fetches.answer()
    assert _result(second) == 1


def test_cancelled_lookup_is_skipped() -> None:
    """A lookup cancelled by its caller (a client went away) does not disturb the others."""
    fetches = _Fetches({"a": 1})
    coalescer = Coalescer(fetches)
    cancelled = coalescer.get("a")
    kept = coalescer.get("a")
    cancelled.cancel()
    cancelled.addErrback(lambda f: f.trap(CancelledError))
    fetches.answer()
    fetches.answer()
    assert _result(kept) == 1


def test_reentrant_lookup_from_a_callback_is_answered() -> None:
    """A lookup asked by a waiter's callback (the next request) runs in a later batch."""
    fetches = _Fetches({"a": 1, "b": 2})
    coalescer = Coalescer(fetches)
    inner: list[Deferred[int | None]] = []
    coalescer.get("a").addCallback(lambda _: inner.append(coalescer.get("b")))
    fetches.answer()
    assert fetches.calls == [["a"], ["b"]]
    fetches.answer()
    assert _result(inner[0]) == 2


@pytest.mark.parametrize("count", [1, 3, 7])
def test_batches_are_limited(count: int) -> None:
    """No query looks up more keys than the limit; the rest wait for the next ones."""
    fetches = _Fetches({str(i): i for i in range(10)})
    coalescer = Coalescer(fetches, limit=count)
    blocker = coalescer.get("blocker")
    waiting = [coalescer.get(str(i)) for i in range(10)]
    fetches.answer()
    assert _result(blocker) is None
    while fetches.running:
        fetches.answer()
    assert all(len(keys) <= count for keys in fetches.calls)
    assert [_result(d) for d in waiting] == list(range(10))
