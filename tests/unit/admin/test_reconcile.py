"""
Tests for L{quayd.admin.reconcile}: applying the configuration's declared users,
organizations, teams, robots, repositories, permissions and tokens to a real SQLite
L{IdentityStore} in C{tmp_path}, with blocking work run synchronously.
"""

from __future__ import annotations

import copy
import functools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import pytest_twisted
import yaml
from cryptography.fernet import Fernet
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from zope.interface import implementer

import quayd.cli
from quayd.admin.reconcile import (
    AUDIT_ACTOR,
    Reconciler,
    ReconcileReport,
    SecretFileError,
    read_password_file,
    read_token_file,
)
from quayd.auth.keys import SecretBox
from quayd.auth.policy import Credentials, Principal
from quayd.auth.throttle import LoginThrottle
from quayd.blocking import run_synchronously
from quayd.config import Config, DeclaredObjects, load_config, parse_config
from quayd.db.identity import IdentityStore
from quayd.db.sqlite import SQLiteDatabase
from quayd.errors import Unauthorized
from tests.support.databases import open_sqlite

Document = dict[str, object]


@functools.cache
def bcrypt_hash(password: str) -> str:
    """
    Hash a password as C{htpasswd -nbB} would, with the lowest cost so that tests stay quick;
    the same password always gets the same hash, so that documents compare equal.
    """
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode("ascii")


def base_document() -> Document:
    """
    A configuration declaring a bit of everything: two users (one with a robot), an
    organization with owners, a team and a robot, and two repositories with permissions and a
    token.
    """
    return {
        "users": [
            {
                "name": "alice",
                "email": "alice@example.com",
                "password_hash": bcrypt_hash("alice-password"),
                "robots": [{"name": "ci", "description": "CI pushes"}],
            },
            {"name": "bob"},
        ],
        "organizations": [
            {
                "name": "acme",
                "teams": [
                    {"name": "owners", "members": ["alice"]},
                    {"name": "devs", "role": "creator", "description": "Developers", "members": ["bob"]},
                ],
                "robots": [{"name": "deploy"}],
            }
        ],
        "repositories": [
            {
                "name": "acme/app",
                "visibility": "private",
                "permissions": [
                    {"user": "bob", "role": "read"},
                    {"team": "devs", "role": "write"},
                    {"robot": "acme+deploy", "role": "write"},
                ],
                "tokens": [{"description": "ci pull", "role": "read"}],
            },
            {"name": "alice/tools", "visibility": "public"},
        ],
    }


def declared(document: Document) -> DeclaredObjects:
    """
    Validate a configuration document and return what it declares.
    """
    return parse_config(document, source="<test>").declared


def section(document: Document, key: str) -> list[dict[str, object]]:
    """
    One list section of a document, for editing it in place.
    """
    value = document[key]
    assert isinstance(value, list)
    return value


@implementer(ILogObserver)
class LogCapture:
    """
    Collects the events logged while a test runs.

    @ivar events: The events, in order.
    """

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        """Keep C{event}."""
        self.events.append(event)

    def texts(self, level: LogLevel | None = None) -> list[str]:
        """
        The formatted events, optionally only those of one level.
        """
        return [
            formatEvent(event) for event in self.events if level is None or event.get("log_level") is level
        ]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """
    Capture the global log while a test runs.
    """
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    try:
        yield capture
    finally:
        globalLogPublisher.removeObserver(capture)


