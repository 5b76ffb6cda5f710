"""
PostgreSQL behind L{IDatabase}, through a txpostgres connection pool.

The pool's connections carry a dead-connection detector, so a server restart
or a killed backend does not leave broken connections behind; a transaction
goes to a live connection when there is one; statements run with a
server-side timeout; whole transactions are retried on serialization failures
and deadlocks. While the server is unreachable, calls fail with
L{Unavailable} (503 with C{Retry-After}).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg2
import psycopg2.errorcodes
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import reconnection, retrying, txpostgres
from zope.interface import implementer

from quayd.db.interfaces import IDatabase, Params, Row, Transaction
from quayd.errors import Conflict, Unavailable

_log = Logger()
T = TypeVar("T")

#: Advisory lock key taken while migrating, so processes starting together do not race.
MIGRATION_LOCK = 0x71756179  # "quay"
_RETRYABLE = {psycopg2.errorcodes.SERIALIZATION_FAILURE, psycopg2.errorcodes.DEADLOCK_DETECTED}
_ATTEMPTS = 5


def _connection_lost(error: BaseException) -> bool:
    """
    Whether C{error} means the connection itself is gone, rather than one
    statement failing on a healthy connection.

    A serialization failure, a deadlock or a statement timeout is also an
    C{OperationalError}, but it carries an SQLSTATE outside the connection
    classes (C{08} connection exception, C{57P} operator intervention such as
    a server shutdown); errors raised by the client library when the socket
    closed carry none.
    """
    if isinstance(error, txpostgres.RollbackFailed):
        # The transaction could not even be rolled back: the connection is unusable.
        return True
    if isinstance(error, psycopg2.InterfaceError):
        return True
    if isinstance(error, psycopg2.OperationalError):
        code = error.pgcode
        return code is None or code.startswith(("08", "57P"))
    return False


def _dead_connection(failure: Failure) -> bool:
    """The detector's death checker: reconnect only when the connection is lost."""
    return failure.value is not None and _connection_lost(failure.value)


def _reconnect_delays() -> Iterator[float]:
    """Reconnect at once, then after 0.5 s growing to at most 5 s between attempts, forever."""
    delays: Iterator[float] = retrying.simpleBackoffIterator(
        initialDelay=0.5, maxDelay=5.0, factor=1.7, maxRetries=0, now=True
    )
    return delays


class _Detector(reconnection.DeadConnectionDetector):  # type: ignore[misc]  # txpostgres is untyped
    """
    A dead-connection detector whose reconnection attempts can be stopped, so
    that closing the pool leaves no timed call behind to reconnect later.
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__(_dead_connection, _reconnect_delays, reactor)
        self._reconnecting: Deferred[object] | None = None

    def startReconnecting(self, f: Failure) -> None:
        """Retry connecting on the backoff schedule until it works or L{stop} is called."""
        call = retrying.RetryingCall(self.reconnect)
        call.reactor = self.reactor
        reconnecting: Deferred[object] = call.start(self.reconnectionIterator())
        self._reconnecting = reconnecting

        def recovered(_: object) -> object:
            self._reconnecting = None
            return self.connectionRecovered()

        def stopped(failure: Failure) -> None:
            self._reconnecting = None
            if not failure.check(CancelledError):
                _log.failure("reconnecting to PostgreSQL failed", failure)

        reconnecting.addCallbacks(recovered, stopped)

    def stop(self) -> None:
        """Stop reconnecting, if it is."""
        if self._reconnecting is not None:
            self._reconnecting.cancel()


class _Connection(txpostgres.Connection):  # type: ignore[misc]  # txpostgres is untyped
    """A pooled connection that notices when the server went away and reconnects."""

    def __init__(self, reactor: Any = None, cooperator: Any = None, detector: Any = None) -> None:
        super().__init__(reactor, cooperator, detector or _Detector(reactor))

    def _runInteraction(self, interaction: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        txpostgres's transaction (BEGIN, the interaction, COMMIT, or ROLLBACK
        on error), except that a failed ROLLBACK is not logged as an unhandled
        error: it fails with L{txpostgres.RollbackFailed}, which the detector
        takes for a lost connection and L{PostgresDatabase} reports as
        L{Unavailable}.
        """
        cursor = self.cursor()
        d: Deferred[Any] = cursor.execute("begin")
        d.addCallback(interaction, *args, **kwargs)

        def commit(result: object) -> Deferred[object]:
            committed: Deferred[object] = cursor.execute("commit")
            return committed.addCallback(lambda _: result)

        def rollback(failure: Failure) -> Deferred[object]:
            def rollback_failed(_: Failure) -> Failure:
                return Failure(txpostgres.RollbackFailed(self, failure))

            rolled_back: Deferred[object] = maybeDeferred(cursor.execute, "rollback")
            return rolled_back.addCallbacks(lambda _: failure, rollback_failed)

        d.addCallback(commit)
        d.addErrback(rollback)
        return d

    def run_statement(self, sql: str, params: tuple[object, ...] | None) -> Deferred[list[Row]]:
        """
        Run one statement in autocommit mode (its own transaction), through
        the connection's lock and dead-connection detector as every query is.

        @return: A Deferred firing with the statement's rows, or C{[]} for a
            statement that returns none.
        """
        d: Deferred[list[Row]] = self._doit(self._run_statement, sql, params)
        return d

    def _run_statement(self, sql: str, params: tuple[object, ...] | None) -> Deferred[list[Row]]:
        cursor = self.cursor()
        d: Deferred[Any] = cursor.execute(sql, params)

        def rows(_: object) -> list[Row]:
            if cursor.description is None:
                return []
            found: list[Row] = cursor.fetchall()
            return found

        return d.addCallback(rows)

    def doRead(self) -> BaseException | None:
        """
        Read from the socket of an idle connection (notifications, or the server
        closing it).

        txpostgres raises when the server closed the connection, which the
        reactor logs as an unhandled error with a traceback; returning the
        error instead makes the reactor disconnect quietly, with the error as
        the reason, which starts the detector's reconnection.
        """
        try:
            super().doRead()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            _log.warn("PostgreSQL closed a pooled connection: {error}", error=str(e).strip())
            return e
        return None


