"""
The token endpoint (C{GET}/C{POST /v2/auth}) in detail: credentials, scopes and
downscoping, the OAuth2 password grant, errors, login throttling, and the
claims and expiry of the tokens it signs.

Each test runs its own registry (the real app with access control, in process
on a loopback socket), over SQLite and over PostgreSQL (L{database_kind}, from
C{tests/http/conftest.py}). The login throttle runs on a L{Clock}, so lockouts are
stepped through rather than waited for; requests from different client
addresses come from different loopback source addresses (127.0.0.x).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import jwt
import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet.task import Clock
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from quayd.auth.tokens import LEEWAY, TokenService
from quayd.db.interfaces import IDatabase
from quayd.errors import JSONValue
from quayd.registry.manifests import OCI_MANIFEST
from tests.conftest import DatabaseOpener
from tests.support.http import Response
from tests.support.identity import AccessRegistry, Login, start_access_registry
from tests.support.manifests import image_manifest

PRIVATE = "acme/app"
PUBLIC = "acme/pub"
OTHER = "acme/other"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
MANIFEST = image_manifest(OCI_MANIFEST, CONFIG, [])
TTL = 300


@dataclass(kw_only=True)
class TokenSetup:
    """
    A registry with C{acme/app} (private; C{rita} reads, C{wes} writes),
    C{acme/pub} (public) and C{acme/other} (private), each holding one manifest.

    @ivar throttle_clock: The login throttle's clock, at the current wall time.
    """

    registry: AccessRegistry
    throttle_clock: Clock
    root: Login
    rita: Login
    wes: Login

    def query(self, *scopes: str, service: str | None = None) -> str:
        """A token request's query string (the registry's service unless told otherwise)."""
        params = [("service", self.registry.service if service is None else service)]
        params += [("scope", scope) for scope in scopes]
        return urlencode(params)

    async def get_token(self, login: Login | None, *scopes: str) -> Response:
        """C{GET /v2/auth} for C{scopes}, with C{login}'s Basic credentials if given."""
        return await self.registry.client.request(
            "GET", f"/v2/auth?{self.query(*scopes)}", headers=login.headers if login else {}
        )

    async def post_token(self, form: dict[str, str]) -> Response:
        """C{POST /v2/auth} with a form body."""
        return await self.registry.client.request(
            "POST",
            "/v2/auth",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=urlencode(form).encode(),
        )

    def claims(self, token: str) -> dict[str, JSONValue]:
        """Verify C{token} with the registry's public key; its claims."""
        key = self.registry.signing_key
        claims: dict[str, JSONValue] = jwt.decode(
            token,
            key.public_key,
            algorithms=[key.algorithm],
            audience=self.registry.service,
            issuer=self.registry.issuer,
        )
        return claims


async def _seed(registry: AccessRegistry) -> tuple[Login, Login, Login]:
    """Create the users and repositories of L{TokenSetup}."""
    seeder = registry.seeder
    root = await seeder.user("root", "root-secret")
    rita = await seeder.user("rita", "rita-secret")
    wes = await seeder.user("wes", "wes-secret")
    await seeder.org("acme")
    for name in (PRIVATE, PUBLIC, OTHER):
        config = await registry.client.request(
            "POST",
            f"/v2/{name}/blobs/uploads/?digest=sha256:{_sha256(CONFIG)}",
            headers=root.headers,
            body=CONFIG,
        )
        assert config.code == 201, config.body
        manifest = await registry.client.request(
            "PUT",
            f"/v2/{name}/manifests/v1",
            headers={**root.headers, "Content-Type": OCI_MANIFEST},
            body=MANIFEST,
        )
        assert manifest.code == 201, manifest.body
    await seeder.set_visibility(PUBLIC, "public")
    await seeder.grant(PRIVATE, "read", user="rita")
    await seeder.grant(PRIVATE, "write", user="wes")
    return root, rita, wes


def _sha256(data: bytes) -> str:
    """The hex sha256 of C{data}."""
    return hashlib.sha256(data).hexdigest()


