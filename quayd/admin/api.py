"""
The admin HTTP API (C{/api/v1}): users, organizations, teams, robots,
repositories, repository permissions, tokens and push webhooks, and the audit
log, as JSON.

Callers authenticate exactly as on the registry: Basic credentials of a user,
a robot (C{ns+name}) or a repository token (C{$token}), or a bearer token
from C{/v2/auth}. The rules are Quay's: superusers may do everything; a user
administers their own namespace; organization administrators (members of a
team with the C{admin} role) administer the organization, its teams, robots
and repositories; repository administrators manage the repository's
visibility, permissions, tokens and webhooks (and see the webhooks'
deliveries). Robots and repository tokens may list and read the repositories
they may pull, and change nothing.

Every change is written to the audit log (never a secret). Objects the
configuration file declares (C{managed}) cannot be changed or deleted here:
those requests fail with 409 C{DENIED} naming the file.

Routes are written with their full path, so the resource serves C{/api/v1/...}
when it is the site's root; L{mount_admin_api} puts it beside the registry.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from klein import Klein
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound

from quayd.admin.openapi import openapi_document
from quayd.admin.reconcile import MAX_WEBHOOK_SECRET_BYTES
from quayd.auth.keys import KeyFileError, SecretBox, new_token
from quayd.auth.policy import MAX_PASSWORD_BYTES, AccessControl, Action, Principal
from quayd.blocking import BlockingRunner
from quayd.cli import hash_password
from quayd.db.identity import (
    REPOSITORY_ROLES,
    TEAM_ROLES,
    Account,
    AuditEntry,
    IdentityStore,
    Permission,
    Repository,
    RepositoryToken,
    Robot,
    Team,
    stronger,
)
from quayd.db.webhooks import Delivery, Webhook, WebhookStore
from quayd.errors import (
    Conflict,
    Denied,
    JSONValue,
    NameInvalid,
    NameUnknown,
    RegistryError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from quayd.http.errors import MethodNotAllowed, NotFoundRoute, render_error
from quayd.types import RepositoryName
from quayd.webhooks.events import sample_payload
from quayd.webhooks.targets import TargetPolicy, TargetRefused, check_address, check_url

_log = Logger()

#: Largest request body accepted, in bytes (bodies are small JSON documents).
MAX_BODY_BYTES = 64 * 1024
#: Longest description of a team, robot or repository token, in characters.
MAX_DESCRIPTION = 1000
#: Longest e-mail address, in characters.
MAX_EMAIL = 254
#: Repository visibilities.
VISIBILITIES = ("private", "public")
#: Kinds of subject a repository permission names.
PERMISSION_KINDS = ("user", "team", "robot")
#: Roles of repository tokens.
TOKEN_ROLES = ("read", "write")
#: Audit entries returned when C{limit} is not given, and the most ever returned.
DEFAULT_AUDIT_LIMIT = 100
MAX_AUDIT_LIMIT = 1000
#: Seconds a password may wait for the blocking pool to hash it.
HASH_TIMEOUT = 60.0
#: The team every organization has, which cannot be deleted or demoted.
OWNERS_TEAM = "owners"
#: Longest webhook URL, in characters (what L{check_url} accepts).
MAX_WEBHOOK_URL = 2048
#: Deliveries listed when C{limit} is not given, and the most ever listed.
DEFAULT_DELIVERY_LIMIT = 50
MAX_DELIVERY_LIMIT = 500

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_NAME_RULE = "lower-case letters and digits, separated by '.', '_', '__' or dashes"


class InvalidRequest(RegistryError):
    """The request body or a parameter is malformed."""

    code = "INVALID_REQUEST"
    status = 400
    default_message = "invalid request"


class NotFound(RegistryError):
    """The object the request names does not exist."""

    code = "NOT_FOUND"
    status = 404
    default_message = "no such object"


class AlreadyExists(RegistryError):
    """The object to create exists, or the change would break an invariant."""

    code = "CONFLICT"
    status = 409
    default_message = "the object already exists"


class Managed(RegistryError):
    """The object is declared by the configuration file and cannot be changed here."""

    code = "DENIED"
    status = 409
    default_message = "the object is managed by the configuration file"


# Parsing


def _client(request: IRequest) -> str:
    """The client's address, for throttling and the audit log."""
    return str(getattr(request.getClientAddress(), "host", "-"))


