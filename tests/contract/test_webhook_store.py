"""
The L{WebhookStore} behaviour and the push outbox that
L{MetadataStore.put_manifest} writes, run over every database backend.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from quayd.db.interfaces import IDatabase
from quayd.db.store import MetadataStore
from quayd.db.webhooks import Delivery, Webhook, WebhookStore
from quayd.errors import Conflict, JSONValue, ManifestBlobUnknown
from quayd.registry.manifests import OCI_INDEX, OCI_MANIFEST, parse_manifest
from quayd.types import Digest, RepositoryName, Tag
from quayd.webhooks.events import PushRecord, push_payload
from tests.contract.conftest import DatabaseBackend
from tests.support.manifests import image_manifest, index_manifest

REPO = RepositoryName("acme/app")
OTHER = RepositoryName("acme/other")
CONFIG = b'{"architecture":"amd64","os":"linux"}'
CONFIG_2 = b'{"architecture":"arm64","os":"linux"}'
LAYER = b"layer bytes"
HOOK_URL = "https://hook.example/push"


class RecordingBuilder:
    """A payload builder that records what it was asked to build and builds the real payload."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[PushRecord]]] = []

    def __call__(self, repository: str, visibility: str, records: list[PushRecord]) -> dict[str, JSONValue]:
        """Record the call, then build the push payload."""
        self.calls.append((repository, visibility, records))
        return push_payload(
            repository=repository,
            hostname="registry.example",
            scheme="https",
            visibility=visibility,
            records=records,
        )


@pytest.fixture
def database(database_backend: DatabaseBackend) -> IDatabase:
    """The database under test."""
    return database_backend.database


@pytest.fixture
def webhooks(store: MetadataStore, database: IDatabase, clock: Clock) -> WebhookStore:
    """A L{WebhookStore} over the migrated database (the C{store} fixture migrates it)."""
    return WebhookStore(database, clock)


async def _push(
    store: MetadataStore,
    repo: RepositoryName,
    tag: str | None,
    config: bytes = CONFIG,
    principal: str = "alice",
) -> tuple[Digest, bool]:
    """Commit an image's blobs and put its manifest; returns its digest and whether a push was queued."""
    for content in (config, LAYER):
        digest = Digest.sha256_of(content)
        await store.commit_blob(repo, digest, len(content), f"sha256/{digest.hex}")
    content = image_manifest(OCI_MANIFEST, config, [LAYER])
    manifest = parse_manifest(content, None)
    queued = await store.put_manifest(repo, manifest, content, None if tag is None else Tag(tag), principal)
    return manifest.digest, queued


async def _repository(store: MetadataStore, repo: RepositoryName) -> None:
    """Make sure C{repo} exists (a blob commit creates it)."""
    digest = Digest.sha256_of(LAYER)
    await store.commit_blob(repo, digest, len(LAYER), f"sha256/{digest.hex}")


async def _outbox(database: IDatabase) -> list[tuple[object, ...]]:
    """The outbox rows: repository, principal, manifest digest, tag, image id, visibility, created_at."""
    rows = await database.execute(
        "SELECT repository, principal, manifest_digest, tag, image_id, visibility, created_at "
        "FROM push_outbox ORDER BY id"
    )
    return [tuple(row) for row in rows]


async def _hooked(store: MetadataStore, webhooks: WebhookStore, repo: RepositoryName = REPO) -> Webhook:
    """A repository with one webhook."""
    await _repository(store, repo)
    return await webhooks.create_webhook(str(repo), HOOK_URL)