async def _start(tmp_path: Path, database: IDatabase, token_clock: Clock | None = None) -> TokenSetup:
    """Start and seed a registry over C{database} whose throttle runs on a L{Clock} at wall time."""
    throttle_clock = Clock()
    throttle_clock.advance(time.time())
    registry = await start_access_registry(
        tmp_path / "registry",
        database=database,
        superusers=["root"],
        issuer="quayd-test",
        token_ttl=TTL,
        token_clock=token_clock,
        throttle_clock=throttle_clock,
    )
    try:
        root, rita, wes = await _seed(registry)
    except BaseException:
        await registry.stop()
        raise
    return TokenSetup(registry=registry, throttle_clock=throttle_clock, root=root, rita=rita, wes=wes)


@pytest_twisted.async_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def database(tmp_path: Path, open_test_database: DatabaseOpener) -> IDatabase:
    """A new database of the kind under test (SQLite or PostgreSQL) for the test's registry."""
    return await open_test_database(tmp_path / "registry")


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def setup(tmp_path: Path, database: IDatabase) -> AsyncIterator[TokenSetup]:
    """A seeded registry for one test; its teardown fails if quayd logged a failure."""
    started = await _start(tmp_path, database)
    try:
        yield started
    finally:
        await started.registry.stop()
    assert started.registry.failures.describe() == [], "quayd logged failures"


class ClientAt:
    """
    Requests from one loopback source address, so the registry sees them coming
    from that client. Connections are not kept, so none outlives a request.
    """

    def __init__(self, base_url: str, host: str) -> None:
        """
        @param base_url: The registry's C{http://127.0.0.1:PORT}.
        @param host: The source address, C{127.0.0.x}.
        """
        from twisted.internet import reactor

        self._base_url = base_url
        self._reactor = reactor
        pool = HTTPConnectionPool(reactor, persistent=False)
        self._http = HTTPClient(Agent(reactor, pool=pool, bindAddress=(host, 0), connectTimeout=5))

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> Response:
        """One request; the whole response."""
        response = await self._http.request(
            method,
            self._base_url + path,
            headers=Headers({k: [v] for k, v in (headers or {}).items()}),
            data=body,
            timeout=20,
        )
        content = await response.content()
        return Response(code=response.code, headers=response.headers, body=content, length=None)


def _error_code(response: Response) -> str:
    """The single error code of a spec error body."""
    errors = response.json()["errors"]
    assert len(errors) == 1, errors
    code: str = errors[0]["code"]
    return code


