"""
Webhook metadata: targets, the push outbox, and deliveries. Each method is one
transaction; the queue is the database, so nothing is lost on restart.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from quayd.db.interfaces import IDatabase, Row, Transaction
from quayd.db.sql import set_clause
from quayd.errors import JSONValue
from quayd.webhooks.events import PushRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    """A push webhook of a repository (its secret is fetched separately)."""

    id: str
    repository: str
    url: str
    description: str
    has_secret: bool
    managed: bool
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One event for one webhook, with its delivery state."""

    id: str
    webhook: str
    repository: str
    event: str
    payload: str
    state: str
    attempts: int
    next_attempt_at: float
    last_status: int | None
    last_error: str | None
    created_at: float
    finished_at: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedDelivery:
    """A due delivery claimed by one dispatcher, with where and how to send it."""

    delivery: Delivery
    url: str
    secret_ciphertext: str | None


def _webhook(row: Row) -> Webhook:
    return Webhook(
        id=row[0],
        repository=row[1],
        url=row[2],
        description=row[3],
        has_secret=row[4] is not None,
        managed=bool(row[5]),
        created_at=float(row[6]),
    )


def _delivery(row: Row) -> Delivery:
    return Delivery(
        id=row[0],
        webhook=row[1],
        repository=row[2],
        event=row[3],
        payload=row[4],
        state=row[5],
        attempts=int(row[6]),
        next_attempt_at=float(row[7]),
        last_status=None if row[8] is None else int(row[8]),
        last_error=row[9],
        created_at=float(row[10]),
        finished_at=None if row[11] is None else float(row[11]),
    )


_WEBHOOK = "id, repository, url, description, secret_ciphertext, managed, created_at"
_DELIVERY = (
    "id, webhook, repository, event, payload, state, attempts, next_attempt_at, last_status, "
    "last_error, created_at, finished_at"
)

_DELIVERY_QUALIFIED = ", ".join("d." + c.strip() for c in _DELIVERY.split(","))

#: Builds the payload of one coalesced push: (repository, visibility, records) -> JSON.
PayloadBuilder = Callable[[str, str, list[PushRecord]], dict[str, JSONValue]]


