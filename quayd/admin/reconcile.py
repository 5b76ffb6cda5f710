"""
Config-file-driven administration: bring the identity database in line with the users,
organizations, teams, robots, repositories, permissions, repository tokens and push webhooks
that the configuration file declares.

The rules, as in Quay's model:
    - A declared object is created if missing and brought into line if present. A declared
      object that exists but was created over the admin API is taken over: it is marked
      C{managed}, and from then on the configuration owns it.
    - An object no longer declared is removed only if it is C{managed} (the configuration created
      or took it over). Objects created over the admin API are never touched. A managed user or
      organization is kept (with a warning) while its namespace still holds repositories, robots
      or teams that the configuration does not manage, since deleting it would delete them too.
    - Optional attributes left out of the configuration (an email address, a description, a
      password) are not managed: they keep whatever value they have.
    - References the configuration cannot check on its own (a team member, a permission subject
      or a namespace that only exists in the database) are checked here; an object that cannot
      be applied is logged and skipped, and the rest is applied.

Secrets never pass through the log or the audit log. Passwords from a C{password_file} are
hashed with bcrypt on the L{BlockingRunner}; robot and repository tokens are generated (or read
from a C{token_file}) and stored encrypted with the L{SecretBox}, so that the admin API can show
them again. A webhook's signing secret is read from its C{secret_file} and stored encrypted too;
it is never shown again.

Webhooks are identified by their URL within their repository. A declared webhook whose
C{secret_file} holds another secret than the stored one is replaced by a new webhook (a new id)
with the new secret; its pending deliveries move to the new webhook, so no event is lost.

Every change is logged once at C{info} and written to the audit log with the actor C{config} and
the configuration file as the client.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec
from urllib.parse import urlsplit

import bcrypt
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from quayd.auth.keys import KeyFileError, SecretBox, new_token, same_secret
from quayd.auth.policy import MAX_PASSWORD_BYTES
from quayd.blocking import BlockingRunner
from quayd.cli import hash_password
from quayd.config import (
    OWNERS_TEAM,
    Config,
    ConfigError,
    DeclaredObjects,
    OrganizationConfig,
    PermissionConfig,
    RepositoryConfig,
    RepositoryTokenConfig,
    RepositoryWebhookConfig,
    RobotConfig,
    TeamConfig,
    UserConfig,
)
from quayd.db.identity import Account, IdentityStore, Permission, RepositoryToken
from quayd.db.webhooks import Webhook, WebhookStore
from quayd.errors import Conflict

__all__ = [
    "AUDIT_ACTOR",
    "ConfigLoader",
    "ReconcileReport",
    "Reconciler",
    "SecretFileError",
    "read_password_file",
    "read_token_file",
    "read_webhook_secret_file",
]

_log = Logger()
_P = ParamSpec("_P")

AUDIT_ACTOR = "config"
"""
The actor of the audit entries the reconciler writes; their client is the configuration file.
"""

ConfigLoader = Callable[[str], Config]
"""
Reads and validates a configuration file (L{quayd.config.load_config}); raises L{ConfigError}.
"""

#: Longest token accepted from a C{token_file}: the longest password the credential check reads.
_MAX_TOKEN_BYTES = MAX_PASSWORD_BYTES * 4

#: Longest webhook secret accepted from a C{secret_file} (the admin API's limit).
MAX_WEBHOOK_SECRET_BYTES = 1024

#: Most pending deliveries moved when a webhook is replaced (its secret changed).
_MAX_MOVED_DELIVERIES = 1_000_000

#: The sections a reload cannot change in a running daemon.
_RESTART_SECTIONS = ("data_dir", "server", "storage", "database", "registry", "logging", "auth", "webhooks")

_KIND_WORDS = {"user": "user", "org": "organization"}


class SecretFileError(Exception):
    """
    A C{password_file}, C{token_file} or C{secret_file} cannot be used; the message names the
    file, never its content.
    """


class _Skip(Exception):
    """
    One declared object cannot be applied; the message, written for the operator, says why.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileReport:
    """
    What one application of the configuration changed, each object named as in the log
    (C{"user alice"}, C{"team acme/devs"}, C{"permission of team acme/devs on acme/app"}).

    @ivar created: Objects created.
    @ivar updated: Objects brought into line (or taken over).
    @ivar removed: Managed objects removed because the configuration no longer declares them.
    @ivar skipped: Objects that could not be applied (or removed), each with the reason.
    """

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """
        Whether anything was created, updated or removed.
        """
        return bool(self.created or self.updated or self.removed)


def read_password_file(path: Path) -> str:
    """
    Read a password in clear from a C{password_file} (blocking: run it on the blocking runner).

    The file holds one line; its line ending is not part of the password.

    @param path: The file.
    @return: The password.
    @raise SecretFileError: If the file is unreadable, empty, holds several lines, or the
        password is longer than bcrypt accepts.
    """
    text = _read_text(path, "password_file")
    password = text.rstrip("\r\n")
    if not password:
        raise SecretFileError(f"password_file {path} is empty")
    if "\n" in password or "\r" in password:
        raise SecretFileError(f"password_file {path} must hold the password on one line")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise SecretFileError(f"the password in {path} is longer than {MAX_PASSWORD_BYTES} bytes")
    return password


