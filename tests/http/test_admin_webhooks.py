"""
The admin API's push webhook routes over real HTTP: creating, listing and
deleting webhooks, test events, the delivery log and redelivery, who may do
what, managed webhooks, URL checks and the audit log.

The admin app here is wired as the daemon wires it: a real L{WebhookStore}
over the admin fixture's database (SQLite, and PostgreSQL), a real L{WebhookDispatcher} (woken
by the API and by pushes) posting through the SSRF-guarded endpoint factory to
an in-process C{twisted.web} receiver on loopback. Every response is checked
against the OpenAPI document (see C{admin_conftest.py}).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from quayd.admin.api import AdminApp, check_webhook_target, mount_admin_api
from quayd.auth.endpoint import TokenEndpoint
from quayd.db.store import MetadataStore
from quayd.db.webhooks import WebhookStore
from quayd.errors import JSONValue
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
from quayd.webhooks.events import sample_payload
from quayd.webhooks.targets import GuardedEndpointFactory, TargetPolicy, TargetRefused
from tests.http.admin_conftest import (
    CONFIG_PATH,
    ROOT,
    AdminAPI,
    admin,
    as_user,
    basic,
    error_of,
    json_of,
)
from tests.http.conftest import sleep, wait_until
from tests.support.http import RegistryClient
from tests.support.manifests import image_manifest

__all__ = ["admin"]  # the fixture, imported so that pytest finds it

ROOT_AUTH = as_user(ROOT)
ALICE = as_user("alice")
BOB = as_user("bob")
REPO = "alice/app"
HOOKS = f"/api/v1/repositories/{REPO}/webhooks"
SECRET = "webhook shared secret"
PUBLIC_HOST = "registry.test:5000"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = b"webhook layer " * 50

#: Short timings, so that deliveries and retries happen within a second.
SETTINGS = DispatchSettings(
    timeout=5.0, initial_backoff=0.1, max_backoff=0.2, max_age=30.0, coalesce_window=0.1, poll_interval=0.5
)


@dataclass(kw_only=True)
class Hit:
    """One POST the receiver got."""

    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header C{name}, or C{None}."""
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class Receiver(Resource):
    """A webhook receiver answering with scripted statuses (then 200) and recording every POST."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self.statuses: list[int] = []
        self.always: int = 200
        self.hits: list[Hit] = []

    def render_POST(self, request: Request) -> bytes:
        """Record the request and answer with the next scripted status."""
        assert request.content is not None
        self.hits.append(Hit(headers=request.requestHeaders, body=request.content.read()))
        request.setResponseCode(self.statuses.pop(0) if self.statuses else self.always)
        return b"ok"


@dataclass(kw_only=True)
class Hooks:
    """
    The admin API with webhooks enabled, its stores, dispatcher and receiver.

    @ivar api: Sends checked requests to the webhook-enabled admin API (the admin fixture's
        stores, another listening port).
    @ivar woken: How many times the API woke the dispatcher.
    """

    api: AdminAPI
    webhooks: WebhookStore
    dispatcher: WebhookDispatcher
    receiver: Receiver
    receiver_url: str
    woken: list[None] = field(default_factory=list)

    async def create(self, url: str | None = None, auth: dict[str, str] = ALICE, **extra: JSONValue) -> str:
        """Create a webhook on L{REPO} (with the secret unless told otherwise); returns its id."""
        body: dict[str, JSONValue] = {"url": url or self.receiver_url, "secret": SECRET}
        body.update(extra)
        response = await self.api.call("POST", HOOKS, auth, body)
        assert response.code == 201, response.body
        webhook_id: str = json_of(response)["id"]
        return webhook_id

    async def deliveries(self, webhook_id: str, auth: dict[str, str] = ALICE) -> list[dict[str, JSONValue]]:
        """The webhook's deliveries, newest first, as the API lists them."""
        response = await self.api.call("GET", f"{HOOKS}/{webhook_id}/deliveries", auth)
        assert response.code == 200, response.body
        deliveries: list[dict[str, JSONValue]] = json_of(response)["deliveries"]
        return deliveries

    async def settled(self, webhook_id: str, count: int = 1) -> list[dict[str, JSONValue]]:
        """Wait until the webhook has C{count} deliveries, none of them pending."""
        from twisted.internet import reactor

        deadline = reactor.seconds() + 10
        while True:
            deliveries = await self.deliveries(webhook_id)
            if len(deliveries) >= count and all(d["state"] != "pending" for d in deliveries):
                return deliveries
            assert reactor.seconds() < deadline, deliveries
            await sleep(0.05)


