"""
Tests for L{quayd.webhooks.dispatcher.WebhookDispatcher}.

The receiver is a C{twisted.web} resource behind L{treq.testing.StubTreq};
time is a L{Clock}; the queue is a real SQLite L{WebhookStore} in
C{tmp_path} and secrets are sealed with a real L{SecretBox}. SQLite runs on
its own thread, so tests wait for the database to go idle (never for time to
pass) between steps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from treq.testing import HasHeaders, RequestSequence, StringStubbingResource, StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from quayd.auth.keys import SecretBox, load_secret_box
from quayd.db.interfaces import IDatabase, Params, Row, Transaction
from quayd.db.sqlite import SQLiteDatabase
from quayd.db.store import MetadataStore
from quayd.db.webhooks import Delivery, Webhook, WebhookStore
from quayd.registry.manifests import OCI_MANIFEST, parse_manifest
from quayd.types import Digest, RepositoryName, Tag
from quayd.webhooks.dispatcher import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    DispatchSettings,
    WebhookDispatcher,
    sign,
)
from tests.support.databases import open_sqlite
from tests.support.manifests import image_manifest
from tests.support.twisted import assert_no_result, success_result_of

T = TypeVar("T")

REPO = RepositoryName("acme/app")
HOOK_URL = "http://hook.example/push"
SECRET = "correct horse battery staple"
PAYLOAD = json.dumps({"event": "push", "repository": "acme/app"}, separators=(",", ":"))
CONFIG = b'{"architecture":"amd64","os":"linux"}'
LAYER = b"layer bytes"
NAMESPACE = "quayd.webhooks.dispatcher"


@implementer(IDatabase)
class CountingDatabase:
    """
    An L{IDatabase} that delegates to a real one and counts operations in
    flight, so that tests can wait until the dispatcher's chain of database
    calls has run its course.
    """

    def __init__(self, database: IDatabase) -> None:
        self._database = database
        self.dialect = database.dialect
        self.pending = 0

    def _count(self, d: Deferred[T]) -> Deferred[T]:
        """Count C{d} as in flight until it fires."""
        self.pending += 1

        def done(result: T | Failure) -> T | Failure:
            """No longer in flight."""
            self.pending -= 1
            return result

        return d.addBoth(done)

    def open(self) -> Deferred[None]:
        """Open the real database."""
        return self._database.open()

    def close(self) -> Deferred[None]:
        """Close the real database."""
        return self._database.close()

    def run_migration(self, version: int, sql: str) -> Deferred[bool]:
        """Apply a schema step on the real database."""
        return self._database.run_migration(version, sql)

    def run_interaction(self, body: Callable[[Transaction], Awaitable[T]]) -> Deferred[T]:
        """Run a transaction, counted."""
        return self._count(self._database.run_interaction(body))

    def execute(self, sql: str, args: Params = ()) -> Deferred[list[Row]]:
        """Run a statement, counted."""
        return self._count(self._database.execute(sql, args))

    def run_script(self, sql: str) -> Deferred[None]:
        """Run a script, counted."""
        return self._count(self._database.run_script(sql))


@dataclass(kw_only=True)
class Reply:
    """
    How the receiver answers one request.

    @ivar hang: Answer nothing (the test answers later, or never).
    @ivar stream: Send these bytes as the start of a body that never ends.
    """

    status: int = 200
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b"ok"
    hang: bool = False
    stream: bytes | None = None


@dataclass(kw_only=True)
class Received:
    """One request the receiver got."""

    method: bytes
    uri: bytes
    headers: Headers
    body: bytes
    request: Request
    lost: bool = False
    finished: bool = False

    def header(self, name: str) -> str | None:
        """The first value of header C{name}, or C{None}."""
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class Receiver(Resource):
    """
    A scripted webhook receiver: answers requests with the next L{Reply}
    (then with C{default}) and records every request.

    @ivar open: Requests not answered yet and still connected.
    @ivar max_open: The most requests that were open at once.
    """

    isLeaf = True

    def __init__(self, replies: list[Reply] | None = None, default: Reply | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self.replies = list(replies or [])
        self.default = default or Reply()
        self.received: list[Received] = []
        self.open: list[Received] = []
        self.max_open = 0

    def render_POST(self, request: Request) -> bytes | int:
        """Record the request and answer it as scripted."""
        assert request.content is not None
        seen = Received(
            method=request.method,
            uri=request.uri,
            headers=request.requestHeaders,
            body=request.content.read(),
            request=request,
        )
        self.received.append(seen)
        reply = self.replies.pop(0) if self.replies else self.default
        if not reply.hang and reply.stream is None:
            seen.finished = True
            request.setResponseCode(reply.status)
            for name, value in reply.headers.items():
                request.setHeader(name, value)
            return reply.body
        self.open.append(seen)
        self.max_open = max(self.max_open, len(self.open))

        def gone(result: object) -> None:
            """The request finished or its connection was lost."""
            if seen in self.open:
                self.open.remove(seen)
            if isinstance(result, Failure):
                seen.lost = True

        request.notifyFinish().addBoth(gone)
        if reply.stream is not None:
            request.setResponseCode(reply.status)
            request.write(reply.stream)
        return NOT_DONE_YET

    def answer(self, seen: Received, status: int = 200, body: bytes = b"ok") -> None:
        """Answer a request that was left hanging."""
        seen.request.setResponseCode(status)
        seen.request.setHeader(b"content-length", str(len(body)).encode())
        seen.request.write(body)
        seen.request.finish()
        seen.finished = True


@implementer(ILogObserver)
@dataclass
class LogCapture:
    """Collects the dispatcher's log events."""

    events: list[LogEvent] = field(default_factory=list)

    def __call__(self, event: LogEvent) -> None:
        """Keep C{event} if the dispatcher logged it."""
        if event.get("log_namespace") == NAMESPACE:
            self.events.append(event)

    def formats(self, fragment: str) -> list[LogEvent]:
        """The captured events whose format contains C{fragment}."""
        return [e for e in self.events if fragment in (e.get("log_format") or "")]


