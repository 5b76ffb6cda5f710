"""
The webhook dispatcher: coalesces the push outbox into events, claims due
deliveries and POSTs them with treq, retrying with capped exponential backoff
and jitter until a maximum age, after which a delivery is marked failed.

The queue is the database, so deliveries survive restarts; a claim is a lease,
so a crash mid-delivery only delays it. Concurrency is bounded and nothing a
receiver does can slow down pushes: pushes only write outbox rows.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss

from quayd.auth.keys import KeyFileError, SecretBox
from quayd.db.webhooks import ClaimedDelivery, WebhookStore
from quayd.errors import JSONValue, Unavailable
from quayd.webhooks.events import PushRecord, push_payload
from quayd.webhooks.targets import TargetRefused

_log = Logger()

#: Header carrying the HMAC-SHA256 signature of the exact body, as C{sha256=<hex>}.
SIGNATURE_HEADER = "X-Quayd-Signature-256"
#: Header carrying the delivery's unique id (the same on every retry).
DELIVERY_HEADER = "X-Quayd-Delivery"
#: Header carrying the event name (C{push} or C{test}).
EVENT_HEADER = "X-Quayd-Event"


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchSettings:
    """Timing and limits of webhook delivery."""

    timeout: float = 10.0
    initial_backoff: float = 1.0
    max_backoff: float = 3600.0
    max_age: float = 86400.0
    concurrency: int = 8
    coalesce_window: float = 2.0
    poll_interval: float = 5.0
    max_response_bytes: int = 64 * 1024


def sign(secret: str, body: bytes) -> str:
    """The signature header value for C{body}: C{sha256=} and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _stop_body(finished: Deferred[bytes]) -> None:
    """Cancelling a body read (its timeout) stops the transfer."""
    reader = getattr(finished, "reader", None)
    stop = getattr(getattr(reader, "transport", None), "stopProducing", None)
    if stop is not None:
        stop()


class _LimitedBody(Protocol):
    """Reads at most C{limit} bytes of a response body, then stops the transfer."""

    def __init__(self, finished: Deferred[bytes], limit: int) -> None:
        self.finished = finished
        finished.reader = self  # type: ignore[attr-defined]  # found again by the canceller
        self._finished = finished
        self._limit = limit
        self._data: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._finished.called:
            return
        self._data.append(data[: self._limit - self._size])
        self._size += len(data)
        if self._size >= self._limit:
            self._finished.callback(b"".join(self._data))
            stop = getattr(self.transport, "stopProducing", None)
            if stop is not None:
                stop()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if reason is None:
            reason = Failure(ResponseDone())
        if not self._finished.called:
            if reason.check(ResponseDone, PotentialDataLoss):
                self._finished.callback(b"".join(self._data))
            else:
                self._finished.errback(reason)