HooksFactory = Callable[..., Awaitable[Hooks]]


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def start_hooks(admin: AdminAPI, tmp_path: Path) -> AsyncIterator[HooksFactory]:
    """
    Start the webhook-enabled admin API beside a registry that wakes the dispatcher on push:
    C{await start_hooks(settings=..., dispatch=...)}. Alice owns L{REPO}. With C{dispatch}
    false the dispatcher is not started, so that deliveries stay pending.
    """
    from twisted.internet import reactor

    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(settings: DispatchSettings = SETTINGS, dispatch: bool = True) -> Hooks:
        """Start one webhook-enabled admin API, its dispatcher and a receiver."""
        webhooks = WebhookStore(admin.database, reactor)
        http_pool = HTTPConnectionPool(reactor, persistent=True)
        endpoints = GuardedEndpointFactory(reactor, admin.pool, TargetPolicy(allow_loopback=True), 5)
        dispatcher = WebhookDispatcher(
            webhooks,
            admin.secrets,
            HTTPClient(Agent.usingEndpointFactory(reactor, endpoints, pool=http_pool)),
            reactor,
            settings,
            PUBLIC_HOST,
            "https",
            close_http=http_pool.closeCachedConnections,
        )
        woken: list[None] = []

        def wake() -> None:
            """Count the wake-up, then wake the dispatcher."""
            woken.append(None)
            dispatcher.wake()

        app = AdminApp(
            identity=admin.identity,
            secrets=admin.secrets,
            access=admin.access,
            run_blocking=admin.pool,
            superusers=frozenset({ROOT}),
            managed_source=CONFIG_PATH,
            clock=reactor,
            webhooks=webhooks,
            webhook_policy=TargetPolicy(allow_loopback=True),
            wake=wake,
            public_hostname=PUBLIC_HOST,
            public_scheme="https",
        )
        store = MetadataStore(admin.database, reactor)
        blobs = FilesystemBlobStore(tmp_path / f"blobs-{len(cleanups)}", admin.pool)
        uploads = UploadService(store, blobs, UploadLimits())
        registry = RegistryApp(
            store=store,
            blobs=blobs,
            uploads=uploads,
            authorizer=admin.access,
            max_manifest_bytes=64 * 1024,
            token_endpoint=TokenEndpoint(admin.access, admin.credentials, admin.tokens),
            on_push=dispatcher.wake,
        )
        site = QuaydSite(
            mount_admin_api(app.resource(), registry.app.resource()),
            body_sink_factory=registry.sink_factory,
            max_buffered_body=1024 * 1024,
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        receiver = Receiver()
        receiving: IListeningPort = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(receiver)
        )
        address = receiving.getHost()
        assert isinstance(address, IPv4Address)
        client = RegistryClient(reactor, f"http://127.0.0.1:{port.getHost().port}")

        async def stop() -> None:
            """Stop what C{start} started, in order."""
            await dispatcher.stopService().addTimeout(10, reactor)
            await client.close()
            await deferLater(reactor, 0.01, lambda: None)
            await uploads.close()
            for listening in (receiving, port):
                stopped = listening.stopListening()
                if isinstance(stopped, Deferred):
                    await stopped

        cleanups.append(stop)
        if dispatch:
            dispatcher.startService()
        response = await admin.call(
            "POST", "/api/v1/repositories", ALICE, {"namespace": "alice", "name": "app"}
        )
        assert response.code == 201, response.body
        return Hooks(
            api=replace(admin, client=client),
            webhooks=webhooks,
            dispatcher=dispatcher,
            receiver=receiver,
            receiver_url=f"http://127.0.0.1:{address.port}/hook",
            woken=woken,
        )

    yield start

    for cleanup in cleanups:
        await cleanup()


