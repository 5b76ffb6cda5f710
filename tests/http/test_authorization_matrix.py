"""
The authorization matrix: every registry route and the token endpoint, for
every kind of principal, on private, public, foreign and missing repositories.

One registry (the real app with access control, wired as the daemon wires it,
on a loopback socket) serves the whole module for each metadata backend
(SQLite, then PostgreSQL: L{database_kind} is module-scoped here, so each
backend costs one registry, not one per cell). It is seeded once: an
organization C{acme} with teams of every role, users with direct roles,
robots, repository tokens, a user namespace C{alice}, and image content in
four repositories. Cells that change state (deletions, finished uploads) get
fresh content of their own first; pushes to missing repositories use a fresh
name per cell, so no cell depends on another.

The rules are stated once, in L{ACCESS} (what each caller may do on each
repository) and L{ROUTES} (what each route needs and answers when allowed);
L{expect} turns them into the status, error code and challenge of each cell:

    - allowed: the route's own answer (404 and friends on a missing repository);
    - a known principal lacking the right: 403 C{DENIED}, no challenge;
    - anonymous lacking the right: 401 with a C{Bearer} challenge naming
      C{scope="repository:<name>:<actions>"};
    - wrong credentials: 401 with a challenge, on every route;
    - a bearer token lacking the scope: 401 C{error="insufficient_scope"};
      an invalid one: 401 C{error="invalid_token"}.

A private repository the principal cannot see answers exactly like a missing
one (L{test_authz_private_repository_answers_like_missing_one}).

The login throttle runs on a clock of its own, advanced past any lockout
before each cell, so that the wrong-password cells do not lock out the rest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode

import jwt
import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.task import Clock

from quayd.errors import JSONValue
from quayd.registry.manifests import OCI_MANIFEST
from tests.conftest import DATABASE_KINDS, DatabaseOpener
from tests.support.http import Response
from tests.support.identity import AccessRegistry, Login, start_access_registry
from tests.support.manifests import image_manifest

# Repositories ------------------------------------------------------------------------------------

#: Private, in organization C{acme}; every direct role and team grant is on it.
APP: Final = "acme/app"
#: Public, in C{acme}.
PUB: Final = "acme/pub"
#: Private, in C{acme}, granted to nobody: the "another repository".
OTHER: Final = "acme/other"
#: Private, in the user namespace of C{alice}.
ALICE: Final = "alice/app"
#: Missing repositories (a fresh name per cell): in C{acme}, in C{alice}'s
#: namespace, and in a namespace that does not exist.
NEW_ORG: Final = "acme/new-{n}"
NEW_USER: Final = "alice/new-{n}"
NOWHERE: Final = "nowhere/new-{n}"

#: The columns of L{ACCESS}, in order.
REPOSITORIES: Final = (APP, PUB, OTHER, ALICE, NEW_ORG, NEW_USER, NOWHERE)
#: The repositories that exist, with content (a tag C{v1} on one image).
EXISTING: Final = (APP, PUB, OTHER, ALICE)

# Callers -----------------------------------------------------------------------------------------

NONE: Final[frozenset[str]] = frozenset()
PULL: Final = frozenset({"pull"})
PUSH: Final = frozenset({"pull", "push"})
ALL: Final = frozenset({"pull", "push", "delete"})

#: What each caller may do on each repository (columns: L{REPOSITORIES}).
#: Roles: read = pull; write = pull+push+delete; admin = everything; a
#: repository token's read = pull and write = pull+push, on its repository only.
ACCESS: Final[dict[str, tuple[frozenset[str], ...]]] = {
    # caller               acme/app acme/pub acme/other alice/app acme/new alice/new nowhere/new
    "anonymous": (NONE, PULL, NONE, NONE, NONE, NONE, NONE),
    "no-rights": (NONE, PULL, NONE, NONE, NONE, NONE, NONE),
    "user-read": (PULL, PULL, NONE, NONE, NONE, NONE, NONE),
    "user-write": (ALL, PULL, NONE, NONE, NONE, NONE, NONE),
    "user-admin": (ALL, PULL, NONE, NONE, NONE, NONE, NONE),
    "namespace-owner": (NONE, PULL, NONE, ALL, NONE, ALL, NONE),
    "org-owner": (ALL, ALL, ALL, NONE, ALL, NONE, NONE),
    "member-team-granted": (ALL, PULL, NONE, NONE, NONE, NONE, NONE),
    "member-team": (NONE, PULL, NONE, NONE, NONE, NONE, NONE),
    "creator-team-granted": (PULL, PULL, NONE, NONE, PUSH, NONE, NONE),
    "creator-team": (NONE, PULL, NONE, NONE, PUSH, NONE, NONE),
    "admin-team-granted": (ALL, ALL, ALL, NONE, ALL, NONE, NONE),
    "admin-team": (ALL, ALL, ALL, NONE, ALL, NONE, NONE),
    "robot-granted": (ALL, PULL, NONE, NONE, NONE, NONE, NONE),
    "robot": (NONE, PULL, NONE, NONE, NONE, NONE, NONE),
    "token-read": (PULL, NONE, NONE, NONE, NONE, NONE, NONE),
    "token-write": (PUSH, NONE, NONE, NONE, NONE, NONE, NONE),
    "superuser": (ALL, ALL, ALL, ALL, ALL, ALL, ALL),
}

#: Callers whose credentials are wrong: every route answers 401.
BAD_CALLERS: Final = ("wrong-password", "unknown-user", "robot-wrong-token", "token-unknown")

#: The user who is the superuser (C{auth.superusers}).
SUPERUSER: Final = "root"


def access(caller: str, repository: str) -> frozenset[str]:
    """What C{caller} may do on C{repository} (a name from L{REPOSITORIES})."""
    return ACCESS[caller][REPOSITORIES.index(repository)]


# Routes ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """
    One registry route and what it answers when the caller is allowed.

    @ivar path: Template: C{{repo}}, C{{blob}} (a blob in the repository),
        C{{manifest}} (its image manifest), C{{session}} (an upload session),
        C{{digest}} (of the body), C{{tag}} (a fresh tag), C{{fresh_blob}} and
        C{{fresh_manifest}}/C{{fresh_tag}} (content made for this cell alone).
    @ivar needs: Scope actions the route needs; C{None} for routes outside a repository.
    @ivar ok: Status when allowed on an existing repository.
    @ivar missing: Status and error code when allowed on a missing repository.
    @ivar body: What the request carries: C{blob} (the bytes of C{{digest}}) or C{manifest}.
    """

    key: str
    method: str
    path: str
    needs: frozenset[str] | None
    ok: int
    missing: tuple[int, str | None] = (404, None)
    body: str | None = None


ROUTES: Final = (
    Route(key="base", method="GET", path="/v2/", needs=None, ok=200),
    Route(key="catalog", method="GET", path="/v2/_catalog", needs=None, ok=200),
    Route(
        key="blob-head",
        method="HEAD",
        path="/v2/{repo}/blobs/{blob}",
        needs=PULL,
        ok=200,
        missing=(404, "BLOB_UNKNOWN"),
    ),
    Route(
        key="blob-get",
        method="GET",
        path="/v2/{repo}/blobs/{blob}",
        needs=PULL,
        ok=200,
        missing=(404, "BLOB_UNKNOWN"),
    ),
    Route(
        key="blob-delete",
        method="DELETE",
        path="/v2/{repo}/blobs/{fresh_blob}",
        needs=frozenset({"delete"}),
        ok=202,
        missing=(404, "BLOB_UNKNOWN"),
    ),
    Route(
        key="upload-start",
        method="POST",
        path="/v2/{repo}/blobs/uploads/",
        needs=PUSH,
        ok=202,
        missing=(202, None),
    ),
    Route(
        key="upload-monolithic",
        method="POST",
        path="/v2/{repo}/blobs/uploads/?digest={digest}",
        needs=PUSH,
        ok=201,
        missing=(201, None),
        body="blob",
    ),
    Route(
        key="upload-mount",
        method="POST",
        path="/v2/{repo}/blobs/uploads/?mount={blob}&from=" + PUB,
        needs=PUSH,
        ok=201,
        missing=(201, None),
    ),
    Route(
        key="upload-patch",
        method="PATCH",
        path="/v2/{repo}/blobs/uploads/{session}",
        needs=PUSH,
        ok=202,
        missing=(404, "BLOB_UPLOAD_UNKNOWN"),
        body="blob",
    ),
    Route(
        key="upload-put",
        method="PUT",
        path="/v2/{repo}/blobs/uploads/{session}?digest={digest}",
        needs=PUSH,
        ok=201,
        missing=(404, "BLOB_UPLOAD_UNKNOWN"),
        body="blob",
    ),
    Route(
        key="upload-status",
        method="GET",
        path="/v2/{repo}/blobs/uploads/{session}",
        needs=PUSH,
        ok=204,
        missing=(404, "BLOB_UPLOAD_UNKNOWN"),
    ),
    Route(
        key="upload-cancel",
        method="DELETE",
        path="/v2/{repo}/blobs/uploads/{session}",
        needs=PUSH,
        ok=204,
        missing=(404, "BLOB_UPLOAD_UNKNOWN"),
    ),
    Route(
        key="manifest-head-tag",
        method="HEAD",
        path="/v2/{repo}/manifests/v1",
        needs=PULL,
        ok=200,
        missing=(404, "MANIFEST_UNKNOWN"),
    ),
    Route(
        key="manifest-get-tag",
        method="GET",
        path="/v2/{repo}/manifests/v1",
        needs=PULL,
        ok=200,
        missing=(404, "MANIFEST_UNKNOWN"),
    ),
    Route(
        key="manifest-head-digest",
        method="HEAD",
        path="/v2/{repo}/manifests/{manifest}",
        needs=PULL,
        ok=200,
        missing=(404, "MANIFEST_UNKNOWN"),
    ),
    Route(
        key="manifest-get-digest",
        method="GET",
        path="/v2/{repo}/manifests/{manifest}",
        needs=PULL,
        ok=200,
        missing=(404, "MANIFEST_UNKNOWN"),
    ),
    Route(
        key="manifest-put-tag",
        method="PUT",
        path="/v2/{repo}/manifests/{tag}",
        needs=PUSH,
        ok=201,
        missing=(400, "MANIFEST_BLOB_UNKNOWN"),
        body="manifest",
    ),
    Route(
        key="manifest-put-digest",
        method="PUT",
        path="/v2/{repo}/manifests/{manifest}",
        needs=PUSH,
        ok=201,
        missing=(400, "MANIFEST_BLOB_UNKNOWN"),
        body="manifest",
    ),
    Route(
        key="manifest-delete-tag",
        method="DELETE",
        path="/v2/{repo}/manifests/{fresh_tag}",
        needs=frozenset({"delete"}),
        ok=202,
        missing=(404, "MANIFEST_UNKNOWN"),
    ),
    Route(
        key="manifest-delete-digest",
        method="DELETE",
        path="/v2/{repo}/manifests/{fresh_manifest}",
        needs=frozenset({"delete"}),
        ok=202,
        missing=(404, "MANIFEST_UNKNOWN"),
    ),
    Route(
        key="tags-list",
        method="GET",
        path="/v2/{repo}/tags/list",
        needs=PULL,
        ok=200,
        missing=(404, "NAME_UNKNOWN"),
    ),
    Route(
        key="referrers",
        method="GET",
        path="/v2/{repo}/referrers/{manifest}",
        needs=PULL,
        ok=200,
        missing=(200, None),
    ),
)
ROUTE: Final = {route.key: route for route in ROUTES}
#: The routes on a repository.
REPOSITORY_ROUTES: Final = tuple(route for route in ROUTES if route.needs is not None)
#: One or two routes per action, for the repositories other than L{APP}.
SAMPLE_ROUTES: Final = tuple(
    ROUTE[key] for key in ("blob-get", "tags-list", "upload-start", "manifest-put-tag", "manifest-delete-tag")
)


# Expectations ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Expect:
    """
    The answer a cell expects.

    @ivar challenge: Whether C{WWW-Authenticate} is present (with L{scope} and L{error}).
    """

    status: int
    code: str | None = None
    challenge: bool = False
    scope: str | None = None
    error: str | None = None

    def __str__(self) -> str:
        parts = [str(self.status)]
        if self.code:
            parts.append(self.code)
        if self.error:
            parts.append(self.error)
        return " ".join(parts)


def scope_of(route: Route, repository: str) -> str:
    """
    The scope a challenge names for C{route} on C{repository}; a mount's also
    asks for pull on its C{from} repository.
    """
    assert route.needs is not None
    scope = f"repository:{repository}:{','.join(sorted(route.needs))}"
    if route.key == "upload-mount" and repository != PUB:
        scope += f" repository:{PUB}:pull"
    return scope


def expect(caller: str, route: Route, repository: str | None) -> Expect:
    """
    The answer to C{caller} on C{route} (and C{repository}), from L{ACCESS} and L{ROUTES}.

    @param repository: A name from L{REPOSITORIES}; C{None} for C{/v2/} and the catalog.
    """
    if caller in BAD_CALLERS:
        return Expect(status=401, code="UNAUTHORIZED", challenge=True)
    if route.needs is None:
        if route.key == "base" and caller == "anonymous":
            return Expect(status=401, code="UNAUTHORIZED", challenge=True)
        return Expect(status=route.ok)
    assert repository is not None
    allowed = access(caller, repository)
    if not route.needs <= allowed:
        if caller == "anonymous":
            return Expect(status=401, code="UNAUTHORIZED", challenge=True, scope=scope_of(route, repository))
        return Expect(status=403, code="DENIED")
    if route.key == "upload-mount":
        # The source is readable: mounted (201); otherwise an ordinary upload starts (202).
        return Expect(status=201 if "pull" in access(caller, PUB) else 202)
    if repository in EXISTING:
        return Expect(status=route.ok)
    status, code = route.missing
    return Expect(status=status, code=code)


# The registry ------------------------------------------------------------------------------------

CONFIG: Final = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER: Final = b"a layer of the authorization matrix\n" * 64
MANIFEST: Final = image_manifest(OCI_MANIFEST, CONFIG, [LAYER])


def digest_of(data: bytes) -> str:
    """The sha256 digest of C{data} as the registry spells it."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(kw_only=True)