@dataclass(kw_only=True)
class Harness:
    """
    A reconciler over a real SQLite identity store, and the credential checker of the daemon.
    """

    database: SQLiteDatabase
    identity: IdentityStore
    secrets: SecretBox
    reconciler: Reconciler
    credentials: Credentials
    config_path: Path
    directory: Path

    async def apply(self, document: Document) -> ReconcileReport:
        """Apply what C{document} declares."""
        return await self.reconciler.apply(declared(document))

    async def authenticate(self, username: str, secret: str) -> Principal | None:
        """
        Check credentials as the token endpoint does; C{None} if they are refused. Each attempt
        comes from a client of its own, so that throttling never interferes.
        """
        try:
            return await self.credentials.check(username, secret, f"client-{uuid.uuid4().hex}")
        except Unauthorized:
            return None

    def write_config(self, document: Document) -> None:
        """Write the configuration file the reconciler reloads."""
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))

    def secret_file(self, name: str, content: str) -> str:
        """Write a secret file and return its path."""
        path = self.directory / name
        path.write_text(content)
        return str(path)

    async def robot_token(self, namespace: str, name: str) -> str:
        """A robot's token, decrypted."""
        ciphertext = await self.identity.robot_token_ciphertext(namespace, name)
        assert ciphertext is not None
        return self.secrets.decrypt(ciphertext)

    async def repository_token(self, repository: str, description: str) -> tuple[str, str]:
        """The id and the decrypted secret of a repository token."""
        for token in await self.identity.list_repository_tokens(repository):
            if token.description == description:
                found = await self.identity.get_repository_token(token.id)
                assert found is not None
                return token.id, self.secrets.decrypt(found[1])
        raise AssertionError(f"no token {description!r} on {repository}")

    async def audit_count(self) -> int:
        """How many audit entries exist."""
        return len(await self.identity.audit_log(limit=10000))


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    """
    A started reconciler over SQLite in C{tmp_path}; bcrypt uses its lowest cost.
    """
    monkeypatch.setattr(quayd.cli, "BCRYPT_ROUNDS", 4)
    database = await open_sqlite(tmp_path / "quayd.sqlite")
    clock = Clock()
    identity = IdentityStore(database, clock)
    secrets = SecretBox(Fernet.generate_key())
    config_path = tmp_path / "quayd.yaml"
    reconciler = Reconciler(identity, secrets, run_synchronously, load_config, config_path)
    credentials = Credentials(identity, secrets, run_synchronously, LoginThrottle(clock), frozenset())
    reconciler.startService()
    try:
        yield Harness(
            database=database,
            identity=identity,
            secrets=secrets,
            reconciler=reconciler,
            credentials=credentials,
            config_path=config_path,
            directory=tmp_path,
        )
    finally:
        try:
            await reconciler.stopService()
        finally:
            await database.close()


# Creating from an empty database


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_creates_declared_objects_from_empty(harness: Harness) -> None:
    """Every declared object is created, marked managed, with the declared attributes."""
    report = await harness.apply(base_document())
    identity = harness.identity
    assert report.created == (
        "user alice",
        "user bob",
        "organization acme",
        "robot alice+ci",
        "robot acme+deploy",
        "team acme/devs",
        "repository acme/app",
        "permission of user bob on acme/app",
        "permission of team acme/devs on acme/app",
        "permission of robot acme+deploy on acme/app",
        "token 'ci pull' of acme/app",
        "repository alice/tools",
    )
    assert report.updated == ("team acme/owners",)
    assert report.removed == ()
    assert report.skipped == ()
    alice = await identity.get_account("alice")
    assert alice is not None
    assert (alice.kind, alice.email, alice.managed) == ("user", "alice@example.com", True)
    bob = await identity.get_account("bob")
    assert bob is not None and bob.managed and bob.email is None
    assert await identity.password_hash("bob") is None
    acme = await identity.get_account("acme")
    assert acme is not None and acme.kind == "org" and acme.managed
    teams = {team.name: team for team in await identity.list_teams("acme")}
    assert (teams["owners"].role, teams["owners"].members) == ("admin", ("alice",))
    devs = teams["devs"]
    assert (devs.role, devs.description, devs.members, devs.managed) == (
        "creator",
        "Developers",
        ("bob",),
        True,
    )
    robot = await identity.get_robot("alice", "ci")
    assert robot is not None and robot.description == "CI pushes" and robot.managed
    app = await identity.get_repository("acme/app")
    tools = await identity.get_repository("alice/tools")
    assert app is not None and (app.visibility, app.managed) == ("private", True)
    assert tools is not None and tools.visibility == "public"
    permissions = {
        (p.kind, p.subject): (p.role, p.managed) for p in await identity.list_permissions("acme/app")
    }
    assert permissions == {
        ("user", "bob"): ("read", True),
        ("team", "acme/devs"): ("write", True),
        ("robot", "acme+deploy"): ("write", True),
    }
    (token,) = await identity.list_repository_tokens("acme/app")
    assert (token.description, token.role, token.managed) == ("ci pull", "read", True)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_second_run_changes_nothing(harness: Harness) -> None:
    """Applying the same configuration again changes nothing and writes no audit entry."""
    await harness.apply(base_document())
    robot_token = await harness.robot_token("acme", "deploy")
    token_id, token_secret = await harness.repository_token("acme/app", "ci pull")
    entries = await harness.audit_count()
    report = await harness.apply(base_document())
    assert report == ReconcileReport()
    assert not report.changed
    assert await harness.audit_count() == entries
    assert await harness.robot_token("acme", "deploy") == robot_token
    assert await harness.repository_token("acme/app", "ci pull") == (token_id, token_secret)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_audits_every_change_as_config(harness: Harness) -> None:
    """Each change is audited with the actor C{config} and the configuration file as client."""
    report = await harness.apply(base_document())
    entries = await harness.identity.audit_log(limit=1000)
    assert len(entries) >= len(report.created) + len(report.updated)
    assert {entry.actor for entry in entries} == {AUDIT_ACTOR}
    assert {entry.client for entry in entries} == {str(harness.config_path)}
    actions = {(entry.action, entry.target) for entry in entries}
    assert ("user.create", "alice") in actions
    assert ("org.create", "acme") in actions
    assert ("team.create", "acme/devs") in actions
    assert ("robot.create", "acme+deploy") in actions
    assert ("repository.create", "acme/app") in actions
    assert ("permission.set", "acme/app") in actions
    assert ("token.create", "acme/app") in actions
    secret = await harness.robot_token("acme", "deploy")
    _, token = await harness.repository_token("acme/app", "ci pull")
    for entry in entries:
        assert secret not in str(entry.detail) and token not in str(entry.detail)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_logs_each_object_once_without_secrets(harness: Harness, logs: LogCapture) -> None:
    """Every created object is logged once at info; no token or password reaches the log."""
    report = await harness.apply(base_document())
    infos = logs.texts(LogLevel.info)
    for what in report.created:
        assert sum(f"created {what} declared in" in text for text in infos) == 1, what
    everything = "\n".join(logs.texts())
    assert await harness.robot_token("acme", "deploy") not in everything
    assert (await harness.repository_token("acme/app", "ci pull"))[1] not in everything
    assert "alice-password" not in everything


