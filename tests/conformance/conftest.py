"""
Fixtures for the conformance mirror: a quayd registry app wired as the daemon
wires it, listening on a loopback port, and a client bound to it.

Each test gets its own registry (a new database, and a blob store in
C{tmp_path}), so every check sets up the state it needs itself. Every test runs
twice, over SQLite and over PostgreSQL (L{database_kind}). A test picks the
registry's C{auto_mount} switch by parametrizing the C{auto_mount} fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorFromThreads
from twisted.web.client import HTTPConnectionPool

from quayd.auth.policy import OpenAccess
from quayd.blocking import ThreadPoolService
from quayd.db.store import MetadataStore
from quayd.http.site import QuaydSite
from quayd.registry.app import RegistryApp
from quayd.registry.uploads import UploadLimits, UploadService
from quayd.storage.filesystem import FilesystemBlobStore
from tests.conformance.suite import RegistryClient, SuiteContent, build_content
from tests.conftest import DATABASE_KINDS, DatabaseOpener

#: Manifest size limit of the registry under test (the spec asks for at least 4 MiB).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

F = TypeVar("F", bound=Callable[..., Any])


def async_yield_fixture(f: F) -> F:
    """
    L{pytest_twisted.async_yield_fixture}, typed (the plugin ships no hints).

    @param f: An async generator function to run as a fixture in the reactor.
    """
    fixture: F = pytest_twisted.async_yield_fixture(f)
    return fixture


@pytest.fixture(params=DATABASE_KINDS)
def database_kind(request: pytest.FixtureRequest) -> str:
    """
    The metadata backend of the registry under test: each test runs over
    SQLite and over PostgreSQL (which skips, or fails under C{CI=true},
    without the server binaries).
    """
    kind: str = request.param
    return kind


@pytest.fixture
def auto_mount() -> bool:
    """
    Whether a mount without C{from} may find the blob in another repository
    (the daemon's default); tests parametrize this fixture to change it.
    """
    return True


@pytest.fixture
def content() -> SuiteContent:
    """The conformance content: configs, layer, manifests, upload blobs and artifacts."""
    return build_content()


@async_yield_fixture
async def registry(
    tmp_path: Path, auto_mount: bool, open_test_database: DatabaseOpener
) -> AsyncIterator[RegistryClient]:
    """
    A registry built like L{quayd.service.QuaydService} builds it, on
    127.0.0.1 port 0, over a new database of the kind under test, and a
    client for it.

    Teardown closes the client's connections and the listening port, then
    expires every upload session left open (as the daemon's janitor
    eventually does, closing their staged files), then closes the database
    and the blocking thread pool.
    """
    from twisted.internet import reactor

    threads = IReactorFromThreads(reactor)
    runner = ThreadPoolService(threads)
    runner.startService()
    database = await open_test_database(tmp_path)
    store = MetadataStore(database, reactor)
    blobs = FilesystemBlobStore(tmp_path / "storage", runner)
    uploads = UploadService(store, blobs, UploadLimits())
    app = RegistryApp(
        store=store,
        blobs=blobs,
        uploads=uploads,
        authorizer=OpenAccess(),
        max_manifest_bytes=MAX_MANIFEST_BYTES,
        delete_enabled=True,
        auto_mount=auto_mount,
    )
    site = QuaydSite(
        app.app.resource(), body_sink_factory=app.sink_factory, max_buffered_body=MAX_MANIFEST_BYTES
    )
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[arg-type]  # Twisted types the factory as an invariant generic ServerFactory
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    pool = HTTPConnectionPool(reactor, persistent=True)
    try:
        yield RegistryClient(base_url=f"http://127.0.0.1:{address.port}", pool=pool, clock=reactor)
    finally:
        await pool.closeCachedConnections()
        stopping = port.stopListening()
        if stopping is not None:
            await stopping
        await uploads.expire(reactor.seconds() + 1.0)
        await database.close()
        runner.stopService()