class Matrix:
    """
    The module's registry, its seeded principals and a counter for fresh names.

    @ivar logins: Credentials by caller name (L{ACCESS} keys and L{BAD_CALLERS}).
    @ivar throttle_clock: The login throttle's clock.
    """

    registry: AccessRegistry
    logins: dict[str, Login]
    throttle_clock: Clock
    counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def root(self) -> dict[str, str]:
        """The superuser's Basic credentials."""
        return self.logins["superuser"].headers

    def headers(self, caller: str) -> dict[str, str]:
        """The C{Authorization} header of C{caller} (none for anonymous)."""
        return {} if caller == "anonymous" else self.logins[caller].headers

    def fresh(self) -> int:
        """A number no other cell used."""
        return next(self.counter)

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> Response:
        """One request to the registry."""
        return await self.registry.client.request(method, path, headers=headers, body=body)

    async def token(self, login: Login | None, *scopes: str) -> str:
        """A bearer token from the token endpoint for C{scopes}."""
        query = urlencode([("service", self.registry.service), *(("scope", s) for s in scopes)])
        response = await self.request("GET", f"/v2/auth?{query}", login.headers if login else {})
        assert response.code == 200, response.body
        token: str = response.json()["token"]
        return token

    async def push_blob(self, repository: str, data: bytes) -> None:
        """Upload a blob as the superuser (monolithic POST)."""
        response = await self.request(
            "POST", f"/v2/{repository}/blobs/uploads/?digest={digest_of(data)}", self.root, data
        )
        assert response.code == 201, response.body

    async def push_manifest(self, repository: str, reference: str, content: bytes) -> None:
        """Store a manifest as the superuser."""
        response = await self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            {**self.root, "Content-Type": OCI_MANIFEST},
            content,
        )
        assert response.code == 201, response.body

    async def start_session(self, repository: str) -> str:
        """Start an upload session as the superuser; return its id."""
        response = await self.request("POST", f"/v2/{repository}/blobs/uploads/", self.root)
        assert response.code == 202, response.body
        location = response.header("Location")
        assert location is not None
        return location.rsplit("/", 1)[1]


