"""
The embedded default database: SQLite on two dedicated threads.

The writer connection lives on a single-thread pool; a L{DeferredLock} lets
one transaction run at a time, each opened with C{BEGIN IMMEDIATE}. WAL
journaling and foreign keys are on.

Single-statement reads (L{SQLiteDatabase.execute} of a C{SELECT}) go to a
second, read-only connection on a thread of its own, so they never wait for a
write transaction; with WAL, a reader sees every transaction committed before
its statement started, in this process or another one on the same file. Reads
that queue up while the reader is busy run together in one trip to its
thread: under load, one thread hop serves many requests.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from twisted.internet.defer import Deferred, DeferredLock, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from quayd.db.interfaces import IDatabase, Params, Row, Transaction
from quayd.errors import Conflict, Unavailable

T = TypeVar("T")

#: Oldest SQLite with C{RETURNING} (3.35) and upsert.
MIN_SQLITE_VERSION = (3, 35, 0)
#: Most queued reads run in one trip to the reader thread.
READ_BATCH = 64

#: A queued read: statement, parameters, and the Deferred of its caller.
_Read = tuple[str, Params, Deferred[list[Row]]]
#: What one read of a batch gave: its rows, or the exception it raised.
_ReadResult = list[Row] | BaseException


def is_read(sql: str) -> bool:
    """
    Whether C{sql} is a read that the read-only connection may run: it starts
    with C{SELECT}. (The read-only connection refuses any write, so a
    C{SELECT} with side effects fails loudly rather than silently.)
    """
    return sql.lstrip()[:6].upper() == "SELECT"


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
        self._reader_pool = ThreadPool(1, 1, name="quayd-sqlite-read")
        self._reader: sqlite3.Connection | None = None
        #: Reads waiting for the reader thread, in arrival order.
        self._queued_reads: list[_Read] = []
        #: Fires when the current batch of reads (and any queued meanwhile) is done.
        self._reads_done: Deferred[None] | None = None
        self._closing = False

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

    def _connect_reader(self) -> None:
        """Open the read-only connection (after L{_connect} made the file use WAL)."""
        connection = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA query_only=ON")
        connection.execute("PRAGMA busy_timeout=5000")
        self._reader = connection

    def _run_reads(self, batch: list[tuple[str, Params]]) -> list[_ReadResult]:
        """
        Run queued reads on the reader thread, each statement on its own (in
        autocommit mode, each sees what was committed when it started).
        """
        reader = self._reader
        assert reader is not None
        results: list[_ReadResult] = []
        for sql, args in batch:
            try:
                results.append(reader.execute(sql, tuple(args)).fetchall())
            except Exception as e:
                results.append(e)
        return results

    def _read(self, sql: str, args: Params) -> Deferred[list[Row]]:
        """
        Queue a read for the reader thread; it runs in the next batch that
        starts, never in one already running, so it sees every commit that
        happened before this call.
        """
        if self._closing or self._reader is None:
            return fail(Unavailable("the database is closed"))
        d: Deferred[list[Row]] = Deferred()
        self._queued_reads.append((sql, args, d))
        if self._reads_done is None:
            self._reads_done = Deferred()
            Deferred.fromCoroutine(self._drain_reads())
        return d

    async def _drain_reads(self) -> None:
        """Run queued reads in batches, one trip to the reader thread each, until none is left."""
        try:
            while self._queued_reads:
                batch = self._queued_reads[:READ_BATCH]
                del self._queued_reads[:READ_BATCH]
                try:
                    results = await deferToThreadPool(
                        self._reactor, self._reader_pool, self._run_reads, [(sql, a) for sql, a, _ in batch]
                    )
                except BaseException:
                    failure = Failure()
                    for _, _, d in batch:
                        if not d.called:
                            d.errback(failure)
                    continue
                for (_, _, d), result in zip(batch, results, strict=True):
                    if d.called:  # cancelled by its caller
                        continue
                    if isinstance(result, BaseException):
                        d.errback(Failure(result))
                    else:
                        d.callback(result)
        finally:
            done, self._reads_done = self._reads_done, None
            if done is not None:
                done.callback(None)

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

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def open(self) -> Deferred[None]:
        """Start the database threads and open both connections."""

        async def open_() -> None:
            self._pool.start()
            self._reader_pool.start()
            await self._in_thread(self._connect)
            await deferToThreadPool(self._reactor, self._reader_pool, self._connect_reader)

        return Deferred.fromCoroutine(open_())

    def close(self) -> Deferred[None]:
        """Finish queued reads, close both connections and stop the threads."""

        async def close() -> None:
            self._closing = True
            if self._reader_pool.started:
                try:
                    if self._reads_done is not None:
                        await self._reads_done
                    await deferToThreadPool(self._reactor, self._reader_pool, self._close_reader)
                finally:
                    self._reader_pool.stop()
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
        """
        Run one statement (autocommit): a C{SELECT} on the reader thread (see
        L{_read}), anything else on the writer thread between transactions.
        """
        if is_read(sql):
            return self._read(sql, args)

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
