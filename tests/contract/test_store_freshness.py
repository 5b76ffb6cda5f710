"""
Manifest lookups stay exact across connections and processes, on every
backend: several quayd processes share one database (PostgreSQL, or one
SQLite file), so a manifest deleted or a tag moved by one of them must never
be served by another once the change has committed.

The store keeps no manifest cache: concurrent lookups share one query
(L{quayd.db.store.Coalescer}), and each lookup is answered by a query that
started after it was asked. These tests change the database through a
second connection and through another OS process, and check the first
store's very next answers; one holds a batch's answer back to check that a
lookup asked meanwhile is not answered by it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from zope.interface import implementer

from quayd.db.interfaces import IDatabase, Params, Row, T, Transaction
from quayd.db.store import ManifestRecord, MetadataStore
from quayd.registry.manifests import OCI_MANIFEST, parse_manifest
from quayd.types import Digest, RepositoryName, Tag
from tests.conftest import DATABASE_KINDS
from tests.support.databases import open_sqlite
from tests.support.manifests import image_manifest
from tests.support.postgres import PostgresCluster, open_postgres

REPO = RepositoryName("library/app")
TAG = Tag("latest")

#: Runs one statement (C{?} placeholders, JSON-encoded arguments) in another process and commits.
_ELSEWHERE = """
import json, sys
kind, target, sql, args = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
if kind == "sqlite":
    import sqlite3
    connection = sqlite3.connect(target)
else:
    import psycopg2
    connection = psycopg2.connect(target)
    sql = sql.replace("?", "%s")
cursor = connection.cursor()
cursor.execute(sql, args)
connection.commit()
connection.close()
"""


@dataclass
class Shared:
    """
    Two stores on one database through two connections, and a way to change
    it from another process.

    @ivar first: The store under test.
    @ivar second: Another store on the same database (as another quayd process would be).
    """

    first: MetadataStore
    second: MetadataStore
    kind: str
    target: str

    def elsewhere(self, sql: str, *args: object) -> None:
        """Run one statement in another OS process and commit it."""
        subprocess.run(
            [sys.executable, "-c", _ELSEWHERE, self.kind, self.target, sql, json.dumps(list(args))],
            check=True,
            timeout=60,
        )


@pytest.fixture(params=DATABASE_KINDS)
def database_kind(request: pytest.FixtureRequest) -> str:
    """Every test runs over SQLite and over PostgreSQL."""
    kind: str = request.param
    return kind


@implementer(IDatabase)
@dataclass
class _HeldDatabase:
    """
    A database whose single-statement results can be held back: while
    L{hold} is set, each statement runs at once but its caller only gets the
    rows once the test fires the Deferred in L{held}. Counts statements.
    """

    inner: IDatabase
    hold: bool = False
    held: list[Deferred[None]] = field(default_factory=list)
    statements: int = 0

    @property
    def dialect(self) -> str:
        """The wrapped database's dialect."""
        return self.inner.dialect

    def open(self) -> Deferred[None]:
        """Open the wrapped database."""
        return self.inner.open()

    def close(self) -> Deferred[None]:
        """Close the wrapped database."""
        return self.inner.close()

    def run_interaction(self, body: Callable[[Transaction], Awaitable[T]]) -> Deferred[T]:
        """Run a transaction on the wrapped database."""
        return self.inner.run_interaction(body)

    def execute(self, sql: str, args: Params = ()) -> Deferred[list[Row]]:
        """Run the statement now; hand its rows over now, or when released."""
        self.statements += 1
        return Deferred.fromCoroutine(self._execute(sql, args))

    async def _execute(self, sql: str, args: Params) -> list[Row]:
        rows = await self.inner.execute(sql, args)
        if self.hold:
            gate: Deferred[None] = Deferred()
            self.held.append(gate)
            await gate
        return rows

    def run_script(self, sql: str) -> Deferred[None]:
        """Run a script on the wrapped database."""
        return self.inner.run_script(sql)

    def run_migration(self, version: int, sql: str) -> Deferred[bool]:
        """Migrate the wrapped database."""
        return self.inner.run_migration(version, sql)


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def shared(
    database_kind: str, database_cluster: PostgresCluster | None, tmp_path: Path
) -> AsyncIterator[Shared]:
    """Two stores over two connections to one new database of the kind under test."""
    first: IDatabase
    second: IDatabase
    if database_cluster is None:
        path = tmp_path / "quayd.sqlite"
        first = await open_sqlite(path)
        second = await open_sqlite(path, migrated=False)
        target = str(path)
    else:
        target = database_cluster.new_database()
        first = await open_postgres(target)
        second = await open_postgres(target, migrated=False)
    clock = Clock()
    try:
        yield Shared(
            first=MetadataStore(_HeldDatabase(first), clock),
            second=MetadataStore(second, clock),
            kind=database_kind,
            target=target,
        )
    finally:
        await first.close()
        await second.close()
        if database_cluster is not None:
            database_cluster.drop_database(target)


def _held(store: MetadataStore) -> _HeldDatabase:
    """The holdable database under the first store."""
    database = store._db  # the test's own wrapper
    assert isinstance(database, _HeldDatabase)
    return database


async def _push(store: MetadataStore, layer: bytes, tag: Tag | None = TAG) -> Digest:
    """Push a one-layer image (blobs and manifest) through C{store}; returns the manifest digest."""
    config = b'{"architecture":"amd64","os":"linux"}'
    for blob in (config, layer):
        digest = Digest.sha256_of(blob)
        await store.commit_blob(REPO, digest, len(blob), f"sha256/{digest.hex}")
    content = image_manifest(OCI_MANIFEST, config, [layer])
    manifest = parse_manifest(content, None)
    await store.put_manifest(REPO, manifest, content, tag)
    return manifest.digest