async def seed(matrix: Matrix, registry: AccessRegistry) -> None:
    """
    Create the principals of L{ACCESS} and the content of L{EXISTING}.
    """
    seeder = registry.seeder
    logins = matrix.logins
    users = {
        "no-rights": "mallory",
        "user-read": "rita",
        "user-write": "wes",
        "user-admin": "ada",
        "namespace-owner": "alice",
        "org-owner": "olga",
        "member-team-granted": "mia",
        "member-team": "max",
        "creator-team-granted": "carl",
        "creator-team": "cora",
        "admin-team-granted": "ayla",
        "admin-team": "adam",
        "superuser": SUPERUSER,
    }
    for caller, name in users.items():
        logins[caller] = await seeder.user(name, f"{name}-secret")
    await seeder.org("acme", owners=["olga"])
    await seeder.team("acme", "devs", "member", members=["mia"])
    await seeder.team("acme", "viewers", "member", members=["max"])
    await seeder.team("acme", "releasers", "creator", members=["carl"])
    await seeder.team("acme", "builders", "creator", members=["cora"])
    await seeder.team("acme", "leads", "admin", members=["ayla"])
    await seeder.team("acme", "admins", "admin", members=["adam"])
    logins["robot-granted"] = await seeder.robot("acme", "deployer")
    logins["robot"] = await seeder.robot("acme", "idle")

    for repository in EXISTING:
        await matrix.push_blob(repository, CONFIG)
        await matrix.push_blob(repository, LAYER)
        await matrix.push_manifest(repository, "v1", MANIFEST)
    await seeder.set_visibility(PUB, "public")
    await seeder.grant(APP, "read", user="rita")
    await seeder.grant(APP, "write", user="wes")
    await seeder.grant(APP, "admin", user="ada")
    await seeder.grant(APP, "write", team="acme/devs")
    await seeder.grant(APP, "read", team="acme/releasers")
    await seeder.grant(APP, "read", team="acme/leads")
    await seeder.grant(APP, "write", robot="acme+deployer")
    logins["token-read"] = await seeder.repository_token(APP, "read")
    logins["token-write"] = await seeder.repository_token(APP, "write")

    logins["wrong-password"] = Login(username="alice", password="not-alice-secret")
    logins["unknown-user"] = Login(username="nobody-here", password="whatever")
    logins["robot-wrong-token"] = Login(username="acme+deployer", password=logins["robot"].password)
    logins["token-unknown"] = Login(username="$token", password="0" * 43)


