"""
The embedded default database: SQLite on one dedicated thread.

One connection lives on a single-thread pool; a L{DeferredLock} lets one
transaction run at a time, each opened with C{BEGIN IMMEDIATE}. WAL journaling
and foreign keys are on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from quayd.db.interfaces import IDatabase, Params, Row, Transaction
from quayd.errors import Conflict

T = TypeVar("T")

#: Oldest SQLite with C{RETURNING} (3.35) and upsert.
MIN_SQLITE_VERSION = (3, 35, 0)


class _SQLiteTransaction:
    """A transaction whose statements hop to the database thread."""

    def __init__(self, database: SQLiteDatabase) -> None:
        self._database = database

    async def execute(self, sql: str, args: Params = ()) -> list[Row]:
        """Run one statement on the database thread."""
        return await self._database._in_thread(self._database._execute, sql, args)


@implementer(IDatabase)
class SQLiteDatabase:
    """
    SQLite behind L{IDatabase}.

    @ivar dialect: Always C{"sqlite"}.
    """

    dialect = "sqlite"

    def __init__(self, path: Path, reactor: IReactorFromThreads) -> None:
        self._path = path
        self._reactor = reactor
        self._pool = ThreadPool(1, 1, name="quayd-sqlite")
        self._lock = DeferredLock()
        self._connection: sqlite3.Connection | None = None

    def _in_thread(self, f: Callable[..., T], *args: object) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def _connect(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old; 3.35 or newer is required")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=5000")
        connection.execute("PRAGMA synchronous=FULL")
        self._connection = connection

    def _execute(self, sql: str, args: Params) -> list[Row]:
        assert self._connection is not None
        try:
            cursor = self._connection.execute(sql, tuple(args))
        except sqlite3.IntegrityError as e:
            raise Conflict(str(e)) from e
        return cursor.fetchall()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def open(self) -> Deferred[None]:
        """Start the database thread and open the connection."""
        self._pool.start()
        return self._in_thread(self._connect)

    def close(self) -> Deferred[None]:
        """Close the connection and stop the thread."""

        async def close() -> None:
            if not self._pool.started:
                # Never opened (startup failed first): no thread would ever run _close.
                return
            await self._lock.acquire()
            try:
                await self._in_thread(self._close)
            finally:
                self._lock.release()
                self._pool.stop()

        return Deferred.fromCoroutine(close())

    def run_interaction(self, body: Callable[[Transaction], Awaitable[T]]) -> Deferred[T]:
        """Run C{body} in one C{BEGIN IMMEDIATE} transaction."""

        async def interaction() -> T:
            txn = _SQLiteTransaction(self)
            await txn.execute("BEGIN IMMEDIATE")
            try:
                result = await body(txn)
            except BaseException:
                await txn.execute("ROLLBACK")
                raise
            await txn.execute("COMMIT")
            return result

        async def locked() -> T:
            await self._lock.acquire()
            try:
                return await interaction()
            finally:
                self._lock.release()

        return Deferred.fromCoroutine(locked())

    def execute(self, sql: str, args: Params = ()) -> Deferred[list[Row]]:
        """Run one statement (autocommit) on the database thread."""

        async def locked() -> list[Row]:
            await self._lock.acquire()
            try:
                return await self._in_thread(self._execute, sql, args)
            finally:
                self._lock.release()

        return Deferred.fromCoroutine(locked())

    def run_migration(self, version: int, sql: str) -> Deferred[bool]:
        """Apply one schema step unless applied; the database lock serializes processes."""

        def migrate() -> bool:
            assert self._connection is not None
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                current = connection.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
                if current >= version:
                    connection.execute("ROLLBACK")
                    return False
                connection.execute("ROLLBACK")
                record = f"INSERT INTO schema_version (version) VALUES ({int(version)});"
                connection.executescript(f"BEGIN IMMEDIATE;\n{sql}\n{record}\nCOMMIT;")
                return True
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

        async def locked() -> bool:
            await self._lock.acquire()
            try:
                return await self._in_thread(migrate)
            finally:
                self._lock.release()

        return Deferred.fromCoroutine(locked())

    def run_script(self, sql: str) -> Deferred[None]:
        """Run a DDL script in one transaction."""

        def script() -> None:
            assert self._connection is not None
            try:
                self._connection.executescript(f"BEGIN IMMEDIATE;\n{sql}\nCOMMIT;")
            except BaseException:
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                raise

        async def locked() -> None:
            await self._lock.acquire()
            try:
                await self._in_thread(script)
            finally:
                self._lock.release()

        return Deferred.fromCoroutine(locked())
