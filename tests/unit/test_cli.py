"""
C{quayd-admin copy-from-sqlite}: an SQLite database with real content (an
image pushed through the in-process registry, identity objects seeded with the
real stores, a webhook with queued work) is copied into PostgreSQL, and a
registry over the copy serves the same content to the same credentials.

The copy runs in process (L{quayd.cli.copy_from_sqlite}, what C{main} runs
under C{react}) on the test reactor; C{tests/e2e/test_postgres_cluster.py}
runs the installed command against a C{twistd quayd}.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import yaml
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorFromThreads
from twisted.internet.task import Clock

from quayd import cli
from quayd.auth.keys import DEFAULT_SECRET_KEY, load_secret_box
from quayd.auth.policy import Action, Credentials, OpenAccess, Policy
from quayd.auth.throttle import LoginThrottle
from quayd.blocking import ThreadPoolService, run_synchronously
from quayd.config import Config, load_config
from quayd.db.identity import IdentityStore
from quayd.db.interfaces import IDatabase, Transaction
from quayd.db.store import MetadataStore
from quayd.db.webhooks import WebhookStore
from quayd.http.site import QuaydSite
from quayd.registry.app import RegistryApp
from quayd.registry.manifests import OCI_MANIFEST
from quayd.registry.uploads import UploadLimits, UploadService
from quayd.service import open_database
from quayd.storage.filesystem import FilesystemBlobStore
from quayd.types import Digest, RepositoryName
from tests.support.databases import open_sqlite
from tests.support.http import RegistryClient
from tests.support.identity import Login, TokenLogin, start_access_registry
from tests.support.manifests import image_manifest
from tests.support.postgres import PostgresCluster

CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = b"copied layer bytes " * 200
SUPERUSER = "root"


def digest_of(data: bytes) -> str:
    """The C{sha256:} digest of C{data}."""
    return str(Digest.sha256_of(data))


@dataclass(frozen=True, slots=True, kw_only=True)
class OldRegistry:
    """
    What the SQLite registry held when it was stopped.

    @ivar directory: Its directory: C{quayd.sqlite}, C{blobs/}, C{keys/}.
    @ivar manifest: The bytes of the manifest tagged C{v1} (and C{v2}) in C{acme/app}.
    @ivar robot: The robot C{acme+ci}'s credentials.
    @ivar token: A write token of C{acme/app}.
    @ivar user: The user C{alice}, an owner of C{acme}.
    @ivar upload: An upload session left open.
    @ivar delivery: A pending webhook delivery.
    """

    directory: Path
    manifest: bytes
    robot: Login
    token: TokenLogin
    user: Login
    upload: str
    delivery: str

    @property
    def database_path(self) -> Path:
        """The SQLite file."""
        return self.directory / "quayd.sqlite"


async def _push(client: RegistryClient, login: Login, repository: str, data: bytes) -> None:
    """Upload one blob (POST, then PUT with the digest) with Basic credentials."""
    started = await client.request("POST", f"/v2/{repository}/blobs/uploads/", headers=login.headers)
    assert started.code == 202, started.body
    location = started.header("Location")
    assert location is not None
    separator = "&" if "?" in location else "?"
    committed = await client.request(
        "PUT",
        f"{location}{separator}digest={digest_of(data)}",
        headers={**login.headers, "Content-Type": "application/octet-stream"},
        body=data,
    )
    assert committed.code == 201, committed.body


async def build_old_registry(directory: Path) -> OldRegistry:
    """
    Run the SQLite registry with access control in process, fill it through
    HTTP and the real stores, and stop it.
    """
    from twisted.internet import reactor

    registry = await start_access_registry(directory, superusers=[SUPERUSER])
    try:
        seeder = registry.seeder
        await seeder.user(SUPERUSER, "root-password")
        alice = await seeder.user("alice", "alice-password", email="alice@example.com")
        await seeder.user("bob", "bob-password")
        await seeder.org("acme", owners=["alice"])
        await seeder.team("acme", "builders", "creator", members=["bob"], description="CI people")
        robot = await seeder.robot("acme", "ci", description="the CI robot")

        client = registry.client
        await _push(client, alice, "acme/app", CONFIG)
        await _push(client, alice, "acme/app", LAYER)
        manifest = image_manifest(OCI_MANIFEST, CONFIG, [LAYER])
        put = await client.request(
            "PUT",
            "/v2/acme/app/manifests/v1",
            headers={**alice.headers, "Content-Type": OCI_MANIFEST},
            body=manifest,
        )
        assert put.code == 201, put.body
        await seeder.grant("acme/app", "write", robot="acme+ci")
        await seeder.grant("acme/app", "read", team="acme/builders")
        await seeder.repository("acme/public", visibility="public")
        token = await seeder.repository_token("acme/app", "write", description="deploy")
        await registry.identity.audit("alice", "127.0.0.1", "robot.create", "acme+ci", {"note": "ünïcode"})

        webhooks = WebhookStore(registry.database, reactor)
        hook = await webhooks.create_webhook("acme/app", "https://hooks.example/push", "push hook", "c1pher")
        delivery = await webhooks.enqueue(hook.id, "acme/app", "test", json.dumps({"hello": "world"}))
        retag = await client.request(
            "PUT",
            "/v2/acme/app/manifests/v2",
            headers={**alice.headers, "Content-Type": OCI_MANIFEST},
            body=manifest,
        )
        assert retag.code == 201, retag.body
        upload = await client.request("POST", "/v2/acme/app/blobs/uploads/", headers=alice.headers)
        assert upload.code == 202
        upload_id = upload.header("Docker-Upload-UUID")
        assert upload_id is not None
    finally:
        await registry.stop()
    return OldRegistry(
        directory=directory,
        manifest=manifest,
        robot=robot,
        token=token,
        user=alice,
        upload=upload_id,
        delivery=delivery.id,
    )


def write_config(directory: Path, cluster: PostgresCluster, database: str, old: Path) -> Config:
    """A configuration naming a PostgreSQL database, the old blob directory and the old keys."""
    path = directory / "quayd.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(directory / "data"),
                "database": {"url": cluster.url(database), "pool_size": 2},
                "storage": {"path": str(old / "blobs")},
                "auth": {
                    "superusers": [SUPERUSER],
                    "token_signing_key_file": str(old / "keys" / "token-signing.pem"),
                    "secret_key_file": str(old / DEFAULT_SECRET_KEY),
                },
            }
        )
    )
    return load_config(path)


@dataclass(kw_only=True)
class NewRegistry:
    """A registry app over the PostgreSQL copy (open access), and a client for it."""

    database: IDatabase
    client: RegistryClient
    port: IListeningPort
    pool: ThreadPoolService
    uploads: UploadService

    async def stop(self) -> None:
        """Close the client, stop listening, close the stores."""
        await self.client.close()
        await self.uploads.close()
        stopped = self.port.stopListening()
        if isinstance(stopped, Deferred):
            await stopped
        await self.database.close()
        self.pool.stopService()


async def start_new_registry(config: Config) -> NewRegistry:
    """Serve the registry app over the database and blob directory of C{config}."""
    from twisted.internet import reactor

    database = open_database(config.database, reactor)
    await database.open()
    pool = ThreadPoolService(IReactorFromThreads(reactor), 1, 2)
    pool.startService()
    store = MetadataStore(database, reactor)
    blobs = FilesystemBlobStore(config.storage.path, pool)
    uploads = UploadService(store, blobs, UploadLimits())
    app = RegistryApp(
        store=store, blobs=blobs, uploads=uploads, authorizer=OpenAccess(), max_manifest_bytes=1024 * 1024
    )
    site = QuaydSite(app.app.resource(), body_sink_factory=app.sink_factory, max_buffered_body=1024 * 1024)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[arg-type]  # Twisted types the factory as an invariant generic ServerFactory
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    client = RegistryClient(reactor, f"http://127.0.0.1:{address.port}")
    return NewRegistry(database=database, client=client, port=port, pool=pool, uploads=uploads)


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def copied(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> AsyncIterator[tuple[OldRegistry, Config, str]]:
    """
    An old SQLite registry, a configuration naming a new PostgreSQL database,
    and the output of copying the one into the other.
    """
    from twisted.internet import reactor

    old = await build_old_registry(tmp_path / "old")
    config = write_config(
        tmp_path / "new", postgres_cluster, postgres_cluster.create_database(), old.directory
    )
    out = io.StringIO()
    await cli.copy_from_sqlite(reactor, config, old.database_path, out)
    yield old, config, out.getvalue()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_copy_tables_cover_schema_in_dependency_order(tmp_path: Path) -> None:
    """COPY_TABLES names every table of the schema once, each after the tables its foreign keys name."""
    database = await open_sqlite(tmp_path / "quayd.sqlite")
    try:
        rows = await database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = {r[0] for r in rows} - {"schema_version", "sqlite_sequence"}
        assert sorted(cli.COPY_TABLES) == sorted(tables)
        for position, table in enumerate(cli.COPY_TABLES):
            references = await database.execute('SELECT "table" FROM pragma_foreign_key_list(?)', (table,))
            for (parent,) in references:
                assert parent == table or cli.COPY_TABLES.index(parent) < position, (table, parent)
    finally:
        await database.close()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_copy_from_sqlite_prints_matching_comparison(copied: tuple[OldRegistry, Config, str]) -> None:
    """The copy prints every table with equal counts on both sides and a verdict that all match."""
    _, _, output = copied
    lines = output.splitlines()
    assert lines[0].split() == ["table", "sqlite", "rows", "postgresql", "rows", "checksum"]
    rows = {line.split()[0]: line.split() for line in lines[1 : 1 + len(cli.COPY_TABLES)]}
    assert list(rows) == list(cli.COPY_TABLES)
    for table, fields in rows.items():
        assert fields[1] == fields[2], table
        assert fields[-1] == "ok", table
    assert int(rows["manifest"][1]) == 1
    assert int(rows["tag"][1]) == 2
    assert int(rows["upload"][1]) == 1
    assert int(rows["push_outbox"][1]) == 1
    assert int(rows["delivery"][1]) == 1
    assert lines[-1].startswith("copied ") and lines[-1].endswith("every table matches")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_copy_from_sqlite_content_served_from_postgres(copied: tuple[OldRegistry, Config, str]) -> None:
    """A registry over the copy serves the manifest by tag and the blob bytes, and resumes the open upload."""
    old, config, _ = copied
    registry = await start_new_registry(config)
    try:
        client = registry.client
        manifest = await client.request("GET", "/v2/acme/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert manifest.code == 200
        assert manifest.body == old.manifest
        assert manifest.header("Docker-Content-Digest") == digest_of(old.manifest)
        layer = await client.request("GET", f"/v2/acme/app/blobs/{digest_of(LAYER)}")
        assert layer.code == 200
        assert layer.body == LAYER
        tags = await client.request("GET", "/v2/acme/app/tags/list")
        assert tags.json() == {"name": "acme/app", "tags": ["v1", "v2"]}
        status = await client.request("GET", f"/v2/acme/app/blobs/uploads/{old.upload}")
        assert status.code == 204
    finally:
        await registry.stop()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_copy_from_sqlite_credentials_work_on_postgres(copied: tuple[OldRegistry, Config, str]) -> None:
    """The robot, the repository token and the user log in against the copy, with their old rights."""
    from twisted.internet import reactor

    old, config, _ = copied
    database = open_database(config.database, reactor)
    await database.open()
    try:
        identity = IdentityStore(database, reactor)
        secrets = load_secret_box(config.auth.secret_key_file, generate=False)
        credentials = Credentials(
            identity, secrets, run_synchronously, LoginThrottle(Clock()), frozenset([SUPERUSER])
        )
        policy = Policy(identity, frozenset([SUPERUSER]))
        repository = RepositoryName.parse("acme/app")

        robot = await credentials.check(old.robot.username, old.robot.password, "127.0.0.1")
        assert (robot.kind, robot.name) == ("robot", "acme+ci")
        assert Action.PUSH in await policy.allowed_actions(robot, repository)
        token = await credentials.check(old.token.username, old.token.password, "127.0.0.1")
        assert (token.kind, token.repository, token.role) == ("token", "acme/app", "write")
        user = await credentials.check(old.user.username, old.user.password, "127.0.0.1")
        assert user.kind == "user"
        assert Action.ADMIN in await policy.allowed_actions(user, repository)
        team = await identity.get_team("acme", "builders")
        assert team is not None and team.members == ("bob",)
        assert team.description == "CI people"
    finally:
        await database.close()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_copy_from_sqlite_queued_work_and_sequences_carry_over(
    copied: tuple[OldRegistry, Config, str],
) -> None:
    """
    The webhook, its pending delivery and the audit log are copied; new audit
    entries get ids after the copied ones (the identity sequences moved on).
    """
    from twisted.internet import reactor

    old, config, _ = copied
    database = open_database(config.database, reactor)
    await database.open()
    try:
        webhooks = WebhookStore(database, reactor)
        (hook,) = await webhooks.list_webhooks("acme/app")
        assert (hook.url, hook.has_secret) == ("https://hooks.example/push", True)
        delivery = await webhooks.get_delivery(old.delivery)
        assert delivery is not None and delivery.state == "pending"
        assert await webhooks.next_due() is not None

        identity = IdentityStore(database, reactor)
        (entry,) = await identity.audit_log()
        assert entry.detail == {"note": "ünïcode"}
        await identity.audit("root", "127.0.0.1", "test", "after-copy", {})
        newest = (await identity.audit_log())[0]
        assert newest.id > entry.id
        assert newest.target == "after-copy"
    finally:
        await database.close()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_copy_from_sqlite_refuses_target_with_data(copied: tuple[OldRegistry, Config, str]) -> None:
    """Copying again into the now filled database is refused, and nothing is added."""
    from twisted.internet import reactor

    old, config, _ = copied
    out = io.StringIO()
    with pytest.raises(SystemExit, match="already has data"):
        await cli.copy_from_sqlite(reactor, config, old.database_path, out)
    assert out.getvalue() == ""
    database = open_database(config.database, reactor)
    await database.open()
    try:
        assert (await database.execute("SELECT count(*) FROM manifest"))[0][0] == 1
    finally:
        await database.close()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_copy_from_sqlite_refuses_sqlite_target(tmp_path: Path) -> None:
    """A configuration naming an SQLite database is refused: the command copies into PostgreSQL."""
    from twisted.internet import reactor

    path = tmp_path / "quayd.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    (tmp_path / "old.sqlite").write_bytes(b"")
    with pytest.raises(SystemExit, match="copies into PostgreSQL"):
        await cli.copy_from_sqlite(reactor, load_config(path), tmp_path / "old.sqlite", io.StringIO())


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_copy_from_sqlite_refuses_missing_source(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    """A source that is not an SQLite file is refused before anything is opened (or created)."""
    from twisted.internet import reactor

    config = write_config(tmp_path / "new", postgres_cluster, postgres_cluster.create_database(), tmp_path)
    with pytest.raises(SystemExit, match="cannot read"):
        await cli.copy_from_sqlite(reactor, config, tmp_path / "missing.sqlite", io.StringIO())
    assert not (tmp_path / "missing.sqlite").exists()
    (tmp_path / "text.sqlite").write_text("not a database\n")
    with pytest.raises(SystemExit, match="not an SQLite database"):
        await cli.copy_from_sqlite(reactor, config, tmp_path / "text.sqlite", io.StringIO())


def test_main_copy_reports_config_error(tmp_path: Path) -> None:
    """An unreadable configuration ends the command with a one-line error, before any database is opened."""
    with pytest.raises(SystemExit, match=r"^quayd-admin: "):
        cli.main(["--config", str(tmp_path / "missing.yaml"), "copy-from-sqlite", str(tmp_path / "x.sqlite")])


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_copy_from_sqlite_mismatch_rolls_back(
    tmp_path: Path, postgres_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table that differs after the copy is reported, and nothing is committed."""
    from twisted.internet import reactor

    old = await build_old_registry(tmp_path / "old")
    config = write_config(
        tmp_path / "new", postgres_cluster, postgres_cluster.create_database(), old.directory
    )
    copy_table = cli._copy_table

    async def lossy_copy(
        source: Transaction, target: Transaction, table: str, columns: Sequence[Any]
    ) -> None:
        await copy_table(source, target, table, columns)
        if table == "tag":
            await target.execute("DELETE FROM tag WHERE name = 'v2'")

    monkeypatch.setattr(cli, "_copy_table", lossy_copy)
    out = io.StringIO()
    with pytest.raises(SystemExit, match="does not match"):
        await cli.copy_from_sqlite(reactor, config, old.database_path, out)
    differing = [line.split()[0] for line in out.getvalue().splitlines() if "DIFFERS" in line]
    assert differing == ["tag"]
    database = open_database(config.database, reactor)
    await database.open()
    try:
        assert (await database.execute("SELECT count(*) FROM manifest"))[0][0] == 0
    finally:
        await database.close()