@pytest.fixture(scope="module", params=DATABASE_KINDS)
def database_kind(request: pytest.FixtureRequest) -> str:
    """
    The metadata backend of the module's registry: every cell runs over SQLite
    and over PostgreSQL (which skips, or fails under C{CI=true}, without the
    server binaries), with one seeded registry per backend.
    """
    kind: str = request.param
    return kind


@pytest_twisted.async_yield_fixture(scope="module")  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def matrix(
    tmp_path_factory: pytest.TempPathFactory, open_module_database: DatabaseOpener
) -> AsyncIterator[Matrix]:
    """The module's seeded registry; its teardown fails if quayd logged a failure."""
    clock = Clock()
    clock.advance(time.time())
    directory = tmp_path_factory.mktemp("authz")
    registry = await start_access_registry(
        directory,
        superusers=[SUPERUSER],
        throttle_clock=clock,
        database=await open_module_database(directory),
    )
    matrix = Matrix(registry=registry, logins={}, throttle_clock=clock)
    try:
        await seed(matrix, registry)
        yield matrix
    finally:
        await registry.stop()
    assert registry.failures.describe() == [], "quayd logged failures"


@pytest.fixture(autouse=True)
def _forget_failed_logins(request: pytest.FixtureRequest) -> None:
    """Move the throttle's clock past any lockout, so each cell starts unthrottled."""
    if "matrix" in request.fixturenames:
        matrix: Matrix = request.getfixturevalue("matrix")
        matrix.throttle_clock.advance(3600)


# Running a cell ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """A cell's request: path, extra headers and body."""

    path: str
    headers: dict[str, str]
    body: bytes | None


async def prepare(matrix: Matrix, route: Route, repository: str) -> Prepared:
    """
    Make the state a cell needs and fill in its path.

    In an existing repository the superuser makes a fresh upload session, blob
    or tagged manifest when the route needs one; in a missing repository
    these are made-up ids, since making them would create the repository.
    """
    exists = repository in EXISTING
    n = matrix.fresh()
    values: dict[str, str] = {
        "repo": repository,
        "blob": digest_of(LAYER),
        "manifest": digest_of(MANIFEST),
        "tag": f"put-{n}",
        "session": str(uuid.uuid4()),
        "fresh_tag": f"gone-{n}",
    }
    blob = f"cell {n} of the authorization matrix\n".encode()
    values["digest"] = digest_of(blob)
    fresh_blob = f"blob {n} to delete\n".encode()
    values["fresh_blob"] = digest_of(fresh_blob)
    fresh_manifest = json.dumps({**json.loads(MANIFEST), "annotations": {"cell": str(n)}}, indent=2).encode()
    values["fresh_manifest"] = digest_of(fresh_manifest)
    if exists:
        if "{session}" in route.path:
            values["session"] = await matrix.start_session(repository)
        if "{fresh_blob}" in route.path:
            await matrix.push_blob(repository, fresh_blob)
        if "{fresh_tag}" in route.path or "{fresh_manifest}" in route.path:
            await matrix.push_manifest(repository, values["fresh_tag"], fresh_manifest)
    headers: dict[str, str] = {}
    body: bytes | None = None
    if route.body == "blob":
        body = blob
        headers["Content-Type"] = "application/octet-stream"
    elif route.body == "manifest":
        body = MANIFEST
        headers["Content-Type"] = OCI_MANIFEST
    return Prepared(path=route.path.format(**values), headers=headers, body=body)


def describe(response: Response) -> str:
    """A response, for assertion messages."""
    return f"{response.code} {response.header('WWW-Authenticate')!r} {response.body[:300]!r}"


def check(matrix: Matrix, response: Response, wanted: Expect, method: str) -> None:
    """Assert that C{response} is the answer C{wanted} describes."""
    assert response.code == wanted.status, describe(response)
    if wanted.code is not None and method != "HEAD":
        errors = response.json()["errors"]
        assert [error["code"] for error in errors] == [wanted.code], describe(response)
    challenge = response.header("WWW-Authenticate")
    if wanted.challenge:
        assert challenge == matrix.registry.challenge(wanted.scope, wanted.error), describe(response)
    else:
        assert challenge is None, describe(response)


def resolve(repository: str, n: int) -> str:
    """A repository name of L{REPOSITORIES} with its fresh-name placeholder filled."""
    return repository.format(n=n)


async def run_cell(matrix: Matrix, caller: str, route: Route, repository: str | None) -> None:
    """Send C{caller}'s request for C{route} on C{repository}; check it against L{expect}."""
    wanted = expect(caller, route, repository)
    name = resolve(repository, matrix.fresh()) if repository is not None else ""
    prepared = await prepare(matrix, route, name)
    response = await matrix.request(
        route.method, prepared.path, {**prepared.headers, **matrix.headers(caller)}, prepared.body
    )
    if wanted.scope is not None:
        wanted = Expect(
            status=wanted.status,
            code=wanted.code,
            challenge=wanted.challenge,
            scope=scope_of(route, name),
            error=wanted.error,
        )
    check(matrix, response, wanted, route.method)


# The cells ---------------------------------------------------------------------------------------

CALLERS: Final = (*ACCESS, *BAD_CALLERS)


def _route_cells() -> Iterator[Any]:
    """Every caller on every route of L{APP}, and on the sample routes of the other repositories."""
    for caller in CALLERS:
        for route in ROUTES:
            if route.needs is None:
                yield pytest.param(
                    caller, route.key, None, id=f"{caller}-{route.key}-{expect(caller, route, None)}"
                )
        for repository in REPOSITORIES:
            routes = REPOSITORY_ROUTES if repository == APP else SAMPLE_ROUTES
            for route in routes:
                label = repository.replace("-{n}", "")
                yield pytest.param(
                    caller,
                    route.key,
                    repository,
                    id=f"{caller}-{route.key}-{label}-{expect(caller, route, repository)}",
                )