def read_token_file(path: Path) -> str:
    """
    Read a robot or repository token from a C{token_file} (blocking: run it on the blocking
    runner). Whitespace around the token is ignored.

    @param path: The file.
    @return: The token.
    @raise SecretFileError: If the file is unreadable or empty, or the token holds whitespace or
        control characters or is too long to be used as a password.
    """
    token = _read_text(path, "token_file").strip()
    if not token:
        raise SecretFileError(f"token_file {path} is empty")
    if not token.isprintable() or any(character.isspace() for character in token):
        raise SecretFileError(f"token_file {path} must hold one token, without spaces or control characters")
    if len(token.encode()) > _MAX_TOKEN_BYTES:
        raise SecretFileError(f"the token in {path} is longer than {_MAX_TOKEN_BYTES} bytes")
    return token


def read_webhook_secret_file(path: Path) -> str:
    """
    Read a webhook's signing secret from a C{secret_file} (blocking: run it on the blocking
    runner).

    The file holds one line; its line ending is not part of the secret.

    @param path: The file.
    @return: The secret.
    @raise SecretFileError: If the file is unreadable or empty, holds several lines, or the
        secret is longer than L{MAX_WEBHOOK_SECRET_BYTES}.
    """
    secret = _read_text(path, "secret_file").rstrip("\r\n")
    if not secret:
        raise SecretFileError(f"secret_file {path} is empty")
    if "\n" in secret or "\r" in secret:
        raise SecretFileError(f"secret_file {path} must hold the secret on one line")
    if len(secret.encode()) > MAX_WEBHOOK_SECRET_BYTES:
        raise SecretFileError(f"the secret in {path} is longer than {MAX_WEBHOOK_SECRET_BYTES} bytes")
    return secret


def _read_text(path: Path, key: str) -> str:
    """
    Read a small UTF-8 file.

    @param path: The file.
    @param key: The configuration key naming it, for messages.
    @return: Its text.
    @raise SecretFileError: If it cannot be read or decoded.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SecretFileError(f"cannot read {key} {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"{key} {path} is not UTF-8 text") from None


def _password_matches(password: str, stored: str) -> bool:
    """
    Check a password against a stored bcrypt hash (blocking: run it on the blocking runner).

    @param password: The password in clear.
    @param stored: The stored hash.
    @return: Whether they match; C{False} for a malformed hash.
    """
    try:
        return bcrypt.checkpw(password.encode(), stored.encode())
    except ValueError:
        return False


class Reconciler(Service):
    """
    Applies the configuration's declared objects at start and again on every reload (SIGHUP).

    Applications never overlap: each one runs under a lock, and L{stopService} waits for the
    one in progress, so the database is never closed under it.

    @ivar managed_source: The configuration file, for messages such as "managed by
        /etc/quayd/quayd.yaml".
    @ivar declared: What was last applied, or C{None} before the first application.
    """

    def __init__(
        self,
        identity: IdentityStore,
        secrets: SecretBox,
        run_blocking: BlockingRunner,
        load: ConfigLoader,
        path: str | Path,
        *,
        running_config: Config | None = None,
        webhooks: WebhookStore | None = None,
    ) -> None:
        """
        @param identity: The store the declared objects are applied to.
        @param secrets: Encrypts robot and repository tokens and webhook secrets at rest.
        @param run_blocking: Runs bcrypt and file reads off the reactor thread.
        @param load: Reads and validates the configuration file on reload.
        @param path: The configuration file.
        @param running_config: The configuration the daemon started with, so that a reload can
            warn about changes that need a restart; C{None} to skip that check.
        @param webhooks: The store declared webhooks are applied to; C{None} skips them (and
            reports each declared one as skipped).
        """
        self._identity = identity
        self._webhooks = webhooks
        self._secrets = secrets
        self._run = run_blocking
        self._load = load
        self._path = str(path)
        self._running_config = running_config
        self._lock = DeferredLock()
        self.managed_source = self._path
        self.declared: DeclaredObjects | None = None

    def startService(self) -> None:
        """
        Start accepting reloads.
        """
        super().startService()  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting reloads and wait for an application in progress to finish.

        @return: Fires once no application is running.
        """
        super().stopService()  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        return Deferred.fromCoroutine(self._idle())

    async def _idle(self) -> None:
        """
        Wait until no application holds the lock.
        """
        async with self._lock:
            pass

    async def apply(self, declared: DeclaredObjects) -> ReconcileReport:
        """
        Bring the database in line with C{declared}.

        Running it again with the same objects changes nothing. A declared object that cannot
        be applied is logged and skipped; only a failure of the database itself propagates.

        @param declared: The declared users, organizations and repositories.
        @return: What was created, updated, removed and skipped.
        """
        async with self._lock:
            report = await _Application(
                self._identity, self._secrets, self._run, self._path, declared, self._webhooks
            ).run()
            self.declared = declared
        _log.info(
            "applied {source}: {created} created, {updated} updated, {removed} removed, {skipped} skipped",
            source=self._path,
            created=len(report.created),
            updated=len(report.updated),
            removed=len(report.removed),
            skipped=len(report.skipped),
        )
        return report

    def reload(self) -> Deferred[ReconcileReport | None]:
        """
        Re-read the configuration file and apply it (the SIGHUP handler calls this on the reactor
        thread). An invalid file is rejected with the reason logged, and the previously applied
        objects stay as they are. The returned Deferred never fails.

        @return: Fires with the report, or C{None} if nothing was applied.
        """
        return Deferred.fromCoroutine(self._reload())

    async def _reload(self) -> ReconcileReport | None:
        """
        Re-read and apply the configuration; log every problem instead of raising it.

        @return: The report, or C{None} if nothing was applied.
        """
        if not self.running:
            _log.warn("not reloading {source}: quayd is not running", source=self._path)
            return None
        _log.info("reloading {source}", source=self._path)
        try:
            config = await self._run(self._load, self._path)
        except ConfigError as e:
            _log.error(
                "rejected {source}: {key_path}: {problem}; quayd keeps running with the previous"
                " configuration",
                source=self._path,
                key_path=e.key_path or "(file)",
                problem=e.message,
            )
            return None
        except Exception:
            _log.failure("reading {source} failed; quayd keeps the previous configuration", source=self._path)
            return None
        self._warn_restart_needed(config)
        try:
            return await self.apply(config.declared)
        except Exception:
            _log.failure("applying {source} failed", source=self._path)
            return None

    def _warn_restart_needed(self, config: Config) -> None:
        """
        Warn about changed settings that only take effect when quayd restarts.

        @param config: The configuration just read.
        """
        running = self._running_config
        if running is None:
            return
        changed = [name for name in _RESTART_SECTIONS if getattr(config, name) != getattr(running, name)]
        if changed:
            _log.warn(
                "changes to {sections} in {source} take effect only when quayd restarts",
                sections=", ".join(changed),
                source=self._path,
            )