class _Pool(txpostgres.ConnectionPool):  # type: ignore[misc]  # txpostgres is untyped
    """
    A pool that hands out a live connection when it has one.

    txpostgres takes an arbitrary connection from its set; after a server
    restart, the connections reconnect one by one, each on its own backoff, and
    a request would keep meeting the ones still reconnecting.
    """

    connectionFactory = _Connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Every connection, also those checked out (C{connections} holds the idle ones).
        self.every_connection: tuple[_Connection, ...] = tuple(self.connections)

    def close(self) -> None:
        """Stop reconnecting and close every connection, checked out or not."""
        for connection in self.every_connection:
            connection.detector.stop()
            if connection._connection is not None:  # never connected: nothing to close
                connection.close()

    def _checkout(self) -> _Connection:
        """Take a live idle connection out of the pool, or any idle one when none is live."""
        connections = self.connections
        live = [c for c in connections if not c.detector.connectionIsDead]
        connection: _Connection = live[0] if live else next(iter(connections))
        connections.remove(connection)
        return connection

    def _runInteraction(self, interaction: Any, *args: Any, **kwargs: Any) -> Any:
        connection = self._checkout()
        d = connection.runInteraction(interaction, *args, **kwargs)
        return d.addBoth(self._putBackAndPassthrough, connection)

    def run_statement(self, sql: str, params: tuple[object, ...] | None) -> Deferred[list[Row]]:
        """
        Run one statement on a pooled connection, outside any explicit
        transaction: the connection is in autocommit mode, so the statement is
        its own transaction, in one round trip (no C{BEGIN} or C{COMMIT}).

        @return: A Deferred firing with the statement's rows (empty when it
            returns none).
        """
        result: Deferred[list[Row]] = self._semaphore.run(self._run_statement, sql, params)
        return result

    def _run_statement(self, sql: str, params: tuple[object, ...] | None) -> Deferred[list[Row]]:
        connection = self._checkout()
        d: Deferred[list[Row]] = connection.run_statement(sql, params)
        return d.addBoth(self._putBackAndPassthrough, connection)


