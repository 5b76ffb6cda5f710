"""
The SQLite and PostgreSQL schemas describe the same tables, columns and indexes.

The two dialects' migration files are written by hand, one per backend and
version; this test catches a column or index added to one and forgotten in
the other.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from quayd.db.identity import IdentityStore
from quayd.db.interfaces import IDatabase
from quayd.db.migrations import migrate
from quayd.db.postgres import PostgresDatabase
from tests.support.databases import open_sqlite
from tests.support.postgres import PostgresCluster

#: Tables a backend keeps for itself.
_INTERNAL = {"sqlite_sequence"}


async def _sqlite_shape(database: IDatabase) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    tables = [
        row[0]
        for row in await database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if row[0] not in _INTERNAL
    ]
    columns = set()
    indexes = set()
    for table in tables:
        columns |= {(table, row[1]) for row in await database.execute(f"PRAGMA table_info({table})")}
        indexes |= {
            (table, row[1])
            for row in await database.execute(f"PRAGMA index_list({table})")
            if not row[1].startswith("sqlite_autoindex_")
        }
    return columns, indexes


async def _postgres_shape(database: IDatabase) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    columns = {
        (row[0], row[1])
        for row in await database.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
        )
    }
    indexes = {
        (row[0], row[1])
        for row in await database.execute(
            "SELECT i.tablename, i.indexname FROM pg_indexes i "
            "WHERE i.schemaname = current_schema() AND NOT EXISTS ("
            " SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
        )
    }
    return columns, indexes


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_schema_same_tables_columns_and_indexes(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """After every migration, both backends have the same tables, columns and named indexes."""
    sqlite = await open_sqlite(tmp_path / "quayd.sqlite")
    postgres = PostgresDatabase(postgres_cluster.new_database(), reactor, pool_size=1)
    await postgres.open()
    try:
        await migrate(postgres)
        sqlite_columns, sqlite_indexes = await _sqlite_shape(sqlite)
        postgres_columns, postgres_indexes = await _postgres_shape(postgres)
    finally:
        await sqlite.close()
        await postgres.close()
    assert len(sqlite_columns) > 50
    assert sqlite_columns == postgres_columns
    assert sqlite_indexes == postgres_indexes


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_schema_names_sort_bytewise_under_any_collation(postgres_cluster: PostgresCluster) -> None:
    """
    In a PostgreSQL database created with a natural-language (ICU) collation,
    account names still list in byte order, as on SQLite.
    """
    name = f"quayd_icu_{os.getpid()}"
    postgres_cluster.execute(
        f'CREATE DATABASE "{name}" TEMPLATE template0'
        " LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    )
    database = PostgresDatabase(postgres_cluster.dsn(name), reactor, pool_size=1)
    await database.open()
    try:
        await migrate(database)
        identity = IdentityStore(database, Clock())
        names = ["ab", "a0", "a_d", "a.c", "a-b"]
        for user in names:
            await identity.create_user(user, None, None)
        listed = [account.name for account in await identity.list_accounts("user")]
        (icu_order,) = await database.execute(
            'SELECT array_agg(n ORDER BY n COLLATE "en-US-x-icu") FROM unnest(?::text[]) AS n', (names,)
        )
    finally:
        await database.close()
        postgres_cluster.execute(f'DROP DATABASE "{name}"')
    assert listed == sorted(names)
    assert icu_order[0] != sorted(names)  # the collation would have ordered them otherwise