@dataclass(kw_only=True)
class Harness:
    """Everything a dispatcher test needs."""

    clock: Clock
    database: CountingDatabase
    store: WebhookStore
    metadata: MetadataStore
    box: SecretBox
    logs: LogCapture
    dispatchers: list[WebhookDispatcher] = field(default_factory=list)

    def dispatcher(
        self,
        http: Any,
        settings: DispatchSettings | None = None,
        rng: Callable[[], float] = lambda: 0.5,
        close_http: Callable[[], Deferred[None]] | None = None,
    ) -> WebhookDispatcher:
        """A dispatcher over this harness's store and clock."""
        dispatcher = WebhookDispatcher(
            self.store,
            self.box,
            http,
            self.clock,
            settings or DispatchSettings(),
            "registry.example",
            "https",
            rng=rng,
            close_http=close_http,
        )
        self.dispatchers.append(dispatcher)
        return dispatcher

    async def idle(self, within: float = 5.0) -> None:
        """Wait (on the real reactor) until no database operation is in flight."""
        from twisted.internet import reactor

        deadline = reactor.seconds() + within
        quiet = 0
        while quiet < 3:
            await deferLater(reactor, 0.001, lambda: None)
            quiet = quiet + 1 if self.database.pending == 0 else 0
            if reactor.seconds() > deadline:
                raise AssertionError(f"database still busy after {within} s")

    async def poll(self, dispatcher: WebhookDispatcher) -> int:
        """Run one poll and let the deliveries it started settle."""
        started = await dispatcher.poll()
        await self.idle()
        return started

    async def advance(self, seconds: float) -> None:
        """Advance the clock, then let whatever that started settle."""
        self.clock.advance(seconds)
        await self.idle()

    async def hook(self, secret: str | None = SECRET, url: str = HOOK_URL) -> Webhook:
        """A webhook on L{REPO} (creating the repository)."""
        digest = Digest.sha256_of(LAYER)
        await self.metadata.commit_blob(REPO, digest, len(LAYER), f"sha256/{digest.hex}")
        sealed = None if secret is None else self.box.encrypt(secret)
        return await self.store.create_webhook(str(REPO), url, secret_ciphertext=sealed)

    async def delivery(self, secret: str | None = SECRET, url: str = HOOK_URL) -> Delivery:
        """A webhook on L{REPO} with one pending delivery due now."""
        hook = await self.hook(secret, url)
        return await self.store.enqueue(hook.id, str(REPO), "push", PAYLOAD)

    async def get(self, delivery_id: str) -> Delivery:
        """The delivery's current state."""
        found = await self.store.get_delivery(delivery_id)
        assert found is not None
        return found


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """
    A harness over a migrated SQLite database; teardown stops every
    dispatcher, waits for the database and closes it.
    """
    real: SQLiteDatabase = await open_sqlite(tmp_path / "quayd.sqlite")
    clock = Clock()
    database = CountingDatabase(real)
    logs = LogCapture()
    globalLogPublisher.addObserver(logs)
    h = Harness(
        clock=clock,
        database=database,
        store=WebhookStore(database, clock),
        metadata=MetadataStore(database, clock),
        box=load_secret_box(tmp_path / "k", generate=True),
        logs=logs,
    )
    try:
        yield h
    finally:
        globalLogPublisher.removeObserver(logs)
        for dispatcher in h.dispatchers:
            if dispatcher.running:
                dispatcher.stopService()
        await h.idle()
        await real.close()