# Authentication with what the configuration declares


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_declared_credentials_authenticate(harness: Harness) -> None:
    """
    The declared password hash, a generated robot token (decrypted, as the admin API shows it)
    and a generated repository token all authenticate through L{Credentials}.
    """
    await harness.apply(base_document())
    user = await harness.authenticate("alice", "alice-password")
    assert user is not None and (user.kind, user.name) == ("user", "alice")
    assert await harness.authenticate("alice", "wrong") is None
    robot = await harness.authenticate("acme+deploy", await harness.robot_token("acme", "deploy"))
    assert robot is not None and (robot.kind, robot.name) == ("robot", "acme+deploy")
    token_id, secret = await harness.repository_token("acme/app", "ci pull")
    token = await harness.authenticate("$token", secret)
    assert token is not None
    assert (token.kind, token.name, token.repository, token.role) == ("token", token_id, "acme/app", "read")


# Bringing edits into line


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_brings_edits_into_line(harness: Harness) -> None:
    """
    Edited attributes (email, password hash, robot description, team role, description and
    members, visibility, permission and token roles) are brought into line.
    """
    await harness.apply(base_document())
    robot_token = await harness.robot_token("alice", "ci")
    edited = base_document()
    alice = section(edited, "users")[0]
    alice["email"] = "alice@acme.example"
    alice["password_hash"] = bcrypt_hash("new-password")
    alice["robots"] = [{"name": "ci", "description": "CI builds"}]
    devs = {"name": "devs", "role": "member", "description": "Everyone", "members": ["alice"]}
    section(edited, "organizations")[0]["teams"] = [{"name": "owners", "members": ["alice"]}, devs]
    app = section(edited, "repositories")[0]
    app["visibility"] = "public"
    app["permissions"] = [
        {"user": "bob", "role": "write"},
        {"team": "devs", "role": "write"},
        {"robot": "acme+deploy", "role": "write"},
    ]
    app["tokens"] = [{"description": "ci pull", "role": "write"}]
    report = await harness.apply(edited)
    assert report.created == () and report.removed == () and report.skipped == ()
    assert set(report.updated) == {
        "user alice",
        "robot alice+ci",
        "team acme/devs",
        "repository acme/app",
        "permission of user bob on acme/app",
        "token 'ci pull' of acme/app",
    }
    identity = harness.identity
    account = await identity.get_account("alice")
    assert account is not None and account.email == "alice@acme.example"
    assert await harness.authenticate("alice", "new-password") is not None
    assert await harness.authenticate("alice", "alice-password") is None
    robot = await identity.get_robot("alice", "ci")
    assert robot is not None and robot.description == "CI builds"
    assert await harness.robot_token("alice", "ci") == robot_token, "a generated token is kept"
    team = await identity.get_team("acme", "devs")
    assert team is not None and (team.role, team.description, team.members) == (
        "member",
        "Everyone",
        ("alice",),
    )
    repository = await identity.get_repository("acme/app")
    assert repository is not None and repository.visibility == "public"
    roles = {(p.kind, p.subject): p.role for p in await identity.list_permissions("acme/app")}
    assert roles[("user", "bob")] == "write"
    (token,) = await identity.list_repository_tokens("acme/app")
    assert token.role == "write"
    assert (await harness.apply(edited)) == ReconcileReport()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_omitted_optional_attributes_are_kept(harness: Harness) -> None:
    """Leaving out an email, a description or a password keeps the stored value."""
    await harness.apply(base_document())
    edited = base_document()
    alice = section(edited, "users")[0]
    del alice["email"], alice["password_hash"]
    alice["robots"] = [{"name": "ci"}]
    section(edited, "organizations")[0]["teams"] = [
        {"name": "owners", "members": ["alice"]},
        {"name": "devs", "role": "creator", "members": ["bob"]},
    ]
    assert await harness.apply(edited) == ReconcileReport()
    account = await harness.identity.get_account("alice")
    assert account is not None and account.email == "alice@example.com"
    assert await harness.authenticate("alice", "alice-password") is not None
    team = await harness.identity.get_team("acme", "devs")
    assert team is not None and team.description == "Developers"


