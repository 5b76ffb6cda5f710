"""
Composition of the daemon's service tree; no logic beyond wiring.
"""

from __future__ import annotations

import os
from typing import Any

from treq.client import HTTPClient
from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool

from quayd.admin.api import AdminApp, mount_admin_api
from quayd.admin.reconcile import Reconciler
from quayd.auth.endpoint import TokenEndpoint
from quayd.auth.keys import SecretBox, load_secret_box, load_signing_key, new_token
from quayd.auth.policy import AccessControl, Credentials, Policy
from quayd.auth.throttle import LoginThrottle
from quayd.auth.tokens import TokenService
from quayd.blocking import ThreadPoolService
from quayd.cli import hash_password
from quayd.config import Config, DatabaseConfig, load_config
from quayd.db.identity import IdentityStore
from quayd.db.interfaces import IDatabase
from quayd.db.migrations import migrate
from quayd.db.postgres import PostgresDatabase
from quayd.db.sqlite import SQLiteDatabase
from quayd.db.store import MetadataStore
from quayd.db.webhooks import WebhookStore
from quayd.http.site import QuaydSite
from quayd.maintenance import UploadJanitor
from quayd.registry.app import RegistryApp
from quayd.registry.uploads import UploadLimits, UploadService
from quayd.storage.filesystem import FilesystemBlobStore, sync_file_range_writeback
from quayd.webhooks.dispatcher import DispatchSettings, WebhookDispatcher
from quayd.webhooks.targets import GuardedEndpointFactory, TargetPolicy

_log = Logger()