def _stub(resource: Resource) -> StubTreq:
    """A treq stand-in whose requests are served in memory by C{resource}."""
    return StubTreq(resource)


def _signature(body: bytes, secret: str = SECRET) -> str:
    """The expected signature header, computed independently of the dispatcher."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def async_failures() -> Iterator[list[str]]:
    """Collects L{RequestSequence} mismatches; the test fails if there are any."""
    failures: list[str] = []
    yield failures
    assert failures == []


# Delivery


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_delivers_signed_json(harness: Harness, async_failures: list[str]) -> None:
    """A delivery answered 200 is sent as the exact JSON payload with its headers and signature."""
    delivery = await harness.delivery()
    body = PAYLOAD.encode()
    expected_headers = HasHeaders(
        {
            "Content-Type": ["application/json"],
            DELIVERY_HEADER: [delivery.id],
            EVENT_HEADER: ["push"],
            SIGNATURE_HEADER: [_signature(body)],
        }
    )
    hook: tuple[Any, ...] = (b"post", HOOK_URL, {}, expected_headers, body)
    sequence = RequestSequence([(hook, (200, {}, b"thanks"))], async_failures.append)
    dispatcher = harness.dispatcher(_stub(StringStubbingResource(sequence)))
    with sequence.consume(pytest.fail):
        assert await harness.poll(dispatcher) == 1
    found = await harness.get(delivery.id)
    assert (found.state, found.attempts, found.last_status, found.last_error) == ("delivered", 1, 200, None)
    assert found.finished_at == 0.0
    assert dispatcher.in_flight == {}
    assert len(harness.logs.formats("delivered")) == 1


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_signature_verifies(harness: Harness) -> None:
    """A receiver holding the secret can verify the signature over the body it received."""
    await harness.delivery()
    receiver = Receiver()
    await harness.poll(harness.dispatcher(_stub(receiver)))
    [seen] = receiver.received
    signature = seen.header(SIGNATURE_HEADER)
    assert signature is not None
    assert signature.startswith("sha256=")
    mac = hmac.new(SECRET.encode(), seen.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature.removeprefix("sha256="), mac)
    assert signature == sign(SECRET, seen.body)
    assert json.loads(seen.body) == json.loads(PAYLOAD)
    assert seen.header("Content-Type") == "application/json"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_no_signature_without_secret(harness: Harness) -> None:
    """A webhook without a secret gets no signature header."""
    await harness.delivery(secret=None)
    receiver = Receiver()
    await harness.poll(harness.dispatcher(_stub(receiver)))
    [seen] = receiver.received
    assert seen.header(SIGNATURE_HEADER) is None
    assert seen.header(EVENT_HEADER) == "push"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_undecryptable_secret_not_sent(harness: Harness) -> None:
    """A secret sealed with another key is never sent unsigned: no POST, the delivery fails at once."""
    hook = await harness.hook(secret=None)
    other = SecretBox(b"A" * 43 + b"=")
    await harness.database.execute(
        "UPDATE webhook SET secret_ciphertext = ? WHERE id = ?", (other.encrypt(SECRET), hook.id)
    )
    delivery = await harness.store.enqueue(hook.id, str(REPO), "push", PAYLOAD)
    receiver = Receiver()
    await harness.poll(harness.dispatcher(_stub(receiver)))
    assert receiver.received == []
    found = await harness.get(delivery.id)
    assert (found.state, found.attempts, found.last_status) == ("failed", 1, None)
    assert found.last_error == "the webhook secret cannot be decrypted"


# Retries


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_retries_after_backoff(harness: Harness, async_failures: list[str]) -> None:
    """A delivery answered 500 is retried, with the same delivery id, once the jittered backoff has passed."""
    delivery = await harness.delivery()
    hook: tuple[Any, ...] = (
        b"post",
        HOOK_URL,
        {},
        HasHeaders({DELIVERY_HEADER: [delivery.id]}),
        PAYLOAD.encode(),
    )
    sequence = RequestSequence([(hook, (500, {}, b"oops")), (hook, (204, {}, b""))], async_failures.append)
    settings = DispatchSettings(initial_backoff=2.0)
    dispatcher = harness.dispatcher(_stub(StringStubbingResource(sequence)), settings, rng=lambda: 0.25)
    with sequence.consume(pytest.fail):
        await harness.advance(10)
        assert await harness.poll(dispatcher) == 1
        found = await harness.get(delivery.id)
        # backoff 2.0 * 2**0, jitter factor 0.5 + 0.25
        assert (found.state, found.attempts, found.last_status, found.last_error) == (
            "pending",
            1,
            500,
            "HTTP 500",
        )
        assert found.next_attempt_at == pytest.approx(10 + 1.5)
        assert await harness.store.next_due() == pytest.approx(11.5)
        await harness.advance(1.49)
        assert await harness.poll(dispatcher) == 0
        await harness.advance(0.01)
        assert await harness.poll(dispatcher) == 1
    found = await harness.get(delivery.id)
    assert (found.state, found.attempts, found.last_status, found.last_error) == ("delivered", 2, 204, None)
    assert found.finished_at == pytest.approx(11.5)


@pytest.mark.parametrize(("jitter", "factor"), [(0.0, 0.5), (0.5, 1.0), (0.999, 1.499)])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_backoff_doubles_and_caps(harness: Harness, jitter: float, factor: float) -> None:
    """Delays double from C{initial_backoff} up to C{max_backoff}, times a jitter factor in [0.5, 1.5)."""
    delivery = await harness.delivery()
    receiver = Receiver(default=Reply(status=503))
    settings = DispatchSettings(initial_backoff=1.0, max_backoff=8.0)
    dispatcher = harness.dispatcher(_stub(receiver), settings, rng=lambda: jitter)
    delays = []
    for _ in range(6):
        before = harness.clock.seconds()
        assert await harness.poll(dispatcher) == 1
        found = await harness.get(delivery.id)
        delays.append(found.next_attempt_at - before)
        await harness.advance(found.next_attempt_at - before)
    assert delays == pytest.approx([d * factor for d in (1, 2, 4, 8, 8, 8)])
    assert len(receiver.received) == 6
    assert (await harness.get(delivery.id)).attempts == 6


@pytest.mark.parametrize("status", [400, 404, 410, 429])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_retries_client_errors(harness: Harness, status: int) -> None:
    """Every non-2xx answer is retried, 4xx included (receivers are untrusted; 404 while they deploy)."""
    delivery = await harness.delivery()
    receiver = Receiver([Reply(status=status)])
    dispatcher = harness.dispatcher(_stub(receiver), rng=lambda: 0.5)
    await harness.poll(dispatcher)
    found = await harness.get(delivery.id)
    assert (found.state, found.attempts, found.last_status, found.last_error) == (
        "pending",
        1,
        status,
        f"HTTP {status}",
    )
    assert found.next_attempt_at == pytest.approx(1.0)
    await harness.advance(1.0)
    await harness.poll(dispatcher)
    assert len(receiver.received) == 2
    assert (await harness.get(delivery.id)).state == "delivered"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_connection_error_retried(harness: Harness) -> None:
    """A transport failure (connection refused) is a failed attempt without status, retried."""
    delivery = await harness.delivery()

    class Refusing:
        """An HTTP client whose every request is refused."""

        def post(self, url: str, **kwargs: object) -> Deferred[object]:
            """Fail as a refused connection does."""
            return fail(ConnectionRefusedError("refused"))

    await harness.poll(harness.dispatcher(Refusing()))
    found = await harness.get(delivery.id)
    assert (found.state, found.attempts, found.last_status) == ("pending", 1, None)
    assert found.last_error is not None
    assert found.last_error.startswith("ConnectionRefusedError")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_max_age_fails_once_logged(harness: Harness) -> None:
    """When the next retry would fall past C{max_age}, the delivery fails for good, logged once."""
    delivery = await harness.delivery()
    receiver = Receiver(default=Reply(status=500))
    settings = DispatchSettings(initial_backoff=4.0, max_backoff=100.0, max_age=10.0)
    dispatcher = harness.dispatcher(_stub(receiver), settings, rng=lambda: 0.5)
    await harness.poll(dispatcher)
    found = await harness.get(delivery.id)
    assert (found.state, found.next_attempt_at) == ("pending", 4.0)
    await harness.advance(4.0)
    await harness.poll(dispatcher)
    found = await harness.get(delivery.id)
    # the next retry would be at 4 + 8 = 12 > created_at + max_age = 10
    assert (found.state, found.attempts, found.last_status, found.finished_at) == ("failed", 2, 500, 4.0)
    assert found.last_error == "HTTP 500"
    await harness.advance(100.0)
    assert await harness.poll(dispatcher) == 0
    assert len(receiver.received) == 2
    failed = harness.logs.formats("failed for good")
    assert len(failed) == 1
    assert failed[0]["delivery_id"] == delivery.id
    assert failed[0]["attempts"] == 2
    assert failed[0]["log_level"].name == "warn"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_many_attempts_backoff_capped(harness: Harness) -> None:
    """After a thousand attempts the delay is still C{max_backoff} (times jitter), not a crash."""
    delivery = await harness.delivery()
    await harness.database.execute("UPDATE delivery SET attempts = 1100 WHERE id = ?", (delivery.id,))
    receiver = Receiver(default=Reply(status=500))
    settings = DispatchSettings(initial_backoff=1.0, max_backoff=60.0, max_age=10**9)
    await harness.poll(harness.dispatcher(_stub(receiver), settings, rng=lambda: 0.5))
    found = await harness.get(delivery.id)
    assert found.attempts == 1101
    assert found.next_attempt_at == pytest.approx(60.0)


# What receivers cannot make the dispatcher do


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_redirect_not_followed(harness: Harness) -> None:
    """A 302 is not followed (no request to its Location); it counts as a failed attempt."""
    delivery = await harness.delivery()
    redirect = Reply(status=302, headers={b"location": b"http://hook.example/elsewhere"})
    receiver = Receiver([redirect])
    await harness.poll(harness.dispatcher(_stub(receiver)))
    assert [r.uri for r in receiver.received] == [b"/push"]
    found = await harness.get(delivery.id)
    assert (found.state, found.attempts, found.last_status, found.last_error) == (
        "pending",
        1,
        302,
        "HTTP 302",
    )


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_reads_at_most_max_response_bytes(harness: Harness) -> None:
    """An endless response body is read only up to C{max_response_bytes}, then the connection is dropped."""
    delivery = await harness.delivery()
    limit = 1024
    receiver = Receiver([Reply(stream=b"x" * (limit * 4))])
    stub = _stub(receiver)
    settings = DispatchSettings(max_response_bytes=limit)
    dispatcher = harness.dispatcher(stub, settings)
    await harness.poll(dispatcher)
    found = await harness.get(delivery.id)
    assert (found.state, found.last_status) == ("delivered", 200)
    assert dispatcher.in_flight == {}
    stub.flush()
    [seen] = receiver.received
    assert seen.lost


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_body_timeout_drops_connection(harness: Harness) -> None:
    """A body that stalls past the timeout ends the attempt and closes the connection."""
    delivery = await harness.delivery()
    receiver = Receiver([Reply(stream=b"partial")])
    stub = _stub(receiver)
    dispatcher = harness.dispatcher(stub, DispatchSettings(timeout=5.0))
    await harness.poll(dispatcher)
    assert len(dispatcher.in_flight) == 1
    await harness.advance(5.0)
    assert dispatcher.in_flight == {}
    found = await harness.get(delivery.id)
    assert found.attempts == 1
    stub.flush()
    [seen] = receiver.received
    assert seen.lost


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_timeout_retried(harness: Harness) -> None:
    """A receiver that never answers times out after C{timeout} on the dispatcher's clock; it is retried."""
    delivery = await harness.delivery()
    receiver = Receiver([Reply(hang=True)])
    stub = _stub(receiver)
    dispatcher = harness.dispatcher(stub, DispatchSettings(timeout=3.0), rng=lambda: 0.5)
    await harness.poll(dispatcher)
    try:
        assert len(dispatcher.in_flight) == 1
        await harness.advance(3.0)
        assert dispatcher.in_flight == {}
        found = await harness.get(delivery.id)
        assert (found.state, found.attempts, found.last_status, found.last_error) == (
            "pending",
            1,
            None,
            "timed out",
        )
        assert found.next_attempt_at == pytest.approx(4.0)
    finally:
        # Don't leave the request (and treq's timer on the global reactor) behind.
        for seen in list(receiver.open):
            receiver.answer(seen, 200)
        stub.flush()
        await harness.idle()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_slow_attempt_not_claimed_twice(harness: Harness) -> None:
    """A delivery still in flight is never sent again, even when its attempt outlasts the lease."""
    await harness.delivery()
    receiver = Receiver(default=Reply(hang=True))
    stub = _stub(receiver)
    dispatcher = harness.dispatcher(stub, DispatchSettings(timeout=100.0))
    assert await harness.poll(dispatcher) == 1
    try:
        await harness.advance(99)
        [seen] = receiver.open
        seen.request.setResponseCode(200)
        seen.request.write(b"slow body")
        stub.flush()
        await harness.idle()
        assert len(dispatcher.in_flight) == 1
        await harness.advance(62)  # the lease (timeout + 60) has expired; the body timeout has not
        await harness.poll(dispatcher)
        assert len(receiver.received) == 1
    finally:
        for seen in list(receiver.open):
            receiver.answer(seen)
        stub.flush()
        await harness.idle()
        await harness.advance(200)


