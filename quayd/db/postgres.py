"""
PostgreSQL behind L{IDatabase}, through a txpostgres connection pool.

The pool's connections carry a dead-connection detector, so a server restart
or a killed backend does not leave broken connections behind; statements run
with a server-side timeout; whole transactions are retried on serialization
failures and deadlocks. While the server is unreachable, calls fail with
L{Unavailable} (503 with C{Retry-After}).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg2
import psycopg2.errorcodes
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from txpostgres import reconnection, txpostgres
from zope.interface import implementer

from quayd.db.interfaces import IDatabase, Params, Row, Transaction
from quayd.errors import Conflict, Unavailable

_log = Logger()
T = TypeVar("T")

#: Advisory lock key taken while migrating, so processes starting together do not race.
MIGRATION_LOCK = 0x71756179  # "quay"
_RETRYABLE = {psycopg2.errorcodes.SERIALIZATION_FAILURE, psycopg2.errorcodes.DEADLOCK_DETECTED}
_ATTEMPTS = 5


class _Connection(txpostgres.Connection):  # type: ignore[misc]  # txpostgres is untyped
    """A pooled connection that notices when the server went away and reconnects."""

    def __init__(self, reactor: Any = None, cooperator: Any = None, detector: Any = None) -> None:
        super().__init__(reactor, cooperator, detector or reconnection.DeadConnectionDetector())


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
    return isinstance(
        error, psycopg2.OperationalError | psycopg2.InterfaceError | reconnection.ConnectionDead
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

            class Pool(txpostgres.ConnectionPool):  # type: ignore[misc]  # txpostgres is untyped
                connectionFactory = _Connection

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
        """Disconnect every pooled connection."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        return Deferred.fromCoroutine(_nothing())

    def run_interaction(self, body: Callable[[Transaction], Awaitable[T]]) -> Deferred[T]:
        """Run C{body} in one transaction, retried on serialization failures and deadlocks."""
        return Deferred.fromCoroutine(self._interaction(body))

    async def _interaction(self, body: Callable[[Transaction], Awaitable[T]]) -> T:
        if self._pool is None:
            raise Unavailable("the database is not open")
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                result: T = await self._pool.runInteraction(
                    lambda cursor: Deferred.fromCoroutine(_call(body, _PostgresTransaction(cursor)))
                )
                return result
            except psycopg2.Error as e:
                if e.pgcode in _RETRYABLE and attempt < _ATTEMPTS:
                    continue
                if _unavailable(e):
                    raise Unavailable(
                        "the database is unreachable; retry later", headers={"Retry-After": "5"}
                    ) from e
                raise
            except reconnection.ConnectionDead as e:
                if attempt < 2:
                    continue
                raise Unavailable(
                    "the database is unreachable; retry later", headers={"Retry-After": "5"}
                ) from e
        raise AssertionError("unreachable")

    def execute(self, sql: str, args: Params = ()) -> Deferred[list[Row]]:
        """Run one statement in its own transaction."""

        async def body(txn: Transaction) -> list[Row]:
            return await txn.execute(sql, args)

        return self.run_interaction(body)

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
