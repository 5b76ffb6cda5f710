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
databases with L{open_test_database}; its tests stay as they are. A module
whose tests share one database (a registry seeded once per module) overrides
L{database_kind} at module scope instead
(C{@pytest.fixture(scope="module", params=DATABASE_KINDS)}) and opens that
database with L{open_module_database}: one database per backend, not per test.
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


@pytest.fixture(scope="module")
def database_kind() -> str:
    """
    The metadata backend under test: SQLite unless a suite parametrizes this
    fixture with L{DATABASE_KINDS}.

    Module-scoped, so that L{open_module_database} can use it; suites override
    it at function scope (a backend per test) or at module scope (a backend
    per module).
    """
    return "sqlite"


def _postgres_fixture(request: pytest.FixtureRequest, database_kind: str, name: str) -> object | None:
    """
    The fixture C{name} (the session's cluster or the module's shelf) when
    C{database_kind} is C{postgresql}; C{None} for SQLite.

    Without the server binaries the test skips (fails under C{CI=true}) here,
    in a plain fixture: a skip raised inside a pytest-twisted async fixture
    leaves pytest's fixture bookkeeping broken, and every later test using
    that fixture errors.

    @raise ValueError: For a backend that is not one of L{DATABASE_KINDS}.
    """
    if database_kind == "sqlite":
        return None
    if database_kind != "postgresql":
        raise ValueError(f"unknown database kind {database_kind!r}")
    require_postgres()
    fixture: object = request.getfixturevalue(name)
    return fixture


@pytest.fixture
def database_cluster(request: pytest.FixtureRequest, database_kind: str) -> PostgresCluster | None:
    """
    The session's PostgreSQL cluster when L{database_kind} is C{postgresql}
    (the test skips, or fails under C{CI=true}, without the server binaries);
    C{None} for SQLite.
    """
    cluster = _postgres_fixture(request, database_kind, "postgres_cluster")
    assert cluster is None or isinstance(cluster, PostgresCluster)
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


@pytest.fixture(scope="module")
def module_database_shelf(request: pytest.FixtureRequest, database_kind: str) -> DatabaseShelf | None:
    """
    L{database_shelf} for module-scoped fixtures: the module's L{postgres_shelf}
    when the backend under test is PostgreSQL, C{None} for SQLite.

    L{database_kind} must then be module-scoped (the default, or an override
    with C{scope="module"}); a per-test backend makes pytest report a scope
    mismatch.
    """
    shelf = _postgres_fixture(request, database_kind, "postgres_shelf")
    assert shelf is None or isinstance(shelf, DatabaseShelf)
    return shelf


class _Databases:
    """
    The databases one fixture opens: new SQLite files, or PostgreSQL databases
    borrowed from a shelf. L{close} closes them all and gives the borrowed
    ones back.
    """

    def __init__(self, shelf: DatabaseShelf | None) -> None:
        """
        @param shelf: Where PostgreSQL databases come from; C{None} for SQLite.
        """
        self._shelf = shelf
        self._opened: list[IDatabase] = []

    async def open(self, directory: Path) -> IDatabase:
        """A new, empty, migrated database (an SQLite one is a new file in C{directory})."""
        database: IDatabase
        if self._shelf is None:
            database = await open_sqlite(directory / "quayd.sqlite")
        else:
            database = await self._shelf.borrow()
        self._opened.append(database)
        return database

    async def close(self) -> None:
        """
        Close every database opened (again, if its user closed it: that is
        harmless) and give the borrowed ones back.
        """
        opened, self._opened = self._opened, []
        for database in opened:
            await database.close()
            if self._shelf is not None and isinstance(database, BorrowedDatabase):
                self._shelf.give_back(database)


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
    databases = _Databases(database_shelf)
    yield databases.open
    await databases.close()


@pytest_twisted.async_yield_fixture(scope="module")  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def open_module_database(
    module_database_shelf: DatabaseShelf | None,
) -> AsyncIterator[DatabaseOpener]:
    """
    L{open_test_database} for module-scoped fixtures: the databases it opens
    stay open until the module's tests have all run, so that a registry
    seeded once serves them all, over each backend L{database_kind} names
    (which must be module-scoped, see L{module_database_shelf}).
    """
    databases = _Databases(module_database_shelf)
    yield databases.open
    await databases.close()