# Concurrency and lifecycle


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_concurrency_bound(harness: Harness) -> None:
    """With 20 due deliveries and concurrency 8, at most 8 requests are ever in flight."""
    hook = await harness.hook()
    ids = [(await harness.store.enqueue(hook.id, str(REPO), "push", PAYLOAD)).id for _ in range(20)]
    receiver = Receiver(default=Reply(hang=True))
    stub = _stub(receiver)
    dispatcher = harness.dispatcher(stub, DispatchSettings(concurrency=8))
    assert await harness.poll(dispatcher) == 8
    assert len(dispatcher.in_flight) == 8
    assert len(receiver.open) == 8
    assert await harness.poll(dispatcher) == 0
    for seen in receiver.open[:3]:
        receiver.answer(seen)
    stub.flush()
    await harness.idle()
    assert len(dispatcher.in_flight) == 5
    assert await harness.poll(dispatcher) == 3
    assert len(receiver.open) == 8
    rounds = 0
    while receiver.open:
        rounds += 1
        assert rounds < 10
        for seen in list(receiver.open):
            receiver.answer(seen)
        stub.flush()
        await harness.idle()
        await harness.poll(dispatcher)
    assert receiver.max_open == 8
    assert len(receiver.received) == 20
    assert {(await harness.get(i)).state for i in ids} == {"delivered"}


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_start_delivers_leftovers(harness: Harness) -> None:
    """Starting the service polls at once: deliveries left from before a restart go out."""
    delivery = await harness.delivery()
    receiver = Receiver()
    dispatcher = harness.dispatcher(_stub(receiver))
    dispatcher.startService()
    await harness.advance(0)
    assert (await harness.get(delivery.id)).state == "delivered"
    assert len(receiver.received) == 1


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_running_retries_on_schedule(harness: Harness) -> None:
    """A running dispatcher schedules its next poll for the retry time by itself."""
    delivery = await harness.delivery()
    receiver = Receiver([Reply(status=500)])
    dispatcher = harness.dispatcher(_stub(receiver), DispatchSettings(initial_backoff=2.0), rng=lambda: 0.5)
    dispatcher.startService()
    await harness.advance(0)
    assert (await harness.get(delivery.id)).state == "pending"
    await harness.advance(1.9)
    assert len(receiver.received) == 1
    await harness.advance(0.1)
    await harness.advance(0)
    assert len(receiver.received) == 2
    assert (await harness.get(delivery.id)).state == "delivered"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_stop_waits_for_in_flight(harness: Harness) -> None:
    """C{stopService} fires only after deliveries in flight finish, then closes the HTTP client."""
    delivery = await harness.delivery()
    receiver = Receiver([Reply(hang=True)])
    stub = _stub(receiver)
    closed: list[bool] = []

    def close_http() -> Deferred[None]:
        """Record that the dispatcher closed its HTTP client."""
        closed.append(True)
        return succeed(None)

    dispatcher = harness.dispatcher(stub, close_http=close_http)
    dispatcher.startService()
    await harness.advance(0)
    assert len(receiver.open) == 1
    stopping = dispatcher.stopService()
    await harness.idle()
    assert_no_result(stopping)
    assert closed == []
    receiver.answer(receiver.open[0])
    stub.flush()
    await harness.idle()
    success_result_of(stopping)
    assert closed == [True]
    assert (await harness.get(delivery.id)).state == "delivered"
    assert harness.clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_stop_during_poll(harness: Harness) -> None:
    """Stopping while a poll is running leaves nothing in flight once C{stopService} has fired."""
    await harness.delivery()
    receiver = Receiver(default=Reply(hang=True))
    stub = _stub(receiver)
    dispatcher = harness.dispatcher(stub)
    dispatcher.startService()
    harness.clock.advance(0)  # the poll starts and waits for the database
    stopping = dispatcher.stopService()
    await harness.idle()
    try:
        if stopping.called:
            assert dispatcher.in_flight == {}
            assert receiver.received == []
    finally:
        for seen in list(receiver.open):
            receiver.answer(seen)
        stub.flush()
        await harness.idle()
        stopping.addErrback(lambda _: None)


