"""
Tests for the push webhooks that the configuration declares under its
repositories: validated at load, then created, kept, changed, taken over and
removed by L{quayd.admin.reconcile.Reconciler}, over real SQLite stores in
C{tmp_path} with blocking work run synchronously.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
from cryptography.fernet import Fernet
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import implementer

from quayd.admin.reconcile import (
    AUDIT_ACTOR,
    MAX_WEBHOOK_SECRET_BYTES,
    Reconciler,
    ReconcileReport,
    SecretFileError,
    read_webhook_secret_file,
)
from quayd.auth.keys import SecretBox
from quayd.blocking import run_synchronously
from quayd.config import ConfigError, RepositoryWebhookConfig, load_config, parse_config
from quayd.db.identity import IdentityStore
from quayd.db.sqlite import SQLiteDatabase
from quayd.db.webhooks import Webhook, WebhookStore
from tests.support.databases import open_sqlite

Document = dict[str, object]

REPO = "alice/app"
CI_URL = "https://ci.example.com/hooks/quayd"
CHAT_URL = "https://chat.example.com/hook?token=abc"
SECRET = "first shared secret"


@implementer(ILogObserver)
class LogCapture:
    """Collects the events logged while a test runs."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        """Keep C{event}."""
        self.events.append(event)

    def text(self) -> str:
        """Every event, formatted, with its fields, for searching for secrets."""
        return "\n".join(
            f"{formatEvent(e)} {sorted((k, repr(v)) for k, v in e.items())}" for e in self.events
        )


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """Capture the global log while a test runs."""
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    try:
        yield capture
    finally:
        globalLogPublisher.removeObserver(capture)


@dataclass(kw_only=True)
class Harness:
    """A reconciler with a webhook store, over real SQLite stores."""

    database: SQLiteDatabase
    identity: IdentityStore
    webhooks: WebhookStore
    secrets: SecretBox
    reconciler: Reconciler
    clock: Clock
    directory: Path

    async def apply(self, document: Document) -> ReconcileReport:
        """Validate C{document} and apply what it declares."""
        return await self.reconciler.apply(parse_config(document, source="<test>").declared)

    def secret_file(self, name: str, content: str) -> str:
        """Write a secret file and return its path."""
        path = self.directory / name
        path.write_text(content)
        return str(path)

    async def hooks(self, repository: str = REPO) -> dict[str, Webhook]:
        """The repository's webhooks by URL."""
        return {w.url: w for w in await self.webhooks.list_webhooks(repository)}

    async def secret_of(self, webhook: Webhook) -> str | None:
        """A webhook's secret, decrypted."""
        found = await self.webhooks.get_webhook(webhook.id)
        assert found is not None
        return None if found[1] is None else self.secrets.decrypt(found[1])

    async def audit(self) -> list[tuple[str, str, dict[str, object]]]:
        """The webhook entries of the audit log, oldest first: (action, target, detail)."""
        entries = reversed(await self.identity.audit_log(10000))
        return [(e.action, e.target, e.detail) for e in entries if e.action.startswith("webhook.")]


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """A started reconciler with a webhook store, over SQLite in C{tmp_path}."""
    database = await open_sqlite(tmp_path / "quayd.sqlite")
    clock = Clock()
    identity = IdentityStore(database, clock)
    webhooks = WebhookStore(database, clock)
    secrets = SecretBox(Fernet.generate_key())
    reconciler = Reconciler(
        identity, secrets, run_synchronously, load_config, tmp_path / "quayd.yaml", webhooks=webhooks
    )
    reconciler.startService()
    try:
        yield Harness(
            database=database,
            identity=identity,
            webhooks=webhooks,
            secrets=secrets,
            reconciler=reconciler,
            clock=clock,
            directory=tmp_path,
        )
    finally:
        try:
            await reconciler.stopService()
        finally:
            await database.close()


def document(*webhooks: dict[str, object], repositories: list[Document] | None = None) -> Document:
    """A configuration declaring the user alice and her repository L{REPO} with C{webhooks}."""
    return {
        "users": [{"name": "alice"}],
        "repositories": repositories
        if repositories is not None
        else [{"name": REPO, "webhooks": list(webhooks)}],
    }


def ci_hook(harness: Harness, secret: str = SECRET, **extra: object) -> dict[str, object]:
    """The declared CI webhook, with a secret file holding C{secret}."""
    return {
        "url": CI_URL,
        "description": "CI",
        "secret_file": harness.secret_file("ci.secret", secret + "\n"),
    } | extra