def _permission_subject(repository: RepositoryConfig, permission: PermissionConfig) -> str:
    """
    The subject of a declared permission as the store records it.

    @param repository: The repository the permission is declared on.
    @param permission: The permission.
    @return: The user name, C{org/team}, or the robot's C{namespace+name}.
    """
    if permission.kind == "team":
        return f"{repository.namespace}/{permission.subject}"
    return permission.subject


def _describe_permission(repository: str, kind: str, subject: str) -> str:
    """
    Name a permission for the log and the report.

    @param repository: The repository.
    @param kind: C{user}, C{team} or C{robot}.
    @param subject: The stored subject.
    @return: For example C{"permission of team acme/devs on acme/app"}.
    """
    return f"permission of {kind} {subject} on {repository}"


def _describe_webhook(repository: str, url: str) -> str:
    """
    Name a webhook for the log, the report and the audit log, without its URL's query string
    (where receivers often take an access token).

    @param repository: The repository.
    @param url: The webhook's URL.
    @return: For example C{"webhook https://ci.example/hook of acme/app"}.
    """
    parts = urlsplit(url)
    shown = parts._replace(query="", fragment="").geturl() + ("?..." if parts.query else "")
    return f"webhook {shown} of {repository}"


def _preferred_webhook(webhooks: list[Webhook], url: str) -> Webhook | None:
    """
    The webhook that a declared URL stands for: the oldest managed one, else the oldest one
    created over the API (which is then taken over).

    @param webhooks: The repository's webhooks, oldest first.
    @param url: The declared URL.
    @return: The webhook, or C{None} if none has that URL.
    """
    candidates = [webhook for webhook in webhooks if webhook.url == url]
    for webhook in candidates:
        if webhook.managed:
            return webhook
    return candidates[0] if candidates else None


def _preferred_token(tokens: list[RepositoryToken], description: str) -> RepositoryToken | None:
    """
    The token that a declared description stands for: the oldest managed one, else the oldest
    one created over the API (which is then taken over).

    @param tokens: The repository's tokens, oldest first.
    @param description: The declared description.
    @return: The token, or C{None} if none has that description.
    """
    candidates = [token for token in tokens if token.description == description]
    for token in candidates:
        if token.managed:
            return token
    return candidates[0] if candidates else None


