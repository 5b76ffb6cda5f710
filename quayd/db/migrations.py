"""
Versioned schema: numbered SQL files per dialect, applied in order at start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from twisted.logger import Logger

from quayd.db.interfaces import IDatabase, Transaction

_log = Logger()
_FILE = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """One schema step."""

    version: int
    name: str
    sql: str


def migrations_for(dialect: str) -> list[Migration]:
    """
    Read the packaged migration files of one dialect, ordered by version.

    @raise RuntimeError: If versions are not a gapless sequence from 1.
    """
    folder = resources.files("quayd.db").joinpath("schema", dialect)
    found = []
    for entry in folder.iterdir():
        match = _FILE.fullmatch(entry.name)
        if match is not None:
            found.append(Migration(version=int(match[1]), name=entry.name, sql=entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"schema files for {dialect} are not numbered 1..n: {[m.name for m in found]}")
    return found


async def _current_version(txn: Transaction) -> int:
    await txn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    rows = await txn.execute("SELECT max(version) FROM schema_version")
    return int(rows[0][0] or 0)


async def migrate(database: IDatabase) -> int:
    """
    Bring the schema up to date, one transaction per step.

    @return: The schema version now in force.
    @raise RuntimeError: If the database is newer than this quayd.
    """
    steps = migrations_for(database.dialect)
    current = await database.run_interaction(_current_version)
    if current > len(steps):
        raise RuntimeError(f"database schema version {current} is newer than this quayd ({len(steps)})")
    for step in steps[current:]:
        if await database.run_migration(step.version, step.sql):
            _log.info("applied schema migration {name}", name=step.name)
    return len(steps)
