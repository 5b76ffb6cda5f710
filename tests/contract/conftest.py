"""
Fixtures that parametrize the contract suites over every implementation of a seam.

Adding a backend (S3 for blobs, PostgreSQL for metadata) means adding one
entry to the parameter list of its fixture below; the suites stay as they are.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import pytest_twisted
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock

from quayd.blocking import BlockingRunner, ThreadPoolService, run_synchronously
from quayd.db.interfaces import IDatabase
from quayd.db.migrations import migrate
from quayd.db.postgres import PostgresDatabase
from quayd.db.store import MetadataStore
from quayd.storage.filesystem import FilesystemBlobStore
from quayd.storage.interfaces import IBlobStore
from tests.conftest import DATABASE_KINDS
from tests.support.databases import open_sqlite
from tests.support.postgres import PostgresCluster


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobStoreBackend:
    """
    One blob store under test, with the few probes the contract needs.

    @ivar store: The store.
    @ivar staged_size: The length of an upload's staged data, or C{None} if
        there is none.
    """

    store: IBlobStore
    staged_size: Callable[[str], int | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseBackend:
    """
    One database under test.

    @ivar database: The open database.
    @ivar errors: The driver's own exception types (statement errors that are
        not integrity violations, which the interface leaves unmapped).
    """

    database: IDatabase
    errors: tuple[type[BaseException], ...]


def _filesystem_staged_size(root: Path) -> Callable[[str], int | None]:
    """A probe for the size of the filesystem store's staged file of an upload."""

    def staged_size(upload_id: str) -> int | None:
        path = root / "uploads" / upload_id
        return path.stat().st_size if path.exists() else None

    return staged_size


@pytest_twisted.async_yield_fixture(params=["filesystem", "filesystem-inline"])  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def blob_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStoreBackend]:
    """
    Each L{IBlobStore} implementation: the filesystem store with a real thread
    pool (as deployed) and with work run inline.
    """
    from twisted.internet import reactor

    root = tmp_path / "blobs"
    pool: ThreadPoolService | None = None
    runner: BlockingRunner = run_synchronously
    if request.param == "filesystem":
        pool = ThreadPoolService(IReactorFromThreads(reactor), 1, 4)
        pool.startService()
        runner = pool
    try:
        yield BlobStoreBackend(
            store=FilesystemBlobStore(root, runner), staged_size=_filesystem_staged_size(root)
        )
    finally:
        if pool is not None:
            pool.stopService()


@pytest.fixture(params=DATABASE_KINDS)
def database_kind(request: pytest.FixtureRequest) -> str:
    """Each L{IDatabase} backend: SQLite, and PostgreSQL from the session's cluster."""
    kind: str = request.param
    return kind


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def database_backend(
    database_kind: str, database_cluster: PostgresCluster | None, tmp_path: Path
) -> AsyncIterator[DatabaseBackend]:
    """Each L{IDatabase} backend, open and empty (no schema)."""
    database: IDatabase
    errors: tuple[type[BaseException], ...]
    if database_cluster is None:
        database = await open_sqlite(tmp_path / "quayd.sqlite", migrated=False)
        errors = (sqlite3.Error,)
    else:
        from twisted.internet import reactor

        database = PostgresDatabase(database_cluster.new_database(), reactor, pool_size=3)
        await database.open()
        errors = (psycopg2.Error,)
    try:
        yield DatabaseBackend(database=database, errors=errors)
    finally:
        await database.close()


@pytest.fixture
def clock() -> Clock:
    """A deterministic clock for the store's timestamps."""
    return Clock()


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def store(database_backend: DatabaseBackend, clock: Clock) -> AsyncIterator[MetadataStore]:
    """A L{MetadataStore} over each backend, migrated, with C{clock} as its time."""
    await migrate(database_backend.database)
    yield MetadataStore(database_backend.database, clock)