class _Application:
    """
    One application of the declared objects: removals first (so that a name can change
    kind), then users, organizations, robots, teams and repositories with their permissions,
    tokens and webhooks.
    """

    def __init__(
        self,
        identity: IdentityStore,
        secrets: SecretBox,
        run_blocking: BlockingRunner,
        source: str,
        declared: DeclaredObjects,
        webhooks: WebhookStore | None = None,
    ) -> None:
        """
        @param identity: The store.
        @param secrets: Encrypts tokens and webhook secrets.
        @param run_blocking: Runs bcrypt and file reads.
        @param source: The configuration file, for the log and the audit log.
        @param declared: What to apply.
        @param webhooks: The webhook store, or C{None} to skip declared webhooks.
        """
        self._identity = identity
        self._webhooks = webhooks
        self._secrets = secrets
        self._run = run_blocking
        self._source = source
        self._declared = declared
        self._accounts: dict[str, Account] = {}
        self._created: list[str] = []
        self._updated: list[str] = []
        self._removed: list[str] = []
        self._skipped: list[str] = []

    async def run(self) -> ReconcileReport:
        """
        Apply everything.

        @return: What changed.
        """
        declared = self._declared
        await self._load_accounts()
        await self._remove_stale()
        await self._load_accounts()
        for user in declared.users:
            await self._guard(f"user {user.name}", self._apply_user, user)
        for organization in declared.organizations:
            await self._guard(f"organization {organization.name}", self._apply_organization, organization)
        owners: list[tuple[str, tuple[RobotConfig, ...]]] = [(u.name, u.robots) for u in declared.users]
        owners += [(o.name, o.robots) for o in declared.organizations]
        for namespace, robots in owners:
            for robot in robots:
                await self._guard(f"robot {namespace}+{robot.name}", self._apply_robot, namespace, robot)
        for organization in declared.organizations:
            for team in organization.teams:
                await self._guard(
                    f"team {organization.name}/{team.name}", self._apply_team, organization.name, team
                )
        for repository in declared.repositories:
            await self._apply_repository_with_contents(repository)
        return ReconcileReport(
            created=tuple(self._created),
            updated=tuple(self._updated),
            removed=tuple(self._removed),
            skipped=tuple(self._skipped),
        )

    # Bookkeeping

    async def _load_accounts(self) -> None:
        """
        Read all users and organizations.
        """
        accounts = await self._identity.list_accounts("user") + await self._identity.list_accounts("org")
        self._accounts = {account.name: account for account in accounts}

    async def _guard(
        self, what: str, step: Callable[_P, Awaitable[None]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> bool:
        """
        Apply (or remove) one object; log and record a failure instead of raising it.

        @param what: The object, as named in the log.
        @param step: Applies it, called with C{args} and C{kwargs}.
        @return: Whether it was applied.
        """
        try:
            await step(*args, **kwargs)
        except _Skip as e:
            self._skip(what, str(e))
            return False
        except Conflict:
            self._skip(
                what, "it conflicts with the database (changed at the same time?); retried on the next reload"
            )
            return False
        except Exception:
            _log.failure("applying {object} from {source} failed", object=what, source=self._source)
            self._skipped.append(f"{what}: unexpected error (see the log)")
            return False
        return True

    def _skip(self, what: str, reason: str) -> None:
        """
        Log and record an object (or part of one) that could not be applied.

        @param what: The object, as named in the log.
        @param reason: Why, for the operator.
        """
        _log.warn("skipped {object} from {source}: {reason}", object=what, source=self._source, reason=reason)
        self._skipped.append(f"{what}: {reason}")

    async def _audit(self, action: str, target: str, detail: dict[str, object]) -> None:
        """
        Write one audit entry for a change made by the configuration.

        @param action: For example C{user.create}, as the admin API names its changes.
        @param target: The object changed.
        @param detail: What changed; never a secret.
        """
        await self._identity.audit(AUDIT_ACTOR, self._source, action, target, detail)

    async def _record_created(self, what: str, action: str, target: str, detail: dict[str, object]) -> None:
        """
        Log, report and audit a created object.

        @param what: The object, as named in the log.
        @param action: The audit action.
        @param target: The audit target.
        @param detail: The audit detail.
        """
        _log.info("created {object} declared in {source}", object=what, source=self._source)
        self._created.append(what)
        await self._audit(action, target, detail)

    async def _record_updated(
        self, what: str, changes: list[str], action: str, target: str, detail: dict[str, object]
    ) -> None:
        """
        Log, report and audit an object brought into line.

        @param what: The object, as named in the log.
        @param changes: What changed (attribute names, never values of secrets).
        @param action: The audit action.
        @param target: The audit target.
        @param detail: The audit detail; C{changed} is added.
        """
        _log.info(
            "updated {object} ({changes}) to match {source}",
            object=what,
            changes=", ".join(changes),
            source=self._source,
        )
        self._updated.append(what)
        await self._audit(action, target, {"changed": changes, **detail})

    async def _record_removed(self, what: str, action: str, target: str, detail: dict[str, object]) -> None:
        """
        Log, report and audit a removed object.

        @param what: The object, as named in the log.
        @param action: The audit action.
        @param target: The audit target.
        @param detail: The audit detail.
        """
        _log.info("removed {object}: no longer declared in {source}", object=what, source=self._source)
        self._removed.append(what)
        await self._audit(action, target, detail)

    async def _read_secret(self, read: Callable[[Path], str], path: Path) -> str:
        """
        Read a secret file on the blocking runner.

        @param read: L{read_password_file}, L{read_token_file} or L{read_webhook_secret_file}.
        @param path: The file.
        @return: The secret.
        @raise _Skip: If the file cannot be used.
        """
        try:
            return await self._run(read, path)
        except SecretFileError as e:
            raise _Skip(str(e)) from None

    def _same_secret(self, ciphertext: str, secret: str) -> bool:
        """
        Compare a stored encrypted token with one in clear.

        @param ciphertext: The stored token.
        @param secret: The token in clear.
        @return: Whether they are the same; C{False} if the stored one cannot be decrypted.
        """
        try:
            return same_secret(self._secrets.decrypt(ciphertext), secret)
        except KeyFileError:
            return False

    # Removal

    async def _remove_stale(self) -> None:
        """
        Remove the managed objects the configuration no longer declares: repositories (or their
        permissions and tokens), teams, robots, then users and organizations.
        """
        declared = self._declared
        repositories = {repository.name: repository for repository in declared.repositories}
        for repository in await self._identity.list_repositories():
            await self._guard(
                f"repository {repository.name}",
                self._remove_from_repository,
                repository.name,
                repository.managed,
                repositories.get(repository.name),
            )
        teams = {o.name: {t.name for t in o.teams} for o in declared.organizations}
        # Keyed by kind as well: a name may now be declared as the other kind of account.
        robots = {(u.name, "user"): {r.name for r in u.robots} for u in declared.users}
        robots.update({(o.name, "org"): {r.name for r in o.robots} for o in declared.organizations})
        for account in list(self._accounts.values()):
            if account.kind == "org":
                await self._guard(
                    f"teams of {account.name}",
                    self._remove_teams,
                    account.name,
                    teams.get(account.name, set()),
                )
            await self._guard(
                f"robots of {account.name}",
                self._remove_robots,
                account.name,
                robots.get((account.name, account.kind), set()),
            )
        kinds = {user.name: "user" for user in declared.users}
        kinds.update({organization.name: "org" for organization in declared.organizations})
        for account in list(self._accounts.values()):
            if account.managed and kinds.get(account.name) != account.kind:
                await self._guard(
                    f"{_KIND_WORDS[account.kind]} {account.name}", self._remove_account, account
                )

    async def _remove_from_repository(
        self, name: str, managed: bool, declared: RepositoryConfig | None
    ) -> None:
        """
        Remove a managed repository no longer declared (with its webhooks), or the managed
        permissions, tokens and webhooks of a repository that its declaration no longer lists.

        @param name: The repository.
        @param managed: Whether the configuration manages it.
        @param declared: Its declaration, or C{None}.
        """
        if declared is None and managed:
            await self._identity.delete_repository(name)
            await self._record_removed(f"repository {name}", "repository.delete", name, {})
            return
        keep = (
            set()
            if declared is None
            else {(p.kind, _permission_subject(declared, p)) for p in declared.permissions}
        )
        for permission in await self._identity.list_permissions(name):
            if permission.managed and (permission.kind, permission.subject) not in keep:
                await self._identity.delete_permission(name, permission.kind, permission.subject)
                await self._record_removed(
                    _describe_permission(name, permission.kind, permission.subject),
                    "permission.delete",
                    name,
                    {"kind": permission.kind, "subject": permission.subject},
                )
        descriptions = set() if declared is None else {t.description for t in declared.tokens}
        tokens = await self._identity.list_repository_tokens(name)
        for token in tokens:
            if not token.managed:
                continue
            preferred = _preferred_token(tokens, token.description)
            if token.description in descriptions and preferred is not None and preferred.id == token.id:
                continue
            await self._identity.delete_repository_token(token.id)
            await self._record_removed(
                f"token {token.description!r} of {name}",
                "token.delete",
                name,
                {"id": token.id, "description": token.description},
            )
        await self._remove_webhooks(name, declared)

    async def _remove_webhooks(self, name: str, declared: RepositoryConfig | None) -> None:
        """
        Remove the managed webhooks of a repository that its declaration no longer lists (all
        of them if it is not declared), and managed duplicates of a declared URL.

        @param name: The repository.
        @param declared: Its declaration, or C{None}.
        """
        if self._webhooks is None:
            return
        urls = set() if declared is None else {webhook.url for webhook in declared.webhooks}
        webhooks = await self._webhooks.list_webhooks(name)
        for webhook in webhooks:
            if not webhook.managed:
                continue
            preferred = _preferred_webhook(webhooks, webhook.url)
            if webhook.url in urls and preferred is not None and preferred.id == webhook.id:
                continue
            await self._webhooks.delete_webhook(webhook.id)
            await self._record_removed(
                _describe_webhook(name, webhook.url),
                "webhook.delete",
                name,
                {"id": webhook.id, "url": webhook.url},
            )

    async def _remove_teams(self, org: str, declared: set[str]) -> None:
        """
        Remove the managed teams of an organization that are no longer declared (never
        C{owners}).

        @param org: The organization.
        @param declared: The team names its declaration lists (empty if it is not declared).
        """
        for team in await self._identity.list_teams(org):
            if team.managed and team.name != OWNERS_TEAM and team.name not in declared:
                await self._identity.delete_team(org, team.name)
                await self._record_removed(f"team {org}/{team.name}", "team.delete", f"{org}/{team.name}", {})

    async def _remove_robots(self, namespace: str, declared: set[str]) -> None:
        """
        Remove the managed robots of a namespace that are no longer declared.

        @param namespace: The user or organization.
        @param declared: The robot names its declaration lists (empty if it is not declared).
        """
        for robot in await self._identity.list_robots(namespace):
            if robot.managed and robot.name not in declared:
                await self._identity.delete_robot(namespace, robot.name)
                await self._record_removed(f"robot {robot.full_name}", "robot.delete", robot.full_name, {})

    async def _remove_account(self, account: Account) -> None:
        """
        Remove a managed user or organization that is no longer declared (or is now declared
        as the other kind), unless its namespace holds objects the configuration does not manage.

        @param account: The account.
        @raise _Skip: If the namespace still holds such objects.
        """
        name = account.name
        holds = [f"repository {r.name}" for r in await self._identity.list_repositories(name)]
        holds += [f"robot {r.full_name}" for r in await self._identity.list_robots(name)]
        if account.kind == "org":
            holds += [
                f"team {name}/{t.name}"
                for t in await self._identity.list_teams(name)
                if t.name != OWNERS_TEAM
            ]
        if holds:
            more = f" and {len(holds) - 1} more" if len(holds) > 1 else ""
            raise _Skip(
                f"no longer declared, but kept: it holds {holds[0]}{more}, which the configuration does not"
                " manage; delete those over the admin API, then reload"
            )
        await self._identity.delete_account(name)
        del self._accounts[name]
        await self._record_removed(f"{_KIND_WORDS[account.kind]} {name}", f"{account.kind}.delete", name, {})

    # Users and organizations

    def _taken(self, name: str, wanted: str) -> None:
        """
        Refuse a declared name that the database holds as the other kind of account.

        @param name: The declared user or organization name.
        @param wanted: C{user} or C{org}, as declared.
        @raise _Skip: If the name belongs to the other kind.
        """
        existing = self._accounts.get(name)
        if existing is not None and existing.kind != wanted:
            by = "the configuration" if existing.managed else "the admin API"
            raise _Skip(f"the name is taken by an {_KIND_WORDS[existing.kind]} that {by} created")

    async def _apply_user(self, user: UserConfig) -> None:
        """
        Create, update or take over a declared user.

        @param user: The declaration.
        """
        self._taken(user.name, "user")
        password = None
        if user.password_file is not None:
            password = await self._read_secret(read_password_file, user.password_file)
        existing = self._accounts.get(user.name)
        if existing is None:
            hashed = user.password_hash
            if password is not None:
                hashed = await self._run(hash_password, password)
            self._accounts[user.name] = await self._identity.create_user(
                user.name, user.email, hashed, managed=True
            )
            await self._record_created(
                f"user {user.name}",
                "user.create",
                user.name,
                {"email": user.email, "password_set": hashed is not None},
            )
            return
        changes: list[str] = []
        if not existing.managed:
            changes.append("managed")
        email = user.email if user.email is not None and user.email != existing.email else None
        if email is not None:
            changes.append("email")
        new_hash: str | None = None
        if user.password_hash is not None or password is not None:
            stored = await self._identity.password_hash(user.name)
            if user.password_hash is not None:
                new_hash = user.password_hash if stored != user.password_hash else None
            elif password is not None and (
                stored is None or not await self._run(_password_matches, password, stored)
            ):
                new_hash = await self._run(hash_password, password)
        if new_hash is not None:
            changes.append("password")
        if not changes:
            return
        await self._identity.update_user(user.name, email=email, password_hash=new_hash, managed=True)
        detail: dict[str, object] = {} if email is None else {"email": email}
        await self._record_updated(f"user {user.name}", changes, "user.update", user.name, detail)

    async def _apply_organization(self, organization: OrganizationConfig) -> None:
        """
        Create or take over a declared organization.

        @param organization: The declaration.
        """
        name = organization.name
        self._taken(name, "org")
        existing = self._accounts.get(name)
        if existing is None:
            self._accounts[name] = await self._identity.create_org(name, organization.email, managed=True)
            await self._record_created(
                f"organization {name}", "org.create", name, {"email": organization.email}
            )
            return
        if organization.email is not None and organization.email != existing.email:
            _log.warn(
                "organization {name}: the email address declared in {source} differs from the stored one,"
                " which the configuration cannot change yet",
                name=name,
                source=self._source,
            )
        if not existing.managed:
            await self._identity.set_account_managed(name, True)
            await self._record_updated(f"organization {name}", ["managed"], "org.update", name, {})

    # Robots and teams

    def _require_namespace(self, namespace: str, kind: str | None = None) -> Account:
        """
        Find a namespace that declared objects are applied to.

        @param namespace: The user or organization name.
        @param kind: C{user} or C{org} if it must be of that kind.
        @return: The account.
        @raise _Skip: If it does not exist (or is of the other kind).
        """
        account = self._accounts.get(namespace)
        if account is None:
            raise _Skip(f"the namespace {namespace} does not exist")
        if kind is not None and account.kind != kind:
            raise _Skip(f"{namespace} is not an {_KIND_WORDS[kind]}")
        return account

    async def _apply_robot(self, namespace: str, robot: RobotConfig) -> None:
        """
        Create, update or take over a declared robot.

        A generated token is kept once created; a C{token_file} replaces the stored token when
        the two differ.

        @param namespace: The owning user or organization.
        @param robot: The declaration.
        """
        self._require_namespace(namespace)
        token = (
            None if robot.token_file is None else await self._read_secret(read_token_file, robot.token_file)
        )
        full_name = f"{namespace}+{robot.name}"
        existing = await self._identity.get_robot(namespace, robot.name)
        if existing is None:
            await self._identity.create_robot(
                namespace,
                robot.name,
                self._secrets.encrypt(token if token is not None else new_token()),
                robot.description or "",
                managed=True,
            )
            await self._record_created(
                f"robot {full_name}",
                "robot.create",
                full_name,
                {
                    "description": robot.description or "",
                    "token": "generated" if token is None else "token_file",
                },
            )
            return
        changes: list[str] = []
        if not existing.managed:
            changes.append("managed")
        description = None
        if robot.description is not None and robot.description != existing.description:
            description = robot.description
            changes.append("description")
        ciphertext = None
        if token is not None:
            stored = await self._identity.robot_token_ciphertext(namespace, robot.name)
            if stored is None or not self._same_secret(stored, token):
                ciphertext = self._secrets.encrypt(token)
                changes.append("token")
        if not changes:
            return
        await self._identity.update_robot(
            namespace, robot.name, token_ciphertext=ciphertext, description=description, managed=True
        )
        detail: dict[str, object] = {} if description is None else {"description": description}
        await self._record_updated(f"robot {full_name}", changes, "robot.update", full_name, detail)

    async def _apply_team(self, org: str, team: TeamConfig) -> None:
        """
        Create, update or take over a declared team and set its members to the declared ones.
        A member that is not an existing user is skipped (and reported); the others are applied.

        @param org: The organization.
        @param team: The declaration.
        """
        self._require_namespace(org, "org")
        target = f"{org}/{team.name}"
        members: list[str] = []
        for member in team.members:
            account = self._accounts.get(member)
            if account is None or account.kind != "user":
                reason = "no such user" if account is None else "it is an organization, not a user"
                self._skip(f"member {member} of team {target}", reason)
            else:
                members.append(member)
        existing = await self._identity.get_team(org, team.name)
        if existing is None:
            await self._identity.create_team(org, team.name, team.role, team.description or "", managed=True)
            for member in members:
                await self._identity.add_team_member(org, team.name, member)
            await self._record_created(
                f"team {target}",
                "team.create",
                target,
                {"role": team.role, "description": team.description or "", "members": members},
            )
            return
        changes: list[str] = []
        role = team.role if team.role != existing.role else None
        if role is not None:
            changes.append("role")
        description = team.description if team.description not in (None, existing.description) else None
        if description is not None:
            changes.append("description")
        if not existing.managed:
            changes.append("managed")
        if changes:
            await self._identity.update_team(org, team.name, role=role, description=description, managed=True)
        added = [member for member in members if member not in existing.members]
        removed = [member for member in existing.members if member not in team.members]
        for member in added:
            await self._identity.add_team_member(org, team.name, member)
        for member in removed:
            await self._identity.remove_team_member(org, team.name, member)
        if added or removed:
            changes.append("members " + " ".join([f"+{m}" for m in added] + [f"-{m}" for m in removed]))
        if not changes:
            return
        detail: dict[str, object] = {}
        if role is not None:
            detail["role"] = role
        if description is not None:
            detail["description"] = description
        if added:
            detail["members_added"] = added
        if removed:
            detail["members_removed"] = removed
        await self._record_updated(f"team {target}", changes, "team.update", target, detail)

    # Repositories

    async def _apply_repository_with_contents(self, repository: RepositoryConfig) -> None:
        """
        Apply a declared repository, then (if it exists) each of its permissions, tokens and
        webhooks.

        @param repository: The declaration.
        """
        name = repository.name
        if not await self._guard(f"repository {name}", self._apply_repository, repository):
            return
        permissions = {(p.kind, p.subject): p for p in await self._identity.list_permissions(name)}
        for permission in repository.permissions:
            subject = _permission_subject(repository, permission)
            await self._guard(
                _describe_permission(name, permission.kind, subject),
                self._apply_permission,
                repository,
                permission,
                permissions,
            )
        for token in repository.tokens:
            await self._guard(f"token {token.description!r} of {name}", self._apply_token, name, token)
        for webhook in repository.webhooks:
            await self._guard(_describe_webhook(name, webhook.url), self._apply_webhook, name, webhook)

    async def _apply_repository(self, repository: RepositoryConfig) -> None:
        """
        Create, update or take over a declared repository (its access settings).

        @param repository: The declaration.
        """
        name = repository.name
        self._require_namespace(repository.namespace)
        existing = await self._identity.get_repository(name)
        if existing is None:
            await self._identity.create_repository(name, repository.visibility, managed=True)
            await self._record_created(
                f"repository {name}", "repository.create", name, {"visibility": repository.visibility}
            )
            return
        changes: list[str] = []
        visibility = repository.visibility if repository.visibility != existing.visibility else None
        if visibility is not None:
            changes.append("visibility")
        if not existing.managed:
            changes.append("managed")
        if not changes:
            return
        await self._identity.update_repository(name, visibility=visibility, managed=True)
        detail: dict[str, object] = {} if visibility is None else {"visibility": visibility}
        await self._record_updated(f"repository {name}", changes, "repository.update", name, detail)

    async def _check_subject(self, repository: RepositoryConfig, permission: PermissionConfig) -> None:
        """
        Check that the subject of a declared permission exists.

        @param repository: The repository.
        @param permission: The permission.
        @raise _Skip: If the user, team or robot does not exist.
        """
        subject = permission.subject
        if permission.kind == "user":
            account = self._accounts.get(subject)
            if account is None or account.kind != "user":
                raise _Skip(f"there is no user {subject}")
        elif permission.kind == "team":
            if await self._identity.get_team(repository.namespace, subject) is None:
                raise _Skip(f"there is no team {subject} in {repository.namespace}")
        else:
            namespace, _, robot = subject.partition("+")
            if await self._identity.get_robot(namespace, robot) is None:
                raise _Skip(f"there is no robot {subject}")

    async def _apply_permission(
        self,
        repository: RepositoryConfig,
        permission: PermissionConfig,
        current: dict[tuple[str, str], Permission],
    ) -> None:
        """
        Grant, change or take over a declared permission.

        @param repository: The repository.
        @param permission: The declaration.
        @param current: The repository's permissions by C{(kind, subject)}.
        """
        await self._check_subject(repository, permission)
        name = repository.name
        subject = _permission_subject(repository, permission)
        existing = current.get((permission.kind, subject))
        if existing is not None and existing.role == permission.role and existing.managed:
            return
        await self._identity.set_permission(name, permission.kind, subject, permission.role, managed=True)
        what = _describe_permission(name, permission.kind, subject)
        detail: dict[str, object] = {"kind": permission.kind, "subject": subject, "role": permission.role}
        if existing is None:
            await self._record_created(what, "permission.set", name, detail)
            return
        changes = ["role"] if existing.role != permission.role else []
        if not existing.managed:
            changes.append("managed")
        await self._record_updated(what, changes, "permission.set", name, detail)

    async def _create_token(
        self, repository: str, description: str, role: str, secret: str
    ) -> RepositoryToken:
        """
        Store a new managed repository token.

        @param repository: The repository.
        @param description: The token's description.
        @param role: C{read} or C{write}.
        @param secret: The token in clear.
        @return: The token.
        """
        return await self._identity.create_repository_token(
            uuid.uuid4().hex,
            repository,
            description,
            role,
            self._secrets.lookup(secret),
            self._secrets.encrypt(secret),
            managed=True,
        )

    async def _apply_token(self, repository: str, declared: RepositoryTokenConfig) -> None:
        """
        Create, update or take over a declared repository token. A C{token_file} whose token
        differs from the stored one replaces the token (under a new id).

        @param repository: The repository.
        @param declared: The declaration.
        """
        secret = None
        if declared.token_file is not None:
            secret = await self._read_secret(read_token_file, declared.token_file)
        what = f"token {declared.description!r} of {repository}"
        existing = _preferred_token(
            await self._identity.list_repository_tokens(repository), declared.description
        )
        if existing is None:
            token = await self._create_token(
                repository, declared.description, declared.role, secret if secret is not None else new_token()
            )
            await self._record_created(
                what,
                "token.create",
                repository,
                {"id": token.id, "description": declared.description, "role": declared.role},
            )
            return
        changes: list[str] = []
        if existing.role != declared.role:
            changes.append("role")
        if not existing.managed:
            changes.append("managed")
        if secret is not None:
            found = await self._identity.get_repository_token(existing.id)
            if found is None or not self._same_secret(found[1], secret):
                token = await self._create_token(repository, declared.description, declared.role, secret)
                await self._identity.delete_repository_token(existing.id)
                await self._record_updated(
                    what,
                    [*changes, "token"],
                    "token.update",
                    repository,
                    {"id": token.id, "replaces": existing.id, "role": declared.role},
                )
                return
        if not changes:
            return
        role = declared.role if existing.role != declared.role else None
        await self._identity.update_repository_token(existing.id, role=role, managed=True)
        await self._record_updated(
            what, changes, "token.update", repository, {"id": existing.id, "role": declared.role}
        )

    # Webhooks

    async def _apply_webhook(self, repository: str, declared: RepositoryWebhookConfig) -> None:
        """
        Create, update or take over a declared webhook. A C{secret_file} whose secret differs
        from the stored one replaces the webhook (under a new id, see L{_replace_webhook}).

        @param repository: The repository.
        @param declared: The declaration.
        @raise _Skip: If there is no webhook store, or the secret file cannot be used.
        """
        store = self._webhooks
        if store is None:
            raise _Skip("push webhooks are not available to the reconciler")
        secret = None
        if declared.secret_file is not None:
            secret = await self._read_secret(read_webhook_secret_file, declared.secret_file)
        what = _describe_webhook(repository, declared.url)
        existing = _preferred_webhook(await store.list_webhooks(repository), declared.url)
        if existing is None:
            webhook = await store.create_webhook(
                repository,
                declared.url,
                declared.description or "",
                None if secret is None else self._secrets.encrypt(secret),
                managed=True,
            )
            await self._record_created(
                what,
                "webhook.create",
                repository,
                {
                    "id": webhook.id,
                    "url": webhook.url,
                    "description": webhook.description,
                    "has_secret": webhook.has_secret,
                },
            )
            return
        changes: list[str] = []
        if not existing.managed:
            changes.append("managed")
        description = None
        if declared.description is not None and declared.description != existing.description:
            description = declared.description
            changes.append("description")
        if secret is not None:
            found = await store.get_webhook(existing.id)
            stored = None if found is None else found[1]
            if stored is None or not self._same_secret(stored, secret):
                await self._replace_webhook(store, existing, description, secret, [*changes, "secret"], what)
                return
        if not changes:
            return
        await store.update_webhook(existing.id, description=description, managed=True)
        detail: dict[str, object] = {"id": existing.id}
        if description is not None:
            detail["description"] = description
        await self._record_updated(what, changes, "webhook.update", repository, detail)

    async def _replace_webhook(
        self,
        store: WebhookStore,
        existing: Webhook,
        description: str | None,
        secret: str,
        changes: list[str],
        what: str,
    ) -> None:
        """
        Give a webhook a new secret: create its replacement (managed, with the new secret),
        move its pending deliveries there (they are signed with the new secret when sent), then
        delete it.

        The store keeps a webhook's secret for its whole life, hence the new id. A delivery that
        the dispatcher is sending at that very moment may arrive twice, under two delivery ids.

        @param store: The webhook store.
        @param existing: The webhook to replace.
        @param description: The new description, or C{None} to keep the current one.
        @param secret: The new secret, in clear.
        @param changes: What changed, for the log and the audit log.
        @param what: The webhook, as named in the log.
        """
        replacement = await store.create_webhook(
            existing.repository,
            existing.url,
            existing.description if description is None else description,
            self._secrets.encrypt(secret),
            managed=True,
        )
        moved = 0
        for delivery in reversed(await store.list_deliveries(existing.id, _MAX_MOVED_DELIVERIES)):
            if delivery.state == "pending":
                await store.enqueue(replacement.id, delivery.repository, delivery.event, delivery.payload)
                moved += 1
        await store.delete_webhook(existing.id)
        detail: dict[str, object] = {"id": replacement.id, "replaces": existing.id, "moved_deliveries": moved}
        if description is not None:
            detail["description"] = description
        await self._record_updated(what, changes, "webhook.update", existing.repository, detail)
