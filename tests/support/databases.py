"""
Real metadata databases for tests: SQLite files in a temporary directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from twisted.internet.interfaces import IReactorFromThreads

from quayd.db.interfaces import IDatabase
from quayd.db.migrations import migrate
from quayd.db.sqlite import SQLiteDatabase

D = TypeVar("D", bound=IDatabase)


async def open_sqlite(path: Path, *, migrated: bool = True) -> SQLiteDatabase:
    """
    Open an SQLite database at C{path} on the global reactor's threads.

    @param migrated: Whether to bring the schema up to date first.
    @return: The open database; the caller closes it.
    """
    from twisted.internet import reactor

    return await open_database(SQLiteDatabase(path, IReactorFromThreads(reactor)), migrated=migrated)


async def open_database(database: D, *, migrated: bool) -> D:
    """
    Open C{database} and, if asked, bring its schema up to date (closing it
    again when that fails).

    @return: C{database}, open; the caller closes it.
    """
    await database.open()
    if migrated:
        try:
            await migrate(database)
        except BaseException:
            await database.close()
            raise
    return database