class WebhookDispatcher(Service):
    """
    Delivers queued webhook events.

    @ivar in_flight: Deliveries being sent right now.
    """

    def __init__(
        self,
        store: WebhookStore,
        secrets: SecretBox,
        http: Any,
        clock: IReactorTime,
        settings: DispatchSettings,
        hostname: str,
        scheme: str,
        rng: Callable[[], float] = random.random,
        close_http: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self._store = store
        self._secrets = secrets
        self._http = http
        self._clock = clock
        self._settings = settings
        self._hostname = hostname
        self._scheme = scheme
        self._rng = rng
        self._close_http = close_http
        self._timer: IDelayedCall | None = None
        self._polling: Deferred[int] | None = None
        self.in_flight: dict[str, Deferred[None]] = {}
        self._stopping = False

    # Scheduling

    def startService(self) -> None:
        """Start polling at once (deliveries left from before a restart are due)."""
        super().startService()  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self._stopping = False
        self._schedule(0)

    def stopService(self) -> Deferred[None]:
        """Stop polling, wait for deliveries in flight, close the connection pool."""
        super().stopService()  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self._stopping = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

        async def stop() -> None:
            while self.in_flight or self._polling is not None:
                pending: list[Deferred[Any]] = list(self.in_flight.values())
                if self._polling is not None:
                    pending.append(self._polling)
                await DeferredList(pending, consumeErrors=True)
            if self._close_http is not None:
                await self._close_http()

        return Deferred.fromCoroutine(stop())

    def _schedule(self, delay: float) -> None:
        if not self.running:
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= self._clock.seconds() + delay:
                return
            self._timer.cancel()
        self._timer = self._clock.callLater(max(0.0, delay), self._tick)

    def wake(self) -> None:
        """A push was queued: poll once its coalescing window has passed."""
        self._schedule(self._settings.coalesce_window + 0.05)

    def _tick(self) -> None:
        self._timer = None
        if self._polling is not None:
            self._schedule(0.1)
            return
        self._polling = Deferred.fromCoroutine(self._safe_poll())
        self._polling.addBoth(self._polled)

    async def _safe_poll(self) -> int:
        try:
            return await self.poll()
        except Unavailable as e:
            _log.warn("webhook dispatcher waits for the database: {error}", error=e.message)
            return 0
        except Exception:
            _log.failure("webhook dispatcher poll failed")
            return 0

    def _polled(self, result: object) -> None:
        self._polling = None
        Deferred.fromCoroutine(self._next_delay()).addCallback(self._schedule).addErrback(
            lambda f: self._schedule(self._settings.poll_interval)
        )

    async def _next_delay(self) -> float:
        delay = self._settings.poll_interval
        now = self._clock.seconds()
        due = await self._store.next_due()
        if due is not None:
            delay = min(delay, max(0.05, due - now))
        ready = await self._store.next_outbox_ready(self._settings.coalesce_window)
        if ready is not None:
            delay = min(delay, max(0.05, ready - now))
        return delay

    # Work

    def _build(self, repository: str, visibility: str, records: list[PushRecord]) -> dict[str, JSONValue]:
        return push_payload(
            repository=repository,
            hostname=self._hostname,
            scheme=self._scheme,
            visibility=visibility,
            records=records,
        )

    async def poll(self) -> int:
        """
        Coalesce the outbox and start due deliveries (up to the concurrency limit).

        @return: How many deliveries were started.
        """
        await self._store.coalesce(self._settings.coalesce_window, self._build)
        free = self._settings.concurrency - len(self.in_flight)
        if free <= 0:
            return 0
        if self._stopping:
            return 0
        lease = 2 * self._settings.timeout + 60
        claimed = await self._store.claim_due(free, lease)
        for item in claimed:
            if item.delivery.id in self.in_flight:
                continue
            placeholder: Deferred[None] = Deferred()
            self.in_flight[item.delivery.id] = placeholder
            done = Deferred.fromCoroutine(self._safe_deliver(item))
            if item.delivery.id in self.in_flight:
                self.in_flight[item.delivery.id] = done
        return len(claimed)

    async def _safe_deliver(self, item: ClaimedDelivery) -> None:
        try:
            await self.deliver(item)
        except Exception:
            _log.failure("webhook delivery {delivery_id} crashed", delivery_id=item.delivery.id)
        finally:
            self._finished(item.delivery.id)

    def _finished(self, key: str) -> None:
        self.in_flight.pop(key, None)
        self._schedule(0 if self._settings.concurrency > len(self.in_flight) else 0.5)

    async def deliver(self, item: ClaimedDelivery) -> None:
        """Send one delivery once and record the outcome."""
        delivery = item.delivery
        body = delivery.payload.encode()
        headers = {
            "Content-Type": ["application/json"],
            "User-Agent": ["quayd-webhooks"],
            DELIVERY_HEADER: [delivery.id],
            EVENT_HEADER: [delivery.event],
        }
        if item.secret_ciphertext is not None:
            try:
                headers[SIGNATURE_HEADER] = [sign(self._secrets.decrypt(item.secret_ciphertext), body)]
            except KeyFileError:
                await self._outcome(
                    item, status=None, error="the webhook secret cannot be decrypted", permanent=True
                )
                return
        status: int | None = None
        error: str | None = None
        try:
            response = await self._http.post(
                item.url,
                data=body,
                headers=headers,
                timeout=self._settings.timeout,
                allow_redirects=False,
                unbuffered=True,
                reactor=self._clock,
            )
            status = int(response.code)
            reader = _LimitedBody(Deferred(_stop_body), self._settings.max_response_bytes)
            reader.finished.addTimeout(self._settings.timeout, self._clock)
            response.deliverBody(reader)
            await reader.finished
        except TargetRefused as e:
            await self._outcome(item, status=None, error=f"target refused: {e}", permanent=True)
            return
        except (CancelledError, TimeoutError):
            error = "timed out"
        except ResponseNeverReceived as e:
            cancelled = any(r.check(CancelledError) for r in e.reasons)
            error = "timed out" if cancelled else f"ResponseNeverReceived: {e}"[:500]
        except Exception as e:  # any transport failure is a failed attempt, retried
            error = f"{type(e).__name__}: {e}"[:500]
        if status is not None and not 200 <= status < 300:
            error = error or f"HTTP {status}"
        await self._outcome(item, status=status, error=error if status is None or status >= 300 else None)

    async def _outcome(
        self, item: ClaimedDelivery, *, status: int | None, error: str | None, permanent: bool = False
    ) -> None:
        delivery = item.delivery
        now = self._clock.seconds()
        if error is None and status is not None and 200 <= status < 300:
            await self._store.record_attempt(
                delivery.id, delivered=True, status=status, error=None, retry_at=None
            )
            _log.info(
                "webhook delivery {delivery_id} to {repository} delivered ({status}, attempt {attempt})",
                delivery_id=delivery.id,
                repository=delivery.repository,
                status=status,
                attempt=delivery.attempts + 1,
            )
            return
        backoff = min(
            self._settings.max_backoff, self._settings.initial_backoff * 2 ** min(delivery.attempts, 62)
        )
        retry_at = now + backoff * (0.5 + self._rng())
        if permanent or retry_at - delivery.created_at > self._settings.max_age:
            await self._store.record_attempt(
                delivery.id, delivered=False, status=status, error=error, retry_at=None
            )
            _log.warn(
                "webhook delivery {delivery_id} to {repository} failed for good "
                "after {attempts} attempts: {error}",
                delivery_id=delivery.id,
                repository=delivery.repository,
                attempts=delivery.attempts + 1,
                error=error,
            )
            return
        await self._store.record_attempt(
            delivery.id, delivered=False, status=status, error=error, retry_at=retry_at
        )
        _log.info(
            "webhook delivery {delivery_id} attempt {attempt} failed ({error}); retrying in {delay:.1f}s",
            delivery_id=delivery.id,
            attempt=delivery.attempts + 1,
            error=error,
            delay=retry_at - now,
        )