async def push_image(api: AdminAPI, auth: dict[str, str], tag: str) -> str:
    """Push a small image to L{REPO} over the registry API; returns its config digest."""
    for blob in (CONFIG, LAYER):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        response = await api.client.request(
            "POST", f"/v2/{REPO}/blobs/uploads/?digest={digest}", headers=auth, body=blob
        )
        assert response.code == 201, response.body
    response = await api.client.request(
        "PUT",
        f"/v2/{REPO}/manifests/{tag}",
        headers={**auth, "Content-Type": OCI_MANIFEST},
        body=image_manifest(OCI_MANIFEST, CONFIG, [LAYER]),
    )
    assert response.code == 201, response.body
    return "sha256:" + hashlib.sha256(CONFIG).hexdigest()


def signed(hit: Hit, secret: str = SECRET) -> bool:
    """Whether C{hit} carries a valid signature of its body by C{secret}."""
    mac = hmac.new(secret.encode(), hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(hit.header(SIGNATURE_HEADER) or "", f"sha256={mac}")


# Lifecycle


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_create_list_get_delete(start_hooks: HooksFactory) -> None:
    """A repository admin adds, lists, reads and deletes webhooks; secrets are stored encrypted only."""
    hooks = await start_hooks(dispatch=False)
    api = hooks.api
    response = await api.call(
        "POST", HOOKS, ALICE, {"url": hooks.receiver_url, "secret": SECRET, "description": "CI trigger"}
    )
    assert response.code == 201, response.body
    created = json_of(response)
    webhook_id = created["id"]
    assert response.header("Location") == f"{HOOKS}/{webhook_id}"
    assert created == {
        "id": webhook_id,
        "repository": REPO,
        "url": hooks.receiver_url,
        "description": "CI trigger",
        "has_secret": True,
        "managed": False,
        "created_at": created["created_at"],
    }
    assert SECRET.encode() not in response.body
    found = await hooks.webhooks.get_webhook(webhook_id)
    assert found is not None and found[1] is not None
    assert SECRET not in found[1]
    assert api.secrets.decrypt(found[1]) == SECRET

    unsigned = await api.call("POST", HOOKS, ALICE, {"url": hooks.receiver_url + "/unsigned"})
    assert unsigned.code == 201
    assert (json_of(unsigned)["has_secret"], json_of(unsigned)["description"]) == (False, "")

    listed = json_of(await api.call("GET", HOOKS, ALICE))["webhooks"]
    assert [w["id"] for w in listed] == [webhook_id, json_of(unsigned)["id"]]
    assert all(SECRET not in json.dumps(w) for w in listed)
    single = await api.call("GET", f"{HOOKS}/{webhook_id}", ALICE)
    assert json_of(single) == created

    response = await api.call("DELETE", f"{HOOKS}/{webhook_id}", ALICE)
    assert response.code == 204
    error_of(await api.call("GET", f"{HOOKS}/{webhook_id}", ALICE), 404, "NOT_FOUND")
    error_of(await api.call("DELETE", f"{HOOKS}/{webhook_id}", ALICE), 404, "NOT_FOUND")
    assert [w["id"] for w in json_of(await api.call("GET", HOOKS, ALICE))["webhooks"]] == [
        json_of(unsigned)["id"]
    ]

    entries = [e for e in reversed(await api.identity.audit_log(1000)) if e.action.startswith("webhook.")]
    assert [(e.action, e.actor, e.target) for e in entries] == [
        ("webhook.create", "user:alice", REPO),
        ("webhook.create", "user:alice", REPO),
        ("webhook.delete", "user:alice", REPO),
    ]
    assert entries[0].detail == {
        "id": webhook_id,
        "url": hooks.receiver_url,
        "description": "CI trigger",
        "has_secret": True,
    }
    assert all(SECRET not in json.dumps(e.detail) for e in entries)
    assert SECRET not in api.log.text()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_test_event_delivered_then_redelivered(start_hooks: HooksFactory) -> None:
    """A test event arrives signed and is listed as delivered; a redelivery resends it under a new id."""
    hooks = await start_hooks()
    api = hooks.api
    webhook_id = await hooks.create()
    response = await api.call("POST", f"{HOOKS}/{webhook_id}/test", ALICE)
    assert response.code == 202, response.body
    queued = json_of(response)
    assert (queued["webhook"], queued["event"], queued["state"], queued["attempts"]) == (
        webhook_id,
        "test",
        "pending",
        0,
    )
    assert queued["next_attempt_at"] is not None and queued["finished_at"] is None
    assert hooks.woken
    await wait_until(lambda: len(hooks.receiver.hits) == 1)
    [hit] = hooks.receiver.hits
    assert hit.header(EVENT_HEADER) == "test"
    assert hit.header(DELIVERY_HEADER) == queued["id"]
    assert signed(hit)
    assert json.loads(hit.body) == sample_payload(
        repository=REPO, hostname=PUBLIC_HOST, scheme="https", visibility="private"
    )

    [delivery] = await hooks.settled(webhook_id)
    assert delivery["id"] == queued["id"]
    assert (delivery["state"], delivery["attempts"], delivery["last_status"], delivery["last_error"]) == (
        "delivered",
        1,
        200,
        None,
    )
    assert delivery["finished_at"] is not None and delivery["next_attempt_at"] is None

    response = await api.call("POST", f"{HOOKS}/{webhook_id}/deliveries/{queued['id']}/redeliver", ALICE, {})
    assert response.code == 202, response.body
    again = json_of(response)
    assert again["id"] != queued["id"] and again["event"] == "test"
    await wait_until(lambda: len(hooks.receiver.hits) == 2)
    second = hooks.receiver.hits[1]
    assert second.header(DELIVERY_HEADER) == again["id"]
    assert second.body == hit.body and signed(second)
    newest, oldest = await hooks.settled(webhook_id, 2)
    assert (newest["id"], newest["state"], oldest["id"]) == (again["id"], "delivered", queued["id"])
    actions = [a for a in await api.audit_actions() if a.startswith("webhook.")]
    assert actions == ["webhook.create", "webhook.test", "webhook.redeliver"]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_push_listed_in_deliveries(start_hooks: HooksFactory) -> None:
    """A push to the repository reaches the receiver and is listed as a delivered push event."""
    hooks = await start_hooks()
    webhook_id = await hooks.create()
    config_digest = await push_image(hooks.api, ALICE, "latest")
    await wait_until(lambda: len(hooks.receiver.hits) == 1)
    [hit] = hooks.receiver.hits
    payload = json.loads(hit.body)
    assert payload["updated_tags"] == {"latest": config_digest.removeprefix("sha256:")}
    assert payload["docker_url"] == f"{PUBLIC_HOST}/{REPO}"
    [delivery] = await hooks.settled(webhook_id)
    assert (delivery["event"], delivery["state"], delivery["id"]) == (
        "push",
        "delivered",
        hit.header(DELIVERY_HEADER),
    )


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_failed_delivery_redelivered(start_hooks: HooksFactory) -> None:
    """A delivery that keeps failing ends failed with its last status; redelivered later, it succeeds."""
    settings = DispatchSettings(
        timeout=5.0, initial_backoff=0.1, max_backoff=0.2, max_age=0.3, coalesce_window=0.1, poll_interval=0.5
    )
    hooks = await start_hooks(settings=settings)
    hooks.receiver.always = 500
    webhook_id = await hooks.create()
    queued = json_of(await hooks.api.call("POST", f"{HOOKS}/{webhook_id}/test", ALICE))
    [failed] = await hooks.settled(webhook_id)
    assert failed["state"] == "failed"
    assert failed["attempts"] >= 1 and failed["attempts"] == len(hooks.receiver.hits)
    assert (failed["last_status"], failed["last_error"]) == (500, "HTTP 500")
    assert failed["finished_at"] is not None

    hooks.receiver.always = 200
    response = await hooks.api.call(
        "POST", f"{HOOKS}/{webhook_id}/deliveries/{queued['id']}/redeliver", ALICE
    )
    assert response.code == 202
    newest, _ = await hooks.settled(webhook_id, 2)
    assert (newest["id"], newest["state"], newest["attempts"]) == (json_of(response)["id"], "delivered", 1)


# Rules


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_pending_not_redelivered(start_hooks: HooksFactory) -> None:
    """A pending delivery cannot be redelivered; unknown ones and those of another webhook are 404."""
    hooks = await start_hooks(dispatch=False)
    api = hooks.api
    webhook_id = await hooks.create()
    other_id = await hooks.create(hooks.receiver_url + "/other")
    delivery = json_of(await api.call("POST", f"{HOOKS}/{webhook_id}/test", ALICE))
    redeliver = f"{HOOKS}/{webhook_id}/deliveries/{delivery['id']}/redeliver"
    assert "still pending" in error_of(await api.call("POST", redeliver, ALICE), 409, "CONFLICT")
    error_of(
        await api.call("POST", f"{HOOKS}/{webhook_id}/deliveries/nope/redeliver", ALICE), 404, "NOT_FOUND"
    )
    error_of(
        await api.call("POST", f"{HOOKS}/{other_id}/deliveries/{delivery['id']}/redeliver", ALICE),
        404,
        "NOT_FOUND",
    )
    assert len(await hooks.deliveries(webhook_id)) == 1
    assert await hooks.deliveries(other_id) == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_delivery_limit(start_hooks: HooksFactory) -> None:
    """The delivery list is newest first and bounded by C{limit}, which is checked."""
    hooks = await start_hooks(dispatch=False)
    api = hooks.api
    webhook_id = await hooks.create()
    ids = [json_of(await api.call("POST", f"{HOOKS}/{webhook_id}/test", ALICE))["id"] for _ in range(3)]
    listed = json_of(await api.call("GET", f"{HOOKS}/{webhook_id}/deliveries?limit=2", ALICE))["deliveries"]
    assert len(listed) == 2 and {d["id"] for d in listed} <= set(ids)
    assert len(await hooks.deliveries(webhook_id)) == 3
    for limit in ("0", "501", "x", "-1"):
        response = await api.call("GET", f"{HOOKS}/{webhook_id}/deliveries?limit={limit}", ALICE)
        assert "limit" in error_of(response, 400, "INVALID_REQUEST")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "missing field url"),
        ({"url": "ftp://example.com/hook"}, "http or https"),
        ({"url": "not a url"}, "http or https"),
        ({"url": "http://user:pw@example.com/hook"}, "credentials"),
        ({"url": "http:///hook"}, "no host"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "link-local"),
        ({"url": "http://10.1.2.3/hook"}, "private address"),
        ({"url": "http://[::ffff:10.0.0.1]/hook"}, "private address"),
        ({"url": "http://example.com/" + "x" * 2048}, "longer than 2048"),
        ({"url": 5}, "url must be a string"),
        ({"url": "https://example.com/hook", "secret": ""}, "secret must not be empty"),
        ({"url": "https://example.com/hook", "secret": "é" * 600}, "longer than 1024 bytes"),
        ({"url": "https://example.com/hook", "description": "x" * 1001}, "description is longer"),
        ({"url": "https://example.com/hook", "events": ["push"]}, "unknown field 'events'"),
    ],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_invalid_bodies_rejected(
    start_hooks: HooksFactory, body: dict[str, JSONValue], needle: str
) -> None:
    """Bad URLs (scheme, credentials, refused addresses), secrets and fields get 400 and store nothing."""
    hooks = await start_hooks(dispatch=False)
    response = await hooks.api.call("POST", HOOKS, ALICE, body)
    assert needle in error_of(response, 400, "INVALID_REQUEST")
    assert await hooks.webhooks.list_webhooks(REPO) == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_duplicate_url_conflicts(start_hooks: HooksFactory) -> None:
    """A repository has at most one webhook per URL (the URL identifies declared webhooks)."""
    hooks = await start_hooks(dispatch=False)
    await hooks.create()
    response = await hooks.api.call("POST", HOOKS, ALICE, {"url": hooks.receiver_url})
    assert "already has a webhook" in error_of(response, 409, "CONFLICT")
    assert len(await hooks.webhooks.list_webhooks(REPO)) == 1


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_only_repository_administrators(start_hooks: HooksFactory) -> None:
    """Writers, robots and repository tokens get 403 on every webhook route; superusers may do all."""
    hooks = await start_hooks(dispatch=False)
    api = hooks.api
    webhook_id = await hooks.create()
    delivery_id = json_of(await api.call("POST", f"{HOOKS}/{webhook_id}/test", ALICE))["id"]
    response = await api.call(
        "PUT", f"/api/v1/repositories/{REPO}/permissions/user/bob", ALICE, {"role": "write"}
    )
    assert response.code == 201
    robot = await api.call("PUT", "/api/v1/namespaces/alice/robots/ci", ALICE, {})
    robot_auth = basic("alice+ci", json_of(robot)["token"])
    token = await api.call(
        "POST", f"/api/v1/repositories/{REPO}/tokens", ALICE, {"description": "ci", "role": "write"}
    )
    token_auth = basic("$token", json_of(token)["token"])
    routes = [
        ("GET", HOOKS, None),
        ("POST", HOOKS, {"url": "https://example.com/x"}),
        ("GET", f"{HOOKS}/{webhook_id}", None),
        ("DELETE", f"{HOOKS}/{webhook_id}", None),
        ("POST", f"{HOOKS}/{webhook_id}/test", None),
        ("GET", f"{HOOKS}/{webhook_id}/deliveries", None),
        ("POST", f"{HOOKS}/{webhook_id}/deliveries/{delivery_id}/redeliver", None),
    ]
    audited = len(await api.audit_actions())
    for auth in (BOB, robot_auth, token_auth):
        for method, path, body in routes:
            error_of(await api.call(method, path, auth, body), 403, "DENIED")
    assert len(await api.audit_actions()) == audited
    assert len(await hooks.webhooks.list_deliveries(webhook_id)) == 1

    assert (await api.call("GET", HOOKS, ROOT_AUTH)).code == 200
    assert (await api.call("POST", f"{HOOKS}/{webhook_id}/test", ROOT_AUTH)).code == 202
    assert (await api.call("DELETE", f"{HOOKS}/{webhook_id}", ROOT_AUTH)).code == 204
    entry = (await api.identity.audit_log(1))[0]
    assert (entry.action, entry.actor) == ("webhook.delete", "user:root")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_other_repository_and_unknown(start_hooks: HooksFactory) -> None:
    """A webhook is reached only through its own repository; unknown repositories and webhooks are 404."""
    hooks = await start_hooks(dispatch=False)
    api = hooks.api
    webhook_id = await hooks.create()
    response = await api.call("POST", "/api/v1/repositories", ALICE, {"namespace": "alice", "name": "other"})
    assert response.code == 201
    other = "/api/v1/repositories/alice/other/webhooks"
    error_of(await api.call("GET", f"{other}/{webhook_id}", ALICE), 404, "NOT_FOUND")
    error_of(await api.call("DELETE", f"{other}/{webhook_id}", ALICE), 404, "NOT_FOUND")
    error_of(await api.call("POST", f"{other}/{webhook_id}/test", ALICE), 404, "NOT_FOUND")
    error_of(await api.call("GET", f"{other}/{webhook_id}/deliveries", ALICE), 404, "NOT_FOUND")
    assert json_of(await api.call("GET", other, ALICE)) == {"webhooks": []}
    error_of(await api.call("GET", f"{HOOKS}/nope/deliveries", ALICE), 404, "NOT_FOUND")
    error_of(await api.call("GET", "/api/v1/repositories/alice/nothing/webhooks", ALICE), 404, "NAME_UNKNOWN")
    error_of(
        await api.call("POST", "/api/v1/repositories/alice/nothing/webhooks", ALICE, {"url": "https://e.x/"}),
        404,
        "NAME_UNKNOWN",
    )
    assert [w.id for w in await hooks.webhooks.list_webhooks(REPO)] == [webhook_id]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_managed_refused(start_hooks: HooksFactory) -> None:
    """A declared webhook cannot be deleted over the API, but can be tested and inspected."""
    hooks = await start_hooks(dispatch=False)
    api = hooks.api
    managed = await hooks.webhooks.create_webhook(REPO, hooks.receiver_url, "declared", None, managed=True)
    response = await api.call("DELETE", f"{HOOKS}/{managed.id}", ALICE)
    message = error_of(response, 409, "DENIED")
    assert message == f"webhook {managed.id} of {REPO} is managed by {CONFIG_PATH}; change it there"
    assert json_of(await api.call("GET", f"{HOOKS}/{managed.id}", ALICE))["managed"] is True
    assert (await api.call("POST", f"{HOOKS}/{managed.id}/test", ALICE)).code == 202
    assert len(await hooks.deliveries(managed.id)) == 1
    assert await hooks.webhooks.get_webhook(managed.id) is not None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_deleted_with_repository(start_hooks: HooksFactory) -> None:
    """Deleting a repository deletes its webhooks and their deliveries."""
    hooks = await start_hooks(dispatch=False)
    webhook_id = await hooks.create()
    await hooks.api.call("POST", f"{HOOKS}/{webhook_id}/test", ALICE)
    assert (await hooks.api.call("DELETE", f"/api/v1/repositories/{REPO}", ALICE)).code == 204
    assert await hooks.webhooks.get_webhook(webhook_id) is None
    assert await hooks.webhooks.list_deliveries(webhook_id) == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_webhooks_unavailable_without_store(admin: AdminAPI) -> None:
    """An admin app made without a webhook store answers the webhook routes with 503."""
    response = await admin.call("POST", "/api/v1/repositories", ALICE, {"namespace": "alice", "name": "app"})
    assert response.code == 201
    error_of(await admin.call("GET", HOOKS, ALICE), 503, "UNAVAILABLE")
    error_of(await admin.call("POST", HOOKS, ALICE, {"url": "https://example.com/"}), 503, "UNAVAILABLE")


