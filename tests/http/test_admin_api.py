"""
The admin API (C{/api/v1}) over real HTTP: every route, the permission rules
of each route group, managed objects, the audit log, robot and repository
tokens, the OpenAPI document, and the worked example end to end.

Every response is also checked against the OpenAPI document (see
C{admin_conftest.py}).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from quayd.admin.api import HASH_TIMEOUT, MAX_BODY_BYTES, AdminApp
from quayd.admin.openapi import openapi_document
from quayd.auth.policy import Action, Principal
from quayd.errors import JSONValue, Unauthorized, Unavailable
from quayd.types import RepositoryName
from tests.http.admin_conftest import (
    CONFIG_PATH,
    PASSWORDS,
    ROOT,
    AdminAPI,
    admin,
    as_user,
    basic,
    bearer,
    check_documented,
    check_schema,
    error_of,
    json_of,
    route_template,
)
from tests.support.http import Response

__all__ = ["admin"]  # the fixture, imported so that pytest finds it

P = ParamSpec("P")
T = TypeVar("T")

ROOT_AUTH = as_user(ROOT)
ALICE = as_user("alice")
BOB = as_user("bob")

#: One concrete request for every route of the API.
ROUTE_EXAMPLES: list[tuple[str, str]] = [
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"),
    ("GET", "/api/v1/users/alice"),
    ("PUT", "/api/v1/users/alice"),
    ("DELETE", "/api/v1/users/alice"),
    ("GET", "/api/v1/organizations"),
    ("POST", "/api/v1/organizations"),
    ("GET", "/api/v1/organizations/acme"),
    ("DELETE", "/api/v1/organizations/acme"),
    ("GET", "/api/v1/organizations/acme/teams"),
    ("PUT", "/api/v1/organizations/acme/teams/builders"),
    ("DELETE", "/api/v1/organizations/acme/teams/builders"),
    ("PUT", "/api/v1/organizations/acme/teams/builders/members/bob"),
    ("DELETE", "/api/v1/organizations/acme/teams/builders/members/bob"),
    ("GET", "/api/v1/namespaces/acme/robots"),
    ("GET", "/api/v1/namespaces/acme/robots/ci"),
    ("PUT", "/api/v1/namespaces/acme/robots/ci"),
    ("DELETE", "/api/v1/namespaces/acme/robots/ci"),
    ("POST", "/api/v1/namespaces/acme/robots/ci/regenerate"),
    ("GET", "/api/v1/repositories"),
    ("POST", "/api/v1/repositories"),
    ("GET", "/api/v1/repositories/acme/app"),
    ("PUT", "/api/v1/repositories/acme/app"),
    ("DELETE", "/api/v1/repositories/acme/app"),
    ("GET", "/api/v1/repositories/acme/app/permissions"),
    ("PUT", "/api/v1/repositories/acme/app/permissions/robot/acme+ci"),
    ("DELETE", "/api/v1/repositories/acme/app/permissions/robot/acme+ci"),
    ("GET", "/api/v1/repositories/acme/app/tokens"),
    ("POST", "/api/v1/repositories/acme/app/tokens"),
    ("PUT", "/api/v1/repositories/acme/app/tokens/0123"),
    ("DELETE", "/api/v1/repositories/acme/app/tokens/0123"),
    ("GET", "/api/v1/repositories/acme/app/webhooks"),
    ("POST", "/api/v1/repositories/acme/app/webhooks"),
    ("GET", "/api/v1/repositories/acme/app/webhooks/0123"),
    ("DELETE", "/api/v1/repositories/acme/app/webhooks/0123"),
    ("POST", "/api/v1/repositories/acme/app/webhooks/0123/test"),
    ("GET", "/api/v1/repositories/acme/app/webhooks/0123/deliveries"),
    ("POST", "/api/v1/repositories/acme/app/webhooks/0123/deliveries/4567/redeliver"),
    ("GET", "/api/v1/audit"),
]


def klein_routes() -> set[tuple[str, str]]:
    """Every (method, OpenAPI path) the Klein app routes (HEAD and OPTIONS aside)."""
    routes = set()
    for rule in AdminApp.app.url_map.iter_rules():
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routes.add((method, route_template(rule.rule)))
    return routes


def body_of(response_body: bytes) -> dict[str, JSONValue]:
    """A JSON object body."""
    document: dict[str, JSONValue] = json.loads(response_body)
    return document


async def make_org(admin: AdminAPI, org: str = "acme", owner: dict[str, str] = ALICE) -> None:
    """Create an organization as C{owner}."""
    response = await admin.call("POST", "/api/v1/organizations", owner, {"name": org})
    assert response.code == 201, response.body


async def make_repo(
    admin: AdminAPI, name: str, auth: dict[str, str] = ROOT_AUTH, visibility: str = "private"
) -> None:
    """Create C{namespace/name} as C{auth}."""
    namespace, _, short = name.partition("/")
    response = await admin.call(
        "POST",
        "/api/v1/repositories",
        auth,
        {"namespace": namespace, "name": short, "visibility": visibility},
    )
    assert response.code == 201, response.body


async def make_robot(admin: AdminAPI, namespace: str, name: str, auth: dict[str, str]) -> str:
    """Create a robot; returns its token."""
    response = await admin.call("PUT", f"/api/v1/namespaces/{namespace}/robots/{name}", auth, {})
    assert response.code == 201, response.body
    token: str = json_of(response)["token"]
    return token


async def make_token(admin: AdminAPI, repository: str, role: str = "read") -> tuple[str, str]:
    """Create a repository token as root; returns its id and secret."""
    response = await admin.call(
        "POST", f"/api/v1/repositories/{repository}/tokens", ROOT_AUTH, {"description": "ci", "role": role}
    )
    assert response.code == 201, response.body
    document = json_of(response)
    return document["id"], document["token"]


# General


def test_admin_routes_all_have_examples() -> None:
    """The route examples used by the anonymous test cover every Klein route."""
    adapter = AdminApp.app.url_map.bind("localhost")
    covered = set()
    for method, path in ROUTE_EXAMPLES:
        rule, _ = adapter.match(path, method=method, return_rule=True)
        covered.add((method, route_template(rule.rule)))
    assert covered == klein_routes()


@pytest.mark.parametrize(("method", "path"), ROUTE_EXAMPLES)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_anonymous_challenged(admin: AdminAPI, method: str, path: str) -> None:
    """Every route answers anonymous callers 401 with the registry's challenge."""
    response = await admin.call(method, path, body={})
    error_of(response, 401, "UNAUTHORIZED")
    assert (
        response.header("WWW-Authenticate")
        == 'Bearer realm="http://registry.test/v2/auth",service="registry.test"'
    )


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_wrong_password_rejected(admin: AdminAPI) -> None:
    """Wrong credentials get 401 with the challenge, before anything else is looked at."""
    response = await admin.call("GET", "/api/v1/users", basic(ROOT, "wrong"))
    error_of(response, 401, "UNAUTHORIZED")
    assert response.header("WWW-Authenticate") is not None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_bearer_token_authenticates(admin: AdminAPI) -> None:
    """A bearer token from the token endpoint works like the user's password; an anonymous one does not."""
    response = await admin.client.request("GET", "/v2/auth?service=registry.test", headers=ROOT_AUTH)
    assert response.code == 200, response.body
    token = json.loads(response.body)["token"]
    response = await admin.call("GET", "/api/v1/users", bearer(token))
    assert response.code == 200
    anonymous, _, _ = admin.tokens.issue("anonymous", [])
    error_of(await admin.call("GET", "/api/v1/repositories", bearer(anonymous)), 401, "UNAUTHORIZED")
    error_of(await admin.call("GET", "/api/v1/users", bearer("not.a.jwt")), 401, "UNAUTHORIZED")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_unknown_route_and_method(admin: AdminAPI) -> None:
    """Unknown paths get a JSON 404 and known paths with another method a JSON 405."""
    error_of(await admin.call("GET", "/api/v1/nothing", ROOT_AUTH), 404, "UNSUPPORTED")
    error_of(await admin.call("PATCH", "/api/v1/users", ROOT_AUTH), 405, "UNSUPPORTED")


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"name": 5}', "name must be a string"),
        (b'{"name": "carol", "admin": true}', "unknown field 'admin'"),
        (b'{"email": "carol@example.com"}', "missing field name"),
        (b'{"name": "carol", "email": "nope"}', "email must look like"),
        (b'{"name": "Carol!"}', "invalid user name"),
        (b'{"name": "carol", "password": ""}', "must not be empty"),
        ('{"name": "carol", "password": "ü' + "x" * 71 + '"}', "longer than 72 bytes"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_bad_bodies_rejected(admin: AdminAPI, raw: bytes | str, needle: str) -> None:
    """Malformed bodies, wrong types, unknown fields and bad values get 400 with a clear message."""
    data = raw.encode() if isinstance(raw, str) else raw
    response = await admin.call("POST", "/api/v1/users", ROOT_AUTH, raw=data)
    code = "NAME_INVALID" if "name" in needle and "invalid" in needle else "INVALID_REQUEST"
    assert needle in error_of(response, 400, code)
    assert await admin.identity.get_account("carol") is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_body_size_limited(admin: AdminAPI) -> None:
    """A body over the limit is refused with 413 without being parsed."""
    raw = json.dumps({"name": "carol", "email": "c@" + "x" * MAX_BODY_BYTES}).encode()
    error_of(await admin.call("POST", "/api/v1/users", ROOT_AUTH, raw=raw), 413, "SIZE_INVALID")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_openapi_document_covers_every_route(admin: AdminAPI) -> None:
    """The served OpenAPI document describes exactly the Klein routes, and its references resolve."""
    response = await admin.call("GET", "/api/v1/openapi.json", ALICE)
    assert response.code == 200
    document = json_of(response)
    assert document == openapi_document()
    assert document["openapi"] == "3.1.0"
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert documented == klein_routes()
    references = set()

    def walk(node: JSONValue) -> None:
        """Collect every C{$ref} below C{node}."""
        if isinstance(node, dict):
            if "$ref" in node:
                references.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    for reference in references:
        node = document
        for part in reference.removeprefix("#/").split("/"):
            node = node[part]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert names == _placeholders(path), (method, path)
            assert any(code.startswith("2") for code in operation["responses"]), (method, path)
            assert "401" in operation["responses"]
            if method in ("post", "put") and operation["operationId"] not in (
                "addTeamMember",
                "regenerateRobot",
            ):
                assert "requestBody" in operation, (method, path)


def _placeholders(path: str) -> set[str]:
    """The C{{name}} placeholders of an OpenAPI path."""
    return {part.split("}")[0] for part in path.split("{")[1:]}


def test_admin_openapi_checker_detects_mismatches() -> None:
    """The response check the tests rely on rejects undocumented statuses, fields and types."""
    user = {
        "name": "alice",
        "email": None,
        "managed": False,
        "created_at": "2024-01-01T00:00:00Z",
        "superuser": False,
    }
    check_schema(user, {"$ref": "#/components/schemas/User"})
    for wrong in (
        {**user, "extra": 1},
        {**user, "managed": "no"},
        {k: v for k, v in user.items() if k != "name"},
    ):
        with pytest.raises(AssertionError):
            check_schema(wrong, {"$ref": "#/components/schemas/User"})

    def response(code: int, body: bytes) -> Response:
        """A JSON response with C{code} and C{body}."""
        return Response(
            code=code, headers=Headers({"Content-Type": ["application/json"]}), body=body, length=None
        )

    check_documented("GET", "/api/v1/users/alice", response(200, json.dumps(user).encode()))
    with pytest.raises(AssertionError, match="not documented"):
        check_documented("GET", "/api/v1/users/alice", response(201, json.dumps(user).encode()))
    with pytest.raises(AssertionError, match="undocumented body"):
        check_documented("DELETE", "/api/v1/users/alice", response(204, b"{}"))
    with pytest.raises(AssertionError):
        check_documented("GET", "/api/v1/users/alice", response(404, b'{"errors": []}'))


class _NeverRuns:
    """A blocking runner whose work never finishes (a saturated pool)."""

    def __call__(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        """Never run C{f}."""
        return Deferred()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_password_hashing_bounded(admin: AdminAPI) -> None:
    """A password that waits too long for the blocking pool fails with 503 instead of hanging."""
    clock = Clock()
    app = AdminApp(
        identity=admin.identity,
        secrets=admin.secrets,
        access=admin.access,
        run_blocking=_NeverRuns(),
        superusers=frozenset({ROOT}),
        managed_source=CONFIG_PATH,
        clock=clock,
    )
    hashing = Deferred.fromCoroutine(app._hash("password"))
    clock.advance(HASH_TIMEOUT - 1)
    assert not hashing.called
    clock.advance(1)
    with pytest.raises(Unavailable):
        await hashing


# Users


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_users_crud_by_superuser(admin: AdminAPI) -> None:
    """A superuser creates, lists, reads, changes and deletes users; each change is audited."""
    response = await admin.call(
        "POST", "/api/v1/users", ROOT_AUTH, {"name": "carol", "email": "carol@example.com", "password": "pw1"}
    )
    assert response.code == 201
    assert response.header("Location") == "/api/v1/users/carol"
    created = json_of(response)
    assert (created["name"], created["email"], created["managed"], created["superuser"]) == (
        "carol",
        "carol@example.com",
        False,
        False,
    )
    assert (await admin.credentials.check("carol", "pw1", "test")).name == "carol"

    listed = json_of(await admin.call("GET", "/api/v1/users", ROOT_AUTH))
    assert [u["name"] for u in listed["users"]] == ["alice", "bob", "carol", ROOT]
    assert [u["superuser"] for u in listed["users"]] == [False, False, False, True]
    assert json_of(await admin.call("GET", "/api/v1/users/carol", ROOT_AUTH)) == created

    response = await admin.call(
        "PUT", "/api/v1/users/carol", ROOT_AUTH, {"email": "c@example.org", "password": "pw2"}
    )
    assert response.code == 200
    assert json_of(response)["email"] == "c@example.org"
    assert (await admin.credentials.check("carol", "pw2", "test")).name == "carol"
    with pytest.raises(Unauthorized):
        await admin.credentials.check("carol", "pw1", "test")

    response = await admin.call("DELETE", "/api/v1/users/carol", ROOT_AUTH)
    assert response.code == 204
    assert await admin.identity.get_account("carol") is None
    error_of(await admin.call("GET", "/api/v1/users/carol", ROOT_AUTH), 404, "NOT_FOUND")
    error_of(await admin.call("DELETE", "/api/v1/users/carol", ROOT_AUTH), 404, "NOT_FOUND")
    assert await admin.audit_actions() == ["user.create", "user.update", "user.delete"]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_user_created_without_password(admin: AdminAPI) -> None:
    """A user may be created without a password (it cannot log in until it gets one)."""
    response = await admin.call("POST", "/api/v1/users", ROOT_AUTH, {"name": "carol"})
    assert response.code == 201
    assert json_of(response)["email"] is None
    assert await admin.identity.password_hash("carol") is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_user_conflicts(admin: AdminAPI) -> None:
    """A name taken by a user or an organization cannot be taken again."""
    error_of(await admin.call("POST", "/api/v1/users", ROOT_AUTH, {"name": "alice"}), 409, "CONFLICT")
    await make_org(admin)
    error_of(await admin.call("POST", "/api/v1/users", ROOT_AUTH, {"name": "acme"}), 409, "CONFLICT")
    error_of(await admin.call("GET", "/api/v1/users/acme", ROOT_AUTH), 404, "NOT_FOUND")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_user_manages_themself(admin: AdminAPI) -> None:
    """A user reads and changes their own e-mail and password, and nobody else's."""
    me = json_of(await admin.call("GET", "/api/v1/users/alice", ALICE))
    assert me["name"] == "alice"
    response = await admin.call("PUT", "/api/v1/users/alice", ALICE, {"password": "new-password"})
    assert response.code == 200
    assert (await admin.credentials.check("alice", "new-password", "test")).name == "alice"
    new_alice = basic("alice", "new-password")
    error_of(await admin.call("GET", "/api/v1/users/bob", new_alice), 403, "DENIED")
    error_of(await admin.call("PUT", "/api/v1/users/bob", new_alice, {"email": "x@y"}), 403, "DENIED")
    error_of(await admin.call("DELETE", "/api/v1/users/alice", new_alice), 403, "DENIED")
    error_of(await admin.call("GET", "/api/v1/users", new_alice), 403, "DENIED")
    error_of(await admin.call("POST", "/api/v1/users", new_alice, {"name": "carol"}), 403, "DENIED")
    error_of(await admin.call("GET", "/api/v1/users/nobody", new_alice), 403, "DENIED")
    entry = (await admin.identity.audit_log(1))[0]
    assert (entry.actor, entry.action, entry.target, entry.detail) == (
        "user:alice",
        "user.update",
        "alice",
        {"password_changed": True},
    )
    assert entry.client == "127.0.0.1"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_users_refused_to_robots_and_tokens(admin: AdminAPI) -> None:
    """Robots and repository tokens cannot use the user routes."""
    robot = basic("alice+ci", await make_robot(admin, "alice", "ci", ALICE))
    await make_repo(admin, "alice/app", ALICE)
    _, secret = await make_token(admin, "alice/app", "write")
    token = basic("$token", secret)
    for auth in (robot, token):
        error_of(await admin.call("GET", "/api/v1/users", auth), 403, "DENIED")
        error_of(await admin.call("GET", "/api/v1/users/alice", auth), 403, "DENIED")
        error_of(await admin.call("PUT", "/api/v1/users/alice", auth, {"email": "x@y"}), 403, "DENIED")
        error_of(await admin.call("POST", "/api/v1/users", auth, {"name": "carol"}), 403, "DENIED")
        error_of(await admin.call("DELETE", "/api/v1/users/alice", auth), 403, "DENIED")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_managed_user_refused(admin: AdminAPI) -> None:
    """A user declared in the configuration cannot be changed or deleted, even by itself."""
    await admin.seed_user("carol", managed=True)
    carol = as_user("carol")
    for auth in (ROOT_AUTH, carol):
        message = error_of(
            await admin.call("PUT", "/api/v1/users/carol", auth, {"email": "c@x.y"}), 409, "DENIED"
        )
        assert message == f"user carol is managed by {CONFIG_PATH}; change it there"
    error_of(await admin.call("DELETE", "/api/v1/users/carol", ROOT_AUTH), 409, "DENIED")
    assert json_of(await admin.call("GET", "/api/v1/users/carol", carol))["managed"] is True
    assert await admin.audit_actions() == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_user_with_managed_contents_not_deleted(admin: AdminAPI) -> None:
    """A user whose namespace holds a managed repository, or who is in a managed team, is kept."""
    await admin.identity.create_repository("alice/app", "private", managed=True)
    message = error_of(await admin.call("DELETE", "/api/v1/users/alice", ROOT_AUTH), 409, "DENIED")
    assert "repository alice/app" in message and CONFIG_PATH in message
    await admin.identity.create_org("acme", managed=True)
    await admin.identity.add_team_member("acme", "owners", "bob")
    message = error_of(await admin.call("DELETE", "/api/v1/users/bob", ROOT_AUTH), 409, "DENIED")
    assert "team acme/owners" in message
    assert await admin.identity.get_account("bob") is not None


# Organizations and teams


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_organization_lifecycle(admin: AdminAPI) -> None:
    """Any user creates an organization and becomes an owner; admins read and delete it."""
    response = await admin.call(
        "POST", "/api/v1/organizations", ALICE, {"name": "acme", "email": "ops@acme.test"}
    )
    assert response.code == 201
    assert response.header("Location") == "/api/v1/organizations/acme"
    assert json_of(response)["name"] == "acme"
    teams = json_of(await admin.call("GET", "/api/v1/organizations/acme/teams", ALICE))["teams"]
    assert [(t["name"], t["role"], t["members"]) for t in teams] == [("owners", "admin", ["alice"])]
    assert json_of(await admin.call("GET", "/api/v1/organizations/acme", ALICE))["email"] == "ops@acme.test"

    await make_org(admin, "other", BOB)
    mine = json_of(await admin.call("GET", "/api/v1/organizations", ALICE))["organizations"]
    assert [o["name"] for o in mine] == ["acme"]
    every = json_of(await admin.call("GET", "/api/v1/organizations", ROOT_AUTH))["organizations"]
    assert [o["name"] for o in every] == ["acme", "other"]

    error_of(await admin.call("POST", "/api/v1/organizations", BOB, {"name": "acme"}), 409, "CONFLICT")
    error_of(await admin.call("POST", "/api/v1/organizations", BOB, {"name": "alice"}), 409, "CONFLICT")
    error_of(await admin.call("GET", "/api/v1/organizations/acme", BOB), 403, "DENIED")
    error_of(await admin.call("DELETE", "/api/v1/organizations/acme", BOB), 403, "DENIED")
    error_of(await admin.call("GET", "/api/v1/organizations/nothing", BOB), 403, "DENIED")
    error_of(await admin.call("GET", "/api/v1/organizations/nothing", ROOT_AUTH), 404, "NOT_FOUND")
    error_of(await admin.call("GET", "/api/v1/organizations/alice", ROOT_AUTH), 404, "NOT_FOUND")

    await make_repo(admin, "acme/app", ALICE)
    assert (await admin.call("DELETE", "/api/v1/organizations/acme", ALICE)).code == 204
    assert await admin.identity.get_account("acme") is None
    assert await admin.identity.get_repository("acme/app") is None
    assert (await admin.call("DELETE", "/api/v1/organizations/other", ROOT_AUTH)).code == 204
    entries = await admin.identity.audit_log(10)
    assert [(e.action, e.target, e.actor) for e in reversed(entries)] == [
        ("org.create", "acme", "user:alice"),
        ("org.create", "other", "user:bob"),
        ("repository.create", "acme/app", "user:alice"),
        ("org.delete", "acme", "user:alice"),
        ("org.delete", "other", "user:root"),
    ]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_organizations_refused_to_robots_and_tokens(admin: AdminAPI) -> None:
    """Robots and repository tokens cannot create, list or read organizations."""
    await make_org(admin)
    robot = basic("acme+ci", await make_robot(admin, "acme", "ci", ALICE))
    await make_repo(admin, "acme/app", ALICE)
    _, secret = await make_token(admin, "acme/app", "write")
    for auth in (robot, basic("$token", secret)):
        error_of(await admin.call("POST", "/api/v1/organizations", auth, {"name": "evil"}), 403, "DENIED")
        error_of(await admin.call("GET", "/api/v1/organizations", auth), 403, "DENIED")
        error_of(await admin.call("GET", "/api/v1/organizations/acme", auth), 403, "DENIED")
        error_of(await admin.call("GET", "/api/v1/organizations/acme/teams", auth), 403, "DENIED")
        error_of(await admin.call("DELETE", "/api/v1/organizations/acme", auth), 403, "DENIED")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_teams_and_members(admin: AdminAPI) -> None:
    """Organization admins create, change and delete teams and add and remove members."""
    await make_org(admin)
    path = "/api/v1/organizations/acme/teams/builders"
    response = await admin.call("PUT", path, ALICE, {"role": "member", "description": "CI"})
    assert response.code == 201
    assert json_of(response) == {
        "organization": "acme",
        "name": "builders",
        "role": "member",
        "description": "CI",
        "managed": False,
        "members": [],
    }
    response = await admin.call("PUT", f"{path}/members/bob", ALICE)
    assert response.code == 200
    assert json_of(response)["members"] == ["bob"]
    # A member (not an admin) may not manage teams.
    error_of(await admin.call("GET", "/api/v1/organizations/acme/teams", BOB), 403, "DENIED")
    error_of(await admin.call("PUT", path, BOB, {"role": "admin"}), 403, "DENIED")
    error_of(await admin.call("DELETE", f"{path}/members/bob", BOB), 403, "DENIED")
    response = await admin.call("PUT", path, ALICE, {"role": "admin"})
    assert response.code == 200
    assert json_of(response)["description"] == "CI"
    # Now bob administers the organization.
    assert (await admin.call("GET", "/api/v1/organizations/acme/teams", BOB)).code == 200
    assert (
        await admin.call("PUT", "/api/v1/organizations/acme/teams/readers", BOB, {"role": "member"})
    ).code == 201
    assert (await admin.call("DELETE", f"{path}/members/bob", ALICE)).code == 204
    error_of(await admin.call("DELETE", f"{path}/members/bob", ALICE), 404, "NOT_FOUND")
    error_of(await admin.call("PUT", f"{path}/members/nobody", ALICE), 404, "NOT_FOUND")
    error_of(await admin.call("PUT", f"{path}/members/acme", ALICE), 404, "NOT_FOUND")
    error_of(
        await admin.call("PUT", "/api/v1/organizations/acme/teams/x/members/bob", ALICE), 404, "NOT_FOUND"
    )
    error_of(
        await admin.call("PUT", "/api/v1/organizations/acme/teams/new", ALICE, {}), 400, "INVALID_REQUEST"
    )
    error_of(await admin.call("PUT", path, ALICE, {"role": "boss"}), 400, "INVALID_REQUEST")
    error_of(
        await admin.call("PUT", "/api/v1/organizations/acme/teams/Bad!", ALICE, {"role": "member"}),
        400,
        "NAME_INVALID",
    )
    assert (await admin.call("DELETE", path, ALICE)).code == 204
    error_of(await admin.call("DELETE", path, ALICE), 404, "NOT_FOUND")
    assert (await admin.call("DELETE", "/api/v1/organizations/acme/teams/readers", ROOT_AUTH)).code == 204
    assert await admin.audit_actions() == [
        "org.create",
        "team.create",
        "team.member.add",
        "team.update",
        "team.create",
        "team.member.remove",
        "team.delete",
        "team.delete",
    ]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_organization_keeps_an_admin(admin: AdminAPI) -> None:
    """The owners team cannot be deleted or demoted, and the last admin cannot leave."""
    await make_org(admin)
    owners = "/api/v1/organizations/acme/teams/owners"
    error_of(await admin.call("DELETE", owners, ALICE), 409, "CONFLICT")
    error_of(await admin.call("PUT", owners, ALICE, {"role": "member"}), 409, "CONFLICT")
    message = error_of(await admin.call("DELETE", f"{owners}/members/alice", ALICE), 409, "CONFLICT")
    assert "without administrators" in message
    assert (await admin.call("PUT", owners, ALICE, {"description": "the bosses"})).code == 200
    assert (await admin.call("PUT", f"{owners}/members/bob", ALICE)).code == 200
    assert (await admin.call("DELETE", f"{owners}/members/alice", BOB)).code == 204
    error_of(await admin.call("GET", "/api/v1/organizations/acme", ALICE), 403, "DENIED")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_managed_organization_and_team_refused(admin: AdminAPI) -> None:
    """Declared organizations and teams cannot be changed or deleted; their members stay."""
    await admin.identity.create_org("acme", managed=True)
    await admin.identity.add_team_member("acme", "owners", "alice")
    await admin.identity.create_team("acme", "builders", "member", managed=True)
    message = error_of(await admin.call("DELETE", "/api/v1/organizations/acme", ALICE), 409, "DENIED")
    assert message == f"organization acme is managed by {CONFIG_PATH}; change it there"
    team = "/api/v1/organizations/acme/teams/builders"
    error_of(await admin.call("PUT", team, ALICE, {"description": "x"}), 409, "DENIED")
    error_of(await admin.call("DELETE", team, ALICE), 409, "DENIED")
    error_of(await admin.call("PUT", f"{team}/members/bob", ALICE), 409, "DENIED")
    error_of(
        await admin.call("DELETE", "/api/v1/organizations/acme/teams/owners/members/alice", ROOT_AUTH),
        409,
        "DENIED",
    )
    # An unmanaged team in a managed organization is the API's to change.
    assert (
        await admin.call("PUT", "/api/v1/organizations/acme/teams/devs", ALICE, {"role": "creator"})
    ).code == 201
    await admin.identity.create_org("other")
    await admin.identity.create_repository("other/app", managed=True)
    message = error_of(await admin.call("DELETE", "/api/v1/organizations/other", ROOT_AUTH), 409, "DENIED")
    assert "repository other/app" in message


# Robots


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_robot_lifecycle(admin: AdminAPI) -> None:
    """A robot is created with a token, shown with it, regenerated (the old token dies) and deleted."""
    path = "/api/v1/namespaces/alice/robots/ci"
    response = await admin.call("PUT", path, ALICE, {"description": "builds"})
    assert response.code == 201
    created = json_of(response)
    assert (created["name"], created["namespace"], created["shortname"], created["description"]) == (
        "alice+ci",
        "alice",
        "ci",
        "builds",
    )
    first = created["token"]
    principal = await admin.credentials.check("alice+ci", first, "test")
    assert (principal.kind, principal.name) == ("robot", "alice+ci")
    assert json_of(await admin.call("GET", path, ALICE))["token"] == first
    listed = json_of(await admin.call("GET", "/api/v1/namespaces/alice/robots", ALICE))["robots"]
    assert [r["name"] for r in listed] == ["alice+ci"]
    assert "token" not in listed[0]
    error_of(await admin.call("PUT", path, ALICE, {}), 409, "CONFLICT")

    response = await admin.call("POST", f"{path}/regenerate", ALICE)
    assert response.code == 200
    second = json_of(response)["token"]
    assert second != first
    with pytest.raises(Unauthorized):
        await admin.credentials.check("alice+ci", first, "test")
    assert (await admin.credentials.check("alice+ci", second, "test")).name == "alice+ci"
    assert json_of(await admin.call("GET", path, ALICE))["token"] == second

    assert (await admin.call("DELETE", path, ALICE)).code == 204
    with pytest.raises(Unauthorized):
        await admin.credentials.check("alice+ci", second, "test")
    error_of(await admin.call("GET", path, ALICE), 404, "NOT_FOUND")
    error_of(await admin.call("POST", f"{path}/regenerate", ALICE), 404, "NOT_FOUND")
    entries = list(reversed(await admin.identity.audit_log(10)))
    assert [(e.action, e.target) for e in entries] == [
        ("robot.create", "alice+ci"),
        ("robot.regenerate", "alice+ci"),
        ("robot.delete", "alice+ci"),
    ]
    audit_text = json.dumps([e.detail for e in entries])
    assert first not in audit_text and second not in audit_text
    assert first not in admin.log.text() and second not in admin.log.text()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_robot_permissions(admin: AdminAPI) -> None:
    """Only the namespace's owner, the organization's admins and superusers manage its robots."""
    await make_org(admin)
    await admin.call("PUT", "/api/v1/organizations/acme/teams/devs", ALICE, {"role": "creator"})
    await admin.call("PUT", "/api/v1/organizations/acme/teams/devs/members/bob", ALICE)
    token = await make_robot(admin, "acme", "ci", ALICE)
    robot = basic("acme+ci", token)
    await make_repo(admin, "acme/app", ALICE)
    _, secret = await make_token(admin, "acme/app", "write")
    for auth in (BOB, robot, basic("$token", secret)):
        error_of(await admin.call("GET", "/api/v1/namespaces/acme/robots", auth), 403, "DENIED")
        error_of(await admin.call("GET", "/api/v1/namespaces/acme/robots/ci", auth), 403, "DENIED")
        error_of(await admin.call("PUT", "/api/v1/namespaces/acme/robots/x", auth, {}), 403, "DENIED")
        error_of(
            await admin.call("POST", "/api/v1/namespaces/acme/robots/ci/regenerate", auth), 403, "DENIED"
        )
        error_of(await admin.call("DELETE", "/api/v1/namespaces/acme/robots/ci", auth), 403, "DENIED")
    error_of(await admin.call("GET", "/api/v1/namespaces/alice/robots", BOB), 403, "DENIED")
    error_of(await admin.call("PUT", "/api/v1/namespaces/nothing/robots/x", BOB, {}), 403, "DENIED")
    error_of(await admin.call("PUT", "/api/v1/namespaces/nothing/robots/x", ROOT_AUTH, {}), 404, "NOT_FOUND")
    error_of(await admin.call("PUT", "/api/v1/namespaces/acme/robots/a+b", ALICE, {}), 400, "NAME_INVALID")
    error_of(await admin.call("GET", "/api/v1/namespaces/acme/robots/nothing", ALICE), 404, "NOT_FOUND")
    # Superusers manage everyone's robots.
    assert json_of(await admin.call("GET", "/api/v1/namespaces/acme/robots/ci", ROOT_AUTH))["token"] == token
    assert (await admin.call("PUT", "/api/v1/namespaces/bob/robots/deploy", ROOT_AUTH, {})).code == 201
    assert (await admin.call("GET", "/api/v1/namespaces/bob/robots/deploy", BOB)).code == 200


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_managed_robot_refused(admin: AdminAPI) -> None:
    """A declared robot keeps its token and cannot be deleted; its token is still shown to admins."""
    await admin.identity.create_robot("alice", "ci", admin.secrets.encrypt("declared-token"), managed=True)
    path = "/api/v1/namespaces/alice/robots/ci"
    assert json_of(await admin.call("GET", path, ALICE))["token"] == "declared-token"
    message = error_of(await admin.call("POST", f"{path}/regenerate", ALICE), 409, "DENIED")
    assert message == f"robot alice+ci is managed by {CONFIG_PATH}; change it there"
    error_of(await admin.call("DELETE", path, ALICE), 409, "DENIED")
    assert (await admin.credentials.check("alice+ci", "declared-token", "test")).name == "alice+ci"


# Repositories


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_repository_lifecycle(admin: AdminAPI) -> None:
    """A user creates a repository in their namespace, reads it, changes its visibility and deletes it."""
    response = await admin.call(
        "POST", "/api/v1/repositories", ALICE, {"namespace": "alice", "name": "tools/app"}
    )
    assert response.code == 201
    assert response.header("Location") == "/api/v1/repositories/alice/tools/app"
    created = json_of(response)
    assert (created["name"], created["namespace"], created["visibility"]) == (
        "alice/tools/app",
        "alice",
        "private",
    )
    path = "/api/v1/repositories/alice/tools/app"
    assert json_of(await admin.call("GET", path, ALICE)) == created
    response = await admin.call("PUT", path, ALICE, {"visibility": "public"})
    assert json_of(response)["visibility"] == "public"
    # Public: everyone authenticated may read it, nobody else may change it.
    assert (await admin.call("GET", path, BOB)).code == 200
    error_of(await admin.call("PUT", path, BOB, {"visibility": "private"}), 403, "DENIED")
    error_of(await admin.call("DELETE", path, BOB), 403, "DENIED")
    error_of(await admin.call("PUT", path, ALICE, {"visibility": "secret"}), 400, "INVALID_REQUEST")
    error_of(await admin.call("PUT", path, ALICE, {}), 400, "INVALID_REQUEST")
    error_of(
        await admin.call("POST", "/api/v1/repositories", ALICE, {"namespace": "alice", "name": "tools/app"}),
        409,
        "CONFLICT",
    )
    assert (await admin.call("DELETE", path, ALICE)).code == 204
    assert await admin.identity.get_repository("alice/tools/app") is None
    error_of(await admin.call("GET", path, ALICE), 404, "NAME_UNKNOWN")
    error_of(await admin.call("GET", path, BOB), 403, "DENIED")
    entries = list(reversed(await admin.identity.audit_log(10)))
    assert [(e.action, e.target, e.detail) for e in entries] == [
        ("repository.create", "alice/tools/app", {"visibility": "private"}),
        ("repository.update", "alice/tools/app", {"visibility": "public"}),
        ("repository.delete", "alice/tools/app", {}),
    ]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_repository_creation_rules(admin: AdminAPI) -> None:
    """Repositories are created by the namespace owner, org admins and creators, and superusers."""
    await make_org(admin)
    await admin.seed_user("carol")
    carol = as_user("carol")
    await admin.call("PUT", "/api/v1/organizations/acme/teams/devs", ALICE, {"role": "creator"})
    await admin.call("PUT", "/api/v1/organizations/acme/teams/devs/members/bob", ALICE)
    await admin.call("PUT", "/api/v1/organizations/acme/teams/readers", ALICE, {"role": "member"})
    await admin.call("PUT", "/api/v1/organizations/acme/teams/readers/members/carol", ALICE)
    await make_repo(admin, "acme/by-admin", ALICE)
    await make_repo(admin, "acme/by-creator", BOB)
    await make_repo(admin, "alice/by-root", ROOT_AUTH)

    def create(namespace: str, name: str = "x") -> dict[str, str]:
        """A repository creation body."""
        return {"namespace": namespace, "name": name}

    error_of(await admin.call("POST", "/api/v1/repositories", carol, create("acme")), 403, "DENIED")
    error_of(await admin.call("POST", "/api/v1/repositories", BOB, create("alice")), 403, "DENIED")
    error_of(await admin.call("POST", "/api/v1/repositories", BOB, create("nothing")), 403, "DENIED")
    error_of(await admin.call("POST", "/api/v1/repositories", ROOT_AUTH, create("nothing")), 404, "NOT_FOUND")
    error_of(
        await admin.call("POST", "/api/v1/repositories", ALICE, create("alice", "Bad")), 400, "NAME_INVALID"
    )
    error_of(
        await admin.call("POST", "/api/v1/repositories", ALICE, create("alice", "x/")), 400, "NAME_INVALID"
    )
    error_of(
        await admin.call("POST", "/api/v1/repositories", ALICE, {"namespace": "alice"}),
        400,
        "INVALID_REQUEST",
    )
    robot = basic("acme+ci", await make_robot(admin, "acme", "ci", ALICE))
    error_of(await admin.call("POST", "/api/v1/repositories", robot, create("acme")), 403, "DENIED")
    error_of(await admin.call("GET", "/api/v1/repositories/acme/by-admin", carol), 403, "DENIED")
    # As in Quay, a user who creates a repository in an organization administers it.
    permissions = json_of(await admin.call("GET", "/api/v1/repositories/acme/by-creator/permissions", BOB))
    assert [(p["kind"], p["subject"], p["role"]) for p in permissions["permissions"]] == [
        ("user", "bob", "admin")
    ]
    assert await admin.identity.list_permissions("alice/by-root") == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_repository_list_filtered(admin: AdminAPI) -> None:
    """The list shows what the caller may pull: own, granted and public repositories."""
    await make_repo(admin, "alice/private", ALICE)
    await make_repo(admin, "alice/public", ALICE, visibility="public")
    await make_repo(admin, "bob/private", BOB)
    await make_repo(admin, "bob/shared", BOB)
    await admin.call("PUT", "/api/v1/repositories/bob/shared/permissions/user/alice", BOB, {"role": "read"})

    async def names(auth: dict[str, str], query: str = "") -> list[str]:
        """The names of the repositories C{auth} is shown."""
        document = json_of(await admin.call("GET", f"/api/v1/repositories{query}", auth))
        return [r["name"] for r in document["repositories"]]

    assert await names(ALICE) == ["alice/private", "alice/public", "bob/shared"]
    assert await names(BOB) == ["alice/public", "bob/private", "bob/shared"]
    assert await names(ROOT_AUTH) == ["alice/private", "alice/public", "bob/private", "bob/shared"]
    assert await names(ALICE, "?namespace=bob") == ["bob/shared"]
    error_of(await admin.call("GET", "/api/v1/repositories?namespace=Bad!", ALICE), 400, "NAME_INVALID")
    robot = basic("bob+ci", await make_robot(admin, "bob", "ci", BOB))
    await admin.call(
        "PUT", "/api/v1/repositories/bob/private/permissions/robot/bob+ci", BOB, {"role": "write"}
    )
    assert await names(robot) == ["alice/public", "bob/private"]
    _, secret = await make_token(admin, "bob/shared")
    assert await names(basic("$token", secret)) == ["bob/shared"]
    # Robots and tokens may read the repositories they may pull, and change nothing.
    assert (await admin.call("GET", "/api/v1/repositories/bob/private", robot)).code == 200
    error_of(
        await admin.call("PUT", "/api/v1/repositories/bob/private", robot, {"visibility": "public"}),
        403,
        "DENIED",
    )
    assert (await admin.call("GET", "/api/v1/repositories/bob/shared", basic("$token", secret))).code == 200
    error_of(
        await admin.call("GET", "/api/v1/repositories/bob/private", basic("$token", secret)), 403, "DENIED"
    )


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_managed_repository_refused(admin: AdminAPI) -> None:
    """A declared repository keeps its visibility and cannot be deleted, even by a superuser."""
    await admin.identity.create_repository("alice/app", "private", managed=True)
    path = "/api/v1/repositories/alice/app"
    message = error_of(await admin.call("PUT", path, ALICE, {"visibility": "public"}), 409, "DENIED")
    assert message == f"repository alice/app is managed by {CONFIG_PATH}; change it there"
    error_of(await admin.call("DELETE", path, ROOT_AUTH), 409, "DENIED")
    assert json_of(await admin.call("GET", path, ALICE))["managed"] is True


# Permissions


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_permissions(admin: AdminAPI) -> None:
    """Repository admins grant, change, list and revoke roles of users, teams and robots."""
    await make_org(admin)
    await admin.call("PUT", "/api/v1/organizations/acme/teams/devs", ALICE, {"role": "member"})
    await make_robot(admin, "acme", "ci", ALICE)
    await make_repo(admin, "acme/app", ALICE)
    base = "/api/v1/repositories/acme/app/permissions"
    response = await admin.call("PUT", f"{base}/user/bob", ALICE, {"role": "read"})
    assert response.code == 201
    assert json_of(response) == {
        "repository": "acme/app",
        "kind": "user",
        "subject": "bob",
        "role": "read",
        "managed": False,
    }
    assert (await admin.call("PUT", f"{base}/team/devs", ALICE, {"role": "write"})).code == 201
    assert (await admin.call("PUT", f"{base}/robot/acme+ci", ALICE, {"role": "write"})).code == 201
    response = await admin.call("PUT", f"{base}/user/bob", ALICE, {"role": "admin"})
    assert response.code == 200
    listed = json_of(await admin.call("GET", base, ALICE))["permissions"]
    assert [(p["kind"], p["subject"], p["role"]) for p in listed] == [
        ("robot", "acme+ci", "write"),
        ("team", "devs", "write"),
        ("user", "alice", "admin"),  # the creator
        ("user", "bob", "admin"),
    ]
    assert {(p.kind, p.subject) for p in await admin.identity.list_permissions("acme/app")} == {
        ("robot", "acme+ci"),
        ("team", "acme/devs"),
        ("user", "alice"),
        ("user", "bob"),
    }
    # bob is now a repository admin.
    assert (await admin.call("DELETE", f"{base}/team/devs", BOB)).code == 204
    error_of(await admin.call("DELETE", f"{base}/team/devs", BOB), 404, "NOT_FOUND")
    assert (await admin.call("DELETE", f"{base}/user/bob", ALICE)).code == 204
    error_of(await admin.call("GET", base, BOB), 403, "DENIED")
    assert await admin.audit_actions() == [
        "org.create",
        "team.create",
        "robot.create",
        "repository.create",
        "permission.set",
        "permission.set",
        "permission.set",
        "permission.set",
        "permission.delete",
        "permission.delete",
    ]
    entry = (await admin.identity.audit_log(1))[0]
    assert (entry.actor, entry.target, entry.detail) == (
        "user:alice",
        "acme/app",
        {"kind": "user", "subject": "bob"},
    )


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_permission_subjects_checked(admin: AdminAPI) -> None:
    """Subjects must exist and fit the repository; kinds and roles must be known."""
    await make_org(admin)
    await make_repo(admin, "acme/app", ALICE)
    await make_repo(admin, "alice/app", ALICE)
    await make_robot(admin, "bob", "ci", BOB)
    base = "/api/v1/repositories/acme/app/permissions"
    error_of(await admin.call("PUT", f"{base}/user/nobody", ALICE, {"role": "read"}), 404, "NOT_FOUND")
    error_of(await admin.call("PUT", f"{base}/user/acme", ALICE, {"role": "read"}), 404, "NOT_FOUND")
    error_of(await admin.call("PUT", f"{base}/team/nothing", ALICE, {"role": "read"}), 404, "NOT_FOUND")
    error_of(await admin.call("PUT", f"{base}/robot/acme+nothing", ALICE, {"role": "read"}), 404, "NOT_FOUND")
    error_of(await admin.call("PUT", f"{base}/robot/bob+ci", ALICE, {"role": "read"}), 400, "INVALID_REQUEST")
    error_of(await admin.call("PUT", f"{base}/robot/ci", ALICE, {"role": "read"}), 400, "INVALID_REQUEST")
    error_of(await admin.call("PUT", f"{base}/group/devs", ALICE, {"role": "read"}), 400, "INVALID_REQUEST")
    error_of(await admin.call("PUT", f"{base}/user/bob", ALICE, {"role": "owner"}), 400, "INVALID_REQUEST")
    error_of(await admin.call("PUT", f"{base}/user/bob", ALICE, {"role": 3}), 400, "INVALID_REQUEST")
    user_repo = "/api/v1/repositories/alice/app/permissions"
    error_of(
        await admin.call("PUT", f"{user_repo}/team/owners", ALICE, {"role": "read"}), 400, "INVALID_REQUEST"
    )
    error_of(
        await admin.call("PUT", f"{user_repo}/user/alice", ALICE, {"role": "read"}), 400, "INVALID_REQUEST"
    )
    error_of(
        await admin.call(
            "PUT", "/api/v1/repositories/acme/nothing/permissions/user/bob", ALICE, {"role": "read"}
        ),
        404,
        "NAME_UNKNOWN",
    )
    granted = [(p.repository, p.kind, p.subject) for p in await admin.identity.list_permissions()]
    assert granted == [("acme/app", "user", "alice")]  # the creator's own


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_permissions_refused_to_others(admin: AdminAPI) -> None:
    """Readers, writers, robots (even with admin) and tokens cannot manage permissions."""
    await make_repo(admin, "alice/app", ALICE)
    robot_token = await make_robot(admin, "alice", "ci", ALICE)
    await admin.identity.set_permission("alice/app", "user", "bob", "write")
    await admin.identity.set_permission("alice/app", "robot", "alice+ci", "admin")
    _, secret = await make_token(admin, "alice/app", "write")
    base = "/api/v1/repositories/alice/app/permissions"
    for auth in (BOB, basic("alice+ci", robot_token), basic("$token", secret)):
        error_of(await admin.call("GET", base, auth), 403, "DENIED")
        error_of(await admin.call("PUT", f"{base}/user/bob", auth, {"role": "admin"}), 403, "DENIED")
        error_of(await admin.call("DELETE", f"{base}/user/bob", auth), 403, "DENIED")
    assert (await admin.call("GET", base, ROOT_AUTH)).code == 200


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_managed_permission_refused(admin: AdminAPI) -> None:
    """Declared permissions cannot be changed or revoked, nor their subjects deleted."""
    await make_org(admin)
    await admin.call("PUT", "/api/v1/organizations/acme/teams/devs", ALICE, {"role": "member"})
    await make_robot(admin, "acme", "ci", ALICE)
    await make_repo(admin, "acme/app", ALICE)
    await admin.identity.set_permission("acme/app", "robot", "acme+ci", "write", managed=True)
    await admin.identity.set_permission("acme/app", "team", "acme/devs", "read", managed=True)
    base = "/api/v1/repositories/acme/app/permissions"
    message = error_of(
        await admin.call("PUT", f"{base}/robot/acme+ci", ALICE, {"role": "read"}), 409, "DENIED"
    )
    assert (
        message == f"the robot permission of acme+ci on acme/app is managed by {CONFIG_PATH}; change it there"
    )
    error_of(await admin.call("DELETE", f"{base}/team/devs", ALICE), 409, "DENIED")
    error_of(await admin.call("DELETE", "/api/v1/namespaces/acme/robots/ci", ALICE), 409, "DENIED")
    error_of(await admin.call("DELETE", "/api/v1/organizations/acme/teams/devs", ALICE), 409, "DENIED")
    error_of(await admin.call("DELETE", "/api/v1/repositories/acme/app", ALICE), 409, "DENIED")
    assert len(await admin.identity.list_permissions("acme/app")) == 3  # and the creator's


# Repository tokens


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_repository_tokens(admin: AdminAPI) -> None:
    """Tokens are created (secret shown once), listed without secrets, changed and deleted."""
    await make_repo(admin, "alice/app", ALICE)
    base = "/api/v1/repositories/alice/app/tokens"
    response = await admin.call("POST", base, ALICE, {"description": "deploy", "role": "read"})
    assert response.code == 201
    created = json_of(response)
    token_id, secret = created["id"], created["token"]
    assert len(token_id) == 32 and int(token_id, 16) >= 0
    assert response.header("Location") == f"{base}/{token_id}"
    principal = await admin.credentials.check("$token", secret, "test")
    assert (principal.kind, principal.name, principal.repository, principal.role) == (
        "token",
        token_id,
        "alice/app",
        "read",
    )
    allowed = await admin.access.policy.allowed_actions(principal, RepositoryName.parse("alice/app"))
    assert allowed == frozenset({Action.PULL})

    listed = json_of(await admin.call("GET", base, ALICE))["tokens"]
    assert listed == [{k: v for k, v in created.items() if k != "token"}]
    assert secret not in json.dumps(listed)

    response = await admin.call("PUT", f"{base}/{token_id}", ALICE, {"role": "write", "description": "push"})
    assert (json_of(response)["role"], json_of(response)["description"]) == ("write", "push")
    principal = await admin.credentials.check("$token", secret, "test")
    assert principal.role == "write"
    error_of(await admin.call("PUT", f"{base}/{token_id}", ALICE, {"role": "admin"}), 400, "INVALID_REQUEST")
    error_of(await admin.call("POST", base, ALICE, {"role": "read"}), 400, "INVALID_REQUEST")

    assert (await admin.call("DELETE", f"{base}/{token_id}", ALICE)).code == 204
    with pytest.raises(Unauthorized):
        await admin.credentials.check("$token", secret, "test")
    error_of(await admin.call("PUT", f"{base}/{token_id}", ALICE, {"role": "read"}), 404, "NOT_FOUND")
    error_of(await admin.call("DELETE", f"{base}/{token_id}", ALICE), 404, "NOT_FOUND")
    entries = list(reversed(await admin.identity.audit_log(10)))
    assert [e.action for e in entries] == [
        "repository.create",
        "token.create",
        "token.update",
        "token.delete",
    ]
    assert secret not in json.dumps([e.detail for e in entries])
    assert secret not in admin.log.text()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_repository_tokens_permissions(admin: AdminAPI) -> None:
    """Only repository admins manage tokens; a token of another repository is not found here."""
    await make_repo(admin, "alice/app", ALICE)
    await make_repo(admin, "alice/other", ALICE)
    token_id, secret = await make_token(admin, "alice/app", "write")
    other_id, _ = await make_token(admin, "alice/other")
    await admin.identity.set_permission("alice/app", "user", "bob", "write")
    base = "/api/v1/repositories/alice/app/tokens"
    for auth in (BOB, basic("$token", secret)):
        error_of(await admin.call("GET", base, auth), 403, "DENIED")
        error_of(await admin.call("POST", base, auth, {"description": "x", "role": "read"}), 403, "DENIED")
        error_of(await admin.call("PUT", f"{base}/{token_id}", auth, {"role": "read"}), 403, "DENIED")
        error_of(await admin.call("DELETE", f"{base}/{token_id}", auth), 403, "DENIED")
    error_of(await admin.call("DELETE", f"{base}/{other_id}", ALICE), 404, "NOT_FOUND")
    assert (await admin.call("GET", base, ROOT_AUTH)).code == 200


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_managed_token_refused(admin: AdminAPI) -> None:
    """A declared repository token cannot be changed or deleted."""
    await make_repo(admin, "alice/app", ALICE)
    await admin.identity.create_repository_token(
        "declared",
        "alice/app",
        "from config",
        "read",
        admin.secrets.lookup("s3cret"),
        admin.secrets.encrypt("s3cret"),
        managed=True,
    )
    base = "/api/v1/repositories/alice/app/tokens/declared"
    message = error_of(await admin.call("PUT", base, ALICE, {"role": "write"}), 409, "DENIED")
    assert message == f"token declared of alice/app is managed by {CONFIG_PATH}; change it there"
    error_of(await admin.call("DELETE", base, ALICE), 409, "DENIED")
    error_of(await admin.call("DELETE", "/api/v1/repositories/alice/app", ALICE), 409, "DENIED")


# Audit


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_audit_log_pages(admin: AdminAPI) -> None:
    """Superusers read the audit log newest first, page by page."""
    for name in ("one", "two", "three"):
        await make_repo(admin, f"alice/{name}", ALICE)
    page = json_of(await admin.call("GET", "/api/v1/audit?limit=2", ROOT_AUTH))
    assert [e["target"] for e in page["entries"]] == ["alice/three", "alice/two"]
    first = page["entries"][0]
    assert (first["actor"], first["client"], first["action"], first["detail"]) == (
        "user:alice",
        "127.0.0.1",
        "repository.create",
        {"visibility": "private"},
    )
    assert page["next"] == page["entries"][-1]["id"]
    page = json_of(await admin.call("GET", f"/api/v1/audit?limit=2&before={page['next']}", ROOT_AUTH))
    assert [e["target"] for e in page["entries"]] == ["alice/one"]
    assert page["next"] is None
    assert len(json_of(await admin.call("GET", "/api/v1/audit", ROOT_AUTH))["entries"]) == 3
    for query in ("?limit=0", "?limit=1001", "?limit=x", "?before=-1"):
        error_of(await admin.call("GET", f"/api/v1/audit{query}", ROOT_AUTH), 400, "INVALID_REQUEST")
    error_of(await admin.call("GET", "/api/v1/audit", ALICE), 403, "DENIED")
    robot = basic("alice+ci", await make_robot(admin, "alice", "ci", ALICE))
    error_of(await admin.call("GET", "/api/v1/audit", robot), 403, "DENIED")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_refusals_not_audited(admin: AdminAPI) -> None:
    """Refused and failed requests change nothing and leave no audit entry."""
    await make_repo(admin, "alice/app", ALICE)
    before = await admin.audit_actions()
    await admin.call("DELETE", "/api/v1/repositories/alice/app", BOB)
    await admin.call("POST", "/api/v1/users", ROOT_AUTH, {"name": "alice"})
    await admin.call("PUT", "/api/v1/repositories/alice/app", ALICE, {"visibility": "open"})
    assert await admin.audit_actions() == before


# The worked example


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_worked_example(admin: AdminAPI) -> None:
    """
    Create an organization, a team and a robot, grant the robot write on a
    repository, then push a blob to it as the robot through the registry.
    """
    await make_org(admin, "acme", ALICE)
    assert (
        await admin.call("PUT", "/api/v1/organizations/acme/teams/builders", ALICE, {"role": "member"})
    ).code == 201
    assert (
        await admin.call("PUT", "/api/v1/organizations/acme/teams/builders/members/bob", ALICE)
    ).code == 200
    token = await make_robot(admin, "acme", "ci", ALICE)
    await make_repo(admin, "acme/app", ALICE)
    await make_repo(admin, "acme/secret", ALICE)
    base = "/api/v1/repositories/acme/app/permissions"
    assert (await admin.call("PUT", f"{base}/robot/acme+ci", ALICE, {"role": "write"})).code == 201
    assert (await admin.call("PUT", f"{base}/team/builders", ALICE, {"role": "read"})).code == 201

    robot = Principal(kind="robot", name="acme+ci")
    policy = admin.access.policy
    assert await policy.allowed_actions(robot, RepositoryName.parse("acme/app")) == frozenset(
        {Action.PULL, Action.PUSH, Action.DELETE}
    )
    assert await policy.allowed_actions(robot, RepositoryName.parse("acme/secret")) == frozenset()
    bob = Principal(kind="user", name="bob")
    assert await policy.allowed_actions(bob, RepositoryName.parse("acme/app")) == frozenset({Action.PULL})

    data = b"layer from CI"
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    robot_auth = basic("acme+ci", token)
    pushed = await admin.client.request(
        "POST", f"/v2/acme/app/blobs/uploads/?digest={digest}", headers=robot_auth, body=data
    )
    assert pushed.code == 201, pushed.body
    refused = await admin.client.request(
        "POST", f"/v2/acme/secret/blobs/uploads/?digest={digest}", headers=robot_auth, body=data
    )
    assert refused.code == 403, refused.body
    pulled = await admin.client.request("GET", f"/v2/acme/app/blobs/{digest}", headers=as_user("bob"))
    assert (pulled.code, pulled.body) == (200, data)
    assert await admin.audit_actions() == [
        "org.create",
        "team.create",
        "team.member.add",
        "robot.create",
        "repository.create",
        "repository.create",
        "permission.set",
        "permission.set",
    ]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_admin_mounted_beside_registry(admin: AdminAPI) -> None:
    """Behind mount_admin_api, /api/... reaches the admin API and everything else the registry."""
    response = await admin.client.request("GET", "/v2/", headers=ROOT_AUTH)
    assert (response.code, response.header("Docker-Distribution-API-Version")) == (200, "registry/2.0")
    response = await admin.client.request("GET", "/api/v1/users", headers=ROOT_AUTH)
    assert response.code == 200
    assert response.header("Docker-Distribution-API-Version") is None
    response = await admin.client.request("GET", "/api", headers=ROOT_AUTH)
    error_of(response, 404, "UNSUPPORTED")
    assert PASSWORDS[ROOT] not in admin.log.text()
