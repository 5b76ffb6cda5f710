"""
Real metadata databases for tests: SQLite files in a temporary directory.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.interfaces import IReactorFromThreads

from quayd.db.migrations import migrate
from quayd.db.sqlite import SQLiteDatabase


async def open_sqlite(path: Path, *, migrated: bool = True) -> SQLiteDatabase:
    """
    Open an SQLite database at C{path} on the global reactor's threads.

    @param migrated: Whether to bring the schema up to date first.
    @return: The open database; the caller closes it.
    """
    from twisted.internet import reactor

    database = SQLiteDatabase(path, IReactorFromThreads(reactor))
    await database.open()
    if migrated:
        try:
            await migrate(database)
        except BaseException:
            await database.close()
            raise
    return database