# Removal


def reduced_document() -> Document:
    """
    The base document with most objects gone: only alice (without robots), acme (without
    teams or robots) and acme/app (without permissions or tokens) remain.
    """
    document = base_document()
    document["users"] = [{**section(document, "users")[0], "robots": []}]
    document["organizations"] = [{"name": "acme"}]
    document["repositories"] = [{"name": "acme/app"}]
    return document


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_removes_managed_objects_no_longer_declared(harness: Harness) -> None:
    """Managed objects that the configuration no longer declares are removed."""
    await harness.apply(base_document())
    report = await harness.apply(reduced_document())
    assert report.created == () and report.skipped == ()
    assert set(report.removed) == {
        "repository alice/tools",
        "permission of user bob on acme/app",
        "permission of team acme/devs on acme/app",
        "permission of robot acme+deploy on acme/app",
        "token 'ci pull' of acme/app",
        "team acme/devs",
        "robot alice+ci",
        "robot acme+deploy",
        "user bob",
    }
    identity = harness.identity
    assert await identity.get_account("bob") is None
    assert await identity.get_repository("alice/tools") is None
    assert await identity.list_permissions("acme/app") == []
    assert await identity.list_repository_tokens("acme/app") == []
    assert [team.name for team in await identity.list_teams("acme")] == ["owners"]
    assert await identity.list_robots("alice") == [] and await identity.list_robots("acme") == []
    owners = await identity.get_team("acme", "owners")
    assert owners is not None and owners.members == ("alice",), "owners is never removed"
    entries = await identity.audit_log(limit=1000)
    assert ("user.delete", "bob") in {(entry.action, entry.target) for entry in entries}
    assert await harness.apply(reduced_document()) == ReconcileReport()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_removes_managed_organization(harness: Harness) -> None:
    """An organization the configuration created goes away with its teams and robots."""
    await harness.apply(base_document())
    document = base_document()
    document["organizations"] = []
    document["repositories"] = [{"name": "alice/tools", "visibility": "public"}]
    report = await harness.apply(document)
    assert "organization acme" in report.removed
    assert "repository acme/app" in report.removed
    assert report.skipped == ()
    assert await harness.identity.get_account("acme") is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_leaves_unmanaged_objects_alone(harness: Harness) -> None:
    """Objects created over the admin API are neither changed nor removed."""
    identity = harness.identity
    await identity.create_user("carol", "carol@example.com", bcrypt_hash("carol-password"))
    await identity.create_org("beta")
    await identity.create_team("beta", "ops", "member")
    await identity.add_team_member("beta", "ops", "carol")
    await identity.create_robot("beta", "bot", harness.secrets.encrypt("bot-token"))
    await identity.create_repository("beta/site", "public")
    await identity.set_permission("beta/site", "user", "carol", "write")
    await harness.apply(base_document())
    await identity.set_permission("acme/app", "user", "carol", "admin")
    await identity.create_repository_token(
        "manual",
        "acme/app",
        "by hand",
        "read",
        harness.secrets.lookup("hand-token"),
        harness.secrets.encrypt("x"),
    )
    await identity.create_repository("acme/pushed")
    report = await harness.apply(reduced_document())
    assert not any("carol" in what or "beta" in what for what in report.removed + report.updated)
    carol = await identity.get_account("carol")
    assert carol is not None and not carol.managed and carol.email == "carol@example.com"
    beta = await identity.get_account("beta")
    assert beta is not None and not beta.managed
    ops = await identity.get_team("beta", "ops")
    assert ops is not None and ops.members == ("carol",)
    assert await identity.get_robot("beta", "bot") is not None
    assert await identity.get_repository("beta/site") is not None
    assert await identity.get_repository("acme/pushed") is not None
    permissions = {
        (p.kind, p.subject): (p.role, p.managed) for p in await identity.list_permissions("acme/app")
    }
    assert permissions == {("user", "carol"): ("admin", False)}
    assert [token.id for token in await identity.list_repository_tokens("acme/app")] == ["manual"]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_keeps_managed_account_holding_unmanaged_objects(harness: Harness) -> None:
    """
    A managed user whose namespace holds a repository created over the API (or by a push) is
    kept, with the reason reported, until that repository is gone.
    """
    await harness.apply(base_document())
    await harness.identity.create_repository("bob/scratch")
    document = base_document()
    document["users"] = section(document, "users")[:1]
    section(document, "organizations")[0]["teams"] = [{"name": "owners", "members": ["alice"]}]
    section(document, "repositories")[0]["permissions"] = []
    report = await harness.apply(document)
    assert "user bob" not in report.removed
    assert len(report.skipped) == 1
    assert report.skipped[0].startswith(
        "user bob: no longer declared, but kept: it holds repository bob/scratch"
    )
    assert await harness.identity.get_account("bob") is not None
    await harness.identity.delete_repository("bob/scratch")
    report = await harness.apply(document)
    assert report.removed == ("user bob",)
    assert await harness.identity.get_account("bob") is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_managed_name_can_change_kind(harness: Harness) -> None:
    """A managed organization re-declared as a user is removed and the user created."""
    await harness.apply({"organizations": [{"name": "beta"}]})
    report = await harness.apply({"users": [{"name": "beta"}]})
    assert report.removed == ("organization beta",)
    assert report.created == ("user beta",)
    account = await harness.identity.get_account("beta")
    assert account is not None and account.kind == "user"


