"""
The L{IDatabase} contract and schema migrations, run against every database backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from zope.interface.verify import verifyObject

from quayd.db.interfaces import IDatabase, Transaction
from quayd.db.migrations import migrate, migrations_for
from quayd.errors import Conflict
from tests.contract.conftest import DatabaseBackend

_SCHEMA = """
CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE child (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES parent (id)
);
"""


async def _with_schema(backend: DatabaseBackend) -> IDatabase:
    """The backend's database with two small test tables."""
    await backend.database.run_script(_SCHEMA)
    return backend.database


async def _names(database: IDatabase) -> list[str]:
    """The names in the C{parent} table, sorted."""
    rows = await database.execute("SELECT name FROM parent ORDER BY name")
    return [row[0] for row in rows]


class _Rollback(Exception):
    """Raised by a transaction body to abandon it."""


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_database_provides_interface(database_backend: DatabaseBackend) -> None:
    """The backend provides L{IDatabase} and names a dialect."""
    assert verifyObject(IDatabase, database_backend.database)
    assert database_backend.database.dialect in ("sqlite", "postgresql")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_database_execute_returns_rows(database_backend: DatabaseBackend) -> None:
    """C{execute} runs one statement with C{?} placeholders and returns its rows."""
    database = await _with_schema(database_backend)
    assert await database.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (1, "one")) == []
    assert await database.execute("INSERT INTO parent (id, name) VALUES (?, ?) RETURNING id", (2, "two")) == [
        (2,)
    ]
    assert await database.execute("SELECT id, name FROM parent WHERE id > ? ORDER BY id", (0,)) == [
        (1, "one"),
        (2, "two"),
    ]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_database_run_interaction_commits(database_backend: DatabaseBackend) -> None:
    """A transaction body that returns is committed, and its value is the result."""
    database = await _with_schema(database_backend)

    async def body(txn: Transaction) -> int:
        await txn.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (1, "a"))
        await txn.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (2, "b"))
        rows = await txn.execute("SELECT count(*) FROM parent")
        return int(rows[0][0])

    assert await database.run_interaction(body) == 2
    assert await _names(database) == ["a", "b"]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_database_run_interaction_rolls_back_on_exception(database_backend: DatabaseBackend) -> None:
    """A transaction body that raises is rolled back entirely and the exception propagates."""
    database = await _with_schema(database_backend)
    await database.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (1, "kept"))

    async def body(txn: Transaction) -> None:
        await txn.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (2, "discarded"))
        await txn.execute("UPDATE parent SET name = ? WHERE id = ?", ("changed", 1))
        raise _Rollback()

    with pytest.raises(_Rollback):
        await database.run_interaction(body)
    assert await _names(database) == ["kept"]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_database_unique_violation_is_conflict(database_backend: DatabaseBackend) -> None:
    """Violating a primary key or unique constraint raises L{Conflict}."""
    database = await _with_schema(database_backend)
    await database.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (1, "a"))
    with pytest.raises(Conflict):
        await database.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (1, "b"))
    with pytest.raises(Conflict):
        await database.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (2, "a"))
    assert await _names(database) == ["a"]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_database_foreign_key_violation_is_conflict(database_backend: DatabaseBackend) -> None:
    """Foreign keys are enforced, and violating one raises L{Conflict}."""
    database = await _with_schema(database_backend)
    with pytest.raises(Conflict):
        await database.execute("INSERT INTO child (id, parent_id) VALUES (?, ?)", (1, 99))
    assert await database.execute("SELECT count(*) FROM child") == [(0,)]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_database_conflict_in_interaction_rolls_back(database_backend: DatabaseBackend) -> None:
    """A L{Conflict} inside a transaction propagates and undoes the whole transaction."""
    database = await _with_schema(database_backend)

    async def body(txn: Transaction) -> None:
        await txn.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (1, "first"))
        await txn.execute("INSERT INTO child (id, parent_id) VALUES (?, ?)", (1, 42))

    with pytest.raises(Conflict):
        await database.run_interaction(body)
    assert await _names(database) == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_database_usable_after_failed_interaction(database_backend: DatabaseBackend) -> None:
    """A failed transaction leaves the database usable for the next one."""
    database = await _with_schema(database_backend)

    async def failing(txn: Transaction) -> None:
        await txn.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (1, "x"))
        raise _Rollback()

    async def succeeding(txn: Transaction) -> None:
        await txn.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (1, "y"))

    for _ in range(3):
        with pytest.raises(_Rollback):
            await database.run_interaction(failing)
    await database.run_interaction(succeeding)
    assert await _names(database) == ["y"]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_database_concurrent_interactions_are_isolated(database_backend: DatabaseBackend) -> None:
    """Fifty interactions started together all commit, each seeing a consistent counter."""
    database = await _with_schema(database_backend)
    await database.run_script(
        "CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter (n) VALUES (0);"
    )

    def body_for(index: int) -> Callable[[Transaction], Awaitable[int]]:
        async def body(txn: Transaction) -> int:
            rows = await txn.execute("UPDATE counter SET n = n + 1 RETURNING n")
            await txn.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (index, f"p{index:02d}"))
            seen = await txn.execute("SELECT n FROM counter")
            assert seen == rows
            return int(rows[0][0])

        return body

    results = await gatherResults(
        [database.run_interaction(body_for(i)) for i in range(50)], consumeErrors=True
    )
    assert sorted(results) == list(range(1, 51))
    assert await database.execute("SELECT n FROM counter") == [(50,)]
    assert await _names(database) == [f"p{i:02d}" for i in range(50)]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_database_concurrent_interactions_with_failures(database_backend: DatabaseBackend) -> None:
    """Failing interactions interleaved with succeeding ones roll back only themselves."""
    database = await _with_schema(database_backend)

    async def insert(txn: Transaction, index: int) -> int:
        await txn.execute("INSERT INTO parent (id, name) VALUES (?, ?)", (index, f"p{index:02d}"))
        if index % 3 == 0:
            raise _Rollback()
        return index

    def run(index: int) -> Deferred[int]:
        return database.run_interaction(lambda txn: insert(txn, index))

    outcomes: list[int | None] = []
    for d in [run(i) for i in range(30)]:
        try:
            outcomes.append(await d)
        except _Rollback:
            outcomes.append(None)
    assert outcomes == [None if i % 3 == 0 else i for i in range(30)]
    assert await _names(database) == [f"p{i:02d}" for i in range(30) if i % 3]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_database_run_script_runs_every_statement(database_backend: DatabaseBackend) -> None:
    """C{run_script} runs a multi-statement script."""
    database = database_backend.database
    await database.run_script(
        "CREATE TABLE a (x INTEGER); CREATE TABLE b (y INTEGER); INSERT INTO a (x) VALUES (1); "
        "INSERT INTO b (y) VALUES (2);"
    )
    assert await database.execute("SELECT x FROM a") == [(1,)]
    assert await database.execute("SELECT y FROM b") == [(2,)]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_database_run_script_is_one_transaction(database_backend: DatabaseBackend) -> None:
    """A script that fails part-way leaves nothing of itself behind."""
    database = database_backend.database
    with pytest.raises(database_backend.errors):
        await database.run_script(
            "CREATE TABLE a (x INTEGER); INSERT INTO a (x) VALUES (1); CREATE TABLE a (x INTEGER);"
        )
    await database.run_script("CREATE TABLE a (z INTEGER);")
    assert await database.execute("SELECT count(*) FROM a") == [(0,)]