class WebhookStore:
    """Webhooks and their delivery queue over an L{IDatabase}."""

    def __init__(self, database: IDatabase, clock: IReactorTime) -> None:
        self._db = database
        self._clock = clock

    async def create_webhook(
        self,
        repository: str,
        url: str,
        description: str = "",
        secret_ciphertext: str | None = None,
        managed: bool = False,
    ) -> Webhook:
        """
        Add a webhook to a repository.

        @raise quayd.errors.Conflict: If the repository does not exist.
        """
        rows = await self._db.execute(
            f"INSERT INTO webhook ({_WEBHOOK}) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {_WEBHOOK}",
            (
                uuid.uuid4().hex,
                repository,
                url,
                description,
                secret_ciphertext,
                int(managed),
                self._clock.seconds(),
            ),
        )
        return _webhook(rows[0])

    async def list_webhooks(self, repository: str | None = None) -> list[Webhook]:
        """Webhooks of one repository, or all."""
        if repository is None:
            rows = await self._db.execute(f"SELECT {_WEBHOOK} FROM webhook ORDER BY repository, created_at")
        else:
            rows = await self._db.execute(
                f"SELECT {_WEBHOOK} FROM webhook WHERE repository = ? ORDER BY created_at, id", (repository,)
            )
        return [_webhook(r) for r in rows]

    async def get_webhook(self, webhook_id: str) -> tuple[Webhook, str | None] | None:
        """A webhook with its encrypted secret."""
        rows = await self._db.execute(f"SELECT {_WEBHOOK} FROM webhook WHERE id = ?", (webhook_id,))
        return (_webhook(rows[0]), rows[0][4]) if rows else None

    async def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        description: str | None = None,
        managed: bool | None = None,
    ) -> bool:
        """Change a webhook's URL, description or managed flag."""
        sets, args = set_clause(url=url, description=description, managed=managed)
        if not sets:
            return await self.get_webhook(webhook_id) is not None
        rows = await self._db.execute(
            f"UPDATE webhook SET {sets} WHERE id = ? RETURNING id", (*args, webhook_id)
        )
        return bool(rows)

    async def delete_webhook(self, webhook_id: str) -> bool:
        """Remove a webhook and its deliveries."""
        rows = await self._db.execute("DELETE FROM webhook WHERE id = ? RETURNING id", (webhook_id,))
        return bool(rows)

    async def coalesce(self, quiet: float, build: PayloadBuilder) -> int:
        """
        Turn outbox rows into deliveries: the rows of one repository and
        principal form one push event once no row was added for C{quiet}
        seconds; the event gets one delivery per webhook of the repository.

        @return: How many deliveries were created.
        """
        now = self._clock.seconds()

        async def body(txn: Transaction) -> int:
            groups = await txn.execute(
                "SELECT repository, principal FROM push_outbox GROUP BY repository, principal "
                "HAVING max(created_at) <= ?",
                (now - quiet,),
            )
            created = 0
            for repository, principal in groups:
                # DELETE ... RETURNING takes the rows: of two processes coalescing
                # at once, the second gets nothing once the first commits.
                rows = await txn.execute(
                    "DELETE FROM push_outbox WHERE repository = ? AND principal = ? "
                    "RETURNING id, manifest_digest, tag, image_id, visibility",
                    (repository, principal),
                )
                if not rows:
                    continue
                rows.sort(key=lambda r: int(r[0]))
                records = [PushRecord(manifest_digest=r[1], tag=r[2], image_id=r[3]) for r in rows]
                if not any(r.tag is not None for r in records):
                    continue
                payload = json.dumps(build(repository, rows[-1][4], records), separators=(",", ":"))
                hooks = await txn.execute("SELECT id FROM webhook WHERE repository = ?", (repository,))
                for (hook,) in hooks:
                    await _insert_delivery(txn, hook, repository, "push", payload, now)
                    created += 1
            return created

        return await self._db.run_interaction(body)

    async def enqueue(self, webhook_id: str, repository: str, event: str, payload: str) -> Delivery:
        """Queue one event for one webhook (test events, redeliveries)."""

        async def body(txn: Transaction) -> Delivery:
            return await _insert_delivery(txn, webhook_id, repository, event, payload, self._clock.seconds())

        return await self._db.run_interaction(body)

    async def claim_due(self, limit: int, lease: float) -> list[ClaimedDelivery]:
        """
        Claim up to C{limit} due deliveries for C{lease} seconds, so that no
        other dispatcher sends them meanwhile.
        """
        now = self._clock.seconds()
        # PostgreSQL: rows another dispatcher is claiming right now are skipped, not
        # waited for. SQLite has one writer at a time, so there is nothing to skip.
        skip_locked = " FOR UPDATE OF d SKIP LOCKED" if self._db.dialect == "postgresql" else ""

        async def body(txn: Transaction) -> list[ClaimedDelivery]:
            rows = await txn.execute(
                f"SELECT {_DELIVERY_QUALIFIED}, w.url, w.secret_ciphertext "
                "FROM delivery d JOIN webhook w ON w.id = d.webhook "
                "WHERE d.state = 'pending' AND d.next_attempt_at <= ? AND d.claimed_until <= ? "
                f"ORDER BY d.next_attempt_at LIMIT ?{skip_locked}",
                (now, now, limit),
            )
            claimed = []
            for row in rows:
                # Conditional as well: a claim whose lease ran out meanwhile is not taken twice.
                won = await txn.execute(
                    "UPDATE delivery SET claimed_until = ? WHERE id = ? AND claimed_until <= ? RETURNING id",
                    (now + lease, row[0], now),
                )
                if not won:
                    continue
                claimed.append(
                    ClaimedDelivery(delivery=_delivery(row[:12]), url=row[12], secret_ciphertext=row[13])
                )
            return claimed

        return await self._db.run_interaction(body)

    async def next_due(self) -> float | None:
        """When the earliest pending delivery is due (reactor seconds), if any."""
        rows = await self._db.execute(
            "SELECT min(CASE WHEN next_attempt_at > claimed_until THEN next_attempt_at "
            "ELSE claimed_until END) FROM delivery WHERE state = 'pending'"
        )
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def next_outbox_ready(self, quiet: float) -> float | None:
        """When the earliest outbox group will have been quiet for C{quiet} seconds, if any."""
        rows = await self._db.execute(
            "SELECT min(last_at) FROM (SELECT max(created_at) AS last_at FROM push_outbox "
            "GROUP BY repository, principal) AS outbox_groups"
        )
        return None if not rows or rows[0][0] is None else float(rows[0][0]) + quiet

    async def record_attempt(
        self,
        delivery_id: str,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        retry_at: float | None,
    ) -> None:
        """
        Record one attempt: delivered, to be retried at C{retry_at}, or (with
        C{retry_at} C{None} and not delivered) failed for good.
        """
        now = self._clock.seconds()
        if delivered:
            state, next_at, finished = "delivered", now, now
        elif retry_at is not None:
            state, next_at, finished = "pending", retry_at, None
        else:
            state, next_at, finished = "failed", now, now
        await self._db.execute(
            "UPDATE delivery SET state = ?, attempts = attempts + 1, next_attempt_at = ?, claimed_until = 0, "
            "last_status = ?, last_error = ?, finished_at = ? WHERE id = ?",
            (state, next_at, status, error, finished, delivery_id),
        )

    async def list_deliveries(self, webhook_id: str, limit: int = 50) -> list[Delivery]:
        """Recent deliveries of a webhook, newest first."""
        rows = await self._db.execute(
            f"SELECT {_DELIVERY} FROM delivery WHERE webhook = ? ORDER BY created_at DESC, id LIMIT ?",
            (webhook_id, limit),
        )
        return [_delivery(r) for r in rows]

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery."""
        rows = await self._db.execute(f"SELECT {_DELIVERY} FROM delivery WHERE id = ?", (delivery_id,))
        return _delivery(rows[0]) if rows else None

    async def redeliver(self, delivery_id: str) -> Delivery | None:
        """Queue a new delivery with the same payload; C{None} if there is no such delivery."""
        original = await self.get_delivery(delivery_id)
        if original is None:
            return None
        return await self.enqueue(original.webhook, original.repository, original.event, original.payload)


async def _insert_delivery(
    txn: Transaction, webhook_id: str, repository: str, event: str, payload: str, now: float
) -> Delivery:
    rows = await txn.execute(
        f"INSERT INTO delivery (id, webhook, repository, event, payload, state, next_attempt_at, created_at) "
        f"VALUES (?, ?, ?, ?, ?, 'pending', ?, ?) RETURNING {_DELIVERY}",
        (uuid.uuid4().hex, webhook_id, repository, event, payload, now, now),
    )
    return _delivery(rows[0])