# Taking over objects created over the API


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_takes_over_unmanaged_objects(harness: Harness) -> None:
    """
    Declared objects that exist unmanaged are marked managed and brought into line (a robot's
    token and a repository token's id are kept); once taken over, removing them from the
    configuration removes them.
    """
    identity = harness.identity
    secrets = harness.secrets
    await identity.create_user("alice", "old@example.com", None)
    await identity.create_user("carol", None, None)
    await identity.create_org("acme")
    await identity.create_team("acme", "devs", "member", "old")
    await identity.add_team_member("acme", "devs", "carol")
    await identity.create_robot("acme", "deploy", secrets.encrypt("existing-robot-token"), "old")
    await identity.create_repository("acme/app", "public")
    await identity.create_repository_token(
        "api-token",
        "acme/app",
        "ci pull",
        "write",
        secrets.lookup("api-secret"),
        secrets.encrypt("api-secret"),
    )
    report = await harness.apply(base_document())
    assert {
        "user alice",
        "organization acme",
        "team acme/devs",
        "robot acme+deploy",
        "repository acme/app",
    } <= set(report.updated)
    assert "token 'ci pull' of acme/app" in report.updated
    assert report.skipped == ()
    alice = await identity.get_account("alice")
    assert alice is not None and alice.managed and alice.email == "alice@example.com"
    acme = await identity.get_account("acme")
    assert acme is not None and acme.managed
    devs = await identity.get_team("acme", "devs")
    assert devs is not None and devs.managed
    assert (devs.role, devs.description, devs.members) == ("creator", "Developers", ("bob",))
    robot = await identity.get_robot("acme", "deploy")
    assert robot is not None and robot.managed
    assert await harness.robot_token("acme", "deploy") == "existing-robot-token"
    repository = await identity.get_repository("acme/app")
    assert repository is not None and repository.managed and repository.visibility == "private"
    (token,) = await identity.list_repository_tokens("acme/app")
    assert (token.id, token.role, token.managed) == ("api-token", "read", True)
    assert await harness.apply(base_document()) == ReconcileReport()
    report = await harness.apply(reduced_document())
    assert {"team acme/devs", "robot acme+deploy", "token 'ci pull' of acme/app"} <= set(report.removed)
    carol = await identity.get_account("carol")
    assert carol is not None and not carol.managed, "only referenced, never declared: not taken over"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_takes_over_unmanaged_permission(harness: Harness) -> None:
    """A permission granted over the API that the configuration declares becomes managed."""
    await harness.identity.create_user("bob", None, None)
    await harness.identity.create_org("acme")
    await harness.identity.create_repository("acme/app")
    await harness.identity.set_permission("acme/app", "user", "bob", "read")
    document: Document = {
        "users": [{"name": "bob"}],
        "organizations": [{"name": "acme"}],
        "repositories": [{"name": "acme/app", "permissions": [{"user": "bob", "role": "read"}]}],
    }
    report = await harness.apply(document)
    assert "permission of user bob on acme/app" in report.updated
    (permission,) = await harness.identity.list_permissions("acme/app")
    assert permission.managed


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_declared_name_taken_by_other_kind_is_skipped(harness: Harness) -> None:
    """A declared user whose name is an organization created over the API is skipped."""
    await harness.identity.create_org("acme")
    report = await harness.apply({"users": [{"name": "acme"}, {"name": "bob"}]})
    assert report.created == ("user bob",)
    assert report.skipped == ("user acme: the name is taken by an organization that the admin API created",)
    account = await harness.identity.get_account("acme")
    assert account is not None and account.kind == "org" and not account.managed


