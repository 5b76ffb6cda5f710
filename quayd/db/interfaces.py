"""
The database seam: a tiny asynchronous interface that each backend implements.

Store code writes every transaction once, as C{async def body(txn)}, using
C{?} placeholders in the SQL subset that SQLite and PostgreSQL share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from zope.interface import Interface

T = TypeVar("T")

#: A row as the driver returns it.
Row = tuple[Any, ...]
#: Query parameters.
Params = Sequence[object]


class Transaction(Protocol):
    """One open transaction, handed to a transaction body."""

    async def execute(self, sql: str, args: Params = ()) -> list[Row]:
        """
        Run one statement; returns its rows (empty for statements without any).

        @raise quayd.errors.Conflict: On an integrity constraint violation.
        """


class IDatabase(Interface):
    """An asynchronous SQL database (SQLite or PostgreSQL)."""

    dialect: str  # "sqlite" or "postgresql"

    def open() -> Deferred[None]:
        """Connect; fires when the database can be used."""

    def close() -> Deferred[None]:
        """Disconnect and release threads or pooled connections."""

    def run_interaction(body: Callable[[Transaction], Awaitable[T]]) -> Deferred[T]:
        """
        Run C{body} in one transaction: committed when it returns, rolled back
        when it raises (the exception then propagates).
        """

    def execute(sql: str, args: Params = ()) -> Deferred[list[Row]]:
        """
        Run one statement in its own transaction; fires with its rows.

        A read (a statement starting with C{SELECT}) sees every transaction
        committed before the call, by this process or any other using the
        same database, and does not wait for open write transactions. A
        backend may run reads on a connection of their own and run reads
        asked at the same time together (SQLite does both), and runs a
        single statement without C{BEGIN}/C{COMMIT} round trips where it
        can (PostgreSQL's autocommit).
        """

    def run_script(sql: str) -> Deferred[None]:
        """Run a multi-statement DDL script in one transaction."""

    def run_migration(version: int, sql: str) -> Deferred[bool]:
        """
        Apply schema step C{version} (and record it) in one transaction unless
        it is applied already; fires with whether it was applied here.
        """
