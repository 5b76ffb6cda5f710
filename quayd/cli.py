"""
C{quayd-admin}: operator commands that work without a running daemon.

    quayd-admin --config /etc/quayd/quayd.yaml set-password alice < password.txt

creates the user C{alice} (or changes her password), reading the password
from standard input, so that a fresh install gets its first superuser
(listed under C{auth.superusers}) without any default password.

    quayd-admin --config /etc/quayd/quayd-pg.yaml copy-from-sqlite /var/lib/quayd/quayd.sqlite

copies the metadata of an SQLite database (quayd stopped) into the empty
PostgreSQL database the configuration names, in one transaction, and checks
the copy (row counts and a checksum of every table) before committing it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import bcrypt
from twisted.internet.defer import Deferred
from twisted.internet.task import react

from quayd.auth.policy import MAX_PASSWORD_BYTES
from quayd.config import Config, ConfigError, load_config
from quayd.db.identity import IdentityStore
from quayd.db.interfaces import IDatabase, Row, Transaction
from quayd.db.migrations import migrate
from quayd.db.sqlite import SQLiteDatabase
from quayd.errors import Conflict, Unavailable
from quayd.types import RepositoryName

#: bcrypt work factor for new password hashes.
BCRYPT_ROUNDS = 12


def hash_password(password: str) -> str:
    """
    Hash a password with bcrypt (blocking: call it off the reactor thread in the daemon).

    @raise ValueError: If it is empty or longer than bcrypt accepts.
    """
    data = password.encode()
    if not data:
        raise ValueError("the password is empty")
    if len(data) > MAX_PASSWORD_BYTES:
        raise ValueError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    return bcrypt.hashpw(data, bcrypt.gensalt(BCRYPT_ROUNDS)).decode("ascii")


async def _set_password(
    reactor: object, config_path: str, name: str, email: str | None, password: str
) -> None:
    from quayd.service import open_database

    config = load_config(config_path)
    RepositoryName.parse(name)  # user names follow the namespace grammar
    database = open_database(config.database, reactor)
    await database.open()
    try:
        await migrate(database)
        identity = IdentityStore(database, reactor)  # type: ignore[arg-type]  # the global reactor
        password_hash = hash_password(password)
        existing = await identity.get_account(name)
        if existing is None:
            await identity.create_user(name, email, password_hash)
            sys.stdout.write(f"created user {name}\n")
        elif existing.kind != "user":
            raise SystemExit(f"{name} is an organization, not a user")
        else:
            await identity.update_user(name, email=email, password_hash=password_hash)
            sys.stdout.write(f"changed the password of {name}\n")
    finally:
        await database.close()


# copy-from-sqlite -------------------------------------------------------------------------------

#: Every table of the schema, each after the tables its foreign keys name: the order of the copy.
COPY_TABLES: Final = (
    "repository",
    "blob",
    "repository_blob",
    "manifest",
    "manifest_blob",
    "manifest_child",
    "tag",
    "upload",
    "account",
    "team",
    "team_member",
    "robot",
    "repository_permission",
    "repository_token",
    "audit_log",
    "webhook",
    "push_outbox",
    "delivery",
)
#: Bookkeeping tables that are not copied: the schema version (each side has its own) and
#: SQLite's AUTOINCREMENT counters (carried over into the PostgreSQL identity sequences).
_NOT_COPIED: Final = frozenset({"schema_version", "sqlite_sequence"})
#: Rows read or written per statement.
_BATCH: Final = 200


class CopyRefused(Exception):
    """The copy cannot start: the source or the target is not what it must be."""


class CopyMismatch(Exception):
    """
    The copied rows differ from the source's; the copy was rolled back.

    @ivar comparisons: The comparison of every table.
    """

    def __init__(self, comparisons: list[TableComparison]) -> None:
        super().__init__("the copy does not match the source; nothing was committed")
        self.comparisons = comparisons


@dataclass(frozen=True, slots=True, kw_only=True)
class TableSummary:
    """
    The rows of one table on one side: how many, and an order-independent checksum.

    @ivar checksum: The sum, modulo 2**256, of the SHA-256 of every row's canonical form
        (see L{_canonical_row}), in hex.
    """

    rows: int
    checksum: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TableComparison:
    """One table on both sides of a copy."""

    table: str
    source: TableSummary
    target: TableSummary

    @property
    def matches(self) -> bool:
        """Whether both sides hold the same rows."""
        return self.source == self.target


@dataclass(frozen=True, slots=True, kw_only=True)
class _Column:
    """
    A column of a copied table.

    @ivar kind: How its values are compared: C{integer}, C{float}, C{bytes} or C{text}
        (from the PostgreSQL type).
    @ivar identity: Whether PostgreSQL generates it (C{GENERATED ALWAYS AS IDENTITY}).
    """

    name: str
    kind: str
    identity: bool


_KINDS: Final = {
    "integer": "integer",
    "bigint": "integer",
    "smallint": "integer",
    "double precision": "float",
    "real": "float",
    "bytea": "bytes",
}


def _canonical_value(kind: str, value: object) -> object:
    """
    A value as JSON, the same for both drivers: C{bytea} arrives as C{memoryview}
    from psycopg2 and as C{bytes} from sqlite3; floats are compared exactly (hex).
    """
    if value is None:
        return None
    if kind == "integer":
        return int(value)  # type: ignore[call-overload]  # a driver's integer (or bool)
    if kind == "float":
        return float(value).hex()  # type: ignore[arg-type]  # a driver's number
    if kind == "bytes":
        data = value.encode() if isinstance(value, str) else bytes(value)  # type: ignore[call-overload]  # a driver's buffer
        return data.hex()
    return str(value)


def _canonical_row(columns: Sequence[_Column], row: Row) -> bytes:
    """A row as the bytes its checksum is made of."""
    return json.dumps([_canonical_value(c.kind, v) for c, v in zip(columns, row, strict=True)]).encode()


def _quoted(name: str) -> str:
    """An SQL identifier, quoted (table and column names come from the catalog)."""
    return '"' + name.replace('"', '""') + '"'


async def _schema_version(txn: Transaction) -> int:
    """The schema version recorded in a database (0 if it has none)."""
    rows = await txn.execute("SELECT max(version) FROM schema_version")
    return int(rows[0][0] or 0)


async def _sqlite_tables(txn: Transaction) -> set[str]:
    """The tables of an SQLite database."""
    rows = await txn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r[0] for r in rows}


async def _postgres_tables(txn: Transaction) -> set[str]:
    """The tables of the PostgreSQL schema in use."""
    rows = await txn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {r[0] for r in rows}


async def _postgres_columns(txn: Transaction, table: str) -> list[_Column]:
    """The columns of a PostgreSQL table, in order, with how to compare them."""
    rows = await txn.execute(
        "SELECT column_name, data_type, is_identity FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
        (table,),
    )
    return [_Column(name=r[0], kind=_KINDS.get(r[1], "text"), identity=r[2] == "YES") for r in rows]


async def _sqlite_columns(txn: Transaction, table: str) -> set[str]:
    """The column names of an SQLite table."""
    rows = await txn.execute("SELECT name FROM pragma_table_info(?)", (table,))
    return {r[0] for r in rows}


async def _sqlite_batches(
    txn: Transaction, table: str, columns: Sequence[_Column]
) -> AsyncIterator[list[Row]]:
    """The rows of an SQLite table in batches, in rowid order (keyset pagination)."""
    names = ", ".join(_quoted(c.name) for c in columns)
    last: int | None = None
    while True:
        rows = await txn.execute(
            f"SELECT rowid, {names} FROM {_quoted(table)} "
            "WHERE ? IS NULL OR rowid > ? ORDER BY rowid LIMIT ?",
            (last, last, _BATCH),
        )
        if not rows:
            return
        last = int(rows[-1][0])
        yield [tuple(r[1:]) for r in rows]


async def _postgres_batches(
    txn: Transaction, table: str, columns: Sequence[_Column]
) -> AsyncIterator[list[Row]]:
    """The rows of a PostgreSQL table in batches, through a cursor of the open transaction."""
    names = ", ".join(_quoted(c.name) for c in columns)
    await txn.execute(f"DECLARE quayd_copy_check NO SCROLL CURSOR FOR SELECT {names} FROM {_quoted(table)}")
    try:
        while rows := await txn.execute(f"FETCH FORWARD {_BATCH} FROM quayd_copy_check"):
            yield rows
    finally:
        await txn.execute("CLOSE quayd_copy_check")


async def _summary(batches: AsyncIterator[list[Row]], columns: Sequence[_Column]) -> TableSummary:
    """Count and checksum the rows of one table."""
    count = 0
    total = 0
    async for rows in batches:
        for row in rows:
            count += 1
            total = (total + int.from_bytes(hashlib.sha256(_canonical_row(columns, row)).digest())) % 2**256
    return TableSummary(rows=count, checksum=f"{total:064x}")


async def _copy_table(
    source: Transaction, target: Transaction, table: str, columns: Sequence[_Column]
) -> None:
    """
    Insert every row of an SQLite table into the PostgreSQL one, one multi-row
    C{INSERT} per batch (txpostgres has no C{executemany} or C{COPY}).
    """
    names = ", ".join(_quoted(c.name) for c in columns)
    overriding = " OVERRIDING SYSTEM VALUE" if any(c.identity for c in columns) else ""
    marks = "(" + ", ".join("?" for _ in columns) + ")"
    async for rows in _sqlite_batches(source, table, columns):
        values: list[object] = []
        for row in rows:
            for column, value in zip(columns, row, strict=True):
                values.append(value.encode() if column.kind == "bytes" and isinstance(value, str) else value)
        await target.execute(
            f"INSERT INTO {_quoted(table)} ({names}){overriding} VALUES {', '.join(marks for _ in rows)}",
            values,
        )


async def _advance_identities(
    source: Transaction, target: Transaction, table: str, columns: Sequence[_Column]
) -> None:
    """
    Move the PostgreSQL identity sequences of a table past the highest id the
    SQLite database has used (its rows, or its AUTOINCREMENT counter for rows
    since deleted), so new rows never reuse an id.
    """
    for column in columns:
        if not column.identity:
            continue
        highest = await source.execute(f"SELECT max({_quoted(column.name)}) FROM {_quoted(table)}")
        used = int(highest[0][0] or 0)
        if await source.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
        ):
            counter = await source.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
            if counter:
                used = max(used, int(counter[0][0] or 0))
        if used > 0:
            await target.execute(
                "SELECT setval(pg_get_serial_sequence(?, ?), ?)", (_quoted(table), column.name, used)
            )


async def _check_tables(source: Transaction, target: Transaction) -> None:
    """
    Refuse unless both databases hold exactly the tables this quayd copies,
    at the same schema version.
    """
    source_version = await _schema_version(source)
    target_version = await _schema_version(target)
    if source_version != target_version:
        raise CopyRefused(
            f"the SQLite database is at schema version {source_version}, this quayd's is {target_version}: "
            "start this version of quayd on the SQLite database once (it upgrades the schema), "
            "stop it, then copy"
        )
    expected = set(COPY_TABLES)
    for side, tables in (
        ("SQLite", await _sqlite_tables(source) - _NOT_COPIED),
        ("PostgreSQL", await _postgres_tables(target) - _NOT_COPIED),
    ):
        if tables != expected:
            unknown = ", ".join(sorted(tables - expected)) or "none"
            missing = ", ".join(sorted(expected - tables)) or "none"
            raise CopyRefused(
                f"the {side} database has unexpected tables ({unknown}) or lacks some ({missing})"
            )


async def copy_database(source: IDatabase, target: IDatabase) -> list[TableComparison]:
    """
    Copy every row of an SQLite database into an empty, migrated PostgreSQL
    database, in one transaction on each side, then compare both sides table
    by table (row count and checksum) before committing.

    The SQLite transaction is C{BEGIN IMMEDIATE}, so the source cannot change
    meanwhile (a quayd still running on it would wait, and then fail writes).

    @param source: The open SQLite database.
    @param target: The open, migrated PostgreSQL database.
    @return: The comparison of every table, in copy order; all match.
    @raise CopyRefused: If the target holds data, or the schemas differ.
    @raise CopyMismatch: If a table differs after the copy (it is rolled back).
    """

    async def with_source(source_txn: Transaction) -> list[TableComparison]:
        async def with_target(target_txn: Transaction) -> list[TableComparison]:
            await _check_tables(source_txn, target_txn)
            occupied = [
                table
                for table in COPY_TABLES
                if await target_txn.execute(f"SELECT 1 FROM {_quoted(table)} LIMIT 1")
            ]
            if occupied:
                raise CopyRefused(
                    f"the PostgreSQL database already has data (in {', '.join(occupied)}); "
                    "copy into a new, empty database"
                )
            layouts: dict[str, list[_Column]] = {}
            for table in COPY_TABLES:
                columns = await _postgres_columns(target_txn, table)
                source_columns = await _sqlite_columns(source_txn, table)
                if {c.name for c in columns} != source_columns:
                    raise CopyRefused(f"table {table} has different columns in the two databases")
                layouts[table] = columns
            for table in COPY_TABLES:
                await _copy_table(source_txn, target_txn, table, layouts[table])
                await _advance_identities(source_txn, target_txn, table, layouts[table])
            comparisons = []
            for table in COPY_TABLES:
                columns = layouts[table]
                comparisons.append(
                    TableComparison(
                        table=table,
                        source=await _summary(_sqlite_batches(source_txn, table, columns), columns),
                        target=await _summary(_postgres_batches(target_txn, table, columns), columns),
                    )
                )
            if not all(c.matches for c in comparisons):
                raise CopyMismatch(comparisons)
            return comparisons

        return await target.run_interaction(with_target)

    return await source.run_interaction(with_source)


def format_comparisons(comparisons: Sequence[TableComparison]) -> str:
    """The comparison as a table for the operator, one line per table and a total."""
    lines = [f"{'table':<24}{'sqlite rows':>12}{'postgresql rows':>17}  checksum"]
    for c in comparisons:
        verdict = "ok" if c.matches else f"DIFFERS (sqlite {c.source.checksum[:16]})"
        lines.append(
            f"{c.table:<24}{c.source.rows:>12}{c.target.rows:>17}  {c.target.checksum[:16]} {verdict}"
        )
    total = sum(c.source.rows for c in comparisons)
    if all(c.matches for c in comparisons):
        lines.append(f"copied {total} rows of {len(comparisons)} tables; every table matches")
    return "\n".join(lines) + "\n"


async def copy_from_sqlite(reactor: Any, config: Config, source_path: Path, out: TextIO) -> None:
    """
    The C{copy-from-sqlite} command: open both databases, migrate the target,
    copy, and print the comparison.

    @param config: The configuration naming the PostgreSQL database.
    @param source_path: The SQLite file of the quayd being moved (stopped).
    @param out: Where the comparison is written.
    @raise SystemExit: If the copy is refused or does not match (nothing is committed then).
    """
    from quayd.service import open_database

    if config.database.backend != "postgresql":
        raise SystemExit(
            "quayd-admin: copy-from-sqlite copies into PostgreSQL, but the configuration names "
            f"an {config.database.backend} database"
        )
    source = SQLiteDatabase(_source_file(source_path), reactor)
    target = open_database(config.database, reactor)
    await source.open()
    try:
        await target.open()
        try:
            if not await source.run_interaction(_has_schema):
                raise CopyRefused(f"{source_path} is not a quayd database (it has no schema_version table)")
            await migrate(target)
            comparisons = await copy_database(source, target)
        finally:
            await target.close()
    except CopyRefused as e:
        raise SystemExit(f"quayd-admin: {e}") from None
    except Unavailable as e:
        raise SystemExit(f"quayd-admin: {e}") from None
    except Conflict as e:
        raise SystemExit(
            f"quayd-admin: the SQLite data violates a constraint of the PostgreSQL schema ({e}); "
            "nothing was committed"
        ) from None
    except sqlite3.OperationalError as e:
        raise SystemExit(f"quayd-admin: reading {source_path}: {e} (is quayd still running on it?)") from None
    except CopyMismatch as e:
        out.write(format_comparisons(e.comparisons))
        raise SystemExit(f"quayd-admin: {e}") from None
    finally:
        await source.close()
    out.write(format_comparisons(comparisons))


async def _has_schema(txn: Transaction) -> bool:
    """Whether an SQLite database has quayd's C{schema_version} table."""
    return bool(
        await txn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
    )