@pytest.mark.parametrize(("caller", "route_key", "repository"), list(_route_cells()))
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_route(matrix: Matrix, caller: str, route_key: str, repository: str | None) -> None:
    """Each caller on each route answers as L{ACCESS} and L{ROUTES} say (Basic credentials sent directly)."""
    await run_cell(matrix, caller, ROUTE[route_key], repository)


# The token endpoint ------------------------------------------------------------------------------


def decode(matrix: Matrix, token: str) -> dict[str, JSONValue]:
    """Verify a token with the registry's public key and return its claims."""
    key = matrix.registry.signing_key
    claims: dict[str, JSONValue] = jwt.decode(
        token,
        key.public_key,
        algorithms=[key.algorithm],
        audience=matrix.registry.service,
        issuer=matrix.registry.issuer,
    )
    return claims


def _token_cells() -> Iterator[Any]:
    """Every caller asking for everything on every repository."""
    for caller in CALLERS:
        for repository in REPOSITORIES:
            label = repository.replace("-{n}", "")
            granted = (
                "401" if caller in BAD_CALLERS else ",".join(sorted(access(caller, repository))) or "nothing"
            )
            yield pytest.param(caller, repository, id=f"{caller}-{label}-{granted}")


@pytest.mark.parametrize(("caller", "repository"), list(_token_cells()))
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_token_endpoint_downscopes(matrix: Matrix, caller: str, repository: str) -> None:
    """
    C{GET /v2/auth} asking for pull, push and delete grants exactly what L{ACCESS}
    allows (200 even when that is nothing); wrong credentials get 401.
    """
    name = resolve(repository, matrix.fresh())
    query = urlencode({"service": matrix.registry.service, "scope": f"repository:{name}:pull,push,delete"})
    response = await matrix.request("GET", f"/v2/auth?{query}", matrix.headers(caller))
    if caller in BAD_CALLERS:
        check(matrix, response, Expect(status=401, code="UNAUTHORIZED", challenge=True), "GET")
        return
    assert response.code == 200, describe(response)
    claims = decode(matrix, response.json()["token"])
    allowed = access(caller, repository)
    wanted = [{"type": "repository", "name": name, "actions": sorted(allowed)}] if allowed else []
    assert claims["access"] == wanted


@pytest.mark.parametrize("caller", CALLERS)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_token_endpoint_catalog_scope(matrix: Matrix, caller: str) -> None:
    """C{registry:catalog:*} is granted to every authenticated caller, never to anonymous."""
    query = urlencode({"service": matrix.registry.service, "scope": "registry:catalog:*"})
    response = await matrix.request("GET", f"/v2/auth?{query}", matrix.headers(caller))
    if caller in BAD_CALLERS:
        check(matrix, response, Expect(status=401, code="UNAUTHORIZED", challenge=True), "GET")
        return
    assert response.code == 200, describe(response)
    claims = decode(matrix, response.json()["token"])
    wanted = [] if caller == "anonymous" else [{"type": "registry", "name": "catalog", "actions": ["*"]}]
    assert claims["access"] == wanted


# Bearer tokens from the token endpoint -----------------------------------------------------------


def _insufficient(route: str, repository: str) -> Expect:
    """401 C{insufficient_scope}, naming the scope C{route} needs on C{repository}."""
    return Expect(
        status=401,
        code="UNAUTHORIZED",
        challenge=True,
        scope=scope_of(ROUTE[route], repository),
        error="insufficient_scope",
    )


