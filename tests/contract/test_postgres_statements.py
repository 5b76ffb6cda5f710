"""
L{PostgresDatabase.execute} specifics: one statement on the wire (autocommit,
no C{BEGIN}/C{COMMIT} round trips), L{Unavailable} when the connection dies,
recovery once the server is back, and callers' cancellation kept away from
the connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg2
import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from txpostgres import txpostgres

from quayd.db.interfaces import Transaction
from quayd.db.postgres import PostgresDatabase
from quayd.errors import Conflict, Unavailable
from tests.support.postgres import PostgresCluster, open_postgres


@pytest.fixture
def database_kind() -> str:
    """These tests are about the PostgreSQL backend only."""
    return "postgresql"


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def postgres(database_cluster: PostgresCluster | None) -> AsyncIterator[tuple[PostgresDatabase, str]]:
    """A new database with one table, through a pool of one connection, and its DSN."""
    assert database_cluster is not None
    dsn = database_cluster.new_database()
    database = await open_postgres(dsn, pool_size=1, migrated=False)
    await database.run_script("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    try:
        yield database, dsn
    finally:
        await database.close()
        database_cluster.drop_database(dsn)


def _record_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every statement the txpostgres cursors send, in order."""
    sent: list[str] = []
    original = txpostgres.Cursor.execute

    def execute(self: Any, query: str, params: Any = None) -> Any:
        sent.append(query)
        return original(self, query, params)

    monkeypatch.setattr(txpostgres.Cursor, "execute", execute)
    return sent


def _terminate_backends(cluster: PostgresCluster, dsn: str) -> None:
    """Kill the server processes serving C{dsn}'s database (as an administrator or a crash would)."""
    name = psycopg2.extensions.parse_dsn(dsn)["dbname"]
    cluster.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_execute_sends_only_its_statement(
    postgres: tuple[PostgresDatabase, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A single statement is one round trip: no C{BEGIN} and C{COMMIT} around it
    (the connection is in autocommit mode, so it is its own transaction);
    transactions still get them.
    """
    database, _ = postgres
    sent = _record_statements(monkeypatch)
    await database.execute("INSERT INTO item (id, name) VALUES (?, ?)", (1, "a"))
    assert await database.execute("SELECT name FROM item WHERE id = ?", (1,)) == [("a",)]
    assert sent == ["INSERT INTO item (id, name) VALUES (%s, %s)", "SELECT name FROM item WHERE id = %s"]
    sent.clear()

    async def body(txn: Transaction) -> None:
        await txn.execute("UPDATE item SET name = ? WHERE id = ?", ("b", 1))

    await database.run_interaction(body)
    assert sent == ["begin", "UPDATE item SET name = %s WHERE id = %s", "commit"]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_execute_maps_integrity_errors_to_conflict(postgres: tuple[PostgresDatabase, str]) -> None:
    """A unique violation of a single statement is L{Conflict}, and the connection stays usable."""
    database, _ = postgres
    await database.execute("INSERT INTO item (id, name) VALUES (?, ?)", (1, "a"))
    with pytest.raises(Conflict):
        await database.execute("INSERT INTO item (id, name) VALUES (?, ?)", (1, "b"))
    assert await database.execute("SELECT name FROM item") == [("a",)]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_statement_on_a_killed_connection_is_unavailable_then_recovers(
    postgres: tuple[PostgresDatabase, str], database_cluster: PostgresCluster
) -> None:
    """
    A statement whose connection dies while it runs fails with L{Unavailable}
    (503; its outcome is unknown, so it is not retried); the pool reconnects
    and later statements succeed.
    """
    from twisted.internet import reactor

    database, dsn = postgres
    running = database.execute("SELECT pg_sleep(30)")
    await deferLater(reactor, 0.3, lambda: None)
    _terminate_backends(database_cluster, dsn)
    with pytest.raises(Unavailable):
        await running
    for _ in range(200):
        try:
            assert await database.execute("SELECT 1") == [(1,)]
            break
        except Unavailable:
            await deferLater(reactor, 0.05, lambda: None)
    else:
        raise AssertionError("the pool did not reconnect")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_cancelling_a_statement_leaves_the_connection_usable(
    postgres: tuple[PostgresDatabase, str],
) -> None:
    """
    A caller cancelling its Deferred (a client hung up) gets L{CancelledError};
    the statement still completes on the connection, which serves the next one.
    """
    database, _ = postgres
    running = database.execute("SELECT pg_sleep(0.2)")
    running.cancel()
    with pytest.raises(CancelledError):
        await running
    assert await database.execute("SELECT 1") == [(1,)]
    follow: Deferred[list[tuple[object, ...]]] = database.execute("SELECT count(*) FROM item")
    assert await follow == [(0,)]