# Waking after pushes


async def _push(harness: Harness, tag: str) -> None:
    """Push an image with C{tag} through the metadata store, as the registry does."""
    for content in (CONFIG, LAYER):
        digest = Digest.sha256_of(content)
        await harness.metadata.commit_blob(REPO, digest, len(content), f"sha256/{digest.hex}")
    content = image_manifest(OCI_MANIFEST, CONFIG, [LAYER])
    assert await harness.metadata.put_manifest(
        REPO, parse_manifest(content, None), content, Tag(tag), "alice"
    )


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_wake_polls_after_window(harness: Harness) -> None:
    """C{wake} polls once the coalescing window has passed: the push goes out as one event."""
    await harness.hook()
    receiver = Receiver()
    settings = DispatchSettings(coalesce_window=2.0, poll_interval=60.0)
    dispatcher = harness.dispatcher(_stub(receiver), settings)
    dispatcher.startService()
    await harness.advance(0)
    await _push(harness, "one")
    dispatcher.wake()
    await _push(harness, "two")
    dispatcher.wake()
    await harness.advance(2.0)
    assert receiver.received == []
    await harness.advance(0.05)
    await harness.advance(0)
    [seen] = receiver.received
    payload = json.loads(seen.body)
    config_hex = Digest.sha256_of(CONFIG).hex
    assert payload["updated_tags"] == {"one": config_hex, "two": config_hex}
    assert payload["docker_url"] == "registry.example/acme/app"
    assert payload["homepage"] == "https://registry.example/repository/acme/app"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_dispatcher_wake_burst_longer_than_window(harness: Harness) -> None:
    """Pushes spread over more than the window go out one window after the last push, not much later."""
    await harness.hook()
    receiver = Receiver()
    settings = DispatchSettings(coalesce_window=2.0, poll_interval=60.0)
    dispatcher = harness.dispatcher(_stub(receiver), settings)
    dispatcher.startService()
    await harness.advance(0)
    await _push(harness, "one")
    dispatcher.wake()
    await harness.advance(1.5)
    await _push(harness, "two")
    dispatcher.wake()
    for _ in range(30):  # 3 s in steps: the last push's window ends at 3.5
        await harness.advance(0.1)
    assert len(receiver.received) == 1