#: (caller, scopes asked for, route, repository, answer, known bug).
BEARER_CELLS: Final[list[tuple[str, tuple[str, ...], str, str | None, Expect, str | None]]] = [
    ("user-read", (f"repository:{APP}:pull",), "base", None, Expect(status=200), None),
    ("user-read", (f"repository:{APP}:pull",), "manifest-get-tag", APP, Expect(status=200), None),
    ("user-read", (f"repository:{APP}:pull",), "blob-get", APP, Expect(status=200), None),
    ("user-read", (f"repository:{APP}:pull",), "tags-list", APP, Expect(status=200), None),
    (
        "user-read",
        (f"repository:{APP}:pull,push",),
        "upload-start",
        APP,
        _insufficient("upload-start", APP),
        None,
    ),
    (
        "user-read",
        (f"repository:{APP}:pull",),
        "manifest-put-tag",
        APP,
        _insufficient("manifest-put-tag", APP),
        None,
    ),
    ("user-read", (f"repository:{APP}:pull",), "upload-patch", APP, _insufficient("upload-patch", APP), None),
    (
        "user-read",
        (f"repository:{APP}:pull,delete",),
        "manifest-delete-tag",
        APP,
        _insufficient("manifest-delete-tag", APP),
        None,
    ),
    (
        "user-read",
        (f"repository:{APP}:pull",),
        "manifest-get-tag",
        OTHER,
        _insufficient("manifest-get-tag", OTHER),
        None,
    ),
    (
        "user-read",
        (f"repository:{OTHER}:pull",),
        "manifest-get-tag",
        OTHER,
        _insufficient("manifest-get-tag", OTHER),
        None,
    ),
    ("user-write", (f"repository:{APP}:pull,push",), "upload-start", APP, Expect(status=202), None),
    ("user-write", (f"repository:{APP}:pull,push",), "upload-monolithic", APP, Expect(status=201), None),
    ("user-write", (f"repository:{APP}:pull,push",), "upload-patch", APP, Expect(status=202), None),
    ("user-write", (f"repository:{APP}:pull,push",), "upload-put", APP, Expect(status=201), None),
    ("user-write", (f"repository:{APP}:pull,push",), "upload-status", APP, Expect(status=204), None),
    ("user-write", (f"repository:{APP}:pull,push",), "upload-cancel", APP, Expect(status=204), None),
    ("user-write", (f"repository:{APP}:pull,push",), "manifest-put-tag", APP, Expect(status=201), None),
    (
        "user-write",
        (f"repository:{APP}:pull,push",),
        "manifest-delete-tag",
        APP,
        _insufficient("manifest-delete-tag", APP),
        None,
    ),
    ("user-write", (f"repository:{APP}:delete",), "manifest-delete-digest", APP, Expect(status=202), None),
    ("user-write", (f"repository:{APP}:delete",), "blob-delete", APP, Expect(status=202), None),
    # Mounting needs pull on the source in the token as well; without it an upload starts.
    (
        "user-write",
        (f"repository:{APP}:pull,push", f"repository:{PUB}:pull"),
        "upload-mount",
        APP,
        Expect(status=201),
        None,
    ),
    ("user-write", (f"repository:{APP}:pull,push",), "upload-mount", APP, Expect(status=202), None),
    ("anonymous", (), "base", None, Expect(status=200), None),
    ("anonymous", (f"repository:{PUB}:pull",), "manifest-get-tag", PUB, Expect(status=200), None),
    (
        "anonymous",
        (f"repository:{PUB}:pull,push",),
        "upload-start",
        PUB,
        _insufficient("upload-start", PUB),
        None,
    ),
    (
        "anonymous",
        (f"repository:{APP}:pull",),
        "manifest-get-tag",
        APP,
        _insufficient("manifest-get-tag", APP),
        None,
    ),
    ("token-read", (f"repository:{APP}:pull",), "manifest-get-digest", APP, Expect(status=200), None),
    (
        "token-read",
        (f"repository:{APP}:pull,push",),
        "upload-start",
        APP,
        _insufficient("upload-start", APP),
        None,
    ),
    ("token-write", (f"repository:{APP}:pull,push",), "manifest-put-tag", APP, Expect(status=201), None),
    (
        "token-write",
        (f"repository:{APP}:pull,push,delete",),
        "manifest-delete-tag",
        APP,
        _insufficient("manifest-delete-tag", APP),
        None,
    ),
    (
        "token-write",
        (f"repository:{OTHER}:pull,push",),
        "upload-start",
        OTHER,
        _insufficient("upload-start", OTHER),
        None,
    ),
    ("robot-granted", (f"repository:{APP}:pull,push",), "manifest-put-digest", APP, Expect(status=201), None),
    (
        "robot",
        (f"repository:{APP}:pull",),
        "manifest-get-tag",
        APP,
        _insufficient("manifest-get-tag", APP),
        None,
    ),
    (
        "creator-team",
        ("repository:acme/bearer-new:pull,push",),
        "upload-start",
        "acme/bearer-new",
        Expect(status=202),
        None,
    ),
    (
        "superuser",
        ("repository:nowhere/bearer-new:pull,push",),
        "upload-start",
        "nowhere/bearer-new",
        Expect(status=202),
        None,
    ),
    ("superuser", ("registry:catalog:*",), "catalog", None, Expect(status=200), None),
    ("user-admin", (f"repository:{APP}:*",), "manifest-get-tag", APP, Expect(status=200), None),
    ("user-admin", (f"repository:{APP}:*",), "upload-start", APP, Expect(status=202), None),
]


def _bearer_cells() -> Iterator[Any]:
    """L{BEARER_CELLS} as pytest parameters, the known bugs as strict xfails."""
    for caller, scopes, route, repository, wanted, bug in BEARER_CELLS:
        marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
        label = f"{caller}-{'+'.join(scopes) or 'no-scope'}-{route}-{repository or ''}-{wanted}"
        yield pytest.param(caller, scopes, route, repository, wanted, marks=marks, id=label)


@pytest.mark.parametrize(("caller", "scopes", "route_key", "repository", "wanted"), list(_bearer_cells()))
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_bearer_token(
    matrix: Matrix,
    caller: str,
    scopes: tuple[str, ...],
    route_key: str,
    repository: str | None,
    wanted: Expect,
) -> None:
    """
    A token from the endpoint authorizes what it grants and nothing more: a
    missing scope answers 401 C{insufficient_scope} naming the scope needed.
    """
    login = None if caller == "anonymous" else matrix.logins[caller]
    token = await matrix.token(login, *scopes)
    route = ROUTE[route_key]
    prepared = await prepare(matrix, route, repository or "")
    response = await matrix.request(
        route.method, prepared.path, {**prepared.headers, "Authorization": f"Bearer {token}"}, prepared.body
    )
    check(matrix, response, wanted, route.method)


# Tokens the endpoint did not issue ---------------------------------------------------------------