# References checked when applying


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_missing_references_are_skipped(harness: Harness, logs: LogCapture) -> None:
    """
    A team member, a permission subject or a namespace that exists neither in the configuration
    nor in the database is logged and skipped; everything else is applied, and the skipped
    parts apply once the references exist.
    """
    document: Document = {
        "organizations": [{"name": "acme", "teams": [{"name": "devs", "members": ["nobody"]}]}],
        "repositories": [
            {
                "name": "acme/app",
                "permissions": [
                    {"user": "nobody", "role": "read"},
                    {"team": "ops", "role": "write"},
                    {"robot": "acme+ghost", "role": "read"},
                ],
            },
            {"name": "ghost/app"},
        ],
    }
    report = await harness.apply(document)
    assert report.created == ("organization acme", "team acme/devs", "repository acme/app")
    assert report.skipped == (
        "member nobody of team acme/devs: no such user",
        "permission of user nobody on acme/app: there is no user nobody",
        "permission of team acme/ops on acme/app: there is no team ops in acme",
        "permission of robot acme+ghost on acme/app: there is no robot acme+ghost",
        "repository ghost/app: the namespace ghost does not exist",
    )
    warnings = logs.texts(LogLevel.warn)
    assert any("skipped repository ghost/app" in text for text in warnings)
    await harness.identity.create_user("nobody", None, None)
    await harness.identity.create_team("acme", "ops", "member")
    report = await harness.apply(document)
    assert set(report.created) == {
        "permission of user nobody on acme/app",
        "permission of team acme/ops on acme/app",
    }
    assert report.updated == ("team acme/devs",)
    team = await harness.identity.get_team("acme", "devs")
    assert team is not None and team.members == ("nobody",)


