"""
Push webhooks end to end, in process over real loopback sockets: an image
pushed over HTTP to the registry reaches a real C{twisted.web} receiver as
one signed POST per coalesced push, through the guarded endpoint factory,
with retries when the receiver fails or is down. Every test runs over SQLite
and over PostgreSQL (L{database_kind}, from C{tests/http/conftest.py}).
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorFromThreads
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from quayd.auth.keys import SecretBox, load_secret_box
from quayd.auth.policy import OpenAccess
from quayd.blocking import ThreadPoolService
from quayd.db.store import MetadataStore
from quayd.db.webhooks import Delivery, Webhook, WebhookStore
from quayd.http.site import QuaydSite
from quayd.registry.app import RegistryApp
from quayd.registry.manifests import OCI_MANIFEST
from quayd.registry.uploads import UploadLimits, UploadService
from quayd.storage.filesystem import FilesystemBlobStore
from quayd.webhooks.dispatcher import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    DispatchSettings,
    WebhookDispatcher,
)
from quayd.webhooks.targets import GuardedEndpointFactory, TargetPolicy
from tests.conftest import DatabaseOpener
from tests.http.conftest import _FailureLog, describe_failures, sleep, wait_until
from tests.support.http import RegistryClient
from tests.support.manifests import image_manifest

REPO = "acme/app"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = b"layer bytes " * 100
SECRET = "receiver shared secret"
MAX_MANIFEST_BYTES = 64 * 1024

#: Short timings so that coalescing and retries happen within a second.
SETTINGS = DispatchSettings(
    timeout=5.0,
    initial_backoff=0.1,
    max_backoff=0.4,
    max_age=30.0,
    coalesce_window=0.2,
    poll_interval=0.5,
)


@dataclass(kw_only=True)
class Hit:
    """One POST the receiver got."""

    path: bytes
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header C{name}, or C{None}."""
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self) -> dict[str, object]:
        """The body as JSON."""
        document: dict[str, object] = json.loads(self.body)
        return document