# Webhooks


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_webhook_store_create_and_get(
    store: MetadataStore, webhooks: WebhookStore, clock: Clock
) -> None:
    """A new webhook is stamped with the clock; its secret stays encrypted and separate."""
    await _repository(store, REPO)
    clock.advance(42)
    hook = await webhooks.create_webhook(str(REPO), HOOK_URL, "CI", "ciphertext", managed=True)
    assert hook == Webhook(
        id=hook.id,
        repository=str(REPO),
        url=HOOK_URL,
        description="CI",
        has_secret=True,
        managed=True,
        created_at=42.0,
    )
    assert await webhooks.get_webhook(hook.id) == (hook, "ciphertext")
    assert await webhooks.get_webhook("missing") is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_webhook_store_create_without_secret(store: MetadataStore, webhooks: WebhookStore) -> None:
    """A webhook without a secret has C{has_secret} false and a C{None} ciphertext."""
    await _repository(store, REPO)
    hook = await webhooks.create_webhook(str(REPO), HOOK_URL)
    assert not hook.has_secret
    assert not hook.managed
    assert hook.description == ""
    assert await webhooks.get_webhook(hook.id) == (hook, None)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_webhook_store_create_unknown_repository(webhooks: WebhookStore) -> None:
    """A webhook on a repository that does not exist is a conflict."""
    with pytest.raises(Conflict):
        await webhooks.create_webhook("nobody/nothing", HOOK_URL)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_webhook_store_list(store: MetadataStore, webhooks: WebhookStore, clock: Clock) -> None:
    """Webhooks list per repository in creation order, or all of them by repository."""
    await _repository(store, REPO)
    await _repository(store, OTHER)
    first = await webhooks.create_webhook(str(REPO), HOOK_URL + "/1")
    clock.advance(1)
    other = await webhooks.create_webhook(str(OTHER), HOOK_URL + "/o")
    clock.advance(1)
    second = await webhooks.create_webhook(str(REPO), HOOK_URL + "/2")
    assert await webhooks.list_webhooks(str(REPO)) == [first, second]
    assert await webhooks.list_webhooks(str(OTHER)) == [other]
    assert await webhooks.list_webhooks("acme/none") == []
    assert await webhooks.list_webhooks() == [first, second, other]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_webhook_store_update(store: MetadataStore, webhooks: WebhookStore) -> None:
    """Updating changes only the given fields; unknown webhooks report C{False}."""
    hook = await _hooked(store, webhooks)
    assert await webhooks.update_webhook(hook.id, url="https://new.example/")
    assert await webhooks.update_webhook(hook.id, description="new", managed=True)
    found = await webhooks.get_webhook(hook.id)
    assert found is not None
    assert (found[0].url, found[0].description, found[0].managed) == ("https://new.example/", "new", True)
    assert await webhooks.update_webhook(hook.id, managed=False)
    found = await webhooks.get_webhook(hook.id)
    assert found is not None
    assert (found[0].url, found[0].description, found[0].managed) == ("https://new.example/", "new", False)
    assert await webhooks.update_webhook(hook.id)
    assert not await webhooks.update_webhook("missing", url="https://x.example/")
    assert not await webhooks.update_webhook("missing")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_webhook_store_delete_removes_deliveries(store: MetadataStore, webhooks: WebhookStore) -> None:
    """Deleting a webhook removes it and its deliveries."""
    hook = await _hooked(store, webhooks)
    delivery = await webhooks.enqueue(hook.id, str(REPO), "test", "{}")
    assert await webhooks.delete_webhook(hook.id)
    assert not await webhooks.delete_webhook(hook.id)
    assert await webhooks.get_webhook(hook.id) is None
    assert await webhooks.get_delivery(delivery.id) is None
    assert await webhooks.list_webhooks(str(REPO)) == []