@pytest.mark.parametrize(
    ("url", "policy", "refused"),
    [
        ("http://localhost:8080/hook", TargetPolicy(), "loopback name"),
        ("http://LOCALHOST./hook", TargetPolicy(), "loopback name"),
        ("http://ci.localhost/hook", TargetPolicy(), "loopback name"),
        ("http://localhost:8080/hook", TargetPolicy(allow_loopback=True), None),
        ("http://127.0.0.1/hook", TargetPolicy(), "loopback"),
        ("http://[::1]/hook", TargetPolicy(), "loopback"),
        ("http://127.0.0.1/hook", TargetPolicy(allow_loopback=True), None),
        ("http://192.168.1.10/hook", TargetPolicy(), "private"),
        ("http://192.168.1.10/hook", TargetPolicy(allow_private=True), None),
        ("http://169.254.169.254/", TargetPolicy(allow_loopback=True, allow_private=True), "link-local"),
        ("http://0.0.0.0/", TargetPolicy(allow_loopback=True, allow_private=True), "not a unicast"),
        ("https://hooks.example.com/x?token=1", TargetPolicy(), None),
        ("https://93.184.216.34/hook", TargetPolicy(), None),
    ],
)
def test_admin_webhooks_target_checked_at_creation(
    url: str, policy: TargetPolicy, refused: str | None
) -> None:
    """IP-address hosts and localhost names are checked against the policy when a webhook is created."""
    if refused is None:
        assert check_webhook_target(url, policy) == url
    else:
        with pytest.raises(TargetRefused, match=refused):
            check_webhook_target(url, policy)
