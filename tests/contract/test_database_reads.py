"""
Single-statement reads through L{IDatabase.execute}, run against every backend:
they see every transaction committed before they were asked, never wait for
an open write transaction, and keep each caller's rows apart when many run
at once (SQLite batches them into one trip to its read thread, PostgreSQL
runs each as one autocommit statement).
"""

from __future__ import annotations

import contextlib

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from quayd.db.interfaces import IDatabase, Transaction
from quayd.errors import Unavailable
from tests.contract.conftest import DatabaseBackend

_SCHEMA = "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"


async def _with_items(backend: DatabaseBackend, *names: str) -> IDatabase:
    """The backend's database with an C{item} table holding C{names} (ids from 1)."""
    database = backend.database
    await database.run_script(_SCHEMA)
    for number, name in enumerate(names, start=1):
        await database.execute("INSERT INTO item (id, name) VALUES (?, ?)", (number, name))
    return database


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_read_sees_every_committed_transaction(database_backend: DatabaseBackend) -> None:
    """A read asked after a transaction committed sees it, whichever connection wrote it."""
    database = await _with_items(database_backend, "a")

    async def body(txn: Transaction) -> None:
        await txn.execute("UPDATE item SET name = ? WHERE id = ?", ("b", 1))
        await txn.execute("INSERT INTO item (id, name) VALUES (?, ?)", (2, "c"))

    await database.run_interaction(body)
    assert await database.execute("SELECT id, name FROM item ORDER BY id") == [(1, "b"), (2, "c")]
    await database.execute("DELETE FROM item WHERE id = ?", (2,))
    assert await database.execute("SELECT id FROM item ORDER BY id") == [(1,)]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_read_does_not_wait_for_an_open_write_transaction(database_backend: DatabaseBackend) -> None:
    """
    While a write transaction is open, a read answers at once with the committed
    state (not the transaction's uncommitted rows); once it commits, reads see it.
    """
    database = await _with_items(database_backend, "a")
    inside: Deferred[None] = Deferred()
    proceed: Deferred[None] = Deferred()

    async def body(txn: Transaction) -> None:
        await txn.execute("UPDATE item SET name = ? WHERE id = ?", ("changed", 1))
        inside.callback(None)
        await proceed

    transaction = Deferred.fromCoroutine(_run(database, body))
    await inside
    assert await database.execute("SELECT name FROM item WHERE id = ?", (1,)) == [("a",)]
    proceed.callback(None)
    await transaction
    assert await database.execute("SELECT name FROM item WHERE id = ?", (1,)) == [("changed",)]


async def _run(database: IDatabase, body: object) -> None:
    """Run a transaction body (typed loosely for the test's closure)."""
    await database.run_interaction(body)  # type: ignore[arg-type]  # the test's body has the right shape


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_concurrent_reads_each_get_their_own_rows(database_backend: DatabaseBackend) -> None:
    """Many reads asked at once (batched together where the backend does) each get their own rows."""
    names = [f"item-{n}" for n in range(1, 121)]
    database = await _with_items(database_backend, *names)
    reads: list[Deferred[list[tuple[object, ...]]]] = [
        database.execute("SELECT name FROM item WHERE id = ?", (number,)) for number in range(1, 121)
    ]
    reads.append(database.execute("SELECT count(*) FROM item"))
    results = await gatherResults(reads)
    assert [rows[0][0] for rows in results[:-1]] == names
    assert results[-1] == [(120,)]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_failing_read_fails_alone(database_backend: DatabaseBackend) -> None:
    """A read that fails (no such table) does not affect reads asked with it."""
    database = await _with_items(database_backend, "a")
    good = database.execute("SELECT name FROM item WHERE id = ?", (1,))
    bad = database.execute("SELECT name FROM no_such_table")
    also_good = database.execute("SELECT count(*) FROM item")
    with pytest.raises(database_backend.errors):
        await bad
    assert await good == [("a",)]
    assert int((await also_good)[0][0]) == 1


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_read_after_close_is_unavailable(database_backend: DatabaseBackend) -> None:
    """A read asked once the database is closed (shutting down) fails with L{Unavailable} (503)."""
    database = await _with_items(database_backend, "a")
    await database.close()
    with pytest.raises(Unavailable):
        await database.execute("SELECT name FROM item")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_close_answers_reads_already_asked(database_backend: DatabaseBackend) -> None:
    """Reads asked before C{close} are answered (or fail cleanly); none is left hanging."""
    database = await _with_items(database_backend, "a")
    reads = [database.execute("SELECT name FROM item WHERE id = ?", (1,)) for _ in range(20)]
    closing = database.close()
    answered = 0
    for read in reads:
        with contextlib.suppress(Unavailable):
            assert await read == [("a",)]
            answered += 1
    await closing
    assert answered <= len(reads)
