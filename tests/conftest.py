"""
Fixtures shared by every test directory.

The PostgreSQL cluster is one per test session (starting it costs a second or
two). Creating a database in it and migrating it costs more than half a second
on a busy machine, which several hundred tests would multiply into minutes, so
the databases that L{open_test_database} hands out are kept per test module
(L{DatabaseShelf}) and emptied (a few milliseconds) before each test gets one:
every test still starts from an empty, migrated database of its own.

A suite runs against both metadata backends by overriding L{database_kind}
with parameters (C{@pytest.fixture(params=DATABASE_KINDS)}) and opening its
databases with L{open_test_database}; its tests stay as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_twisted

from quayd.db.interfaces import IDatabase
from tests.support.databases import open_sqlite
from tests.support.postgres import (
    BorrowedDatabase,
    DatabaseShelf,
    PostgresCluster,
    require_postgres,
    throwaway_cluster,
)

#: The metadata backends a suite can be parametrized over.
DATABASE_KINDS = ("sqlite", "postgresql")

#: Opens a new, empty, migrated database of the kind under test; its argument is a
#: directory the test owns (the SQLite file goes there).
DatabaseOpener = Callable[[Path], Awaitable[IDatabase]]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """
    One throwaway PostgreSQL cluster for the whole run, started on first use.

    Without the server binaries, the tests using it skip with the reason
    (they fail under C{CI=true}).
    """
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def postgres_shelf(postgres_cluster: PostgresCluster) -> Iterator[DatabaseShelf]:
    """
    The PostgreSQL databases the tests of one module reuse, dropped after the module.

    A plain fixture (closing a database is synchronous), which L{database_shelf}
    asks for only when the backend under test is PostgreSQL.
    """
    shelf = DatabaseShelf(postgres_cluster, pool_size=2)
    try:
        yield shelf
    finally:
        shelf.close()


@pytest.fixture
def database_kind() -> str:
    """
    The metadata backend under test: SQLite unless a suite parametrizes this
    fixture with L{DATABASE_KINDS}.
    """
    return "sqlite"


@pytest.fixture
def database_cluster(request: pytest.FixtureRequest, database_kind: str) -> PostgresCluster | None:
    """
    The session's PostgreSQL cluster when L{database_kind} is C{postgresql}
    (the test skips, or fails under C{CI=true}, without the server binaries);
    C{None} for SQLite.

    A plain fixture, so that the skip happens here: a skip raised inside a
    pytest-twisted async fixture leaves pytest's fixture bookkeeping broken,
    and every later test using that fixture errors.
    """
    if database_kind == "sqlite":
        return None
    if database_kind != "postgresql":
        raise ValueError(f"unknown database kind {database_kind!r}")
    require_postgres()
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster


@pytest.fixture
def database_shelf(
    request: pytest.FixtureRequest, database_cluster: PostgresCluster | None
) -> DatabaseShelf | None:
    """The module's L{postgres_shelf} when the backend under test is PostgreSQL; C{None} for SQLite."""
    if database_cluster is None:
        return None
    shelf: DatabaseShelf = request.getfixturevalue("postgres_shelf")
    return shelf


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def open_test_database(database_shelf: DatabaseShelf | None) -> AsyncIterator[DatabaseOpener]:
    """
    Open new, empty, migrated databases of the kind L{database_kind} names:
    C{database = await open_test_database(directory)}.

    An SQLite database is a new file in C{directory}; a PostgreSQL one comes
    from the module's L{postgres_shelf}, emptied, with a pool of two
    connections (enough for one test's requests; a cluster serves many
    tests). Teardown closes every database opened, unless the test closed it
    itself (closing twice is harmless), and puts the PostgreSQL ones back.
    """
    opened: list[IDatabase] = []

    async def open_(directory: Path) -> IDatabase:
        database: IDatabase
        if database_shelf is None:
            database = await open_sqlite(directory / "quayd.sqlite")
        else:
            database = await database_shelf.borrow()
        opened.append(database)
        return database

    yield open_

    for database in opened:
        await database.close()
        if database_shelf is not None and isinstance(database, BorrowedDatabase):
            database_shelf.give_back(database)