def _digest_of(record: ManifestRecord | None) -> Digest | None:
    return None if record is None else record.digest


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_retag_and_delete_through_another_connection_are_seen_at_once(shared: Shared) -> None:
    """
    A tag moved, a manifest deleted, a tag deleted through another connection
    (another quayd process) are what the first store answers next.
    """
    one = await _push(shared.second, b"one")
    assert _digest_of(await shared.first.get_manifest_by_tag(REPO, TAG)) == one
    assert _digest_of(await shared.first.get_manifest_by_digest(REPO, one)) == one

    two = await _push(shared.second, b"two")
    assert _digest_of(await shared.first.get_manifest_by_tag(REPO, TAG)) == two

    assert await shared.second.delete_manifest(REPO, two)
    assert await shared.first.get_manifest_by_digest(REPO, two) is None
    assert await shared.first.get_manifest_by_tag(REPO, TAG) is None
    assert _digest_of(await shared.first.get_manifest_by_digest(REPO, one)) == one

    assert await _push(shared.second, b"one") == one  # the tag back on the first image
    assert _digest_of(await shared.first.get_manifest_by_tag(REPO, TAG)) == one
    assert await shared.second.delete_tag(REPO, TAG)
    assert await shared.first.get_manifest_by_tag(REPO, TAG) is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_changes_by_another_process_are_seen_at_once(shared: Shared) -> None:
    """
    Statements committed by another OS process on the same database (the
    same SQLite file, the same PostgreSQL database) are seen by the next lookup.
    """
    one = await _push(shared.first, b"one")
    two = await _push(shared.first, b"two", tag=None)
    assert _digest_of(await shared.first.get_manifest_by_tag(REPO, TAG)) == one

    shared.elsewhere(
        "UPDATE tag SET manifest_digest = ? WHERE repository = ? AND name = ?", str(two), str(REPO), str(TAG)
    )
    assert _digest_of(await shared.first.get_manifest_by_tag(REPO, TAG)) == two

    shared.elsewhere("DELETE FROM tag WHERE repository = ? AND manifest_digest = ?", str(REPO), str(two))
    shared.elsewhere("DELETE FROM manifest WHERE repository = ? AND digest = ?", str(REPO), str(two))
    assert await shared.first.get_manifest_by_tag(REPO, TAG) is None
    assert await shared.first.get_manifest_by_digest(REPO, two) is None
    assert _digest_of(await shared.first.get_manifest_by_digest(REPO, one)) == one


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_lookup_asked_during_a_running_query_is_not_answered_by_it(shared: Shared) -> None:
    """
    A lookup running (its query read the database, its answer not yet
    delivered) while another process deletes the manifest and moves the tag
    answers with what it read; lookups asked after the change are answered by
    a later query and see the change, even though they were asked while the
    earlier query was still running.
    """
    one = await _push(shared.first, b"one")
    two = await _push(shared.first, b"two", tag=None)
    database = _held(shared.first)
    database.hold = True
    before = Deferred.fromCoroutine(shared.first.get_manifest_by_tag(REPO, TAG))
    before_digest = Deferred.fromCoroutine(shared.first.get_manifest_by_digest(REPO, one))
    while not database.held:
        await _turn()
    # The first query has run; its answer is held. Another process changes things.
    shared.elsewhere(
        "UPDATE tag SET manifest_digest = ? WHERE repository = ? AND name = ?", str(two), str(REPO), str(TAG)
    )
    shared.elsewhere("DELETE FROM manifest WHERE repository = ? AND digest = ?", str(REPO), str(one))
    after = Deferred.fromCoroutine(shared.first.get_manifest_by_tag(REPO, TAG))
    after_digest = Deferred.fromCoroutine(shared.first.get_manifest_by_digest(REPO, one))
    database.hold = False
    database.held.pop(0).callback(None)
    # The held query answered the lookups asked before the change...
    assert _digest_of(await before) == one
    # ...and the later ones were answered by the query that started after it.
    assert _digest_of(await after) == two
    assert await after_digest is None
    assert _digest_of(await before_digest) in (one, None)


async def _turn() -> None:
    """Let the reactor run once (the database threads and sockets deliver results)."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.001, lambda: None)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_concurrent_lookups_share_one_query(shared: Shared) -> None:
    """
    Lookups asked while a query runs (as under load) are answered together by
    the next query: forty lookups, by tag and by digest, cost two statements.
    """
    one = await _push(shared.first, b"one")
    database = _held(shared.first)
    database.hold = True
    first = Deferred.fromCoroutine(shared.first.get_manifest_by_digest(REPO, one))
    while not database.held:
        await _turn()
    statements = database.statements
    lookups = [
        Deferred.fromCoroutine(
            shared.first.get_manifest_by_tag(REPO, TAG)
            if n % 2
            else shared.first.get_manifest_by_digest(REPO, one)
        )
        for n in range(40)
    ]
    missing = Deferred.fromCoroutine(shared.first.get_manifest_by_tag(REPO, Tag("missing")))
    database.hold = False
    database.held.pop(0).callback(None)
    assert _digest_of(await first) == one
    results = await gatherResults(lookups)
    assert {_digest_of(r) for r in results} == {one}
    assert await missing is None
    assert database.statements == statements + 1
