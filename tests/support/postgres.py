"""
A throwaway PostgreSQL cluster for tests, made from the installed server binaries.

C{initdb} refuses to run as root, so when the tests run as root the cluster
belongs to the C{postgres} user. The server process itself is started as that
user (not through a wrapper such as C{runuser}), so that stopping it sends the
postmaster its own signal: C{SIGINT}, a fast shutdown that ends the sessions of
clients still connected (quayd's pools) instead of waiting for them.

Without the binaries the tests that need the cluster skip with the reason,
except under C{CI=true}, where they fail.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg2
import pytest
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from quayd.db.interfaces import IDatabase, Params, Row, Transaction
from quayd.db.postgres import PostgresDatabase
from tests.support.databases import open_database

T = TypeVar("T")

_names = itertools.count()

#: The role every throwaway database belongs to (C{initdb -U}).
USER = "quayd"


def _skip_or_fail(reason: str) -> None:
    """Skip the test needing PostgreSQL, or fail it under C{CI=true}."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def _binaries() -> Path | None:
    """The directory of C{initdb} and C{postgres}: Debian's newest, or from C{PATH}."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresCluster:
    """
    A running throwaway cluster on a private loopback port.

    @ivar port: Its TCP port on 127.0.0.1 (kept across L{restart}).
    @ivar root: The directory holding the data directory, the socket and C{server.log}.
    """

    def __init__(self, root: Path, bindir: Path) -> None:
        """
        @param root: An empty directory for the cluster.
        @param bindir: Where C{initdb} and C{postgres} are.
        """
        self.root = root
        self._bindir = bindir
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0

    def _user_args(self) -> dict[str, Any]:
        """C{subprocess} arguments that run a command as C{postgres} when we are root."""
        if not self._as_postgres:
            return {}
        entry = pwd.getpwnam("postgres")
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> None:
        """initdb (first time) and start the server; wait until it accepts connections."""
        data = self.root / "data"
        if not data.exists():
            if self._as_postgres:
                shutil.chown(self.root, "postgres")
            subprocess.run(
                [str(self._bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"],
                check=True,
                capture_output=True,
                cwd=self.root,
                **self._user_args(),
            )
        with open(self.root / "server.log", "ab") as log:
            self._process = subprocess.Popen(
                [
                    str(self._bindir / "postgres"),
                    "-D",
                    str(data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-F",
                    "-c",
                    "max_connections=300",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                start_new_session=True,
                **self._user_args(),
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg2.connect(self.dsn("postgres")).close()
                return
            except psycopg2.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "PostgreSQL did not start: "
                        + (self.root / "server.log").read_text(errors="replace")[-2000:]
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """
        Stop the server with a fast shutdown (C{SIGINT}): connected clients are
        disconnected, open transactions are rolled back. An immediate shutdown
        (C{SIGQUIT}) follows if it takes more than 30 seconds.
        """
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGQUIT)
                process.wait()
        self._process = None

    def restart(self, downtime: float = 0.0) -> None:
        """
        Stop and start again on the same port and data.

        @param downtime: Seconds to stay down in between (an outage, not just a restart).
        """
        self.stop()
        if downtime > 0:
            time.sleep(downtime)
        self.start()

    @property
    def running(self) -> bool:
        """Whether the server process is up."""
        return self._process is not None and self._process.poll() is None

    def dsn(self, database: str) -> str:
        """A libpq connection string for C{database}."""
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={database}"

    def url(self, database: str) -> str:
        """The C{database.url} of quayd's configuration for C{database}."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database; returns its DSN."""
        return self.dsn(self.create_database())

    def create_database(self) -> str:
        """Create an empty database; returns its name."""
        name = f"quayd_test_{os.getpid()}_{next(_names)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, dsn: str) -> None:
        """Drop a database made by L{new_database}, disconnecting its clients first."""
        name = psycopg2.extensions.parse_dsn(dsn)["dbname"]
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction in the C{postgres} database (DDL on databases)."""
        connection = psycopg2.connect(self.dsn("postgres"))
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()


async def open_postgres(dsn: str, *, pool_size: int = 2, migrated: bool = True) -> PostgresDatabase:
    """
    Open a L{PostgresDatabase} on the global reactor.

    @param dsn: A database of a L{PostgresCluster} (L{PostgresCluster.new_database}).
    @param pool_size: Connections in its pool; tests keep it small, a cluster
        serves many databases at once.
    @param migrated: Whether to bring the schema up to date first.
    @return: The open database; the caller closes it.
    """
    from twisted.internet import reactor

    return await open_database(PostgresDatabase(dsn, reactor, pool_size=pool_size), migrated=migrated)


async def empty_database(database: IDatabase) -> None:
    """
    Delete every row of every table but C{schema_version} and restart the
    identity sequences, in one transaction: the database is then as a new,
    migrated one (a few milliseconds, where creating a database takes hundreds).

    Foreign keys are not checked meanwhile (C{session_replication_role}), so the
    tables need no order; the throwaway cluster's role is a superuser.
    """

    async def body(txn: Transaction) -> None:
        tables = await txn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_version'"
        )
        await txn.execute("SET LOCAL session_replication_role = replica")
        for (table,) in tables:
            await txn.execute(f'DELETE FROM "{table}"')
        await txn.execute(
            "SELECT setval(c.oid, 1, false) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'S' AND n.nspname = 'public'"
        )

    await database.run_interaction(body)


@implementer(IDatabase)
class BorrowedDatabase:
    """
    A shared L{PostgresDatabase} lent to one test: every call goes to it, but
    opening and closing it are for its owner (L{DatabaseShelf}), so the code
    under test may close it as it closes any database.

    @ivar dialect: Always C{"postgresql"}.
    """

    dialect = "postgresql"

    def __init__(self, database: PostgresDatabase) -> None:
        """
        @param database: The open, migrated database lent.
        """
        self.database = database

    def open(self) -> Deferred[None]:
        """Nothing to do: the database is open."""
        return succeed(None)

    def close(self) -> Deferred[None]:
        """Nothing to do: the shelf closes the database."""
        return succeed(None)

    def run_interaction(self, body: Callable[[Transaction], Awaitable[T]]) -> Deferred[T]:
        """Run C{body} in one transaction of the shared database."""
        return self.database.run_interaction(body)

    def execute(self, sql: str, args: Params = ()) -> Deferred[list[Row]]:
        """Run one statement in the shared database."""
        return self.database.execute(sql, args)

    def run_script(self, sql: str) -> Deferred[None]:
        """Run a DDL script in the shared database."""
        return self.database.run_script(sql)

    def run_migration(self, version: int, sql: str) -> Deferred[bool]:
        """Apply a schema step to the shared database."""
        return self.database.run_migration(version, sql)


class DatabaseShelf:
    """
    Migrated databases of one cluster, reused from test to test and emptied
    before each reuse, so that a suite gets a fresh database per test at the
    cost of a few C{DELETE}s instead of a C{CREATE DATABASE} and a migration.
    """

    def __init__(self, cluster: PostgresCluster, pool_size: int = 2) -> None:
        """
        @param cluster: Where the databases are created.
        @param pool_size: Connections of each database's pool.
        """
        self._cluster = cluster
        self._pool_size = pool_size
        self._idle: list[PostgresDatabase] = []
        self._every: list[tuple[PostgresDatabase, str]] = []

    async def borrow(self) -> BorrowedDatabase:
        """An empty, migrated database, until L{give_back}."""
        if self._idle:
            database = self._idle.pop()
            await empty_database(database)
        else:
            dsn = self._cluster.new_database()
            database = await open_postgres(dsn, pool_size=self._pool_size)
            self._every.append((database, dsn))
        return BorrowedDatabase(database)

    def give_back(self, borrowed: BorrowedDatabase) -> None:
        """Make a borrowed database available to the next test."""
        self._idle.append(borrowed.database)

    def close(self) -> None:
        """
        Close every database and drop it (if the cluster is running).

        Closing a L{PostgresDatabase} completes at once (its Deferred has
        fired on return), so this runs outside the reactor's greenlet too.
        """
        every, self._every, self._idle = self._every, [], []
        for database, dsn in every:
            database.close()
            if self._cluster.running:
                self._cluster.drop_database(dsn)


def require_postgres() -> Path:
    """
    The directory of the PostgreSQL server binaries; without them, skip the
    test (fail it under C{CI=true}).

    A fixture that asks for the session's cluster with C{getfixturevalue}
    calls this first, so that the test skips from that fixture: pytest
    (9.x) cannot re-run a higher-scoped fixture that skipped once, and would
    turn every later test into an error.
    """
    bindir = _binaries()
    if bindir is None:
        _skip_or_fail("PostgreSQL server binaries are not installed (Debian package postgresql)")
    assert bindir is not None
    return bindir


@contextmanager
def throwaway_cluster() -> Iterator[PostgresCluster]:
    """Run a cluster for the duration of the block (skips or fails without binaries)."""
    bindir = require_postgres()
    root = Path(tempfile.mkdtemp(prefix="quayd-pg-"))
    cluster = PostgresCluster(root, bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