def _source_file(path: Path) -> Path:
    """
    The absolute path of an existing SQLite file (opening a missing one would create it).

    @raise SystemExit: If C{path} is not an SQLite database file.
    """
    try:
        with path.open("rb") as stream:
            header = stream.read(16)
    except OSError as e:
        raise SystemExit(f"quayd-admin: cannot read {path}: {e.strerror}") from None
    if header != b"SQLite format 3\x00":
        raise SystemExit(f"quayd-admin: {path} is not an SQLite database")
    return path.resolve()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of C{quayd-admin}."""
    parser = argparse.ArgumentParser(
        prog="quayd-admin", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--config", default="/etc/quayd/quayd.yaml", help="the YAML configuration file")
    commands = parser.add_subparsers(dest="command", required=True)
    set_password = commands.add_parser(
        "set-password", help="create a user or set a password (read from stdin)"
    )
    set_password.add_argument("name")
    set_password.add_argument("--email")
    copy = commands.add_parser(
        "copy-from-sqlite",
        help="copy an SQLite database (quayd stopped) into the empty PostgreSQL database of --config",
    )
    copy.add_argument("source", type=Path, help="the SQLite file, e.g. /var/lib/quayd/quayd.sqlite")
    args = parser.parse_args(argv)
    if args.command == "copy-from-sqlite":
        try:
            config = load_config(args.config)
        except ConfigError as e:
            raise SystemExit(f"quayd-admin: {e}") from None

        def copy_run(reactor: object) -> Deferred[None]:
            return Deferred.fromCoroutine(copy_from_sqlite(reactor, config, args.source, sys.stdout))

        react(copy_run)
        return
    password = sys.stdin.readline().rstrip("\r\n")
    try:
        load_config(args.config)
        hash_password(password)
    except (ConfigError, ValueError) as e:
        raise SystemExit(f"quayd-admin: {e}") from None

    def run(reactor: object) -> Deferred[None]:
        return Deferred.fromCoroutine(_set_password(reactor, args.config, args.name, args.email, password))

    react(run)