# Secrets read from files


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_password_file(harness: Harness) -> None:
    """
    A password file is read and hashed when applied; applying again changes nothing, and a
    changed file changes the password.
    """
    path = harness.secret_file("dave.pw", "first-password\n")
    document: Document = {"users": [{"name": "dave", "password_file": path}]}
    report = await harness.apply(document)
    assert report.created == ("user dave",)
    stored = await harness.identity.password_hash("dave")
    assert stored is not None and stored.startswith("$2b$")
    assert await harness.authenticate("dave", "first-password") is not None
    assert await harness.apply(document) == ReconcileReport()
    harness.secret_file("dave.pw", "second-password\n")
    report = await harness.apply(document)
    assert report.updated == ("user dave",)
    assert await harness.authenticate("dave", "second-password") is not None
    assert await harness.authenticate("dave", "first-password") is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_unreadable_password_file_skips_user(harness: Harness, tmp_path: Path) -> None:
    """A password file that cannot be read skips that user only; its path is reported."""
    missing = tmp_path / "missing.pw"
    report = await harness.apply(
        {"users": [{"name": "dave", "password_file": str(missing)}, {"name": "erin"}]}
    )
    assert report.created == ("user erin",)
    assert len(report.skipped) == 1
    assert report.skipped[0].startswith(f"user dave: cannot read password_file {missing}")
    assert await harness.identity.get_account("dave") is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reconcile_token_files(harness: Harness) -> None:
    """
    Robot and repository tokens named by C{token_file} are the ones stored; a changed file
    replaces the token, and the old one stops working.
    """
    robot_file = harness.secret_file("robot.token", "robot-token-1\n")
    repo_file = harness.secret_file("repo.token", "  repo-token-1  \n")
    document: Document = {
        "organizations": [{"name": "acme", "robots": [{"name": "deploy", "token_file": robot_file}]}],
        "repositories": [
            {"name": "acme/app", "tokens": [{"description": "pull", "role": "read", "token_file": repo_file}]}
        ],
    }
    await harness.apply(document)
    assert await harness.robot_token("acme", "deploy") == "robot-token-1"
    assert await harness.authenticate("acme+deploy", "robot-token-1") is not None
    token_id, secret = await harness.repository_token("acme/app", "pull")
    assert secret == "repo-token-1"
    assert await harness.authenticate("$token", "repo-token-1") is not None
    assert await harness.apply(document) == ReconcileReport()
    harness.secret_file("robot.token", "robot-token-2")
    harness.secret_file("repo.token", "repo-token-2")
    report = await harness.apply(document)
    assert set(report.updated) == {"robot acme+deploy", "token 'pull' of acme/app"}
    assert await harness.authenticate("acme+deploy", "robot-token-2") is not None
    assert await harness.authenticate("acme+deploy", "robot-token-1") is None
    new_id, _ = await harness.repository_token("acme/app", "pull")
    assert new_id != token_id
    assert await harness.authenticate("$token", "repo-token-2") is not None
    assert await harness.authenticate("$token", "repo-token-1") is None
    assert len(await harness.identity.list_repository_tokens("acme/app")) == 1


def test_read_password_file_rules(tmp_path: Path) -> None:
    """A password file holds one non-empty line of at most 72 bytes; its line ending is dropped."""
    path = tmp_path / "pw"
    path.write_text("pass word\r\n")
    assert read_password_file(path) == "pass word"
    for content in ("", "\n", "secret-one\nsecret-two\n", "secret" + "y" * 67):
        path.write_text(content)
        with pytest.raises(SecretFileError) as info:
            read_password_file(path)
        assert "secret" not in str(info.value), "the message never quotes the file"
    with pytest.raises(SecretFileError, match="cannot read password_file"):
        read_password_file(tmp_path / "absent")