# Loading


@pytest.mark.parametrize(
    ("webhooks", "key_path", "needle"),
    [
        ([{"url": "ftp://example.com/"}], "repositories[0].webhooks[0].url", "http or https"),
        ([{"url": "https://u:p@example.com/"}], "repositories[0].webhooks[0].url", "credentials"),
        ([{"url": ""}], "repositories[0].webhooks[0].url", "must not be empty"),
        ([{"description": "no URL"}], "repositories[0].webhooks[0].url", "required"),
        ([{"url": CI_URL}, {"url": CI_URL}], "repositories[0].webhooks[1].url", "identifies the webhook"),
        ([{"url": CI_URL, "secret": "inline"}], "repositories[0].webhooks[0].secret", "unknown key"),
        ([{"url": CI_URL, "description": 5}], "repositories[0].webhooks[0].description", "expected a string"),
        ([{"url": CI_URL, "description": "x" * 1001}], "repositories[0].webhooks[0].description", "1000"),
        (
            [{"url": CI_URL, "secret_file": ""}],
            "repositories[0].webhooks[0].secret_file",
            "must not be empty",
        ),
        ({"url": CI_URL}, "repositories[0].webhooks", "list"),
    ],
)
def test_reconcile_webhooks_invalid_declarations_rejected_at_load(
    webhooks: object, key_path: str, needle: str
) -> None:
    """Bad URLs, duplicates, inline secrets and wrong types are rejected when the file is loaded."""
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"users": [{"name": "alice"}], "repositories": [{"name": REPO, "webhooks": webhooks}]},
            source="<t>",
        )
    assert caught.value.key_path == key_path
    assert needle in caught.value.message


def test_reconcile_webhooks_declarations_parsed(tmp_path: Path) -> None:
    """A declared webhook keeps its URL and description; its secret file becomes an absolute path."""
    config = parse_config(
        document(
            {"url": CI_URL, "description": "CI", "secret_file": str(tmp_path / "s")},
            {"url": CHAT_URL, "secret_file": None},
        ),
        source="<t>",
    )
    (repository,) = config.repositories
    assert repository.webhooks == (
        RepositoryWebhookConfig(url=CI_URL, description="CI", secret_file=tmp_path / "s"),
        RepositoryWebhookConfig(url=CHAT_URL, description=None, secret_file=None),
    )
    with pytest.raises(ConfigError, match="http or https"):
        RepositoryWebhookConfig(url="gopher://example.com/")


def test_reconcile_webhooks_secret_file_read(tmp_path: Path) -> None:
    """A secret file holds one line (without its line ending); empty, multi-line, huge files are refused."""
    path = tmp_path / "secret"
    path.write_text("  spaced secret  \r\n")
    assert read_webhook_secret_file(path) == "  spaced secret  "
    for content, needle in (
        ("\n", "is empty"),
        ("one\ntwo\n", "on one line"),
        ("x" * (MAX_WEBHOOK_SECRET_BYTES + 1), "longer than"),
    ):
        path.write_text(content)
        with pytest.raises(SecretFileError, match=needle):
            read_webhook_secret_file(path)
    with pytest.raises(SecretFileError, match="cannot read secret_file"):
        read_webhook_secret_file(tmp_path / "missing")


