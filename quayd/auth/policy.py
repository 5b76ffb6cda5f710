"""
Who may do what: principals, credentials, the repository policy, and the
authorization seam every registry route calls.

Two authorizers implement the seam: L{AccessControl} (users, organizations,
teams, robots, repository tokens, Docker token authentication) and
L{OpenAccess}, which grants everything and is used only by in-process tests
of the registry protocol.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass
from functools import cache
from typing import Protocol

import bcrypt
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from quayd.auth.keys import KeyFileError, SecretBox, same_secret
from quayd.auth.throttle import LoginThrottle
from quayd.auth.tokens import TokenError, TokenService
from quayd.blocking import BlockingRunner
from quayd.db.identity import AccessFacts, IdentityStore
from quayd.errors import Denied, RegistryError, Unauthorized
from quayd.types import RepositoryName

_log = Logger()

#: bcrypt refuses longer passwords; they are rejected at the edge.
MAX_PASSWORD_BYTES = 72
#: How long a successful password check is remembered (the stored hash is part of the key).
PASSWORD_CACHE_SECONDS = 30.0


class Action(enum.Enum):
    """What a principal wants to do with a repository."""

    PULL = "pull"
    PUSH = "push"
    DELETE = "delete"
    ADMIN = "admin"


ALL_ACTIONS = frozenset(Action)
_ROLE_ACTIONS = {
    "read": frozenset({Action.PULL}),
    "write": frozenset({Action.PULL, Action.PUSH, Action.DELETE}),
    "admin": ALL_ACTIONS,
}
#: Token scope action names for each action (admin is never put in a token).
SCOPE_ACTIONS = {Action.PULL: "pull", Action.PUSH: "push", Action.DELETE: "delete"}
_ALL_SCOPE_NAMES = frozenset(SCOPE_ACTIONS.values())


@cache
def _scope_names(actions: frozenset[Action]) -> frozenset[str]:
    """The token scope action names of C{actions} (remembered: there are only a few sets)."""
    return frozenset(SCOPE_ACTIONS[a] for a in actions if a in SCOPE_ACTIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """
    Who is making a request.

    @ivar kind: C{anonymous}, C{user}, C{robot} or C{token}.
    @ivar name: The user name, the robot's C{ns+name}, or the token id.
    @ivar repository: For a repository token, its repository.
    @ivar role: For a repository token, its role.
    @ivar via: How the request authenticated: C{none}, C{basic} or C{bearer}.
    """

    kind: str
    name: str | None = None
    superuser: bool = False
    repository: str | None = None
    role: str | None = None
    via: str = "none"

    @property
    def subject(self) -> str:
        """The JWT C{sub} for this principal (C{user:alice}, C{robot:ns+ci}, C{token:<id>})."""
        return "anonymous" if self.kind == "anonymous" else f"{self.kind}:{self.name}"

    def describe(self) -> str:
        """A name for logs and the audit log."""
        return self.subject


ANONYMOUS = Principal(kind="anonymous")


class Authorizer(Protocol):
    """The authorization seam of the registry routes."""

    async def authenticate(self, headers: Headers, client: str = "-", required: bool = False) -> Principal:
        """
        Identify the caller from C{Authorization}.

        @param required: Raise 401 with the challenge for anonymous callers.
        @raise Unauthorized: For bad credentials (or none when required).
        """

    async def authorize(
        self,
        headers: Headers,
        repository: RepositoryName,
        actions: frozenset[Action],
        client: str = "-",
        mount_from: RepositoryName | None = None,
    ) -> Principal:
        """
        Allow C{actions} on C{repository}, or raise 401 (with the challenge naming
        the needed scope) or 403 C{DENIED}.

        @param mount_from: The source of a cross-repository mount: the 401
            challenge also asks for pull on it, so that a client requesting the
            challenged scope gets a token the mount can use. Not required: without
            it the mount falls back to an upload session.
        """

    async def may_list(self, principal: Principal, repository: RepositoryName) -> bool:
        """Whether the catalog shows C{repository} to C{principal}."""

    async def claim(self, principal: Principal, repository: RepositoryName) -> None:
        """A write is about to create C{repository} if it is missing (creators become its admin)."""


class OpenAccess:
    """Grants every action to everyone (in-process protocol tests only)."""

    async def authenticate(self, headers: Headers, client: str = "-", required: bool = False) -> Principal:
        """Everyone is anonymous."""
        return ANONYMOUS

    async def authorize(
        self,
        headers: Headers,
        repository: RepositoryName,
        actions: frozenset[Action],
        client: str = "-",
        mount_from: RepositoryName | None = None,
    ) -> Principal:
        """Allow C{actions} on C{repository}."""
        return ANONYMOUS

    async def may_list(self, principal: Principal, repository: RepositoryName) -> bool:
        """Everything is listed."""
        return True

    async def claim(self, principal: Principal, repository: RepositoryName) -> None:
        """Nobody owns anything."""


def parse_basic(headers: Headers) -> tuple[str, str] | None:
    """
    The user name and password of a C{Basic} C{Authorization} header.

    @raise Unauthorized: If the header is malformed.
    """
    value = headers.getRawHeaders(b"authorization")
    if not value or value[0][:6].lower() != b"basic ":
        return None
    try:
        decoded = base64.b64decode(value[0][6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise Unauthorized("malformed basic credentials")
    return user, password


def parse_bearer(headers: Headers) -> str | None:
    """The token of a C{Bearer} C{Authorization} header."""
    value = headers.getRawHeaders(b"authorization")
    if not value or value[0][:7].lower() != b"bearer ":
        return None
    return value[0][7:].strip().decode("ascii", "replace")


class Credentials:
    """
    Checks user names and secrets: users (bcrypt), robots C{ns+name} and
    repository tokens C{$token} (encrypted at rest, compared in constant time).
    Failed attempts are throttled per account and per client.
    """

    def __init__(
        self,
        identity: IdentityStore,
        secrets: SecretBox,
        run_blocking: BlockingRunner,
        throttle: LoginThrottle,
        superusers: frozenset[str],
        clock: IReactorTime | None = None,
    ) -> None:
        self._clock: IReactorTime = clock if clock is not None else throttle.clock
        self._recent: dict[str, float] = {}
        self._identity = identity
        self._secrets = secrets
        self._run = run_blocking
        self._throttle = throttle
        self.superusers = superusers

    async def check(self, username: str, password: str, client: str) -> Principal:
        """
        Return the principal these credentials name.

        @raise Unauthorized: If they are wrong.
        @raise TooManyRequests: While the account or client is locked out.
        """
        account = None if username == "$token" else username
        self._throttle.check(account, client)
        principal = await self._check(username, password)
        if principal is None:
            self._throttle.failed(account, client)
            _log.info("failed login for {username} from {client}", username=username[:100], client=client)
            raise Unauthorized("incorrect username or password")
        self._throttle.succeeded(account, client)
        return principal

    async def _check(self, username: str, password: str) -> Principal | None:
        if not password or len(password.encode()) > MAX_PASSWORD_BYTES * 4:
            return None
        if username == "$token":
            found = await self._identity.find_repository_token(self._secrets.lookup(password))
            if found is None:
                return None
            token, ciphertext = found
            if not self._matches(ciphertext, password):
                return None
            return Principal(kind="token", name=token.id, repository=token.repository, role=token.role)
        if "+" in username:
            namespace, _, robot = username.partition("+")
            ciphertext_or_none = await self._identity.robot_token_ciphertext(namespace, robot)
            if ciphertext_or_none is None or not self._matches(ciphertext_or_none, password):
                return None
            return Principal(kind="robot", name=username)
        stored = await self._identity.password_hash(username)
        if stored is None or len(password.encode()) > MAX_PASSWORD_BYTES:
            return None
        # bcrypt costs ~0.2 s; clients sending Basic credentials on every request
        # (oras, curl) would pay it each time. A success is remembered briefly,
        # keyed by a keyed hash of the credentials and the stored hash, so a
        # changed password never matches an old entry.
        key = self._secrets.lookup(f"{username}\0{password}\0{stored}")
        now = self._clock.seconds()
        remembered = self._recent.get(key)
        if remembered is None or remembered <= now:
            if not await self._run(bcrypt.checkpw, password.encode(), stored.encode()):
                return None
            if len(self._recent) >= 10_000:
                self._recent = {k: t for k, t in self._recent.items() if t >= now}
            self._recent[key] = now + PASSWORD_CACHE_SECONDS
        return Principal(kind="user", name=username, superuser=username in self.superusers)

    def _matches(self, ciphertext: str, password: str) -> bool:
        try:
            return same_secret(self._secrets.decrypt(ciphertext), password)
        except KeyFileError:
            _log.error("a stored token cannot be decrypted: is the secret key the one it was made with?")
            return False


class Policy:
    """
    Quay's rules: namespace owners and organization admins may do everything;
    org creators may create repositories; direct roles (user, team, robot)
    grant read/write/admin; repository tokens act on their repository only;
    public repositories are pullable by everyone; superusers may do anything.
    """

    def __init__(self, identity: IdentityStore, superusers: frozenset[str]) -> None:
        self.identity = identity
        self._identity = identity
        self._superusers = superusers

    async def claim(self, principal: Principal, repository: RepositoryName) -> None:
        """
        A push is about to write to C{repository}: if it does not exist yet, create
        it, and make a user who creates it in an organization its admin (as Quay
        does), so the creator keeps access to what they pushed.
        """
        if _needs_claim(principal, repository):
            assert principal.name is not None
            await self._identity.claim_repository(str(repository), principal.name)

    async def allowed_actions(self, principal: Principal, repository: RepositoryName) -> frozenset[Action]:
        """The actions C{principal} may perform on C{repository}."""
        name = str(repository)
        if principal.kind == "user" and principal.name in self._superusers:
            return ALL_ACTIONS
        if principal.kind == "token":
            if principal.repository != name or principal.role is None:
                return frozenset()
            return _ROLE_ACTIONS["read" if principal.role == "read" else "write"] - {Action.DELETE}
        if principal.kind == "user" and principal.name is not None:
            facts = await self._identity.user_access_facts(principal.name, name, repository.namespace)
            return _user_actions(principal.name, repository, facts)
        if principal.kind == "robot" and principal.name is not None:
            facts = await self._identity.robot_access_facts(principal.name, name)
            actions = _public(facts) | _ROLE_ACTIONS.get(facts.repository_role or "", frozenset())
            return actions if facts.repository_exists else frozenset()
        visibility = await self._identity.visibility(name)
        return frozenset({Action.PULL}) if visibility == "public" else frozenset()


def _needs_claim(principal: Principal, repository: RepositoryName) -> bool:
    return (
        principal.kind == "user"
        and principal.name is not None
        and not principal.superuser
        and repository.namespace != principal.name
    )


def _public(facts: AccessFacts) -> frozenset[Action]:
    return (
        frozenset({Action.PULL}) if facts.repository_exists and facts.visibility == "public" else frozenset()
    )


def _user_actions(user: str, repository: RepositoryName, facts: AccessFacts) -> frozenset[Action]:
    owner = repository.namespace == user and facts.namespace_kind == "user" and "/" in str(repository)
    org_admin = facts.namespace_kind == "org" and facts.org_role == "admin"
    if owner or org_admin:
        return ALL_ACTIONS
    if not facts.repository_exists:
        creator = facts.namespace_kind == "org" and facts.org_role == "creator"
        return frozenset({Action.PULL, Action.PUSH}) if creator else frozenset()
    return _public(facts) | _ROLE_ACTIONS.get(facts.repository_role or "", frozenset())


class AccessControl:
    """
    The registry's authorizer: Basic credentials or bearer tokens, checked
    against the policy; failures answered the way docker and containerd expect.
    """

    def __init__(self, credentials: Credentials, policy: Policy, tokens: TokenService, realm: str) -> None:
        self._credentials = credentials
        self.policy = policy
        self.tokens = tokens
        self._realm = realm
        self._subjects: dict[str, Principal] = {}

    def challenge(self, scope: str | None = None, error: str | None = None) -> str:
        """The C{WWW-Authenticate} value pointing clients at the token endpoint."""
        value = f'Bearer realm="{self._realm}",service="{self.tokens.service}"'
        if scope:
            value += f',scope="{scope}"'
        if error:
            value += f',error="{error}"'
        return value

    def _unauthorized(self, message: str, scope: str | None = None, error: str | None = None) -> Unauthorized:
        return Unauthorized(message, headers={"WWW-Authenticate": self.challenge(scope, error)})

    async def authenticate(self, headers: Headers, client: str = "-", required: bool = False) -> Principal:
        """Identify the caller (Bearer token, Basic credentials, or anonymous)."""
        bearer = parse_bearer(headers)
        if bearer is not None:
            try:
                verified = self.tokens.verify(bearer)
            except TokenError as e:
                raise self._unauthorized(f"invalid bearer token: {e}", error="invalid_token") from None
            # A valid token authenticates the caller, even an anonymous one (as
            # Distribution's token auth does for /v2/); routes needing a known
            # principal check its kind.
            return await self._token_principal(verified.subject)
        try:
            basic = parse_basic(headers)
        except Unauthorized as e:
            raise self._unauthorized(e.message) from None
        if basic is not None:
            try:
                principal = await self._credentials.check(basic[0], basic[1], client)
            except Unauthorized as e:
                raise self._unauthorized(e.message) from None
            return Principal(
                kind=principal.kind,
                name=principal.name,
                superuser=principal.superuser,
                repository=principal.repository,
                role=principal.role,
                via="basic",
            )
        if required:
            raise self._unauthorized("authentication required")
        return ANONYMOUS

    async def authorize(
        self,
        headers: Headers,
        repository: RepositoryName,
        actions: frozenset[Action],
        client: str = "-",
        mount_from: RepositoryName | None = None,
    ) -> Principal:
        """
        Allow C{actions} on C{repository} or raise 401/403.

        With a bearer token this is the per-request path of every pull: the
        token's verification is cached (L{TokenService.verify}), the challenge
        scope is only built for a failure, and only a repository token's
        principal needs a database lookup (it must still exist).
        """
        bearer = parse_bearer(headers)
        if bearer is not None:
            try:
                verified = self.tokens.verify(bearer)
            except TokenError as e:
                raise self._unauthorized(
                    f"invalid bearer token: {e}", _scope(repository, actions, mount_from), "invalid_token"
                ) from None
            granted = verified.actions_on("repository", str(repository))
            if "*" in granted:
                granted = _ALL_SCOPE_NAMES
            if Action.ADMIN in actions or not _scope_names(actions) <= granted:
                raise self._unauthorized(
                    "token does not grant the requested access",
                    _scope(repository, actions, mount_from),
                    "insufficient_scope",
                )
            return await self._token_principal(verified.subject)
        principal = await self.authenticate(headers, client)
        allowed = await self.policy.allowed_actions(principal, repository)
        if actions <= allowed:
            return principal
        if principal.kind == "anonymous":
            raise self._unauthorized("authentication required", _scope(repository, actions, mount_from))
        raise Denied("requested access to the resource is denied")

    async def claim(self, principal: Principal, repository: RepositoryName) -> None:
        """A push is about to create C{repository} if missing: see L{Policy.claim}."""
        await self.policy.claim(principal, repository)

    async def _token_principal(self, subject: str) -> Principal:
        """The principal a verified token names; a repository token gets its repository back."""
        principal = self._subject_principal(subject)
        if principal.kind == "token":
            return await self._repository_token_principal(principal)
        return principal

    def _subject_principal(self, subject: str) -> Principal:
        """
        The principal of a token subject, without a repository token's details.

        Remembered per subject (principals are immutable values derived from the
        subject and the superusers alone), so that requests with the same token
        do not build it again.
        """
        principal = self._subjects.get(subject)
        if principal is None:
            principal = _principal_of_subject(subject, self._credentials.superusers)
            if len(self._subjects) >= 10_000:
                self._subjects.clear()
            self._subjects[subject] = principal
        return principal

    async def _repository_token_principal(self, principal: Principal) -> Principal:
        """A repository token's principal with its repository and role, as stored now."""
        assert principal.name is not None
        found = await self.policy.identity.get_repository_token(principal.name)
        if found is None:
            return Principal(kind="anonymous", via="bearer")
        token, _ = found
        return Principal(
            kind="token", name=token.id, repository=token.repository, role=token.role, via="bearer"
        )

    async def may_list(self, principal: Principal, repository: RepositoryName) -> bool:
        """Whether C{principal} may pull C{repository}."""
        return Action.PULL in await self.policy.allowed_actions(principal, repository)

    async def grant(
        self, principal: Principal, requested: list[tuple[str, str, frozenset[str]]]
    ) -> list[tuple[str, str, frozenset[str]]]:
        """
        Downscope requested token access to what the principal may do.

        @param requested: C{(type, name, actions)} triples from the C{scope} parameters.
        @return: The granted triples (those with no action left are dropped).
        """
        granted: list[tuple[str, str, frozenset[str]]] = []
        for type_, name, wanted in requested:
            if type_ == "registry" and name == "catalog":
                if principal.kind != "anonymous" and "*" in wanted:
                    granted.append((type_, name, frozenset({"*"})))
                continue
            if type_ != "repository":
                continue
            try:
                repository = RepositoryName.parse(name)
            except RegistryError:
                continue
            allowed = await self.policy.allowed_actions(principal, repository)
            names = {SCOPE_ACTIONS[a] for a in allowed if a in SCOPE_ACTIONS}
            if "*" in wanted and Action.ADMIN in allowed:
                names.add("*")
            actions = frozenset(wanted & names)
            if actions:
                granted.append((type_, name, actions))
        return granted


def _scope(repository: RepositoryName, actions: frozenset[Action], mount_from: RepositoryName | None) -> str:
    """The scope a challenge for C{actions} on C{repository} (and a mount's source) names."""
    scope = f"repository:{repository}:{','.join(sorted(_scope_names(actions)))}"
    if mount_from is not None and mount_from != repository:
        # Space-separated scopes, as Distribution writes a challenge for several.
        scope += f" repository:{mount_from}:pull"
    return scope


def _principal_of_subject(subject: str, superusers: frozenset[str]) -> Principal:
    kind, _, name = subject.partition(":")
    if kind == "user":
        return Principal(kind="user", name=name, superuser=name in superusers, via="bearer")
    if kind in ("robot", "token"):
        return Principal(kind=kind, name=name, via="bearer")
    return Principal(kind="anonymous", via="bearer")