class QuaydService(MultiService):
    """
    The daemon: opens the database, migrates it, then starts the listeners.

    Children are started only once the store is ready, so no request ever
    reaches an unmigrated database. If opening fails, the reactor stops.
    """

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self._config = config
        self._reactor = reactor
        self._pool = ThreadPoolService(reactor)
        self.database = open_database(config.database, reactor)
        self.ready: Deferred[None] = Deferred()
        self._uploads: UploadService | None = None
        self.identity: IdentityStore | None = None
        self.webhooks = WebhookStore(self.database, reactor)
        self.secret_box: SecretBox | None = None
        self.reconciler: Reconciler | None = None
        self._reload_requested = False

    async def _build_access(self) -> tuple[AccessControl, TokenEndpoint, IdentityStore]:
        config = self._config
        auth = config.auth
        signing_key = await self._pool(
            load_signing_key, auth.token_signing_key_file, auth.generate_signing_key
        )
        secret_box = await self._pool(load_secret_box, auth.secret_key_file, auth.generate_secret_key)
        identity = IdentityStore(self.database, self._reactor)
        superusers = frozenset(auth.superusers)
        tokens = TokenService(signing_key, self._reactor, config.server.hostname, auth.issuer, auth.token_ttl)
        credentials = Credentials(identity, secret_box, self._pool, LoginThrottle(self._reactor), superusers)
        access = AccessControl(
            credentials, Policy(identity, superusers), tokens, f"{config.server.base_url}/v2/auth"
        )
        self.secret_box = secret_box
        return access, TokenEndpoint(access, credentials, tokens), identity

    def _build(self, access: AccessControl, token_endpoint: TokenEndpoint) -> None:
        config = self._config
        store = MetadataStore(self.database, self._reactor)
        blobs = FilesystemBlobStore(config.storage.path, self._pool, sync_file_range_writeback())
        limits = UploadLimits(
            max_blob_bytes=config.registry.max_blob_bytes, max_chunk_bytes=config.registry.max_chunk_bytes
        )
        uploads = self._uploads = UploadService(store, blobs, limits)
        dispatcher = self._webhook_dispatcher()
        registry = RegistryApp(
            store=store,
            blobs=blobs,
            uploads=uploads,
            authorizer=access,
            token_endpoint=token_endpoint,
            max_manifest_bytes=config.registry.max_manifest_bytes,
            delete_enabled=config.registry.delete_enabled,
            auto_mount=config.registry.auto_mount,
            on_push=dispatcher.wake,
        )
        assert self.identity is not None and self.secret_box is not None
        admin = AdminApp(
            identity=self.identity,
            secrets=self.secret_box,
            access=access,
            run_blocking=self._pool,
            superusers=frozenset(config.auth.superusers),
            managed_source=config.source,
            clock=self._reactor,
            webhooks=self.webhooks,
            webhook_policy=self._target_policy(),
            wake=dispatcher.wake,
            public_hostname=config.server.hostname,
            public_scheme=config.server.scheme,
        )
        site = QuaydSite(
            mount_admin_api(admin.resource(), registry.app.resource()),
            body_sink_factory=registry.sink_factory,
            max_buffered_body=config.registry.max_manifest_bytes,
            access_log=config.logging.level in ("debug", "info"),
        )
        interval = min(600.0, max(1.0, config.registry.upload_expiry / 4))
        UploadJanitor(uploads, self._reactor, config.registry.upload_expiry, interval).setServiceParent(self)  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        for description in config.server.listen:
            listener = strports.service(description, site, reactor=self._reactor)
            listener.setName(f"listen:{description}")
            listener.setServiceParent(self)

    def _target_policy(self) -> TargetPolicy:
        settings = self._config.webhooks
        return TargetPolicy(allow_loopback=settings.allow_loopback, allow_private=settings.allow_private)

    def _webhook_dispatcher(self) -> WebhookDispatcher:
        """The webhook dispatcher with its own connection pool and SSRF-guarded agent."""
        config = self._config
        settings = config.webhooks
        assert self.secret_box is not None
        pool = HTTPConnectionPool(self._reactor, persistent=True)
        pool.maxPersistentPerHost = 2
        endpoints = GuardedEndpointFactory(
            self._reactor, self._pool, self._target_policy(), connect_timeout=min(10.0, settings.timeout)
        )
        agent = Agent.usingEndpointFactory(self._reactor, endpoints, pool=pool)
        dispatcher = WebhookDispatcher(
            self.webhooks,
            self.secret_box,
            HTTPClient(agent),
            self._reactor,
            DispatchSettings(
                timeout=settings.timeout,
                initial_backoff=settings.initial_backoff,
                max_backoff=settings.max_backoff,
                max_age=settings.max_age,
                concurrency=settings.concurrency,
                coalesce_window=settings.coalesce_window,
            ),
            config.server.hostname,
            config.server.scheme,
            close_http=pool.closeCachedConnections,
        )
        dispatcher.setServiceParent(self)  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        return dispatcher

    def startService(self) -> None:
        """Start the pool, open and migrate the database, then the rest."""
        self._pool.startService()
        self.running = 1
        Deferred.fromCoroutine(self._start()).addErrback(self._failed)

    async def _start(self) -> None:
        self._config.data_dir.mkdir(parents=True, exist_ok=True)
        await self.database.open()
        version = await migrate(self.database)
        _log.info("database ready at schema version {version}", version=version)
        # Children added while this service is running are started by addService itself.
        access, token_endpoint, self.identity = await self._build_access()
        await self._reconcile(self.identity)
        await self._bootstrap_superusers(self.identity)
        self._build(access, token_endpoint)
        _log.info(
            "quayd serving {base_url} on {listen}",
            base_url=self._config.server.base_url,
            listen=", ".join(self._config.server.listen),
        )
        self.ready.callback(None)

    async def _bootstrap_superusers(self, identity: IdentityStore) -> None:
        """
        First run: a superuser named in C{auth.superusers} that does not exist yet is
        created with a random password, written to C{<data_dir>/initial-password-<name>}
        (mode 0600) for the operator, so a fresh install is usable without any
        default password. C{quayd-admin set-password} changes it.
        """
        for name in self._config.auth.superusers:
            if await identity.get_account(name) is not None:
                continue
            password = new_token()[:24]
            password_hash = await self._pool(hash_password, password)
            path = self._config.data_dir / f"initial-password-{name}"
            await self._pool(_write_secret_file, path, password + "\n")
            await identity.create_user(name, None, password_hash)
            _log.warn(
                "created superuser {name}; its initial password is in {path} "
                "(change it with quayd-admin set-password)",
                name=name,
                path=str(path),
            )

    async def _reconcile(self, identity: IdentityStore) -> None:
        """
        Apply the objects the configuration declares, before any listener starts, and keep the
        reconciler for reloads.
        """
        assert self.secret_box is not None
        reconciler = Reconciler(
            identity,
            self.secret_box,
            self._pool,
            load_config,
            self._config.source,
            running_config=self._config,
            webhooks=self.webhooks,
        )
        reconciler.setServiceParent(self)  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self.reconciler = reconciler
        await reconciler.apply(self._config.declared)
        if self._reload_requested:
            self._reload_requested = False
            reconciler.reload()

    def reload(self) -> None:
        """
        Re-read the configuration file and apply its declared objects (SIGHUP, on the reactor
        thread). A reload asked for while quayd is starting runs once the start-up one is done.
        """
        if self.reconciler is None:
            self._reload_requested = True
            _log.info("reload requested while quayd is starting; it runs once the configuration is applied")
            return
        self.reconciler.reload()

    def _failed(self, failure: Any) -> None:
        _log.failure("quayd failed to start", failure)
        # twistd itself always exits 0; make a failed start visible to systemd.
        self._reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self._reactor.callWhenRunning(self._reactor.stop)

    def stopService(self) -> Deferred[None]:
        """Stop listeners and housekeeping, then close the database and pool."""

        async def stop() -> None:
            stopping = [d for d in (s.stopService() for s in reversed(list(self))) if isinstance(d, Deferred)]
            await DeferredList(stopping)
            self.running = 0
            if self._uploads is not None:
                await self._uploads.close()
            await self.database.close()
            self._pool.stopService()

        return Deferred.fromCoroutine(stop())


def _write_secret_file(path: Any, text: str) -> None:
    """Write a file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def open_database(config: DatabaseConfig, reactor: Any) -> IDatabase:
    """The configured database backend (not yet opened)."""
    if config.backend == "postgresql":
        password = None
        if config.password_file is not None:
            password = config.password_file.read_text(encoding="utf-8").strip()
        return PostgresDatabase(
            config.url,
            reactor,
            pool_size=config.pool_size,
            statement_timeout=config.statement_timeout,
            password=password,
        )
    assert config.path is not None
    return SQLiteDatabase(config.path, reactor)


def build_service(config: Config, reactor: Any) -> QuaydService:
    """The root service for C{config}."""
    return QuaydService(config, reactor)