# The outbox written by put_manifest


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_put_manifest_without_webhook_queues_nothing(store: MetadataStore, database: IDatabase) -> None:
    """Without a webhook on the repository, put_manifest returns C{False} and writes no outbox row."""
    _, queued = await _push(store, REPO, "latest")
    assert queued is False
    assert await _outbox(database) == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_put_manifest_with_webhook_writes_outbox(
    store: MetadataStore, webhooks: WebhookStore, database: IDatabase, clock: Clock
) -> None:
    """With a webhook, put_manifest returns C{True} and records the push: tag, config digest as image id."""
    await _hooked(store, webhooks)
    clock.advance(10)
    digest, queued = await _push(store, REPO, "latest", principal="alice")
    assert queued is True
    config_hex = Digest.sha256_of(CONFIG).hex
    assert await _outbox(database) == [
        (str(REPO), "alice", str(digest), "latest", config_hex, "private", 10.0)
    ]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_put_manifest_untagged_writes_outbox(
    store: MetadataStore, webhooks: WebhookStore, database: IDatabase
) -> None:
    """A push by digest is recorded too, without a tag."""
    await _hooked(store, webhooks)
    digest, queued = await _push(store, REPO, None)
    assert queued
    [row] = await _outbox(database)
    assert row[2:4] == (str(digest), None)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_put_manifest_only_hooked_repository(
    store: MetadataStore, webhooks: WebhookStore, database: IDatabase
) -> None:
    """A webhook on one repository does not queue pushes to another."""
    await _hooked(store, webhooks, OTHER)
    _, queued = await _push(store, REPO, "latest")
    assert not queued
    assert await _outbox(database) == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_put_manifest_index_image_id_is_index_digest(
    store: MetadataStore, webhooks: WebhookStore, database: IDatabase
) -> None:
    """An index is recorded with its own digest as image id; its children are recorded untagged."""
    await _hooked(store, webhooks)
    await _push(store, REPO, None, CONFIG)
    await _push(store, REPO, None, CONFIG_2)
    children = [image_manifest(OCI_MANIFEST, c, [LAYER]) for c in (CONFIG, CONFIG_2)]
    content = index_manifest(OCI_INDEX, children)
    index = parse_manifest(content, None)
    assert await store.put_manifest(REPO, index, content, Tag("multi"), "alice")
    rows = await _outbox(database)
    assert [(r[3], r[4]) for r in rows] == [
        (None, Digest.sha256_of(CONFIG).hex),
        (None, Digest.sha256_of(CONFIG_2).hex),
        ("multi", index.digest.hex),
    ]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_put_manifest_failure_writes_no_outbox(
    store: MetadataStore, webhooks: WebhookStore, database: IDatabase
) -> None:
    """A rejected manifest (missing blob) leaves no outbox row: the outbox is in the same transaction."""
    await _hooked(store, webhooks)
    content = image_manifest(OCI_MANIFEST, b"never uploaded", [LAYER])
    with pytest.raises(ManifestBlobUnknown):
        await store.put_manifest(REPO, parse_manifest(content, None), content, Tag("latest"))
    assert await _outbox(database) == []