def _query(request: IRequest, name: str) -> str | None:
    """The first value of query parameter C{name}, or C{None}."""
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def read_json(
    request: IRequest, allowed: Iterable[str], required: Iterable[str] = ()
) -> dict[str, JSONValue]:
    """
    Read the request body as a JSON object with only the C{allowed} fields.

    An empty body is an empty object.

    @raise TooLarge: If the body exceeds L{MAX_BODY_BYTES}.
    @raise InvalidRequest: If it is not a JSON object, has unknown fields, or
        lacks a C{required} one.
    """
    if getattr(request, "body_too_large", False):
        raise TooLarge(f"the request body exceeds {MAX_BODY_BYTES} bytes")
    content = request.content
    data = content.read(MAX_BODY_BYTES + 1) if content is not None else b""
    if len(data) > MAX_BODY_BYTES:
        raise TooLarge(f"the request body exceeds {MAX_BODY_BYTES} bytes")
    document: JSONValue = {}
    if data.strip():
        try:
            document = json.loads(data)
        except ValueError as e:
            raise InvalidRequest(f"the request body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = sorted(set(document) - set(allowed))
    if unknown:
        raise InvalidRequest(
            f"unknown field {', '.join(repr(k[:50]) for k in unknown[:5])}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    missing = [k for k in required if document.get(k) is None]
    if missing:
        raise InvalidRequest(f"missing field {', '.join(missing)}")
    return document


def _string(
    document: dict[str, JSONValue], key: str, max_length: int, choices: Iterable[str] | None = None
) -> str | None:
    """A string field, or C{None} when absent or null."""
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string")
    if len(value) > max_length:
        raise InvalidRequest(f"{key} is longer than {max_length} characters")
    if choices is not None and value not in choices:
        raise InvalidRequest(f"{key} must be one of {', '.join(choices)}")
    return value


def _required(
    document: dict[str, JSONValue], key: str, max_length: int, choices: Iterable[str] | None = None
) -> str:
    """A string field that must be present."""
    value = _string(document, key, max_length, choices)
    if value is None:
        raise InvalidRequest(f"missing field {key}")
    return value


def _email(document: dict[str, JSONValue]) -> str | None:
    """The optional C{email} field, checked for the shape of an address."""
    email = _string(document, "email", MAX_EMAIL)
    if email is not None and not _EMAIL.fullmatch(email):
        raise InvalidRequest("email must look like name@domain")
    return email


def _password(document: dict[str, JSONValue]) -> str | None:
    """The optional C{password} field, within bcrypt's limit."""
    value = document.get("password")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("password must be a string")
    if not value:
        raise InvalidRequest("password must not be empty")
    if len(value.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidRequest(f"password is longer than {MAX_PASSWORD_BYTES} bytes")
    return value


def simple_name(text: str, what: str) -> str:
    """
    Check a user, organization, team or robot name: one component of the
    namespace grammar.

    @raise NameInvalid: If it does not follow the grammar.
    """
    try:
        RepositoryName.parse(text)
    except NameInvalid:
        raise NameInvalid(f"invalid {what} name {text[:100]!r}: use {_NAME_RULE}") from None
    if "/" in text:
        raise NameInvalid(f"invalid {what} name {text[:100]!r}: use {_NAME_RULE}")
    return text


def repository_name(text: str) -> RepositoryName:
    """
    Parse C{namespace/name} (the name may have further components).

    @raise NameInvalid: If it does not follow the grammar or has no namespace.
    """
    name = RepositoryName.parse(text)
    if "/" not in text:
        raise NameInvalid(f"invalid repository name {text[:100]!r}: name it namespace/name")
    return name


# Rendering


def _time(seconds: float) -> str:
    """RFC 3339 UTC time."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(request: IRequest, document: object, status: int = 200, location: str | None = None) -> bytes:
    """Render C{document} as the JSON response (never cached: it may hold a token)."""
    body = json.dumps(document, separators=(",", ":")).encode()
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    request.setHeader(b"Cache-Control", b"no-store")
    if location is not None:
        request.setHeader(b"Location", location.encode())
    return body


def _no_content(request: IRequest) -> bytes:
    """An empty 204 response."""
    request.setResponseCode(204)
    request.setHeader(b"Cache-Control", b"no-store")
    return b""


def _account_doc(account: Account) -> dict[str, JSONValue]:
    """The JSON form of a user or organization."""
    return {
        "name": account.name,
        "email": account.email,
        "managed": account.managed,
        "created_at": _time(account.created_at),
    }


def _team_doc(team: Team) -> dict[str, JSONValue]:
    """The JSON form of a team with its members."""
    return {
        "organization": team.org,
        "name": team.name,
        "role": team.role,
        "description": team.description,
        "managed": team.managed,
        "members": list(team.members),
    }


def _robot_doc(robot: Robot, token: str | None = None) -> dict[str, JSONValue]:
    """The JSON form of a robot, with its token when C{token} is given."""
    document: dict[str, JSONValue] = {
        "name": robot.full_name,
        "namespace": robot.namespace,
        "shortname": robot.name,
        "description": robot.description,
        "managed": robot.managed,
        "created_at": _time(robot.created_at),
    }
    if token is not None:
        document["token"] = token
    return document


def _repository_doc(repository: Repository) -> dict[str, JSONValue]:
    """The JSON form of a repository's access settings."""
    return {
        "name": repository.name,
        "namespace": repository.name.split("/", 1)[0],
        "visibility": repository.visibility,
        "managed": repository.managed,
        "created_at": _time(repository.created_at),
    }


def _permission_doc(permission: Permission) -> dict[str, JSONValue]:
    """The JSON form of a permission; a team is named as in the URL (without its organization)."""
    subject = permission.subject
    namespace = permission.repository.split("/", 1)[0]
    if permission.kind == "team" and subject.startswith(f"{namespace}/"):
        subject = subject[len(namespace) + 1 :]
    return {
        "repository": permission.repository,
        "kind": permission.kind,
        "subject": subject,
        "role": permission.role,
        "managed": permission.managed,
    }


def _token_doc(token: RepositoryToken, secret: str | None = None) -> dict[str, JSONValue]:
    """The JSON form of a repository token, with its secret when C{secret} is given."""
    document: dict[str, JSONValue] = {
        "id": token.id,
        "repository": token.repository,
        "description": token.description,
        "role": token.role,
        "managed": token.managed,
        "created_at": _time(token.created_at),
    }
    if secret is not None:
        document["token"] = secret
    return document


def _webhook_doc(webhook: Webhook) -> dict[str, JSONValue]:
    """The JSON form of a webhook: whether it has a secret, never the secret."""
    return {
        "id": webhook.id,
        "repository": webhook.repository,
        "url": webhook.url,
        "description": webhook.description,
        "has_secret": webhook.has_secret,
        "managed": webhook.managed,
        "created_at": _time(webhook.created_at),
    }


def _delivery_doc(delivery: Delivery) -> dict[str, JSONValue]:
    """The JSON form of a delivery's state (without its payload)."""
    pending = delivery.state == "pending"
    return {
        "id": delivery.id,
        "webhook": delivery.webhook,
        "event": delivery.event,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "next_attempt_at": _time(delivery.next_attempt_at) if pending else None,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "created_at": _time(delivery.created_at),
        "finished_at": None if delivery.finished_at is None else _time(delivery.finished_at),
    }


def check_webhook_target(url: str, policy: TargetPolicy) -> str:
    """
    Check a webhook URL before it is stored: its form (L{check_url}) and, when its host is an
    IP address or a C{localhost} name, the address rules of C{policy}. Other host names are
    checked after DNS resolution, each time a delivery connects.

    @param url: The URL.
    @param policy: The addresses webhooks may reach.
    @return: The URL.
    @raise TargetRefused: With the reason.
    """
    check_url(url)
    host = (urlsplit(url).hostname or "").rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if (host == "localhost" or host.endswith(".localhost")) and not policy.allow_loopback:
            raise TargetRefused(f"{host} is a loopback name") from None
        return url
    check_address(str(address), policy)
    return url


def _audit_doc(entry: AuditEntry) -> dict[str, JSONValue]:
    """The JSON form of an audit entry."""
    return {
        "id": entry.id,
        "at": _time(entry.at),
        "actor": entry.actor,
        "client": entry.client,
        "action": entry.action,
        "target": entry.target,
        "detail": entry.detail,
    }


def _admins(
    teams: Iterable[Team], without_team: str | None = None, without: tuple[str, str] | None = None
) -> set[str]:
    """
    The members of an organization's admin-role teams, leaving out one team
    (C{without_team}) or one membership (C{without}: team, user).
    """
    admins: set[str] = set()
    for team in teams:
        if team.role != "admin" or team.name == without_team:
            continue
        admins.update(m for m in team.members if (team.name, m) != without)
    return admins


class AdminApp:
    """
    The C{/api/v1} routes.

    @ivar app: The Klein app; C{AdminApp(...).app.resource()} serves it.
    """

    app = Klein()

    def __init__(
        self,
        *,
        identity: IdentityStore,
        secrets: SecretBox,
        access: AccessControl,
        run_blocking: BlockingRunner,
        superusers: frozenset[str],
        managed_source: str,
        clock: IReactorTime,
        webhooks: WebhookStore | None = None,
        webhook_policy: TargetPolicy | None = None,
        wake: Callable[[], None] | None = None,
        public_hostname: str | None = None,
        public_scheme: str = "https",
    ) -> None:
        """
        @param identity: Users, organizations, teams, robots, repositories and the audit log.
        @param secrets: Encrypts robot and repository tokens and webhook secrets at rest.
        @param access: Authenticates callers; its policy answers repository access.
        @param run_blocking: Runs bcrypt off the reactor thread.
        @param superusers: User names that may do everything.
        @param managed_source: The configuration file, named when a managed object is refused.
        @param clock: Bounds the wait for password hashing.
        @param webhooks: Webhooks and their deliveries; without it the webhook routes answer 503.
        @param webhook_policy: The addresses webhooks may reach, checked when one is created
            (IP-address hosts only; the dispatcher checks every address it connects to).
        @param wake: Called after a test event or a redelivery is queued, so that the
            dispatcher polls soon (L{quayd.webhooks.dispatcher.WebhookDispatcher.wake}).
        @param public_hostname: The registry's public C{host[:port]}, for the C{docker_url} of
            test events; C{None} uses the request's C{Host} header.
        @param public_scheme: C{http} or C{https}, for the C{homepage} of test events.
        """
        self._identity = identity
        self._secrets = secrets
        self._access = access
        self._run = run_blocking
        self._superusers = superusers
        self._managed_source = managed_source
        self._clock = clock
        self._webhooks = webhooks
        self._webhook_policy = webhook_policy if webhook_policy is not None else TargetPolicy()
        self._wake = wake
        self._public_hostname = public_hostname
        self._public_scheme = public_scheme
        self._openapi = json.dumps(openapi_document(), separators=(",", ":")).encode()

    def resource(self) -> IResource:
        """The twisted.web resource serving these routes."""
        resource: IResource = self.app.resource()
        return resource

    # Errors

    @app.handle_errors(WerkzeugNotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        """Unknown paths answer with a JSON error."""
        return render_error(request, Failure(NotFoundRoute(f"no route for {request.path[:200]!r}")))

    @app.handle_errors(WerkzeugMethodNotAllowed)
    def not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        """Known paths with the wrong method answer 405."""
        return render_error(request, Failure(MethodNotAllowed()))

    @app.handle_errors(Exception)
    def error(self, request: IRequest, failure: Failure) -> bytes:
        """Every other failure goes through the one renderer."""
        return render_error(request, failure)

    # Authentication and authorization

    async def _principal(self, request: IRequest) -> Principal:
        """
        The authenticated caller.

        @raise Unauthorized: For anonymous callers (with the challenge), or wrong credentials.
        """
        principal = await self._access.authenticate(request.requestHeaders, _client(request), required=True)
        if principal.kind == "anonymous":
            # A bearer token issued to an anonymous client names no one.
            raise Unauthorized(
                "authentication required", headers={"WWW-Authenticate": self._access.challenge()}
            )
        return principal

    def _is_superuser(self, principal: Principal) -> bool:
        """Whether C{principal} is a user listed as a superuser."""
        return principal.kind == "user" and principal.name in self._superusers

    @staticmethod
    def _user_of(principal: Principal) -> str:
        """
        The caller's user name.

        @raise Denied: For robots and repository tokens.
        """
        if principal.kind != "user" or principal.name is None:
            raise Denied("robot accounts and repository tokens cannot administer the registry")
        return principal.name

    async def _superuser(self, request: IRequest) -> Principal:
        """Authorize a superuser."""
        principal = await self._principal(request)
        if not self._is_superuser(principal):
            raise Denied("only superusers may do this")
        return principal

    async def _org_role(self, org: str, user: str) -> str | None:
        """The user's strongest team role in C{org}."""
        role: str | None = None
        for team in await self._identity.list_teams(org):
            if user in team.members:
                role = stronger(role, team.role, TEAM_ROLES)
        return role

    async def _org_admin(self, request: IRequest, org: str) -> tuple[Principal, Account]:
        """
        Authorize an organization administrator (or a superuser) for C{org}.

        @raise Denied: For anyone else, whether or not the organization exists.
        @raise NotFound: If it does not exist (only superusers learn that).
        """
        principal = await self._principal(request)
        user = self._user_of(principal)
        simple_name(org, "organization")
        if not self._is_superuser(principal) and await self._org_role(org, user) != "admin":
            raise Denied(f"only administrators of the organization {org} may do this")
        account = await self._identity.get_account(org)
        if account is None or account.kind != "org":
            raise NotFound(f"no organization {org}")
        return principal, account

    async def _namespace_admin(self, request: IRequest, namespace: str) -> tuple[Principal, Account]:
        """
        Authorize the administrator of a namespace: the user themself, the
        organization's administrators, or a superuser.
        """
        principal = await self._principal(request)
        user = self._user_of(principal)
        simple_name(namespace, "namespace")
        account = await self._identity.get_account(namespace)
        if not self._is_superuser(principal):
            allowed = account is not None and (
                (account.kind == "user" and account.name == user)
                or (account.kind == "org" and await self._org_role(namespace, user) == "admin")
            )
            if not allowed:
                raise Denied(f"only administrators of the namespace {namespace} may do this")
        if account is None:
            raise NotFound(f"no user or organization {namespace}")
        return principal, account

    async def _repository(
        self, request: IRequest, text: str, action: Action
    ) -> tuple[Principal, RepositoryName, Repository]:
        """
        Authorize C{action} on an existing repository (changes need a user).

        @raise Denied: If the policy does not allow it.
        @raise NameUnknown: If the repository does not exist.
        """
        principal = await self._principal(request)
        if action is not Action.PULL:
            self._user_of(principal)
        name = repository_name(text)
        if action not in await self._access.policy.allowed_actions(principal, name):
            what = "administrators" if action is Action.ADMIN else "those who may pull it"
            raise Denied(f"only {what} may do this to the repository {name}")
        repository = await self._identity.get_repository(str(name))
        if repository is None:
            raise NameUnknown(f"repository {name} is not known", detail={"name": str(name)})
        return principal, name, repository

    def _refuse_managed(self, managed: bool, what: str) -> None:
        """
        @raise Managed: If C{managed}.
        """
        if managed:
            raise Managed(f"{what} is managed by {self._managed_source}; change it there")

    async def _refuse_managed_contents(self, account: Account) -> None:
        """
        Refuse deleting an account that holds objects the configuration declares
        (repositories, robots, teams, permissions, team memberships).
        """
        name = account.name
        dependents: list[str] = [
            f"repository {r.name}" for r in await self._identity.list_repositories(name) if r.managed
        ]
        dependents += [f"robot {r.full_name}" for r in await self._identity.list_robots(name) if r.managed]
        if account.kind == "org":
            dependents += [
                f"team {name}/{t.name}" for t in await self._identity.list_teams(name) if t.managed
            ]
        for permission in await self._identity.list_permissions():
            if not permission.managed:
                continue
            subject = permission.subject
            if (
                (permission.kind == "user" and subject == name)
                or (permission.kind == "team" and subject.startswith(f"{name}/"))
                or (permission.kind == "robot" and subject.startswith(f"{name}+"))
            ):
                dependents.append(f"the {permission.kind} permission of {subject} on {permission.repository}")
        if account.kind == "user":
            for org in await self._identity.list_accounts("org"):
                dependents += [
                    f"membership of team {org.name}/{t.name}"
                    for t in await self._identity.list_teams(org.name)
                    if t.managed and name in t.members
                ]
        if dependents:
            raise Managed(
                f"{account.kind} {name} holds {dependents[0]}, which is managed by "
                f"{self._managed_source}; change it there"
            )

    async def _refuse_managed_permissions(self, kind: str, subject: str) -> None:
        """Refuse deleting a team or robot that a managed permission names."""
        for permission in await self._identity.list_permissions():
            if permission.managed and permission.kind == kind and permission.subject == subject:
                raise Managed(
                    f"{kind} {subject} has a permission on {permission.repository} that is managed by "
                    f"{self._managed_source}; change it there"
                )

    async def _audit(
        self,
        request: IRequest,
        principal: Principal,
        action: str,
        target: str,
        detail: dict[str, object] | None = None,
    ) -> None:
        """Record a change in the audit log (C{detail} never holds a secret)."""
        await self._identity.audit(principal.subject, _client(request), action, target, detail or {})
        _log.info(
            "admin API: {actor} {action} {target}", actor=principal.subject, action=action, target=target
        )

    async def _hash(self, password: str) -> str:
        """Hash a password on the blocking pool."""
        hashing = self._run(hash_password, password)
        hashing.addTimeout(HASH_TIMEOUT, self._clock)
        try:
            return await hashing
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
        except DeferredTimeoutError:
            raise Unavailable("password hashing is overloaded; retry later") from None

    def _reveal(self, ciphertext: str) -> str:
        """Decrypt a stored token for its administrator."""
        try:
            return self._secrets.decrypt(ciphertext)
        except KeyFileError:
            _log.error(
                "a stored robot token cannot be decrypted: is the secret key the one it was made with?"
            )
            raise RegistryError(
                "the stored token cannot be decrypted: is the secret key the one it was made with?"
            ) from None

    # OpenAPI

    @app.route("/api/v1/openapi.json", methods=["GET"])
    async def openapi(self, request: IRequest) -> bytes:
        """The OpenAPI 3.1 description of this API."""
        await self._principal(request)
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        request.setHeader(b"Content-Length", str(len(self._openapi)).encode())
        return self._openapi

    # Users

    def _user_doc(self, account: Account) -> dict[str, JSONValue]:
        """The JSON form of a user."""
        document = _account_doc(account)
        document["superuser"] = account.name in self._superusers
        return document

    async def _self_or_superuser(self, request: IRequest, name: str) -> Principal:
        """Authorize a superuser or the user C{name} themself."""
        principal = await self._principal(request)
        simple_name(name, "user")
        if not self._is_superuser(principal) and not (principal.kind == "user" and principal.name == name):
            raise Denied("only superusers and the user themself may do this")
        return principal

    async def _existing_user(self, name: str) -> Account:
        """The user C{name}; L{NotFound} if there is none (or it is an organization)."""
        account = await self._identity.get_account(name)
        if account is None or account.kind != "user":
            raise NotFound(f"no user {name}")
        return account

    @app.route("/api/v1/users", methods=["GET"])
    async def list_users(self, request: IRequest) -> bytes:
        """Every user (superusers only)."""
        await self._superuser(request)
        users = await self._identity.list_accounts("user")
        return _json(request, {"users": [self._user_doc(u) for u in users]})

    @app.route("/api/v1/users", methods=["POST"])
    async def create_user(self, request: IRequest) -> bytes:
        """Create a user (superusers only)."""
        principal = await self._superuser(request)
        body = read_json(request, ("name", "email", "password"), ("name",))
        name = simple_name(_required(body, "name", 255), "user")
        email = _email(body)
        password = _password(body)
        if await self._identity.get_account(name) is not None:
            raise AlreadyExists(f"the name {name} is taken by a user or organization")
        password_hash = None if password is None else await self._hash(password)
        try:
            account = await self._identity.create_user(name, email, password_hash)
        except Conflict:
            raise AlreadyExists(f"the name {name} is taken by a user or organization") from None
        await self._audit(
            request, principal, "user.create", name, {"email": email, "password_set": password is not None}
        )
        return _json(request, self._user_doc(account), 201, f"/api/v1/users/{name}")

    @app.route("/api/v1/users/<name>", methods=["GET"])
    async def get_user(self, request: IRequest, name: str) -> bytes:
        """A user (superusers, and the user themself)."""
        await self._self_or_superuser(request, name)
        return _json(request, self._user_doc(await self._existing_user(name)))

    @app.route("/api/v1/users/<name>", methods=["PUT"])
    async def update_user(self, request: IRequest, name: str) -> bytes:
        """Change a user's e-mail address or password (superusers, and the user themself)."""
        principal = await self._self_or_superuser(request, name)
        body = read_json(request, ("email", "password"))
        email = _email(body)
        password = _password(body)
        account = await self._existing_user(name)
        self._refuse_managed(account.managed, f"user {name}")
        password_hash = None if password is None else await self._hash(password)
        if not await self._identity.update_user(name, email=email, password_hash=password_hash):
            raise NotFound(f"no user {name}")
        detail: dict[str, object] = {}
        if email is not None:
            detail["email"] = email
        if password is not None:
            detail["password_changed"] = True
        await self._audit(request, principal, "user.update", name, detail)
        return _json(request, self._user_doc(await self._existing_user(name)))

    @app.route("/api/v1/users/<name>", methods=["DELETE"])
    async def delete_user(self, request: IRequest, name: str) -> bytes:
        """Delete a user with their robots and repositories (superusers only)."""
        principal = await self._superuser(request)
        simple_name(name, "user")
        account = await self._existing_user(name)
        self._refuse_managed(account.managed, f"user {name}")
        await self._refuse_managed_contents(account)
        if not await self._identity.delete_account(name):
            raise NotFound(f"no user {name}")
        await self._audit(request, principal, "user.delete", name)
        return _no_content(request)

    # Organizations

    @app.route("/api/v1/organizations", methods=["GET"])
    async def list_organizations(self, request: IRequest) -> bytes:
        """Every organization for superusers; the caller's own for other users."""
        principal = await self._principal(request)
        user = self._user_of(principal)
        orgs = await self._identity.list_accounts("org")
        if not self._is_superuser(principal):
            orgs = [org for org in orgs if await self._org_role(org.name, user) is not None]
        return _json(request, {"organizations": [_account_doc(org) for org in orgs]})

    @app.route("/api/v1/organizations", methods=["POST"])
    async def create_organization(self, request: IRequest) -> bytes:
        """Create an organization; its creator joins its C{owners} team (any user)."""
        principal = await self._principal(request)
        user = self._user_of(principal)
        body = read_json(request, ("name", "email"), ("name",))
        name = simple_name(_required(body, "name", 255), "organization")
        email = _email(body)
        if await self._identity.get_account(user) is None:
            raise Denied(f"the account {user} no longer exists")
        try:
            account = await self._identity.create_org(name, email)
        except Conflict:
            raise AlreadyExists(f"the name {name} is taken by a user or organization") from None
        await self._identity.add_team_member(name, OWNERS_TEAM, user)
        await self._audit(request, principal, "org.create", name, {"email": email, "owner": user})
        return _json(request, _account_doc(account), 201, f"/api/v1/organizations/{name}")

    @app.route("/api/v1/organizations/<org>", methods=["GET"])
    async def get_organization(self, request: IRequest, org: str) -> bytes:
        """An organization (its administrators)."""
        _, account = await self._org_admin(request, org)
        return _json(request, _account_doc(account))

    @app.route("/api/v1/organizations/<org>", methods=["DELETE"])
    async def delete_organization(self, request: IRequest, org: str) -> bytes:
        """Delete an organization with its teams, robots and repositories (its administrators)."""
        principal, account = await self._org_admin(request, org)
        self._refuse_managed(account.managed, f"organization {org}")
        await self._refuse_managed_contents(account)
        if not await self._identity.delete_account(org):
            raise NotFound(f"no organization {org}")
        await self._audit(request, principal, "org.delete", org)
        return _no_content(request)

    # Teams

    async def _existing_team(self, org: str, name: str) -> Team:
        """A team; L{NotFound} if there is none."""
        team = await self._identity.get_team(org, name)
        if team is None:
            raise NotFound(f"no team {name} in {org}")
        return team

    @app.route("/api/v1/organizations/<org>/teams", methods=["GET"])
    async def list_teams(self, request: IRequest, org: str) -> bytes:
        """The organization's teams with their members (its administrators)."""
        await self._org_admin(request, org)
        teams = await self._identity.list_teams(org)
        return _json(request, {"teams": [_team_doc(t) for t in teams]})

    @app.route("/api/v1/organizations/<org>/teams/<team>", methods=["PUT"])
    async def put_team(self, request: IRequest, org: str, team: str) -> bytes:
        """Create a team, or change its role or description (organization administrators)."""
        principal, _ = await self._org_admin(request, org)
        simple_name(team, "team")
        body = read_json(request, ("role", "description"))
        role = _string(body, "role", 20, TEAM_ROLES)
        description = _string(body, "description", MAX_DESCRIPTION)
        teams = await self._identity.list_teams(org)
        existing = next((t for t in teams if t.name == team), None)
        detail: dict[str, object] = {
            k: v for k, v in (("role", role), ("description", description)) if v is not None
        }
        if existing is None:
            if role is None:
                raise InvalidRequest("missing field role (needed to create a team)")
            try:
                await self._identity.create_team(org, team, role, description or "")
            except Conflict:
                raise AlreadyExists(f"team {team} exists in {org}") from None
            await self._audit(request, principal, "team.create", f"{org}/{team}", detail)
            return _json(
                request,
                _team_doc(await self._existing_team(org, team)),
                201,
                f"/api/v1/organizations/{org}/teams/{team}",
            )
        self._refuse_managed(existing.managed, f"team {org}/{team}")
        if role is not None and role != "admin" and existing.role == "admin":
            if team == OWNERS_TEAM:
                raise AlreadyExists(f"the {OWNERS_TEAM} team always has the admin role")
            if _admins(teams) and not _admins(teams, without_team=team):
                raise AlreadyExists(f"the organization {org} would be left without administrators")
        if not await self._identity.update_team(org, team, role=role, description=description):
            raise NotFound(f"no team {team} in {org}")
        await self._audit(request, principal, "team.update", f"{org}/{team}", detail)
        return _json(request, _team_doc(await self._existing_team(org, team)))

    @app.route("/api/v1/organizations/<org>/teams/<team>", methods=["DELETE"])
    async def delete_team(self, request: IRequest, org: str, team: str) -> bytes:
        """Delete a team and its repository permissions (organization administrators)."""
        principal, _ = await self._org_admin(request, org)
        simple_name(team, "team")
        teams = await self._identity.list_teams(org)
        existing = next((t for t in teams if t.name == team), None)
        if existing is None:
            raise NotFound(f"no team {team} in {org}")
        self._refuse_managed(existing.managed, f"team {org}/{team}")
        if team == OWNERS_TEAM:
            raise AlreadyExists(f"the {OWNERS_TEAM} team cannot be deleted")
        if _admins(teams) and not _admins(teams, without_team=team):
            raise AlreadyExists(f"the organization {org} would be left without administrators")
        await self._refuse_managed_permissions("team", f"{org}/{team}")
        if not await self._identity.delete_team(org, team):
            raise NotFound(f"no team {team} in {org}")
        await self._audit(request, principal, "team.delete", f"{org}/{team}")
        return _no_content(request)

    @app.route("/api/v1/organizations/<org>/teams/<team>/members/<user>", methods=["PUT"])
    async def add_team_member(self, request: IRequest, org: str, team: str, user: str) -> bytes:
        """Add a user to a team (organization administrators)."""
        principal, _ = await self._org_admin(request, org)
        simple_name(team, "team")
        simple_name(user, "user")
        existing = await self._existing_team(org, team)
        self._refuse_managed(existing.managed, f"team {org}/{team}")
        await self._existing_user(user)
        try:
            await self._identity.add_team_member(org, team, user)
        except Conflict:
            raise NotFound(f"no user {user}") from None
        await self._audit(request, principal, "team.member.add", f"{org}/{team}", {"member": user})
        return _json(request, _team_doc(await self._existing_team(org, team)))

    @app.route("/api/v1/organizations/<org>/teams/<team>/members/<user>", methods=["DELETE"])
    async def remove_team_member(self, request: IRequest, org: str, team: str, user: str) -> bytes:
        """Remove a user from a team (organization administrators)."""
        principal, _ = await self._org_admin(request, org)
        simple_name(team, "team")
        simple_name(user, "user")
        teams = await self._identity.list_teams(org)
        existing = next((t for t in teams if t.name == team), None)
        if existing is None:
            raise NotFound(f"no team {team} in {org}")
        self._refuse_managed(existing.managed, f"team {org}/{team}")
        if user not in existing.members:
            raise NotFound(f"{user} is not a member of {org}/{team}")
        if _admins(teams) and not _admins(teams, without=(team, user)):
            raise AlreadyExists(f"the organization {org} would be left without administrators")
        if not await self._identity.remove_team_member(org, team, user):
            raise NotFound(f"{user} is not a member of {org}/{team}")
        await self._audit(request, principal, "team.member.remove", f"{org}/{team}", {"member": user})
        return _no_content(request)

    # Robots

    async def _existing_robot(self, namespace: str, name: str) -> Robot:
        """A robot; L{NotFound} if there is none."""
        simple_name(name, "robot")
        robot = await self._identity.get_robot(namespace, name)
        if robot is None:
            raise NotFound(f"no robot {namespace}+{name}")
        return robot

    @app.route("/api/v1/namespaces/<namespace>/robots", methods=["GET"])
    async def list_robots(self, request: IRequest, namespace: str) -> bytes:
        """The namespace's robots, without their tokens (namespace administrators)."""
        await self._namespace_admin(request, namespace)
        robots = await self._identity.list_robots(namespace)
        return _json(request, {"robots": [_robot_doc(r) for r in robots]})

    @app.route("/api/v1/namespaces/<namespace>/robots/<name>", methods=["GET"])
    async def get_robot(self, request: IRequest, namespace: str, name: str) -> bytes:
        """A robot with its token (namespace administrators)."""
        await self._namespace_admin(request, namespace)
        robot = await self._existing_robot(namespace, name)
        ciphertext = await self._identity.robot_token_ciphertext(namespace, name)
        if ciphertext is None:
            raise NotFound(f"no robot {namespace}+{name}")
        return _json(request, _robot_doc(robot, self._reveal(ciphertext)))

    @app.route("/api/v1/namespaces/<namespace>/robots/<name>", methods=["PUT"])
    async def create_robot(self, request: IRequest, namespace: str, name: str) -> bytes:
        """Create a robot; the answer holds its token (namespace administrators)."""
        principal, _ = await self._namespace_admin(request, namespace)
        simple_name(name, "robot")
        body = read_json(request, ("description",))
        description = _string(body, "description", MAX_DESCRIPTION) or ""
        if await self._identity.get_robot(namespace, name) is not None:
            raise AlreadyExists(f"robot {namespace}+{name} exists")
        token = new_token()
        try:
            robot = await self._identity.create_robot(
                namespace, name, self._secrets.encrypt(token), description
            )
        except Conflict:
            raise AlreadyExists(f"robot {namespace}+{name} exists") from None
        await self._audit(request, principal, "robot.create", robot.full_name, {"description": description})
        return _json(request, _robot_doc(robot, token), 201, f"/api/v1/namespaces/{namespace}/robots/{name}")

    @app.route("/api/v1/namespaces/<namespace>/robots/<name>/regenerate", methods=["POST"])
    async def regenerate_robot(self, request: IRequest, namespace: str, name: str) -> bytes:
        """Give a robot a new token; the old one stops working at once (namespace administrators)."""
        principal, _ = await self._namespace_admin(request, namespace)
        robot = await self._existing_robot(namespace, name)
        self._refuse_managed(robot.managed, f"robot {robot.full_name}")
        token = new_token()
        if not await self._identity.update_robot(
            namespace, name, token_ciphertext=self._secrets.encrypt(token)
        ):
            raise NotFound(f"no robot {namespace}+{name}")
        await self._audit(request, principal, "robot.regenerate", robot.full_name)
        return _json(request, _robot_doc(robot, token))

    @app.route("/api/v1/namespaces/<namespace>/robots/<name>", methods=["DELETE"])
    async def delete_robot(self, request: IRequest, namespace: str, name: str) -> bytes:
        """Delete a robot and its permissions (namespace administrators)."""
        principal, _ = await self._namespace_admin(request, namespace)
        robot = await self._existing_robot(namespace, name)
        self._refuse_managed(robot.managed, f"robot {robot.full_name}")
        await self._refuse_managed_permissions("robot", robot.full_name)
        if not await self._identity.delete_robot(namespace, name):
            raise NotFound(f"no robot {namespace}+{name}")
        await self._audit(request, principal, "robot.delete", robot.full_name)
        return _no_content(request)

    # Repositories

    @app.route("/api/v1/repositories", methods=["GET"])
    async def list_repositories(self, request: IRequest) -> bytes:
        """The repositories the caller may pull, optionally of one namespace."""
        principal = await self._principal(request)
        namespace = _query(request, "namespace")
        if namespace is not None:
            simple_name(namespace, "namespace")
        repositories = await self._identity.list_repositories(namespace)
        if not self._is_superuser(principal):
            policy = self._access.policy
            repositories = [
                r
                for r in repositories
                if Action.PULL in await policy.allowed_actions(principal, RepositoryName(r.name))
            ]
        return _json(request, {"repositories": [_repository_doc(r) for r in repositories]})

    @app.route("/api/v1/repositories", methods=["POST"])
    async def create_repository(self, request: IRequest) -> bytes:
        """
        Create a repository: in the caller's own namespace, or in an
        organization where they are an administrator or creator.
        """
        principal = await self._principal(request)
        user = self._user_of(principal)
        body = read_json(request, ("namespace", "name", "visibility"), ("namespace", "name"))
        namespace = simple_name(_required(body, "namespace", 255), "namespace")
        short = _required(body, "name", 255)
        visibility = _string(body, "visibility", 20, VISIBILITIES) or "private"
        name = repository_name(f"{namespace}/{short}")
        if Action.PUSH not in await self._access.policy.allowed_actions(principal, name):
            raise Denied(
                f"only the owner, administrators and creators of {namespace} may create repositories there"
            )
        account = await self._identity.get_account(namespace)
        if account is None:
            raise NotFound(f"no user or organization {namespace}")
        try:
            repository = await self._identity.create_repository(str(name), visibility)
        except Conflict:
            raise AlreadyExists(f"repository {name} exists") from None
        detail: dict[str, object] = {"visibility": visibility}
        if account.kind == "org" and not self._is_superuser(principal):
            # As in Quay, whoever creates a repository in an organization administers it.
            await self._identity.set_permission(str(name), "user", user, "admin")
            detail["creator_admin"] = user
        await self._audit(request, principal, "repository.create", str(name), detail)
        return _json(request, _repository_doc(repository), 201, f"/api/v1/repositories/{name}")

    @app.route("/api/v1/repositories/<path:repository>", methods=["GET"])
    async def get_repository(self, request: IRequest, repository: str) -> bytes:
        """A repository (those who may pull it)."""
        _, _, found = await self._repository(request, repository, Action.PULL)
        return _json(request, _repository_doc(found))

    @app.route("/api/v1/repositories/<path:repository>", methods=["PUT"])
    async def update_repository(self, request: IRequest, repository: str) -> bytes:
        """Change a repository's visibility (repository administrators)."""
        principal, name, found = await self._repository(request, repository, Action.ADMIN)
        body = read_json(request, ("visibility",), ("visibility",))
        visibility = _required(body, "visibility", 20, VISIBILITIES)
        self._refuse_managed(found.managed, f"repository {name}")
        if not await self._identity.update_repository(str(name), visibility=visibility):
            raise NameUnknown(f"repository {name} is not known", detail={"name": str(name)})
        await self._audit(request, principal, "repository.update", str(name), {"visibility": visibility})
        updated = await self._identity.get_repository(str(name))
        assert updated is not None
        return _json(request, _repository_doc(updated))

    @app.route("/api/v1/repositories/<path:repository>", methods=["DELETE"])
    async def delete_repository(self, request: IRequest, repository: str) -> bytes:
        """Delete a repository with its tags, permissions and tokens (repository administrators)."""
        principal, name, found = await self._repository(request, repository, Action.ADMIN)
        self._refuse_managed(found.managed, f"repository {name}")
        for permission in await self._identity.list_permissions(str(name)):
            self._refuse_managed(
                permission.managed, f"the {permission.kind} permission of {permission.subject} on {name}"
            )
        for token in await self._identity.list_repository_tokens(str(name)):
            self._refuse_managed(token.managed, f"token {token.id} of {name}")
        if not await self._identity.delete_repository(str(name)):
            raise NameUnknown(f"repository {name} is not known", detail={"name": str(name)})
        await self._audit(request, principal, "repository.delete", str(name))
        return _no_content(request)

    # Permissions

    async def _subject(self, name: RepositoryName, kind: str, subject: str, check: bool) -> str:
        """
        The stored subject of a permission (C{user}, C{org/team}, C{ns+robot}).

        @param check: Whether the subject must exist and may be granted a role.
        """
        if kind not in PERMISSION_KINDS:
            raise InvalidRequest(f"the permission kind must be one of {', '.join(PERMISSION_KINDS)}")
        namespace = name.namespace
        if kind == "user":
            simple_name(subject, "user")
            if check:
                await self._existing_user(subject)
                if subject == namespace:
                    raise InvalidRequest(
                        f"{subject} owns {namespace} and is always an administrator of its repositories"
                    )
            return subject
        if kind == "team":
            simple_name(subject, "team")
            if check:
                account = await self._identity.get_account(namespace)
                if account is None or account.kind != "org":
                    raise InvalidRequest(
                        "teams can be granted roles only on repositories of their organization"
                    )
                await self._existing_team(namespace, subject)
            return f"{namespace}/{subject}"
        robot_namespace, plus, robot = subject.partition("+")
        if not plus:
            raise InvalidRequest(f"a robot is named namespace+name, not {subject[:100]!r}")
        simple_name(robot_namespace, "namespace")
        simple_name(robot, "robot")
        if check:
            if robot_namespace != namespace:
                raise InvalidRequest(
                    f"robots of {robot_namespace} cannot be granted roles on repositories of {namespace}"
                )
            await self._existing_robot(robot_namespace, robot)
        return subject

    async def _permission(self, name: RepositoryName, kind: str, subject: str) -> Permission | None:
        """The direct role of a stored subject on a repository, if any."""
        for permission in await self._identity.list_permissions(str(name)):
            if permission.kind == kind and permission.subject == subject:
                return permission
        return None

    @app.route("/api/v1/repositories/<path:repository>/permissions", methods=["GET"])
    async def list_permissions(self, request: IRequest, repository: str) -> bytes:
        """The repository's direct roles (repository administrators)."""
        _, name, _ = await self._repository(request, repository, Action.ADMIN)
        permissions = await self._identity.list_permissions(str(name))
        return _json(request, {"permissions": [_permission_doc(p) for p in permissions]})

    @app.route("/api/v1/repositories/<path:repository>/permissions/<kind>/<subject>", methods=["PUT"])
    async def set_permission(self, request: IRequest, repository: str, kind: str, subject: str) -> bytes:
        """Grant or change a user's, team's or robot's role (repository administrators)."""
        principal, name, _ = await self._repository(request, repository, Action.ADMIN)
        body = read_json(request, ("role",), ("role",))
        role = _required(body, "role", 20, REPOSITORY_ROLES)
        stored = await self._subject(name, kind, subject, check=True)
        existing = await self._permission(name, kind, stored)
        if existing is not None:
            self._refuse_managed(existing.managed, f"the {kind} permission of {stored} on {name}")
        try:
            await self._identity.set_permission(str(name), kind, stored, role)
        except Conflict:
            raise NameUnknown(f"repository {name} is not known", detail={"name": str(name)}) from None
        await self._audit(
            request, principal, "permission.set", str(name), {"kind": kind, "subject": stored, "role": role}
        )
        permission = await self._permission(name, kind, stored)
        assert permission is not None
        if existing is None:
            return _json(
                request,
                _permission_doc(permission),
                201,
                f"/api/v1/repositories/{name}/permissions/{kind}/{subject}",
            )
        return _json(request, _permission_doc(permission))

    @app.route("/api/v1/repositories/<path:repository>/permissions/<kind>/<subject>", methods=["DELETE"])
    async def delete_permission(self, request: IRequest, repository: str, kind: str, subject: str) -> bytes:
        """Revoke a direct role (repository administrators)."""
        principal, name, _ = await self._repository(request, repository, Action.ADMIN)
        stored = await self._subject(name, kind, subject, check=False)
        existing = await self._permission(name, kind, stored)
        if existing is None:
            raise NotFound(f"{stored} has no {kind} permission on {name}")
        self._refuse_managed(existing.managed, f"the {kind} permission of {stored} on {name}")
        if not await self._identity.delete_permission(str(name), kind, stored):
            raise NotFound(f"{stored} has no {kind} permission on {name}")
        await self._audit(
            request, principal, "permission.delete", str(name), {"kind": kind, "subject": stored}
        )
        return _no_content(request)

    # Repository tokens

    async def _existing_token(self, name: RepositoryName, token_id: str) -> RepositoryToken:
        """A token of repository C{name}; L{NotFound} if there is none there."""
        found = await self._identity.get_repository_token(token_id)
        if found is None or found[0].repository != str(name):
            raise NotFound(f"no token {token_id[:64]!r} on {name}")
        return found[0]

    @app.route("/api/v1/repositories/<path:repository>/tokens", methods=["GET"])
    async def list_tokens(self, request: IRequest, repository: str) -> bytes:
        """The repository's tokens, without secrets (repository administrators)."""
        _, name, _ = await self._repository(request, repository, Action.ADMIN)
        tokens = await self._identity.list_repository_tokens(str(name))
        return _json(request, {"tokens": [_token_doc(t) for t in tokens]})

    @app.route("/api/v1/repositories/<path:repository>/tokens", methods=["POST"])
    async def create_token(self, request: IRequest, repository: str) -> bytes:
        """Create a token (used as C{$token}); the answer holds its secret (repository administrators)."""
        principal, name, _ = await self._repository(request, repository, Action.ADMIN)
        body = read_json(request, ("description", "role"), ("description", "role"))
        description = _required(body, "description", MAX_DESCRIPTION)
        role = _required(body, "role", 20, TOKEN_ROLES)
        secret = new_token()
        token_id = uuid.uuid4().hex
        try:
            token = await self._identity.create_repository_token(
                token_id,
                str(name),
                description,
                role,
                self._secrets.lookup(secret),
                self._secrets.encrypt(secret),
            )
        except Conflict:
            raise NameUnknown(f"repository {name} is not known", detail={"name": str(name)}) from None
        await self._audit(
            request,
            principal,
            "token.create",
            str(name),
            {"id": token_id, "role": role, "description": description},
        )
        return _json(
            request, _token_doc(token, secret), 201, f"/api/v1/repositories/{name}/tokens/{token_id}"
        )

    @app.route("/api/v1/repositories/<path:repository>/tokens/<token_id>", methods=["PUT"])
    async def update_token(self, request: IRequest, repository: str, token_id: str) -> bytes:
        """Change a token's role or description (repository administrators)."""
        principal, name, _ = await self._repository(request, repository, Action.ADMIN)
        body = read_json(request, ("description", "role"))
        description = _string(body, "description", MAX_DESCRIPTION)
        role = _string(body, "role", 20, TOKEN_ROLES)
        token = await self._existing_token(name, token_id)
        self._refuse_managed(token.managed, f"token {token_id} of {name}")
        if not await self._identity.update_repository_token(token_id, role=role, description=description):
            raise NotFound(f"no token {token_id[:64]!r} on {name}")
        detail: dict[str, object] = {"id": token_id}
        detail.update({k: v for k, v in (("role", role), ("description", description)) if v is not None})
        await self._audit(request, principal, "token.update", str(name), detail)
        return _json(request, _token_doc(await self._existing_token(name, token_id)))

    @app.route("/api/v1/repositories/<path:repository>/tokens/<token_id>", methods=["DELETE"])
    async def delete_token(self, request: IRequest, repository: str, token_id: str) -> bytes:
        """Delete a token; it stops working at once (repository administrators)."""
        principal, name, _ = await self._repository(request, repository, Action.ADMIN)
        token = await self._existing_token(name, token_id)
        self._refuse_managed(token.managed, f"token {token_id} of {name}")
        if not await self._identity.delete_repository_token(token_id):
            raise NotFound(f"no token {token_id[:64]!r} on {name}")
        await self._audit(request, principal, "token.delete", str(name), {"id": token_id})
        return _no_content(request)

    # Webhooks

    def _webhook_store(self) -> WebhookStore:
        """
        The webhook store.

        @raise Unavailable: If this app was made without one.
        """
        if self._webhooks is None:
            raise Unavailable("push webhooks are not enabled on this server")
        return self._webhooks

    async def _existing_webhook(self, name: RepositoryName, webhook_id: str) -> Webhook:
        """A webhook of repository C{name}; L{NotFound} if there is none there."""
        found = await self._webhook_store().get_webhook(webhook_id)
        if found is None or found[0].repository != str(name):
            raise NotFound(f"no webhook {webhook_id[:64]!r} on {name}")
        return found[0]

    def _queued(self) -> None:
        """Wake the dispatcher after queuing a delivery, if it can be reached."""
        if self._wake is not None:
            self._wake()

    @app.route("/api/v1/repositories/<path:repository>/webhooks", methods=["GET"])
    async def list_webhooks(self, request: IRequest, repository: str) -> bytes:
        """The repository's push webhooks, without secrets (repository administrators)."""
        _, name, _ = await self._repository(request, repository, Action.ADMIN)
        webhooks = await self._webhook_store().list_webhooks(str(name))
        return _json(request, {"webhooks": [_webhook_doc(w) for w in webhooks]})

    @app.route("/api/v1/repositories/<path:repository>/webhooks", methods=["POST"])
    async def create_webhook(self, request: IRequest, repository: str) -> bytes:
        """
        Add a push webhook; its optional secret signs every delivery and is never shown again
        (repository administrators).
        """
        principal, name, _ = await self._repository(request, repository, Action.ADMIN)
        store = self._webhook_store()
        body = read_json(request, ("url", "secret", "description"), ("url",))
        url = _required(body, "url", MAX_WEBHOOK_URL)
        try:
            check_webhook_target(url, self._webhook_policy)
        except TargetRefused as e:
            raise InvalidRequest(f"url is not allowed: {e}") from None
        secret = _string(body, "secret", MAX_WEBHOOK_SECRET_BYTES)
        if secret is not None:
            if not secret:
                raise InvalidRequest("secret must not be empty; leave it out for unsigned deliveries")
            if len(secret.encode()) > MAX_WEBHOOK_SECRET_BYTES:
                raise InvalidRequest(f"secret is longer than {MAX_WEBHOOK_SECRET_BYTES} bytes")
        description = _string(body, "description", MAX_DESCRIPTION) or ""
        if any(w.url == url for w in await store.list_webhooks(str(name))):
            raise AlreadyExists(f"{name} already has a webhook to this URL")
        try:
            webhook = await store.create_webhook(
                str(name), url, description, None if secret is None else self._secrets.encrypt(secret)
            )
        except Conflict:
            raise NameUnknown(f"repository {name} is not known", detail={"name": str(name)}) from None
        await self._audit(
            request,
            principal,
            "webhook.create",
            str(name),
            {"id": webhook.id, "url": url, "description": description, "has_secret": secret is not None},
        )
        return _json(
            request, _webhook_doc(webhook), 201, f"/api/v1/repositories/{name}/webhooks/{webhook.id}"
        )

    @app.route("/api/v1/repositories/<path:repository>/webhooks/<webhook_id>", methods=["GET"])
    async def get_webhook(self, request: IRequest, repository: str, webhook_id: str) -> bytes:
        """A webhook, without its secret (repository administrators)."""
        _, name, _ = await self._repository(request, repository, Action.ADMIN)
        return _json(request, _webhook_doc(await self._existing_webhook(name, webhook_id)))

    @app.route("/api/v1/repositories/<path:repository>/webhooks/<webhook_id>", methods=["DELETE"])
    async def delete_webhook(self, request: IRequest, repository: str, webhook_id: str) -> bytes:
        """Delete a webhook with its deliveries, pending ones included (repository administrators)."""
        principal, name, _ = await self._repository(request, repository, Action.ADMIN)
        webhook = await self._existing_webhook(name, webhook_id)
        self._refuse_managed(webhook.managed, f"webhook {webhook_id} of {name}")
        if not await self._webhook_store().delete_webhook(webhook_id):
            raise NotFound(f"no webhook {webhook_id[:64]!r} on {name}")
        await self._audit(
            request, principal, "webhook.delete", str(name), {"id": webhook_id, "url": webhook.url}
        )
        return _no_content(request)

    @app.route("/api/v1/repositories/<path:repository>/webhooks/<webhook_id>/test", methods=["POST"])
    async def test_webhook(self, request: IRequest, repository: str, webhook_id: str) -> bytes:
        """
        Queue a test event (a push payload for an imaginary C{latest} tag, event C{test});
        the answer is the new delivery (repository administrators).
        """
        principal, name, found = await self._repository(request, repository, Action.ADMIN)
        read_json(request, ())
        webhook = await self._existing_webhook(name, webhook_id)
        hostname = self._public_hostname
        if hostname is None:
            hostname = (request.getHeader(b"host") or b"localhost").decode("ascii", "replace")
        payload = sample_payload(
            repository=str(name), hostname=hostname, scheme=self._public_scheme, visibility=found.visibility
        )
        delivery = await self._webhook_store().enqueue(
            webhook.id, str(name), "test", json.dumps(payload, separators=(",", ":"))
        )
        self._queued()
        await self._audit(
            request, principal, "webhook.test", str(name), {"id": webhook.id, "delivery": delivery.id}
        )
        return _json(request, _delivery_doc(delivery), 202)

    @app.route("/api/v1/repositories/<path:repository>/webhooks/<webhook_id>/deliveries", methods=["GET"])
    async def list_deliveries(self, request: IRequest, repository: str, webhook_id: str) -> bytes:
        """A webhook's recent deliveries, newest first, with their state (repository administrators)."""
        _, name, _ = await self._repository(request, repository, Action.ADMIN)
        limit = _int_query(request, "limit")
        if limit is None:
            limit = DEFAULT_DELIVERY_LIMIT
        if not 1 <= limit <= MAX_DELIVERY_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_DELIVERY_LIMIT}")
        webhook = await self._existing_webhook(name, webhook_id)
        deliveries = await self._webhook_store().list_deliveries(webhook.id, limit)
        return _json(request, {"deliveries": [_delivery_doc(d) for d in deliveries]})

    @app.route(
        "/api/v1/repositories/<path:repository>/webhooks/<webhook_id>/deliveries/<delivery_id>/redeliver",
        methods=["POST"],
    )
    async def redeliver(self, request: IRequest, repository: str, webhook_id: str, delivery_id: str) -> bytes:
        """
        Queue a delivered or failed delivery's payload again, as a new delivery (repository
        administrators). A pending delivery is retried on its own and cannot be redelivered.
        """
        principal, name, _ = await self._repository(request, repository, Action.ADMIN)
        read_json(request, ())
        webhook = await self._existing_webhook(name, webhook_id)
        store = self._webhook_store()
        original = await store.get_delivery(delivery_id)
        if original is None or original.webhook != webhook.id:
            raise NotFound(f"no delivery {delivery_id[:64]!r} of webhook {webhook.id}")
        if original.state == "pending":
            raise AlreadyExists(f"delivery {delivery_id} is still pending; quayd retries it on its own")
        delivery = await store.redeliver(delivery_id)
        if delivery is None:
            raise NotFound(f"no delivery {delivery_id[:64]!r} of webhook {webhook.id}")
        self._queued()
        await self._audit(
            request,
            principal,
            "webhook.redeliver",
            str(name),
            {"id": webhook.id, "delivery": delivery.id, "original": delivery_id},
        )
        return _json(request, _delivery_doc(delivery), 202)

    # Audit

    @app.route("/api/v1/audit", methods=["GET"])
    async def audit_log(self, request: IRequest) -> bytes:
        """Audit entries, newest first, paged by C{limit} and C{before} (superusers only)."""
        await self._superuser(request)
        limit = _int_query(request, "limit")
        if limit is None:
            limit = DEFAULT_AUDIT_LIMIT
        if not 1 <= limit <= MAX_AUDIT_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_AUDIT_LIMIT}")
        before = _int_query(request, "before")
        entries = await self._identity.audit_log(limit, before)
        next_before = entries[-1].id if len(entries) == limit else None
        return _json(request, {"entries": [_audit_doc(e) for e in entries], "next": next_before})


def _int_query(request: IRequest, name: str) -> int | None:
    """
    A non-negative integer query parameter, or C{None} when absent.

    @raise InvalidRequest: If it is not one.
    """
    value = _query(request, name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise InvalidRequest(f"{name} must be a non-negative integer")
    return int(value)


class _AdminMount(Resource):
    """
    The site root serving C{/api/...} with the admin API and everything else
    with another resource; both see the request's full path.
    """

    def __init__(self, admin: IResource, other: IResource) -> None:
        """
        @param admin: The admin API's resource.
        @param other: The resource for every other path (the registry).
        """
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self._admin = admin
        self._other = other

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        """Pick the resource by the first path segment, which stays unconsumed."""
        # Resource traversal has just moved this segment from postpath to prepath: put it back.
        request.prepath.pop()
        request.postpath.insert(0, path)
        return self._admin if path == b"api" else self._other

    def render(self, request: IRequest) -> bytes | int:
        """A request without any path segment goes to the other resource."""
        rendered: bytes | int = self._other.render(request)
        return rendered


def mount_admin_api(admin: IResource, other: IResource) -> IResource:
    """
    A site root that serves C{/api/...} with C{admin} (an L{AdminApp}'s
    resource) and every other path with C{other} (the registry's resource).

    Both are Klein resources written with full paths, so neither consumes a
    path segment: C{QuaydSite(mount_admin_api(admin.resource(), registry.app.resource()))}.
    """
    return _AdminMount(admin, other)