def test_read_token_file_rules(tmp_path: Path) -> None:
    """A token file holds one token without inner whitespace; surrounding whitespace is dropped."""
    path = tmp_path / "token"
    path.write_text("\n abc-123 \n")
    assert read_token_file(path) == "abc-123"
    for content in ("", "  \n", "two words", "a\x00b"):
        path.write_text(content)
        with pytest.raises(SecretFileError):
            read_token_file(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(SecretFileError, match="not UTF-8"):
        read_token_file(path)


# Reloading


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reload_applies_edited_file(harness: Harness) -> None:
    """A reload re-reads the file and applies the edit."""
    harness.write_config(base_document())
    first = await harness.reconciler.reload()
    assert first is not None and "user alice" in first.created
    edited = base_document()
    section(edited, "users").append({"name": "frank"})
    harness.write_config(edited)
    report = await harness.reconciler.reload()
    assert report is not None and report.created == ("user frank",)
    assert harness.reconciler.declared == declared(edited)


@pytest.mark.parametrize(
    ("breakage", "key_path"),
    [
        (lambda d: section(d, "users")[0].update(password_hash="secret"), "users[0].password_hash"),
        (lambda d: section(d, "repositories")[0].update(visibility="hidden"), "repositories[0].visibility"),
        (lambda d: d.update(usres=[]), "usres"),
    ],
    ids=["plain-password", "bad-visibility", "unknown-key"],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reload_invalid_file_keeps_previous_state(
    harness: Harness, logs: LogCapture, breakage: object, key_path: str
) -> None:
    """
    An invalid file is rejected with its key path logged, nothing is applied, and the
    previously applied objects stay as they are.
    """
    harness.write_config(base_document())
    await harness.reconciler.reload()
    entries = await harness.audit_count()
    broken = base_document()
    document_users = section(broken, "users")
    del document_users[1]
    assert callable(breakage)
    breakage(broken)
    harness.write_config(broken)
    assert await harness.reconciler.reload() is None
    assert await harness.identity.get_account("bob") is not None
    assert await harness.audit_count() == entries
    assert harness.reconciler.declared == declared(base_document())
    errors = logs.texts(LogLevel.error)
    assert len(errors) == 1
    assert f"rejected {harness.config_path}: {key_path}: " in errors[0]
    assert "keeps running with the previous configuration" in errors[0]
    assert "secret" not in errors[0].replace(str(harness.config_path), "")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reload_unparseable_file_keeps_previous_state(harness: Harness, logs: LogCapture) -> None:
    """A file that is not YAML is rejected like an invalid one."""
    harness.write_config(base_document())
    await harness.reconciler.reload()
    harness.config_path.write_text("users: [\n")
    assert await harness.reconciler.reload() is None
    assert await harness.identity.get_account("alice") is not None
    (error,) = logs.texts(LogLevel.error)
    assert "(file)" in error and "not valid YAML" in error


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reload_warns_about_settings_that_need_a_restart(harness: Harness, logs: LogCapture) -> None:
    """Changed sections other than the declared objects are named in a warning."""
    running = load_config_document(harness, {"server": {"hostname": "registry.example:5000"}})
    reconciler = Reconciler(
        harness.identity,
        harness.secrets,
        run_synchronously,
        load_config,
        harness.config_path,
        running_config=running,
    )
    reconciler.startService()
    harness.write_config({"server": {"hostname": "other.example:5000"}, "users": [{"name": "gina"}]})
    report = await reconciler.reload()
    await reconciler.stopService()
    assert report is not None and report.created == ("user gina",)
    warnings = logs.texts(LogLevel.warn)
    assert any("changes to server in" in text and "restarts" in text for text in warnings)


def load_config_document(harness: Harness, document: Document) -> Config:
    """Write C{document} as the configuration file and load it."""
    harness.write_config(document)
    return load_config(harness.config_path)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_reload_after_stop_is_ignored(harness: Harness) -> None:
    """A stopped reconciler does not reload (the database may be closing)."""
    harness.write_config({"users": [{"name": "henry"}]})
    await harness.reconciler.stopService()
    assert await harness.reconciler.reload() is None
    assert await harness.identity.get_account("henry") is None
    harness.reconciler.startService()


def test_reconciler_managed_source_names_the_file(tmp_path: Path) -> None:
    """C{managed_source} is the configuration file, for the admin API's messages."""
    reconciler = Reconciler(
        None,  # type: ignore[arg-type]  # never used by this test
        SecretBox(Fernet.generate_key()),
        run_synchronously,
        load_config,
        tmp_path / "quayd.yaml",
    )
    assert reconciler.managed_source == str(tmp_path / "quayd.yaml")


def test_report_changed() -> None:
    """A report counts as a change when anything was created, updated or removed."""
    assert not ReconcileReport().changed
    assert not ReconcileReport(skipped=("user x: why",)).changed
    assert ReconcileReport(removed=("user x",)).changed


def test_base_document_is_valid() -> None:
    """The fixture document passes load-time validation (a deep copy is never shared)."""
    document = base_document()
    assert declared(copy.deepcopy(document)) == declared(document)