# Coalescing


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_coalesce_waits_for_quiet_window(
    store: MetadataStore, webhooks: WebhookStore, database: IDatabase, clock: Clock
) -> None:
    """Rows become an event only once no row was added to their group for C{quiet} seconds."""
    hook = await _hooked(store, webhooks)
    await _push(store, REPO, "one")
    clock.advance(1.5)
    await _push(store, REPO, "two")
    builder = RecordingBuilder()
    clock.advance(1.9)
    assert await webhooks.coalesce(2.0, builder) == 0
    assert builder.calls == []
    assert len(await _outbox(database)) == 2
    clock.advance(0.1)
    assert await webhooks.coalesce(2.0, builder) == 1
    assert await _outbox(database) == []
    [delivery] = await webhooks.list_deliveries(hook.id)
    assert delivery.event == "push"
    assert delivery.state == "pending"
    assert delivery.attempts == 0
    assert delivery.created_at == delivery.next_attempt_at == 3.5
    payload = json.loads(delivery.payload)
    config_hex = Digest.sha256_of(CONFIG).hex
    assert payload["updated_tags"] == {"one": config_hex, "two": config_hex}
    assert payload["pushed_image_count"] == 1
    assert payload["repository"] == str(REPO)
    assert payload["visibility"] == "private"
    assert builder.calls[0][:2] == (str(REPO), "private")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_coalesce_groups_by_repository_and_principal(
    store: MetadataStore, webhooks: WebhookStore, clock: Clock
) -> None:
    """Pushes by different principals, or to different repositories, are separate events."""
    hook = await _hooked(store, webhooks)
    other_hook = await _hooked(store, webhooks, OTHER)
    await _push(store, REPO, "by-alice", principal="alice")
    await _push(store, REPO, "by-bob", principal="bob")
    await _push(store, REPO, "again-alice", principal="alice")
    await _push(store, OTHER, "elsewhere", principal="alice")
    clock.advance(5)
    builder = RecordingBuilder()
    assert await webhooks.coalesce(2.0, builder) == 3
    tags = sorted(
        sorted(json.loads(d.payload)["updated_tags"]) for d in await webhooks.list_deliveries(hook.id)
    )
    assert tags == [["again-alice", "by-alice"], ["by-bob"]]
    [other] = await webhooks.list_deliveries(other_hook.id)
    assert list(json.loads(other.payload)["updated_tags"]) == ["elsewhere"]
    assert sorted((call[0], len(call[2])) for call in builder.calls) == [
        (str(REPO), 1),
        (str(REPO), 2),
        (str(OTHER), 1),
    ]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_coalesce_one_delivery_per_webhook(
    store: MetadataStore, webhooks: WebhookStore, clock: Clock
) -> None:
    """An event gets one delivery for each webhook of the repository, with the same payload."""
    first = await _hooked(store, webhooks)
    second = await webhooks.create_webhook(str(REPO), "https://second.example/")
    await _push(store, REPO, "latest")
    clock.advance(3)
    assert await webhooks.coalesce(2.0, RecordingBuilder()) == 2
    [a] = await webhooks.list_deliveries(first.id)
    [b] = await webhooks.list_deliveries(second.id)
    assert a.id != b.id
    assert a.payload == b.payload
    assert await webhooks.coalesce(2.0, RecordingBuilder()) == 0


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_coalesce_untagged_group_produces_nothing(
    store: MetadataStore, webhooks: WebhookStore, database: IDatabase, clock: Clock
) -> None:
    """A group without any tag (pushes by digest only) is dropped without an event."""
    hook = await _hooked(store, webhooks)
    await _push(store, REPO, None)
    clock.advance(3)
    builder = RecordingBuilder()
    assert await webhooks.coalesce(2.0, builder) == 0
    assert builder.calls == []
    assert await _outbox(database) == []
    assert await webhooks.list_deliveries(hook.id) == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_coalesce_index_with_children(
    store: MetadataStore, webhooks: WebhookStore, clock: Clock
) -> None:
    """An index pushed after its children is one event counting every manifest, tagged with the index."""
    hook = await _hooked(store, webhooks)
    await _push(store, REPO, None, CONFIG)
    await _push(store, REPO, None, CONFIG_2)
    children = [image_manifest(OCI_MANIFEST, c, [LAYER]) for c in (CONFIG, CONFIG_2)]
    content = index_manifest(OCI_INDEX, children)
    index = parse_manifest(content, None)
    await store.put_manifest(REPO, index, content, Tag("multi"), "alice")
    clock.advance(3)
    assert await webhooks.coalesce(2.0, RecordingBuilder()) == 1
    [delivery] = await webhooks.list_deliveries(hook.id)
    payload = json.loads(delivery.payload)
    assert payload["pushed_image_count"] == 3
    assert payload["updated_tags"] == {"multi": index.digest.hex}


# Claiming and recording attempts