# Credentials -------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_get_without_credentials_is_anonymous(setup: TokenSetup) -> None:
    """Without credentials the endpoint answers 200 with an anonymous token granting public pulls only."""
    response = await setup.get_token(None, f"repository:{PUBLIC}:pull,push", f"repository:{PRIVATE}:pull")
    assert response.code == 200, response.body
    document = response.json()
    assert document["token"] == document["access_token"]
    claims = setup.claims(document["token"])
    assert claims["sub"] == "anonymous"
    assert claims["access"] == [{"type": "repository", "name": PUBLIC, "actions": ["pull"]}]
    assert response.header("Cache-Control") == "no-store"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_get_with_basic_credentials(setup: TokenSetup) -> None:
    """With Basic credentials the token names the user and grants their access."""
    response = await setup.get_token(setup.rita, f"repository:{PRIVATE}:pull")
    assert response.code == 200, response.body
    claims = setup.claims(response.json()["token"])
    assert claims["sub"] == "user:rita"
    assert claims["access"] == [{"type": "repository", "name": PRIVATE, "actions": ["pull"]}]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_get_without_scope_grants_nothing(setup: TokenSetup) -> None:
    """A request without scope (as C{docker login} makes) gets a token with an empty access list."""
    response = await setup.get_token(setup.wes)
    assert response.code == 200, response.body
    claims = setup.claims(response.json()["token"])
    assert (claims["sub"], claims["access"]) == ("user:wes", [])


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_multiple_scopes(setup: TokenSetup) -> None:
    """
    Several C{scope} parameters, and several scopes in one parameter, are all
    considered; malformed ones are ignored.
    """
    scopes = (
        f"repository:{PRIVATE}:pull,push",
        f"repository:{PUBLIC}:pull repository:{OTHER}:pull",
        "registry:catalog:*",
        "this-is-not-a-scope",
        "repository:Not/Valid:pull",
    )
    response = await setup.get_token(setup.wes, *scopes)
    assert response.code == 200, response.body
    assert setup.claims(response.json()["token"])["access"] == [
        {"type": "repository", "name": PRIVATE, "actions": ["pull", "push"]},
        {"type": "repository", "name": PUBLIC, "actions": ["pull"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]


@pytest.mark.parametrize(
    ("user", "requested", "granted"),
    [
        ("rita", "pull,push,delete", ["pull"]),
        ("rita", "push", []),
        ("wes", "pull,push,delete", ["delete", "pull", "push"]),
        ("wes", "pull,push,delete,frobnicate", ["delete", "pull", "push"]),
        ("wes", "*", []),
        ("root", "*", ["*"]),
        ("root", "pull,*", ["*", "pull"]),
    ],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_downscopes_without_error(
    setup: TokenSetup, user: str, requested: str, granted: list[str]
) -> None:
    """Asking for more than allowed is never an error: the token carries the allowed subset."""
    login = {"rita": setup.rita, "wes": setup.wes, "root": setup.root}[user]
    response = await setup.get_token(login, f"repository:{PRIVATE}:{requested}")
    assert response.code == 200, response.body
    access = setup.claims(response.json()["token"])["access"]
    assert access == ([{"type": "repository", "name": PRIVATE, "actions": granted}] if granted else [])


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_unknown_service_is_bad_request(setup: TokenSetup) -> None:
    """A token for another service is refused with 400, with or without credentials."""
    for headers in ({}, setup.rita.headers):
        response = await setup.registry.client.request(
            "GET",
            f"/v2/auth?{setup.query(f'repository:{PRIVATE}:pull', service='other.example')}",
            headers=headers,
        )
        assert response.code == 400, response.body
        assert _error_code(response) == "UNSUPPORTED"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_without_service_is_for_this_registry(setup: TokenSetup) -> None:
    """Without C{service} the token is for this registry's service."""
    response = await setup.registry.client.request(
        "GET", f"/v2/auth?scope=repository:{PRIVATE}:pull", headers=setup.rita.headers
    )
    assert response.code == 200, response.body
    assert setup.claims(response.json()["token"])["aud"] == setup.registry.service


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic " + base64.b64encode(b"rita:wrong").decode(),
        "Basic " + base64.b64encode(b"nobody:rita-secret").decode(),
        "Basic " + base64.b64encode(b"rita").decode(),
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"$token:" + b"x" * 43).decode(),
        "Basic " + base64.b64encode(b"acme+ghost:" + b"x" * 43).decode(),
    ],
    ids=["wrong-password", "unknown-user", "no-colon", "not-base64", "unknown-token", "unknown-robot"],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_get_wrong_credentials_unauthorized(setup: TokenSetup, authorization: str) -> None:
    """Wrong or malformed Basic credentials get 401 with the challenge, not an anonymous token."""
    response = await setup.registry.client.request(
        "GET",
        f"/v2/auth?{setup.query(f'repository:{PUBLIC}:pull')}",
        headers={"Authorization": authorization},
    )
    assert response.code == 401, response.body
    assert _error_code(response) == "UNAUTHORIZED"
    assert response.header("WWW-Authenticate") == setup.registry.challenge()


# The OAuth2 password grant -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_post_password_grant(setup: TokenSetup) -> None:
    """C{POST} with the password grant (as containerd sends it) returns an access token, no refresh token."""
    response = await setup.post_token(
        {
            "grant_type": "password",
            "username": "wes",
            "password": "wes-secret",
            "service": setup.registry.service,
            "scope": f"repository:{PRIVATE}:pull,push repository:{OTHER}:pull",
            "client_id": "containerd",
        }
    )
    assert response.code == 200, response.body
    document = response.json()
    assert set(document) == {"access_token", "expires_in", "issued_at"}
    assert document["expires_in"] == TTL
    claims = setup.claims(document["access_token"])
    assert claims["sub"] == "user:wes"
    assert claims["access"] == [{"type": "repository", "name": PRIVATE, "actions": ["pull", "push"]}]


@pytest.mark.parametrize(
    "grant", ["refresh_token", "authorization_code", "client_credentials", "", None], ids=repr
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_post_other_grant_is_bad_request(setup: TokenSetup, grant: str | None) -> None:
    """Any grant but C{password} (or none) is refused with 400."""
    form = {"username": "wes", "password": "wes-secret", "service": setup.registry.service}
    if grant is not None:
        form["grant_type"] = grant
    if grant == "refresh_token":
        form["refresh_token"] = "whatever"
    response = await setup.post_token(form)
    assert response.code == 400, response.body
    assert _error_code(response) == "UNSUPPORTED"


@pytest.mark.parametrize(
    "form",
    [
        {"username": "wes", "password": "wrong"},
        {"username": "nobody", "password": "wes-secret"},
        {"username": "wes"},
        {"password": "wes-secret"},
    ],
    ids=["wrong-password", "unknown-user", "no-password", "no-username"],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_post_wrong_credentials_unauthorized(setup: TokenSetup, form: dict[str, str]) -> None:
    """The password grant with wrong or missing credentials gets 401 with the challenge."""
    response = await setup.post_token({"grant_type": "password", "service": setup.registry.service, **form})
    assert response.code == 401, response.body
    assert _error_code(response) == "UNAUTHORIZED"
    assert response.header("WWW-Authenticate") == setup.registry.challenge()


# Throttling --------------------------------------------------------------------------------------


def _basic(user: str, password: str) -> dict[str, str]:
    """Basic credentials as a header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _assert_throttled(response: Response, retry_after: int) -> None:
    """429 C{TOOMANYREQUESTS} with C{Retry-After}."""
    assert response.code == 429, response.body
    assert _error_code(response) == "TOOMANYREQUESTS"
    assert response.header("Retry-After") == str(retry_after)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_throttles_account(setup: TokenSetup) -> None:
    """
    Five failed logins for one account within a minute, from five clients, lock
    the account: the sixth attempt (from yet another client, even with the right
    password) gets 429 with C{Retry-After}, until the lockout has passed.
    """
    path = f"/v2/auth?{setup.query(f'repository:{PRIVATE}:pull')}"
    for host in range(2, 7):
        if host > 2:
            setup.throttle_clock.advance(5)
        failed = await ClientAt(setup.registry.base_url, f"127.0.0.{host}").request(
            "GET", path, _basic("rita", f"wrong{host}")
        )
        assert failed.code == 401, failed.body
    sixth = ClientAt(setup.registry.base_url, "127.0.0.7")
    _assert_throttled(await sixth.request("GET", path, _basic("rita", "wrong")), 2)
    _assert_throttled(await sixth.request("GET", path, setup.rita.headers), 2)
    other_user = await sixth.request("GET", path, setup.wes.headers)
    assert other_user.code == 200, other_user.body
    setup.throttle_clock.advance(2)
    assert (await sixth.request("GET", path, setup.rita.headers)).code == 200


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_throttles_client(setup: TokenSetup) -> None:
    """
    Five failed logins from one client within a minute, for five accounts, lock
    the client: its sixth attempt gets 429 whatever the account; other clients are unaffected.
    """
    path = f"/v2/auth?{setup.query(f'repository:{PRIVATE}:pull')}"
    client = ClientAt(setup.registry.base_url, "127.0.0.8")
    for number in range(5):
        failed = await client.request("GET", path, _basic(f"guess{number}", "password"))
        assert failed.code == 401, failed.body
    _assert_throttled(await client.request("GET", path, setup.rita.headers), 2)
    elsewhere = await ClientAt(setup.registry.base_url, "127.0.0.9").request("GET", path, setup.rita.headers)
    assert elsewhere.code == 200, elsewhere.body


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_throttle_lockout_grows(setup: TokenSetup) -> None:
    """Each failure after the lockout doubles it; failures spread over more than a minute do not lock."""
    path = f"/v2/auth?{setup.query()}"
    client = ClientAt(setup.registry.base_url, "127.0.0.10")

    async def fail() -> int:
        return (await client.request("GET", path, _basic("rita", "wrong"))).code

    # Six failures over 80 seconds: the window restarts at the fifth, so no lockout.
    for _ in range(4):
        assert await fail() == 401
        setup.throttle_clock.advance(20)
    assert [await fail(), await fail()] == [401, 401]
    # Three more within the minute make five in the window: locked for 2 s.
    assert [await fail(), await fail(), await fail()] == [401, 401, 401]
    _assert_throttled(await client.request("GET", path, _basic("rita", "wrong")), 2)
    setup.throttle_clock.advance(2)
    # The next failure doubles the lockout.
    assert await fail() == 401
    _assert_throttled(await client.request("GET", path, setup.rita.headers), 4)


@pytest.mark.parametrize("path", ["/v2/", f"/v2/{PRIVATE}/manifests/v1", "/v2/_catalog"])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_throttles_basic_on_registry_routes(setup: TokenSetup, path: str) -> None:
    """Basic credentials sent straight to C{/v2} routes are throttled the same way."""
    client = ClientAt(setup.registry.base_url, "127.0.0.11")
    for _ in range(5):
        failed = await client.request("GET", path, _basic("rita", "wrong"))
        assert failed.code == 401, failed.body
    _assert_throttled(await client.request("GET", path, setup.rita.headers), 2)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_streamed_upload_throttled_per_client(setup: TokenSetup) -> None:
    """Failed logins on streamed uploads from one client do not lock other clients out of uploading."""
    blob = b"a blob pushed after someone else's failed logins\n"
    path = f"/v2/{PRIVATE}/blobs/uploads/?digest=sha256:{_sha256(blob)}"
    attacker = ClientAt(setup.registry.base_url, "127.0.0.12")
    for number in range(5):
        failed = await attacker.request("POST", path, _basic(f"guess{number}", "password"), blob)
        assert failed.code == 401, failed.body
    pushed = await ClientAt(setup.registry.base_url, "127.0.0.13").request(
        "POST", path, setup.wes.headers, blob
    )
    assert pushed.code == 201, pushed.body


# Claims and expiry -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_claims(setup: TokenSetup) -> None:
    """
    A token carries C{kid} and C{alg} in its header, and C{aud} (the service),
    C{iss}, C{sub}, C{iat} = C{nbf}, C{exp} = C{iat} + lifetime, a unique
    C{jti} and the granted C{access}; the response's C{expires_in} and
    C{issued_at} agree with it.
    """
    before = int(time.time())
    first = await setup.get_token(setup.rita, f"repository:{PRIVATE}:pull")
    second = await setup.get_token(setup.rita, f"repository:{PRIVATE}:pull")
    after = int(time.time())
    document = first.json()
    token = document["token"]
    header = jwt.get_unverified_header(token)
    key = setup.registry.signing_key
    assert (header["alg"], header["kid"]) == (key.algorithm, key.kid) == ("ES256", key.kid)
    claims = setup.claims(token)
    assert claims["aud"] == setup.registry.service
    assert claims["iss"] == "quayd-test"
    assert claims["sub"] == "user:rita"
    assert before <= claims["iat"] <= after
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + TTL
    assert claims["access"] == [{"type": "repository", "name": PRIVATE, "actions": ["pull"]}]
    assert claims["jti"] != setup.claims(second.json()["token"])["jti"]
    assert document["expires_in"] == TTL
    issued = datetime.fromtimestamp(claims["iat"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert document["issued_at"] == issued


@pytest.mark.parametrize(
    ("expired_for", "status"),
    [(LEEWAY + 60, 401), (LEEWAY - 20, 200)],
    ids=["beyond-leeway", "within-leeway"],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_expiry_honoured(setup: TokenSetup, expired_for: int, status: int) -> None:
    """
    A token whose C{exp} passed more than the leeway ago is refused (401
    C{invalid_token}); within the leeway it still works. The token is signed
    with the registry's key by a L{TokenService} whose clock is in the past.
    """
    clock = Clock()
    clock.advance(time.time() - TTL - expired_for)
    registry = setup.registry
    past = TokenService(registry.signing_key, clock, registry.service, registry.issuer, TTL)
    token, _, _ = past.issue("user:rita", list(registry.tokens.verify(await _token_of(setup)).access))
    path = f"/v2/{PRIVATE}/manifests/v1"
    response = await registry.client.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    assert response.code == status, response.body
    if status == 401:
        assert response.header("WWW-Authenticate") == registry.challenge(
            f"repository:{PRIVATE}:pull", "invalid_token"
        )


async def _token_of(setup: TokenSetup) -> str:
    """A fresh token for C{rita} pulling C{acme/app}."""
    response = await setup.get_token(setup.rita, f"repository:{PRIVATE}:pull")
    assert response.code == 200, response.body
    token: str = response.json()["token"]
    return token


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_expiry_follows_token_clock(tmp_path: Path, database: IDatabase) -> None:
    """With the token service on a L{Clock}, a token stops working once that clock passes its expiry."""
    clock = Clock()
    clock.advance(time.time())
    started = await _start(tmp_path, database, token_clock=clock)
    try:
        token = await _token_of(started)
        path = f"/v2/{PRIVATE}/manifests/v1"
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await started.registry.client.request("GET", path, headers=bearer)).code == 200
        clock.advance(TTL + LEEWAY + 1)
        response = await started.registry.client.request("GET", path, headers=bearer)
        assert response.code == 401, response.body
    finally:
        await started.registry.stop()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_wrong_password_refused_whatever_the_clock(tmp_path: Path, database: IDatabase) -> None:
    """A wrong password is refused even when the credentials' clock reads 0 (a fresh L{Clock})."""
    registry = await start_access_registry(tmp_path / "registry", database=database, throttle_clock=Clock())
    try:
        await registry.seeder.user("rita", "rita-secret")
        wrong = await registry.client.request("GET", "/v2/", headers=_basic("rita", "wrong"))
        assert wrong.code == 401, wrong.body
    finally:
        await registry.stop()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_mount_challenge_asks_for_the_source(setup: TokenSetup) -> None:
    """
    The 401 challenge of a cross-repository mount names pull on the C{from}
    repository too (space-separated, as Distribution writes several scopes),
    so a client that asks for exactly the challenged scope can mount (201);
    a token for the target alone still gets an upload session (202).
    """
    registry = setup.registry
    blob = b"only in acme/other"
    digest = f"sha256:{_sha256(blob)}"
    pushed = await registry.client.request(
        "POST", f"/v2/{OTHER}/blobs/uploads/?digest={digest}", headers=setup.root.headers, body=blob
    )
    assert pushed.code == 201, pushed.body
    path = f"/v2/{PRIVATE}/blobs/uploads/?mount={digest}&from={OTHER}"

    challenged = await registry.client.request("POST", path)
    scope = f"repository:{PRIVATE}:pull,push repository:{OTHER}:pull"
    assert challenged.code == 401
    assert challenged.header("WWW-Authenticate") == registry.challenge(scope)

    narrow = await setup.get_token(setup.root, f"repository:{PRIVATE}:pull,push")
    fallback = await registry.client.request(
        "POST", path, headers={"Authorization": f"Bearer {narrow.json()['token']}"}
    )
    assert fallback.code == 202, fallback.body

    token = await setup.get_token(setup.root, scope)
    mounted = await registry.client.request(
        "POST", path, headers={"Authorization": f"Bearer {token.json()['token']}"}
    )
    assert mounted.code == 201, mounted.body
    assert mounted.header("Location") == f"/v2/{PRIVATE}/blobs/{digest}"