def _b64(data: bytes) -> str:
    """Unpadded base64url, as in JWTs."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(matrix: Matrix, variant: str) -> str:
    """
    A JWT for the superuser granting everything on L{APP}, L{PUB} and the catalog,
    made wrong in the way C{variant} names (C{valid} is the control).
    """
    registry = matrix.registry
    key = registry.signing_key
    now = int(time.time())
    claims: dict[str, JSONValue] = {
        "iss": registry.issuer,
        "sub": f"user:{SUPERUSER}",
        "aud": registry.service,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "access": [
            {"type": "repository", "name": APP, "actions": ["delete", "pull", "push"]},
            {"type": "repository", "name": PUB, "actions": ["delete", "pull", "push"]},
            {"type": "registry", "name": "catalog", "actions": ["*"]},
        ],
    }
    other_key = ec.generate_private_key(ec.SECP256R1())

    def sign(claims: dict[str, JSONValue], private_key: Any = key.private_key, kid: str = key.kid) -> str:
        return jwt.encode(claims, private_key, algorithm=key.algorithm, headers={"kid": kid})

    if variant == "valid":
        return sign(claims)
    if variant == "expired":
        return sign({**claims, "iat": now - 900, "nbf": now - 900, "exp": now - 600})
    if variant == "not-yet-valid":
        return sign({**claims, "iat": now + 600, "nbf": now + 600, "exp": now + 900})
    if variant == "tampered-signature":
        header, payload, signature = sign(claims).split(".")
        raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
        raw[len(raw) // 2] ^= 0x01
        return f"{header}.{payload}.{_b64(bytes(raw))}"
    if variant == "tampered-claims":
        header, _, signature = sign({**claims, "sub": "user:mallory"}).split(".")
        return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    if variant == "other-audience":
        return sign({**claims, "aud": "registry.example.com"})
    if variant == "other-issuer":
        return sign({**claims, "iss": "someone-else"})
    if variant == "other-key-same-kid":
        return sign(claims, other_key)
    if variant == "other-key":
        return sign(claims, other_key, "OTHERKEY")
    if variant == "alg-none":
        header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": key.kid}).encode())
        return f"{header}.{_b64(json.dumps(claims).encode())}."
    if variant == "hs256-public-key":
        secret = key.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signing_input = (
            _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
            + "."
            + _b64(json.dumps(claims).encode())
        )
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"
    assert variant == "not-a-jwt"
    return "not-a-jwt"


FORGED: Final = (
    "expired",
    "not-yet-valid",
    "tampered-signature",
    "tampered-claims",
    "other-audience",
    "other-issuer",
    "other-key-same-kid",
    "other-key",
    "alg-none",
    "hs256-public-key",
    "not-a-jwt",
)
#: (route, repository) each forged token is tried on.
FORGED_ON: Final = (
    ("base", None),
    ("catalog", None),
    ("manifest-get-tag", APP),
    ("manifest-get-tag", PUB),
    ("upload-start", APP),
    ("upload-patch", APP),
    ("manifest-delete-tag", APP),
)


def _forged_cells() -> Iterator[Any]:
    """Every forged variant (and the valid control) on every route of L{FORGED_ON}."""
    for variant in ("valid", *FORGED):
        for route, repository in FORGED_ON:
            yield pytest.param(variant, route, repository, id=f"{variant}-{route}-{repository or ''}")


@pytest.mark.parametrize(("variant", "route_key", "repository"), list(_forged_cells()))
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_forged_token(
    matrix: Matrix, variant: str, route_key: str, repository: str | None
) -> None:
    """
    A token that is expired, not yet valid, tampered with, for another service or
    issuer, signed by another key or not signed at all answers 401
    C{error="invalid_token"}, even on a public repository; the well-made control passes.
    """
    route = ROUTE[route_key]
    prepared = await prepare(matrix, route, repository or "")
    headers = {**prepared.headers, "Authorization": f"Bearer {forge(matrix, variant)}"}
    response = await matrix.request(route.method, prepared.path, headers, prepared.body)
    if variant == "valid":
        wanted = Expect(status=route.ok)
    else:
        scope = scope_of(route, repository) if repository is not None else None
        wanted = Expect(status=401, code="UNAUTHORIZED", challenge=True, scope=scope, error="invalid_token")
    check(matrix, response, wanted, route.method)


# No existence leak -------------------------------------------------------------------------------

#: Callers who may see neither L{OTHER} nor a missing repository of C{acme}.
BLIND_CALLERS: Final = ("anonymous", "no-rights", "member-team", "robot", "token-read", "user-admin")


def _normalized(response: Response, name: str) -> tuple[int, bytes, str | None, list[str]]:
    """A response with the repository name taken out: status, body, challenge, header names."""
    challenge = response.header("WWW-Authenticate")
    names = sorted(
        n.decode().lower() for n, _ in response.headers.getAllRawHeaders() if n.lower() not in (b"date",)
    )
    return (
        response.code,
        response.body.replace(name.encode(), b"<repo>"),
        challenge.replace(name, "<repo>") if challenge else None,
        names,
    )


@pytest.mark.parametrize("caller", BLIND_CALLERS)
@pytest.mark.parametrize("route_key", [route.key for route in REPOSITORY_ROUTES])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_private_repository_answers_like_missing_one(
    matrix: Matrix, caller: str, route_key: str
) -> None:
    """
    A private repository the caller cannot see answers exactly like a missing
    one: same status, body, challenge (up to the name) and headers.
    """
    assert access(caller, OTHER) == access(caller, NEW_ORG) == NONE
    route = ROUTE[route_key]
    answers = []
    for name in (OTHER, resolve(NEW_ORG, matrix.fresh())):
        prepared = await prepare(matrix, route, name)
        response = await matrix.request(
            route.method, prepared.path, {**prepared.headers, **matrix.headers(caller)}, prepared.body
        )
        assert response.code in (401, 403), describe(response)
        answers.append(_normalized(response, name))
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    ("source", "status"),
    [
        pytest.param(OTHER, 202, id="from-private-unreadable"),
        pytest.param("acme/never-was", 202, id="from-missing"),
        pytest.param(None, 202, id="auto-mount-unreadable"),
    ],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_mount_never_reveals_unreadable_blob(
    matrix: Matrix, source: str | None, status: int
) -> None:
    """
    Mounting a blob that only a repository the caller cannot read holds starts an
    ordinary upload (202), exactly as when the blob is nowhere; the superuser,
    who can read it, mounts it.
    """
    secret = f"only in {OTHER}: {uuid.uuid4()}\n".encode()
    await matrix.push_blob(OTHER, secret)
    query = f"mount={digest_of(secret)}" + (f"&from={source}" if source else "")
    response = await matrix.request("POST", f"/v2/{APP}/blobs/uploads/?{query}", matrix.headers("user-write"))
    assert response.code == status, describe(response)
    head = await matrix.request("HEAD", f"/v2/{APP}/blobs/{digest_of(secret)}", matrix.root)
    assert head.code == 404
    control = f"mount={digest_of(secret)}&from={OTHER}"
    mounted = await matrix.request("POST", f"/v2/{APP}/blobs/uploads/?{control}", matrix.root)
    assert mounted.code == 201, describe(mounted)


# The catalog -------------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", list(ACCESS))
@pytest.mark.parametrize("via", ["basic", "bearer"])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_catalog_lists_what_caller_may_pull(
    matrix: Matrix, caller: str, via: str, request: pytest.FixtureRequest
) -> None:
    """The catalog lists exactly the repositories the caller may pull, with Basic credentials or a token."""
    if via == "basic":
        headers = matrix.headers(caller)
    else:
        login = None if caller == "anonymous" else matrix.logins[caller]
        headers = {"Authorization": f"Bearer {await matrix.token(login, 'registry:catalog:*')}"}
    response = await matrix.request("GET", "/v2/_catalog", headers)
    assert response.code == 200, describe(response)
    listed = set(response.json()["repositories"]) & set(EXISTING)
    assert listed == {name for name in EXISTING if "pull" in access(caller, name)}


# Whole workflows ---------------------------------------------------------------------------------


async def push_image(matrix: Matrix, repository: str, headers: dict[str, str]) -> list[int]:
    """
    Push L{CONFIG}, L{LAYER} and L{MANIFEST} the way clients do, with C{headers}:
    the layer through a session (POST, PATCH, PUT), the config monolithically,
    then the manifest. Stops at the first failure.

    @return: The statuses of the requests made.
    """
    statuses: list[int] = []
    started = await matrix.request("POST", f"/v2/{repository}/blobs/uploads/", headers)
    statuses.append(started.code)
    if started.code != 202:
        return statuses
    location = started.header("Location")
    assert location is not None
    octets = {**headers, "Content-Type": "application/octet-stream"}
    patched = await matrix.request("PATCH", location, octets, LAYER)
    statuses.append(patched.code)
    if patched.code != 202:
        return statuses
    finished = await matrix.request("PUT", f"{location}?digest={digest_of(LAYER)}", octets, b"")
    statuses.append(finished.code)
    if finished.code != 201:
        return statuses
    config = await matrix.request(
        "POST", f"/v2/{repository}/blobs/uploads/?digest={digest_of(CONFIG)}", octets, CONFIG
    )
    statuses.append(config.code)
    if config.code != 201:
        return statuses
    manifest = await matrix.request(
        "PUT", f"/v2/{repository}/manifests/v1", {**headers, "Content-Type": OCI_MANIFEST}, MANIFEST
    )
    statuses.append(manifest.code)
    return statuses


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_user_creates_repository_in_own_namespace(matrix: Matrix) -> None:
    """A user pushes a new repository into their own namespace with Basic credentials; it is private."""
    name = f"alice/created-{matrix.fresh()}"
    alice = matrix.headers("namespace-owner")
    assert await push_image(matrix, name, alice) == [202, 202, 201, 201, 201]
    pulled = await matrix.request("GET", f"/v2/{name}/manifests/v1", alice)
    assert (pulled.code, pulled.body) == (200, MANIFEST)
    anonymous = await matrix.request("GET", f"/v2/{name}/manifests/v1")
    assert anonymous.code == 401
    stranger = await matrix.request("GET", f"/v2/{name}/manifests/v1", matrix.headers("no-rights"))
    assert stranger.code == 403


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_org_creator_creates_repository(matrix: Matrix) -> None:
    """A member of a creator team pushes a new repository into the organization and pulls it back."""
    name = f"acme/created-{matrix.fresh()}"
    cora = matrix.headers("creator-team")
    assert await push_image(matrix, name, cora) == [202, 202, 201, 201, 201]
    pulled = await matrix.request("GET", f"/v2/{name}/manifests/v1", cora)
    assert pulled.code == 200


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_org_creator_keeps_access_to_repository_pushed_with_token(matrix: Matrix) -> None:
    """
    A creator pushing with a bearer token (as docker does) succeeds while the
    token lasts, and a new token still grants pull and push on the repository.
    """
    name = f"acme/created-{matrix.fresh()}"
    login = matrix.logins["creator-team"]
    token = await matrix.token(login, f"repository:{name}:pull,push")
    assert await push_image(matrix, name, {"Authorization": f"Bearer {token}"}) == [202, 202, 201, 201, 201]
    renewed = decode(matrix, await matrix.token(login, f"repository:{name}:pull,push"))
    assert renewed["access"] == [{"type": "repository", "name": name, "actions": ["pull", "push"]}]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_visibility_change_takes_effect(matrix: Matrix) -> None:
    """Making a repository public lets anonymous callers pull it; making it private again stops them."""
    name = f"acme/toggle-{matrix.fresh()}"
    assert await push_image(matrix, name, matrix.root) == [202, 202, 201, 201, 201]
    path = f"/v2/{name}/manifests/v1"
    assert (await matrix.request("GET", path)).code == 401
    await matrix.registry.seeder.set_visibility(name, "public")
    assert (await matrix.request("GET", path)).code == 200
    assert (await matrix.request("POST", f"/v2/{name}/blobs/uploads/")).code == 401
    await matrix.registry.seeder.set_visibility(name, "private")
    assert (await matrix.request("GET", path)).code == 401


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_revoked_permission_takes_effect(matrix: Matrix) -> None:
    """
    Revoking a role stops Basic requests at once and empties the next token; a
    token issued before keeps its scope until it expires.
    """
    name = f"acme/revoke-{matrix.fresh()}"
    assert await push_image(matrix, name, matrix.root) == [202, 202, 201, 201, 201]
    seeder = matrix.registry.seeder
    login = await seeder.user(f"temp{matrix.fresh()}", "temp-secret")
    await seeder.grant(name, "read", user=login.username)
    path = f"/v2/{name}/manifests/v1"
    assert (await matrix.request("GET", path, login.headers)).code == 200
    issued = await matrix.token(login, f"repository:{name}:pull")
    assert await seeder.revoke(name, user=login.username)
    assert (await matrix.request("GET", path, login.headers)).code == 403
    assert decode(matrix, await matrix.token(login, f"repository:{name}:pull"))["access"] == []
    assert (await matrix.request("GET", path, {"Authorization": f"Bearer {issued}"})).code == 200


@pytest.mark.parametrize("route_key", ["upload-status", "upload-cancel"])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_authz_session_probe_creates_no_repository(matrix: Matrix, route_key: str) -> None:
    """
    A creator asking about (or cancelling) a made-up upload session in a missing
    repository gets 404 and the repository still does not exist.
    """
    name = resolve(NEW_ORG, matrix.fresh())
    route = ROUTE[route_key]
    prepared = await prepare(matrix, route, name)
    response = await matrix.request(route.method, prepared.path, matrix.headers("creator-team"))
    assert response.code == 404, describe(response)
    tags = await matrix.request("GET", f"/v2/{name}/tags/list", matrix.root)
    assert tags.code == 404, describe(tags)