async def _delivery(store: MetadataStore, webhooks: WebhookStore, clock: Clock) -> tuple[Webhook, Delivery]:
    """A webhook with one pending delivery, due now."""
    hook = await _hooked(store, webhooks)
    delivery = await webhooks.enqueue(hook.id, str(REPO), "push", '{"event":"push"}')
    return hook, delivery


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_enqueue_creates_pending_delivery(
    store: MetadataStore, webhooks: WebhookStore, clock: Clock
) -> None:
    """An enqueued delivery is pending, due now, with no attempts."""
    clock.advance(7)
    hook, delivery = await _delivery(store, webhooks, clock)
    assert delivery == Delivery(
        id=delivery.id,
        webhook=hook.id,
        repository=str(REPO),
        event="push",
        payload='{"event":"push"}',
        state="pending",
        attempts=0,
        next_attempt_at=7.0,
        last_status=None,
        last_error=None,
        created_at=7.0,
        finished_at=None,
    )
    assert await webhooks.get_delivery(delivery.id) == delivery


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_claim_due_leases(store: MetadataStore, webhooks: WebhookStore, clock: Clock) -> None:
    """A claimed delivery is not claimable again until its lease expires."""
    hook = await _hooked(store, webhooks)
    delivery = await webhooks.enqueue(hook.id, str(REPO), "push", "{}")
    [claimed] = await webhooks.claim_due(10, 30.0)
    assert claimed.delivery == delivery
    assert claimed.url == HOOK_URL
    assert claimed.secret_ciphertext is None
    assert await webhooks.claim_due(10, 30.0) == []
    clock.advance(29.9)
    assert await webhooks.claim_due(10, 30.0) == []
    clock.advance(0.1)
    [again] = await webhooks.claim_due(10, 30.0)
    assert again.delivery.id == delivery.id


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_claim_due_carries_secret(store: MetadataStore, webhooks: WebhookStore) -> None:
    """A claim carries the webhook's URL and encrypted secret."""
    await _repository(store, REPO)
    hook = await webhooks.create_webhook(str(REPO), HOOK_URL, secret_ciphertext="sealed")
    await webhooks.enqueue(hook.id, str(REPO), "test", "{}")
    [claimed] = await webhooks.claim_due(1, 10.0)
    assert (claimed.url, claimed.secret_ciphertext) == (HOOK_URL, "sealed")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_claim_due_limit_and_order(store: MetadataStore, webhooks: WebhookStore, clock: Clock) -> None:
    """At most C{limit} deliveries are claimed, earliest due first; future ones wait."""
    hook = await _hooked(store, webhooks)
    ids = []
    for _ in range(3):
        ids.append((await webhooks.enqueue(hook.id, str(REPO), "push", "{}")).id)
        clock.advance(1)
    await webhooks.record_attempt(ids[0], delivered=False, status=500, error="HTTP 500", retry_at=100.0)
    claimed = await webhooks.claim_due(1, 10.0)
    assert [c.delivery.id for c in claimed] == [ids[1]]
    claimed = await webhooks.claim_due(5, 10.0)
    assert [c.delivery.id for c in claimed] == [ids[2]]
    assert await webhooks.claim_due(5, 10.0) == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_record_attempt_delivered(store: MetadataStore, webhooks: WebhookStore, clock: Clock) -> None:
    """A delivered attempt finishes the delivery; it is never claimed again."""
    _, delivery = await _delivery(store, webhooks, clock)
    await webhooks.claim_due(1, 10.0)
    clock.advance(2)
    await webhooks.record_attempt(delivery.id, delivered=True, status=204, error=None, retry_at=None)
    found = await webhooks.get_delivery(delivery.id)
    assert found is not None
    assert (found.state, found.attempts, found.last_status, found.last_error, found.finished_at) == (
        "delivered",
        1,
        204,
        None,
        2.0,
    )
    clock.advance(1000)
    assert await webhooks.claim_due(10, 10.0) == []
    assert await webhooks.next_due() is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_record_attempt_retry(store: MetadataStore, webhooks: WebhookStore, clock: Clock) -> None:
    """A failed attempt with C{retry_at} stays pending, releases its lease and is due at C{retry_at}."""
    _, delivery = await _delivery(store, webhooks, clock)
    await webhooks.claim_due(1, 60.0)
    clock.advance(1)
    await webhooks.record_attempt(delivery.id, delivered=False, status=500, error="HTTP 500", retry_at=5.0)
    found = await webhooks.get_delivery(delivery.id)
    assert found is not None
    assert (found.state, found.attempts, found.next_attempt_at, found.last_status, found.last_error) == (
        "pending",
        1,
        5.0,
        500,
        "HTTP 500",
    )
    assert found.finished_at is None
    assert await webhooks.next_due() == 5.0
    clock.advance(3.9)
    assert await webhooks.claim_due(1, 60.0) == []
    clock.advance(0.1)
    [claimed] = await webhooks.claim_due(1, 60.0)
    assert claimed.delivery.attempts == 1


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_record_attempt_failed(store: MetadataStore, webhooks: WebhookStore, clock: Clock) -> None:
    """A failed attempt without C{retry_at} fails the delivery for good."""
    _, delivery = await _delivery(store, webhooks, clock)
    await webhooks.claim_due(1, 60.0)
    clock.advance(3)
    await webhooks.record_attempt(delivery.id, delivered=False, status=None, error="refused", retry_at=None)
    found = await webhooks.get_delivery(delivery.id)
    assert found is not None
    assert (found.state, found.attempts, found.last_status, found.last_error, found.finished_at) == (
        "failed",
        1,
        None,
        "refused",
        3.0,
    )
    clock.advance(1000)
    assert await webhooks.claim_due(10, 10.0) == []
    assert await webhooks.next_due() is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_next_due(store: MetadataStore, webhooks: WebhookStore, clock: Clock) -> None:
    """C{next_due} is the earliest time a pending delivery can be claimed, counting leases."""
    assert await webhooks.next_due() is None
    _, delivery = await _delivery(store, webhooks, clock)
    assert await webhooks.next_due() == 0.0
    await webhooks.claim_due(1, 30.0)
    assert await webhooks.next_due() == 30.0
    await webhooks.record_attempt(delivery.id, delivered=False, status=None, error="x", retry_at=12.5)
    assert await webhooks.next_due() == 12.5


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_list_deliveries_newest_first(
    store: MetadataStore, webhooks: WebhookStore, clock: Clock
) -> None:
    """Deliveries of one webhook list newest first, up to C{limit}; other webhooks' stay out."""
    hook = await _hooked(store, webhooks)
    other = await webhooks.create_webhook(str(REPO), "https://other.example/")
    ids = []
    for _ in range(3):
        ids.append((await webhooks.enqueue(hook.id, str(REPO), "push", "{}")).id)
        await webhooks.enqueue(other.id, str(REPO), "push", "{}")
        clock.advance(1)
    assert [d.id for d in await webhooks.list_deliveries(hook.id)] == ids[::-1]
    assert [d.id for d in await webhooks.list_deliveries(hook.id, limit=2)] == ids[:0:-1]
    assert await webhooks.list_deliveries("missing") == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_redeliver_copies_payload(store: MetadataStore, webhooks: WebhookStore, clock: Clock) -> None:
    """Redelivering queues a new pending delivery with the same webhook, event and payload."""
    hook, delivery = await _delivery(store, webhooks, clock)
    await webhooks.record_attempt(delivery.id, delivered=False, status=410, error="HTTP 410", retry_at=None)
    clock.advance(50)
    copy = await webhooks.redeliver(delivery.id)
    assert copy is not None
    assert copy.id != delivery.id
    assert (copy.webhook, copy.repository, copy.event, copy.payload) == (
        hook.id,
        str(REPO),
        "push",
        delivery.payload,
    )
    assert (copy.state, copy.attempts, copy.created_at, copy.next_attempt_at) == ("pending", 0, 50.0, 50.0)
    original = await webhooks.get_delivery(delivery.id)
    assert original is not None
    assert original.state == "failed"
    assert await webhooks.redeliver("missing") is None