# Applying


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_webhooks_created(harness: Harness, logs: LogCapture) -> None:
    """Declared webhooks are created managed; the secret file's secret is stored encrypted, never logged."""
    report = await harness.apply(document(ci_hook(harness), {"url": CHAT_URL}))
    assert report.created == (
        "user alice",
        f"repository {REPO}",
        f"webhook {CI_URL} of {REPO}",
        f"webhook https://chat.example.com/hook?... of {REPO}",
    )
    assert report.skipped == ()
    hooks = await harness.hooks()
    ci, chat = hooks[CI_URL], hooks[CHAT_URL]
    assert (ci.description, ci.managed, ci.has_secret) == ("CI", True, True)
    assert (chat.description, chat.managed, chat.has_secret) == ("", True, False)
    assert await harness.secret_of(ci) == SECRET
    assert await harness.secret_of(chat) is None
    assert await harness.audit() == [
        ("webhook.create", REPO, {"id": ci.id, "url": CI_URL, "description": "CI", "has_secret": True}),
        ("webhook.create", REPO, {"id": chat.id, "url": CHAT_URL, "description": "", "has_secret": False}),
    ]
    entry = (await harness.identity.audit_log(1))[0]
    assert entry.actor == AUDIT_ACTOR
    assert SECRET not in logs.text()
    assert "token=abc" not in logs.text()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_webhooks_idempotent(harness: Harness) -> None:
    """Applying the same declarations again changes nothing: same ids, no audit entries."""
    declared = document(ci_hook(harness), {"url": CHAT_URL, "description": "chat"})
    await harness.apply(declared)
    before = await harness.hooks()
    audited = len(await harness.identity.audit_log(10000))
    harness.clock.advance(60)
    report = await harness.apply(declared)
    assert report == ReconcileReport()
    assert await harness.hooks() == before
    assert len(await harness.identity.audit_log(10000)) == audited


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_webhooks_description_changed_in_place(harness: Harness) -> None:
    """A changed description updates the webhook in place; a description left out keeps the stored one."""
    await harness.apply(document(ci_hook(harness)))
    original = (await harness.hooks())[CI_URL]
    report = await harness.apply(document(ci_hook(harness, description="CI builds")))
    assert report.updated == (f"webhook {CI_URL} of {REPO}",)
    changed = (await harness.hooks())[CI_URL]
    assert (changed.id, changed.description, changed.has_secret) == (original.id, "CI builds", True)
    assert (await harness.audit())[-1] == (
        "webhook.update",
        REPO,
        {"changed": ["description"], "id": original.id, "description": "CI builds"},
    )
    report = await harness.apply(document({"url": CI_URL}))
    assert report == ReconcileReport()
    kept = (await harness.hooks())[CI_URL]
    assert (kept.id, kept.description, await harness.secret_of(kept)) == (original.id, "CI builds", SECRET)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_webhooks_secret_changed_replaces_and_keeps_pending(
    harness: Harness, logs: LogCapture
) -> None:
    """A new secret replaces the webhook (new id); pending deliveries move over, finished ones go."""
    await harness.apply(document(ci_hook(harness)))
    old = (await harness.hooks())[CI_URL]
    done = await harness.webhooks.enqueue(old.id, REPO, "push", json.dumps({"n": 1}))
    await harness.webhooks.record_attempt(done.id, delivered=True, status=200, error=None, retry_at=None)
    harness.clock.advance(1)
    await harness.webhooks.enqueue(old.id, REPO, "push", json.dumps({"n": 2}))
    harness.clock.advance(1)
    await harness.webhooks.enqueue(old.id, REPO, "test", json.dumps({"n": 3}))
    harness.clock.advance(1)

    report = await harness.apply(document(ci_hook(harness, secret="rotated secret")))
    assert report.updated == (f"webhook {CI_URL} of {REPO}",)
    new = (await harness.hooks())[CI_URL]
    assert new.id != old.id
    assert (new.description, new.managed, await harness.secret_of(new)) == ("CI", True, "rotated secret")
    assert await harness.webhooks.get_webhook(old.id) is None
    moved = await harness.webhooks.list_deliveries(new.id)
    assert sorted((d.event, d.payload, d.state) for d in moved) == [
        ("push", '{"n": 2}', "pending"),
        ("test", '{"n": 3}', "pending"),
    ]
    assert (await harness.audit())[-1] == (
        "webhook.update",
        REPO,
        {"changed": ["secret"], "id": new.id, "replaces": old.id, "moved_deliveries": 2},
    )
    assert "rotated secret" not in logs.text() and SECRET not in logs.text()
    assert await harness.apply(document(ci_hook(harness, secret="rotated secret"))) == ReconcileReport()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_webhooks_api_webhook_taken_over(harness: Harness) -> None:
    """An API-created webhook with a declared URL is taken over (managed, same id); others stay."""
    await harness.apply(document())
    taken = await harness.webhooks.create_webhook(REPO, CI_URL, "from the API")
    other = await harness.webhooks.create_webhook(REPO, CHAT_URL, "API only")
    report = await harness.apply(document({"url": CI_URL}))
    assert report.updated == (f"webhook {CI_URL} of {REPO}",)
    hooks = await harness.hooks()
    assert (hooks[CI_URL].id, hooks[CI_URL].managed, hooks[CI_URL].description) == (
        taken.id,
        True,
        "from the API",
    )
    assert hooks[CHAT_URL] == other
    assert (await harness.audit())[-1] == ("webhook.update", REPO, {"changed": ["managed"], "id": taken.id})


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_webhooks_removed_only_if_managed(harness: Harness) -> None:
    """A webhook no longer declared is removed if managed; one created over the API stays."""
    await harness.apply(document(ci_hook(harness), {"url": CHAT_URL}))
    declared_ci = (await harness.hooks())[CI_URL]
    api_hook = await harness.webhooks.create_webhook(REPO, "https://api.example.com/hook", "API")
    await harness.webhooks.enqueue(declared_ci.id, REPO, "push", "{}")
    report = await harness.apply(document({"url": CHAT_URL}))
    assert report.removed == (f"webhook {CI_URL} of {REPO}",)
    assert set(await harness.hooks()) == {CHAT_URL, api_hook.url}
    assert await harness.webhooks.list_deliveries(declared_ci.id) == []
    assert (await harness.audit())[-1] == ("webhook.delete", REPO, {"id": declared_ci.id, "url": CI_URL})

    report = await harness.apply(document())
    assert report.removed == (f"webhook https://chat.example.com/hook?... of {REPO}",)
    assert set(await harness.hooks()) == {api_hook.url}


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_webhooks_removed_with_repository(harness: Harness) -> None:
    """A managed repository no longer declared is removed with its webhooks."""
    await harness.apply(document(ci_hook(harness)))
    report = await harness.apply(document(repositories=[]))
    assert report.removed == (f"repository {REPO}",)
    assert await harness.webhooks.list_webhooks() == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_webhooks_managed_duplicate_removed(harness: Harness) -> None:
    """Of two managed webhooks with a declared URL, the oldest is kept and the other removed."""
    await harness.apply(document({"url": CI_URL}))
    kept = (await harness.hooks())[CI_URL]
    harness.clock.advance(1)
    duplicate = await harness.webhooks.create_webhook(REPO, CI_URL, "", None, managed=True)
    report = await harness.apply(document({"url": CI_URL}))
    assert report.removed == (f"webhook {CI_URL} of {REPO}",)
    assert [w.id for w in await harness.webhooks.list_webhooks(REPO)] == [kept.id]
    assert duplicate.id != kept.id


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_webhooks_unreadable_secret_skipped(harness: Harness, logs: LogCapture) -> None:
    """A webhook whose secret file cannot be read is skipped (and reported); the rest is applied."""
    missing = str(harness.directory / "missing.secret")
    report = await harness.apply(
        document({"url": CI_URL, "secret_file": missing}, {"url": CHAT_URL, "description": "chat"})
    )
    assert report.skipped == (
        f"webhook {CI_URL} of {REPO}: cannot read secret_file {missing}: No such file or directory",
    )
    assert set(await harness.hooks()) == {CHAT_URL}
    harness.secret_file("missing.secret", "now there\n")
    report = await harness.apply(
        document({"url": CI_URL, "secret_file": missing}, {"url": CHAT_URL, "description": "chat"})
    )
    assert report.created == (f"webhook {CI_URL} of {REPO}",)
    assert await harness.secret_of((await harness.hooks())[CI_URL]) == "now there"
    assert "now there" not in logs.text()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_webhooks_without_store_skipped(harness: Harness) -> None:
    """Without a webhook store, everything else is applied and declared webhooks are reported skipped."""
    reconciler = Reconciler(
        harness.identity, harness.secrets, run_synchronously, load_config, harness.directory / "quayd.yaml"
    )
    declared = parse_config(document({"url": CI_URL}), source="<test>").declared
    report = await reconciler.apply(declared)
    assert f"repository {REPO}" in report.created
    assert report.skipped == (
        f"webhook {CI_URL} of {REPO}: push webhooks are not available to the reconciler",
    )
    assert await harness.webhooks.list_webhooks() == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_webhooks_applied_on_reload(harness: Harness) -> None:
    """A reload (SIGHUP) reads the file again and applies its webhooks."""
    config_path = harness.directory / "quayd.yaml"
    data_dir = harness.directory / "data"
    base: Document = {"data_dir": str(data_dir), **document()}
    config_path.write_text(json.dumps(base))
    assert await harness.reconciler.reload() is not None
    assert await harness.webhooks.list_webhooks() == []
    config_path.write_text(json.dumps({"data_dir": str(data_dir), **document(ci_hook(harness))}))
    report = await harness.reconciler.reload()
    assert report is not None and report.created == (f"webhook {CI_URL} of {REPO}",)
    assert (await harness.hooks())[CI_URL].managed