class Receiver(Resource):
    """A webhook receiver answering with scripted statuses (then 200) and recording every POST."""

    isLeaf = True

    def __init__(self, statuses: list[int] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self.statuses = list(statuses or [])
        self.hits: list[Hit] = []

    def render_POST(self, request: Request) -> bytes:
        """Record the request and answer with the next status."""
        assert request.content is not None
        self.hits.append(Hit(path=request.path, headers=request.requestHeaders, body=request.content.read()))
        request.setResponseCode(self.statuses.pop(0) if self.statuses else 200)
        return b"received"


@dataclass(kw_only=True)
class Flow:
    """
    A running registry with a webhook dispatcher, a receiver, and the means to stop them.

    @ivar receiver_port: The receiver's port number (it stays the same across restarts).
    """

    client: RegistryClient
    webhooks: WebhookStore
    dispatcher: WebhookDispatcher
    box: SecretBox
    receiver: Receiver
    receiver_port: int
    listening: IListeningPort | None
    failures: _FailureLog
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def receiver_url(self) -> str:
        """Where the receiver listens."""
        return f"http://127.0.0.1:{self.receiver_port}/hook"

    async def stop_receiver(self) -> None:
        """Close the receiver's port (connections refused from now on)."""
        if self.listening is not None:
            stopped = self.listening.stopListening()
            self.listening = None
            if stopped is not None:
                await stopped

    async def start_receiver(self) -> None:
        """Listen again, on the same port."""
        from twisted.internet import reactor

        if self.listening is None:
            endpoint = TCP4ServerEndpoint(reactor, self.receiver_port, interface="127.0.0.1")
            self.listening = await endpoint.listen(Site(self.receiver))

    async def hook(self, url: str | None = None) -> Webhook:
        """Create the repository (one blob push) and a webhook on it with a secret."""
        await push_blob(self.client, LAYER)
        return await self.webhooks.create_webhook(
            REPO, url or self.receiver_url, "flow test", self.box.encrypt(SECRET)
        )

    async def deliveries(self, hook: Webhook) -> list[Delivery]:
        """The webhook's deliveries, newest first."""
        return await self.webhooks.list_deliveries(hook.id)


FlowFactory = Callable[..., Awaitable[Flow]]


async def push_blob(client: RegistryClient, data: bytes) -> str:
    """Upload C{data} monolithically; returns its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = await client.request("POST", f"/v2/{REPO}/blobs/uploads/?digest={digest}", body=data)
    assert response.code == 201, response.body
    return digest


async def push_image(client: RegistryClient, *tags: str) -> str:
    """Push the config and layer blobs, then the manifest under each tag; returns the config digest."""
    config_digest = await push_blob(client, CONFIG)
    await push_blob(client, LAYER)
    manifest = image_manifest(OCI_MANIFEST, CONFIG, [LAYER])
    for tag in tags:
        response = await client.request(
            "PUT", f"/v2/{REPO}/manifests/{tag}", headers={"Content-Type": OCI_MANIFEST}, body=manifest
        )
        assert response.code == 201, response.body
    return config_digest


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def start_flow(tmp_path: Path, open_test_database: DatabaseOpener) -> AsyncIterator[FlowFactory]:
    """
    Start a registry wired to a webhook dispatcher and a receiver, over a new
    database of the kind under test: C{await start_flow(policy=..., settings=...)}. Teardown stops the
    dispatcher (waiting for deliveries, closing its pool), the client, the
    ports, the stores and the threads, then fails the test if anything
    logged a failure.
    """
    from twisted.internet import reactor

    flows: list[Flow] = []

    async def start(
        policy: TargetPolicy | None = None,
        settings: DispatchSettings = SETTINGS,
        statuses: list[int] | None = None,
    ) -> Flow:
        """Start one registry, dispatcher and receiver."""
        base = tmp_path / f"flow-{len(flows)}"
        threads = IReactorFromThreads(reactor)
        pool = ThreadPoolService(threads, 1, 4)
        pool.startService()
        database = await open_test_database(base)
        store = MetadataStore(database, reactor)
        webhooks = WebhookStore(database, reactor)
        box = load_secret_box(base / "secret.key", generate=True)
        http_pool = HTTPConnectionPool(reactor, persistent=True)
        endpoints = GuardedEndpointFactory(reactor, pool, policy or TargetPolicy(allow_loopback=True), 5)
        http = HTTPClient(Agent.usingEndpointFactory(reactor, endpoints, pool=http_pool))
        dispatcher = WebhookDispatcher(
            webhooks,
            box,
            http,
            reactor,
            settings,
            "registry.example:5000",
            "https",
            close_http=http_pool.closeCachedConnections,
        )
        blobs = FilesystemBlobStore(base / "blobs", pool)
        uploads = UploadService(store, blobs, UploadLimits())
        app = RegistryApp(
            store=store,
            blobs=blobs,
            uploads=uploads,
            authorizer=OpenAccess(),
            max_manifest_bytes=MAX_MANIFEST_BYTES,
            on_push=dispatcher.wake,
        )
        site = QuaydSite(
            app.app.resource(), body_sink_factory=app.sink_factory, max_buffered_body=MAX_MANIFEST_BYTES
        )
        registry_port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        receiver = Receiver(statuses)
        receiver_listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(receiver)
        )
        address = receiver_listening.getHost()
        assert isinstance(address, IPv4Address)
        registry_address = registry_port.getHost()
        assert isinstance(registry_address, IPv4Address)
        failures = _FailureLog()
        globalLogPublisher.addObserver(failures)
        client = RegistryClient(reactor, f"http://127.0.0.1:{registry_address.port}", timeout=10.0)
        flow = Flow(
            client=client,
            webhooks=webhooks,
            dispatcher=dispatcher,
            box=box,
            receiver=receiver,
            receiver_port=address.port,
            listening=receiver_listening,
            failures=failures,
        )

        async def stop() -> None:
            """Stop everything C{start} started, in order."""
            await dispatcher.stopService().addTimeout(10, reactor)
            await client.close()
            await deferLater(reactor, 0.01, lambda: None)
            await uploads.close()
            await flow.stop_receiver()
            stopped = registry_port.stopListening()
            if isinstance(stopped, Deferred):
                await stopped
            await database.close()
            pool.stopService()

        flow.cleanups.append(stop)
        flows.append(flow)
        dispatcher.startService()
        return flow

    yield start

    for flow in flows:
        for cleanup in flow.cleanups:
            await cleanup()
    gc.collect()
    await deferLater(reactor, 0, lambda: None)
    for flow in flows:
        globalLogPublisher.removeObserver(flow.failures)
        logged = describe_failures(flow.failures.events)
        if logged:
            pytest.fail(f"quayd logged failures: {logged}")


async def settle(seconds: float = 0.6) -> None:
    """Let the reactor run long enough for a second, unwanted POST to show up."""
    await sleep(seconds)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_webhooks_flow_push_delivers_one_signed_post(start_flow: FlowFactory) -> None:
    """Pushing a tagged image sends one POST with Quay's payload, the event headers and a valid signature."""
    flow = await start_flow()
    hook = await flow.hook()
    config_digest = await push_image(flow.client, "latest")
    await wait_until(lambda: len(flow.receiver.hits) >= 1, within=10)
    await settle()
    [hit] = flow.receiver.hits
    assert hit.path == b"/hook"
    assert hit.header("Content-Type") == "application/json"
    assert hit.header(EVENT_HEADER) == "push"
    mac = hmac.new(SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hit.header(SIGNATURE_HEADER) == f"sha256={mac}"
    manifest_digest = "sha256:" + hashlib.sha256(image_manifest(OCI_MANIFEST, CONFIG, [LAYER])).hexdigest()
    assert hit.json() == {
        "pushed_image_count": 1,
        "name": "app",
        "repository": REPO,
        "docker_url": f"registry.example:5000/{REPO}",
        "updated_tags": {"latest": config_digest.removeprefix("sha256:")},
        "namespace": "acme",
        "visibility": "private",
        "homepage": f"https://registry.example:5000/repository/{REPO}",
        "event": "push",
        "manifest_digests": [manifest_digest],
    }
    await wait_until(lambda: not flow.dispatcher.in_flight)
    [delivery] = await flow.deliveries(hook)
    assert hit.header(DELIVERY_HEADER) == delivery.id
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)
    assert delivery.payload.encode() == hit.body


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_webhooks_flow_three_tags_one_post(start_flow: FlowFactory) -> None:
    """Three tags of one image pushed within the coalescing window arrive as ONE POST listing all three."""
    flow = await start_flow()
    await flow.hook()
    config_digest = await push_image(flow.client, "v1", "v1.0", "latest")
    await wait_until(lambda: len(flow.receiver.hits) >= 1, within=10)
    await settle()
    [hit] = flow.receiver.hits
    image_id = config_digest.removeprefix("sha256:")
    payload = hit.json()
    assert payload["updated_tags"] == {"v1": image_id, "v1.0": image_id, "latest": image_id}
    assert payload["pushed_image_count"] == 1


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_webhooks_flow_no_webhook_no_post(start_flow: FlowFactory) -> None:
    """A push to a repository without a webhook sends nothing."""
    flow = await start_flow()
    await push_image(flow.client, "latest")
    await settle()
    assert flow.receiver.hits == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_webhooks_flow_500_then_200_delivered_on_retry(start_flow: FlowFactory) -> None:
    """A receiver answering 500 gets the same delivery again after the backoff, and it is delivered."""
    flow = await start_flow(statuses=[500])
    hook = await flow.hook()
    await push_image(flow.client, "latest")
    await wait_until(lambda: len(flow.receiver.hits) >= 2, within=10)
    await wait_until(lambda: not flow.dispatcher.in_flight)
    await settle(0.3)
    first, second = flow.receiver.hits
    assert first.body == second.body
    assert first.header(DELIVERY_HEADER) == second.header(DELIVERY_HEADER)
    [delivery] = await flow.deliveries(hook)
    assert (delivery.state, delivery.attempts, delivery.last_status, delivery.last_error) == (
        "delivered",
        2,
        200,
        None,
    )


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_webhooks_flow_receiver_down_then_up(start_flow: FlowFactory) -> None:
    """While the receiver's port is closed attempts fail and are retried; once it is back, it arrives."""
    from twisted.internet import reactor

    flow = await start_flow()
    hook = await flow.hook()
    await flow.stop_receiver()
    await push_image(flow.client, "latest")
    deadline = reactor.seconds() + 10

    async def attempts() -> int:
        """How many attempts the delivery has had so far."""
        deliveries = await flow.deliveries(hook)
        return deliveries[0].attempts if deliveries else 0

    while await attempts() < 2:
        assert reactor.seconds() < deadline, "no failed attempts while the receiver was down"
        await sleep(0.05)
    [delivery] = await flow.deliveries(hook)
    assert delivery.state == "pending"
    assert delivery.last_status is None
    assert delivery.last_error is not None
    assert "ConnectionRefused" in delivery.last_error
    assert flow.receiver.hits == []
    await flow.start_receiver()
    await wait_until(lambda: len(flow.receiver.hits) >= 1, within=10)
    await wait_until(lambda: not flow.dispatcher.in_flight)
    [delivery] = await flow.deliveries(hook)
    assert delivery.state == "delivered"
    assert delivery.attempts >= 3
    assert len(flow.receiver.hits) == 1


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_webhooks_flow_loopback_target_refused(start_flow: FlowFactory) -> None:
    """With loopback refused, C{localhost} is never contacted; the delivery fails at once with the refusal."""
    from twisted.internet import reactor

    settings = DispatchSettings(
        timeout=5.0, initial_backoff=0.1, max_backoff=0.2, max_age=0.6, coalesce_window=0.2, poll_interval=0.3
    )
    flow = await start_flow(policy=TargetPolicy(allow_loopback=False), settings=settings)
    hook = await flow.hook(url=f"http://localhost:{flow.receiver_port}/hook")
    await push_image(flow.client, "latest")
    deadline = reactor.seconds() + 10
    while True:
        deliveries = await flow.deliveries(hook)
        if deliveries and deliveries[0].state == "failed":
            break
        assert reactor.seconds() < deadline, f"delivery not failed: {deliveries}"
        await sleep(0.05)
    [delivery] = deliveries
    assert delivery.attempts == 1
    assert delivery.last_status is None
    assert delivery.last_error is not None
    assert "target refused" in delivery.last_error
    assert "loopback" in delivery.last_error
    assert flow.receiver.hits == []
