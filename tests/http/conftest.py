"""
Fixtures for the HTTP tests: the real registry app, in process, on a loopback socket.

The app is assembled as L{quayd.service.QuaydService} assembles it (a
L{RegistryApp} behind a L{QuaydSite} with the streaming upload sink), over a
new database and the filesystem store in C{tmp_path}, and a real thread pool
for blocking work; every test runs over SQLite and over PostgreSQL
(L{database_kind}). Each test gets its own client with its own connection pool.
Teardown closes the client, lets the server see its connections end, stops
listening and closes the database; it also fails the test if quayd
logged an unexpected failure (a crash, or an unhandled error in a Deferred).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorFromThreads
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import implementer

from quayd.auth.policy import OpenAccess
from quayd.blocking import ThreadPoolService
from quayd.db.interfaces import IDatabase
from quayd.db.store import MetadataStore
from quayd.http.site import QuaydSite
from quayd.registry.app import RegistryApp
from quayd.registry.uploads import UploadLimits, UploadService
from quayd.storage.filesystem import FilesystemBlobStore
from tests.conftest import DATABASE_KINDS, DatabaseOpener
from tests.support.http import RegistryClient

#: The manifest size limit of the test registry (small, so the 413 test stays quick).
MAX_MANIFEST_BYTES = 64 * 1024


@implementer(ILogObserver)
@dataclass
class _FailureLog:
    """Collects the failures quayd logs (C{log_failure} events)."""

    events: list[LogEvent] = field(default_factory=list)

    def __call__(self, event: LogEvent) -> None:
        """Keep C{event} if it carries a failure."""
        if "log_failure" in event:
            self.events.append(event)


@dataclass(kw_only=True)
class Registry:
    """
    A running registry and a client for it.

    @ivar root: The blob store's directory (C{uploads/<id>} holds staged data).
    @ivar expected_failures: How many logged failures the test expects.
    """

    client: RegistryClient
    store: MetadataStore
    uploads: UploadService
    root: Path
    database: IDatabase
    port: IListeningPort
    pool: ThreadPoolService
    failures: _FailureLog
    expected_failures: int = 0

    async def assert_no_failures(self) -> None:
        """
        Fail if quayd logged a failure so far (after collecting garbage, so
        that Deferreds whose errors nobody handled report them now).
        """
        from twisted.internet import reactor

        gc.collect()
        await deferLater(reactor, 0, lambda: None)
        logged, self.failures.events = self.failures.events, []
        assert logged == [], f"quayd logged failures: {describe_failures(logged)}"

    def staged_size(self, upload_id: str) -> int | None:
        """The size of an upload's staged file, or C{None} if there is none."""
        path = self.root / "uploads" / upload_id
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return None

    def staged_files(self) -> list[str]:
        """The names of every staged upload file."""
        return sorted(path.name for path in (self.root / "uploads").iterdir())


async def wait_until(predicate: Callable[[], bool], within: float = 10.0, interval: float = 0.01) -> None:
    """
    Poll C{predicate} on the reactor until it holds.

    @raise AssertionError: If it still does not hold after C{within} seconds.
    """
    from twisted.internet import reactor

    deadline = reactor.seconds() + within
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await deferLater(reactor, interval, lambda: None)


async def sleep(seconds: float) -> None:
    """Let the reactor run for C{seconds}."""
    from twisted.internet import reactor

    await deferLater(reactor, seconds, lambda: None)


def describe_failures(events: list[LogEvent]) -> list[str]:
    """One line per logged failure: its message and exception."""
    lines = []
    for event in events:
        failure = event.get("log_failure")
        message = formatEvent(event) if event.get("log_format") else "(no message)"
        lines.append(f"{message}: {failure.getErrorMessage() if failure is not None else ''!s}"[:300])
    return lines


RegistryFactory = Callable[..., Awaitable[Registry]]


@pytest.fixture(params=DATABASE_KINDS)
def database_kind(request: pytest.FixtureRequest) -> str:
    """
    The metadata backend of the registries L{start_registry} starts: every
    test using them runs over SQLite and over PostgreSQL (which skips, or
    fails under C{CI=true}, without the server binaries).
    """
    kind: str = request.param
    return kind


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def start_registry(
    tmp_path: Path, open_test_database: DatabaseOpener
) -> AsyncIterator[RegistryFactory]:
    """
    Start registries on loopback port 0: C{await start_registry(limits=...)},
    each over a new database of the kind under test.

    Every registry started is stopped in teardown.
    """
    from twisted.internet import reactor

    started: list[Registry] = []

    async def start(limits: UploadLimits | None = None, auto_mount: bool = True) -> Registry:
        base = tmp_path / f"registry-{len(started)}"
        pool = ThreadPoolService(IReactorFromThreads(reactor), 1, 4)
        pool.startService()
        base.mkdir(parents=True)
        database = await open_test_database(base)
        store = MetadataStore(database, reactor)
        blobs = FilesystemBlobStore(base / "blobs", pool)
        uploads = UploadService(store, blobs, limits or UploadLimits())
        app = RegistryApp(
            store=store,
            blobs=blobs,
            uploads=uploads,
            authorizer=OpenAccess(),
            max_manifest_bytes=MAX_MANIFEST_BYTES,
            auto_mount=auto_mount,
        )
        site = QuaydSite(
            app.app.resource(), body_sink_factory=app.sink_factory, max_buffered_body=MAX_MANIFEST_BYTES
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        failures = _FailureLog()
        globalLogPublisher.addObserver(failures)
        registry = Registry(
            client=RegistryClient(reactor, f"http://127.0.0.1:{port.getHost().port}"),
            store=store,
            uploads=uploads,
            root=base / "blobs",
            database=database,
            port=port,
            pool=pool,
            failures=failures,
        )
        started.append(registry)
        return registry

    yield start

    for registry in started:
        await _stop(registry)
    gc.collect()
    await deferLater(reactor, 0, lambda: None)
    for registry in started:
        globalLogPublisher.removeObserver(registry.failures)
        logged = describe_failures(registry.failures.events)
        if len(logged) != registry.expected_failures:
            pytest.fail(
                f"quayd logged {len(logged)} failures, expected {registry.expected_failures}: {logged}"
            )


async def _stop(registry: Registry) -> None:
    """Close the client, stop listening, close the stores."""
    from twisted.internet import reactor

    await registry.client.close()
    # Let the server see the connections go before its stores close.
    await deferLater(reactor, 0.01, lambda: None)
    # Close every staged file the upload service still holds open.
    await registry.uploads.close()
    stopped = registry.port.stopListening()
    if isinstance(stopped, Deferred):
        await stopped
    await registry.database.close()
    registry.pool.stopService()


@pytest_twisted.async_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def registry(start_registry: RegistryFactory) -> Registry:
    """A registry without size limits beyond the manifest limit."""
    return await start_registry()