# Migrations


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_migrate_applies_schema_and_records_version(database_backend: DatabaseBackend) -> None:
    """Migrating an empty database applies every step and records each version once."""
    database = database_backend.database
    steps = migrations_for(database.dialect)
    assert [step.version for step in steps] == list(range(1, len(steps) + 1))
    assert await migrate(database) == len(steps)
    assert await database.execute("SELECT version FROM schema_version ORDER BY version") == [
        (step.version,) for step in steps
    ]
    for table in ("repository", "blob", "repository_blob", "manifest", "tag", "upload"):
        assert await database.execute(f"SELECT count(*) FROM {table}") == [(0,)]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_migrate_rerun_is_noop(database_backend: DatabaseBackend) -> None:
    """Migrating an up-to-date database changes nothing and keeps the data."""
    database = database_backend.database
    version = await migrate(database)
    await database.execute("INSERT INTO repository (name, created_at) VALUES (?, ?)", ("kept", 1.0))
    assert await migrate(database) == version
    assert await migrate(database) == version
    assert await database.execute("SELECT count(*) FROM schema_version") == [(version,)]
    assert await database.execute("SELECT name FROM repository") == [("kept",)]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_migrate_refuses_newer_database(database_backend: DatabaseBackend) -> None:
    """A database whose schema is newer than this quayd is refused."""
    database = database_backend.database
    version = await migrate(database)
    await database.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))
    with pytest.raises(RuntimeError, match="newer"):
        await migrate(database)