class _PostgresTransaction:
    """A transaction on one pooled connection; C{?} placeholders become C{%s}."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    async def execute(self, sql: str, args: Params = ()) -> list[Row]:
        """Run one statement."""
        try:
            await self._cursor.execute(sql.replace("?", "%s"), tuple(args) if args else None)
        except psycopg2.IntegrityError as e:
            raise Conflict(str(e).strip()) from e
        if self._cursor.description is None:
            return []
        rows: list[Row] = self._cursor.fetchall()
        return rows


def _unavailable(error: BaseException) -> bool:
    """Whether C{error} means the server cannot serve now (503), not that the request is wrong."""
    return isinstance(
        error,
        psycopg2.OperationalError
        | psycopg2.InterfaceError
        | reconnection.ConnectionDead
        | txpostgres.RollbackFailed,
    )


@implementer(IDatabase)
class PostgresDatabase:
    """
    PostgreSQL over a fixed-size txpostgres pool.

    @ivar dialect: Always C{"postgresql"}.
    """

    dialect = "postgresql"

    def __init__(
        self,
        dsn: str,
        reactor: Any,
        pool_size: int = 4,
        statement_timeout: float = 30.0,
        password: str | None = None,
    ) -> None:
        self._dsn = dsn
        self._password = password
        self._reactor = reactor
        self._pool_size = pool_size
        self._statement_timeout = statement_timeout
        self._pool: Any = None

    def open(self) -> Deferred[None]:
        """Connect the pool."""

        async def open_() -> None:
            reactor = self._reactor

            class Pool(_Pool):
                pass

            Pool.reactor = reactor
            options = f"-c statement_timeout={int(self._statement_timeout * 1000)}"
            extra = {} if self._password is None else {"password": self._password}
            pool = Pool(None, self._dsn, min=self._pool_size, options=options, **extra)
            try:
                await pool.start()
            except Exception as e:
                pool.close()
                raise Unavailable(f"cannot connect to PostgreSQL: {e}".strip()) from e
            self._pool = pool

        return Deferred.fromCoroutine(open_())

    def close(self) -> Deferred[None]:
        """Disconnect every pooled connection and stop those reconnecting."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        return Deferred.fromCoroutine(_nothing())

    def run_interaction(self, body: Callable[[Transaction], Awaitable[T]]) -> Deferred[T]:
        """
        Run C{body} in one transaction, retried on serialization failures and
        deadlocks. Cancelling the returned Deferred (a client went away) does not
        reach the connection: an interrupted transaction would poison it.
        """
        shielded: Deferred[T] = Deferred()
        Deferred.fromCoroutine(self._interaction(body)).chainDeferred(shielded)
        return shielded

    async def _interaction(self, body: Callable[[Transaction], Awaitable[T]]) -> T:
        pool = self._open_pool()
        return await self._retrying(
            lambda: pool.runInteraction(
                lambda cursor: Deferred.fromCoroutine(_call(body, _PostgresTransaction(cursor)))
            )
        )

    def _open_pool(self) -> _Pool:
        if self._pool is None:
            raise Unavailable("the database is not open")
        pool: _Pool = self._pool
        return pool

    async def _retrying(self, run: Callable[[], Deferred[T]]) -> T:
        """
        Run C{run()} (one transaction or one statement), again on serialization
        failures and deadlocks (it was rolled back) and once more on a
        connection known to be dead before anything was sent; map the errors
        that mean "the database is unreachable" to L{Unavailable}.
        """
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await run()
            except psycopg2.IntegrityError as e:
                raise Conflict(str(e).strip()) from e
            except psycopg2.Error as e:
                if e.pgcode in _RETRYABLE and attempt < _ATTEMPTS:
                    continue
                if _unavailable(e):
                    raise Unavailable(
                        "the database is unreachable; retry later", headers={"Retry-After": "5"}
                    ) from e
                raise
            except reconnection.ConnectionDead as e:
                # Nothing was sent on a connection known to be dead: trying again is safe.
                if attempt < 2:
                    continue
                raise Unavailable(
                    "the database is unreachable; retry later", headers={"Retry-After": "5"}
                ) from e
            except txpostgres.RollbackFailed as e:
                # The connection broke mid-transaction (perhaps during COMMIT): the outcome is
                # unknown, so the transaction is not run again.
                raise Unavailable(
                    "the database is unreachable; retry later", headers={"Retry-After": "5"}
                ) from e
            except (ConnectionDone, ConnectionLost) as e:
                # The pool was closed (quayd is stopping) while the statement ran.
                raise Unavailable("the database connection closed", headers={"Retry-After": "5"}) from e
        raise AssertionError("unreachable")

    def execute(self, sql: str, args: Params = ()) -> Deferred[list[Row]]:
        """
        Run one statement in its own transaction: in autocommit mode on a pooled
        connection, so one round trip rather than C{BEGIN}, the statement and
        C{COMMIT}. Retried like a transaction on serialization failures and
        deadlocks (the statement was rolled back), and on a connection known to
        be dead before anything was sent; a connection lost while the statement
        ran fails with L{Unavailable}, since its outcome is unknown. Cancelling
        the returned Deferred does not reach the connection.
        """
        shielded: Deferred[list[Row]] = Deferred()
        Deferred.fromCoroutine(self._statement(sql, args)).chainDeferred(shielded)
        return shielded

    async def _statement(self, sql: str, args: Params) -> list[Row]:
        pool = self._open_pool()
        query = sql.replace("?", "%s")
        params = tuple(args) if args else None
        rows: list[Row] = await self._retrying(lambda: pool.run_statement(query, params))
        return rows

    def run_script(self, sql: str) -> Deferred[None]:
        """Run a DDL script in one transaction."""

        async def body(txn: Transaction) -> None:
            await txn.execute(sql)

        return self.run_interaction(body)

    def run_migration(self, version: int, sql: str) -> Deferred[bool]:
        """
        Apply one schema step unless it is applied already, under an advisory
        lock, so that several processes starting together apply it once.
        """

        async def body(txn: Transaction) -> bool:
            await txn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            await txn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            rows = await txn.execute("SELECT max(version) FROM schema_version")
            if int(rows[0][0] or 0) >= version:
                return False
            await txn.execute(sql)
            await txn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            return True

        return self.run_interaction(body)


async def _call(body: Callable[[Transaction], Awaitable[T]], txn: Transaction) -> T:
    return await body(txn)


async def _nothing() -> None:
    return None
