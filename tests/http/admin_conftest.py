"""
Fixtures for the admin API tests: the real L{AdminApp} with the real auth
stack, in process, on a loopback socket.

The app runs over a new database of each metadata backend (SQLite in
C{tmp_path}, and PostgreSQL: L{database_kind}, from C{tests/http/conftest.py}),
real key files (generated in C{tmp_path}), the real L{AccessControl}
(credentials, throttle, policy, JWTs) and a real thread pool for bcrypt. A
registry can be served beside it through L{mount_admin_api}, as the daemon
does. Every response a test sees is checked against the OpenAPI document:
its status must be documented for the operation, and its body must match the
documented schema.
"""

from __future__ import annotations

import base64
import gc
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorFromThreads
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from werkzeug.exceptions import MethodNotAllowed, NotFound
from zope.interface import implementer

import quayd.cli
from quayd.admin.api import AdminApp, mount_admin_api
from quayd.admin.openapi import openapi_document
from quayd.auth.endpoint import TokenEndpoint
from quayd.auth.keys import SecretBox, load_secret_box, load_signing_key
from quayd.auth.policy import AccessControl, Credentials, Policy
from quayd.auth.throttle import LoginThrottle
from quayd.auth.tokens import TokenService
from quayd.blocking import ThreadPoolService
from quayd.db.identity import IdentityStore
from quayd.db.interfaces import IDatabase
from quayd.db.store import MetadataStore
from quayd.errors import JSONValue
from quayd.http.site import QuaydSite
from quayd.registry.app import RegistryApp
from quayd.registry.uploads import UploadLimits, UploadService
from quayd.storage.filesystem import FilesystemBlobStore
from tests.conftest import DatabaseOpener
from tests.support.http import RegistryClient, Response

#: The configuration file named in "managed" refusals.
CONFIG_PATH = "/etc/quayd/quayd.yaml"
#: The superuser of every test server, and its password.
ROOT = "root"
PASSWORDS = {ROOT: "root-password", "alice": "alice-password", "bob": "bob-password", "carol": "carol-pw"}
#: The token service's name (the registry host).
SERVICE = "registry.test"

OPENAPI = openapi_document()


def basic(user: str, password: str) -> dict[str, str]:
    """An C{Authorization} header with Basic credentials."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    """An C{Authorization} header with a bearer token."""
    return {"Authorization": f"Bearer {token}"}


def as_user(name: str) -> dict[str, str]:
    """Basic credentials of one of the seeded users."""
    return basic(name, PASSWORDS[name])


@implementer(ILogObserver)
@dataclass
class LogCapture:
    """Collects every log event while installed."""

    events: list[LogEvent] = field(default_factory=list)

    def __call__(self, event: LogEvent) -> None:
        """Keep C{event}."""
        self.events.append(event)

    def failures(self) -> list[str]:
        """The logged failures, one line each."""
        return [
            f"{formatEvent(e)}: {e['log_failure'].getErrorMessage()}"[:300]
            for e in self.events
            if "log_failure" in e
        ]

    def text(self) -> str:
        """Every event, formatted, with its fields, for searching for secrets."""
        return "\n".join(
            f"{formatEvent(e)} {sorted((k, repr(v)) for k, v in e.items())}" for e in self.events
        )


def _resolve(reference: str) -> JSONValue:
    """The node a local C{$ref} (C{#/a/b}) points at."""
    node: JSONValue = OPENAPI
    for part in reference.removeprefix("#/").split("/"):
        node = node[part]
    return node


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def check_schema(value: JSONValue, schema: JSONValue, where: str = "$") -> None:
    """
    Check C{value} against the JSON Schema subset the OpenAPI document uses
    (C{$ref}, C{type}, C{enum}, C{properties}, C{required},
    C{additionalProperties: false}, C{items}, C{minItems}, string lengths and
    C{pattern}).

    @raise AssertionError: Naming the first mismatch.
    """
    if "$ref" in schema:
        check_schema(value, _resolve(schema["$ref"]), where)
        return
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(
            isinstance(value, _JSON_TYPES[t]) and not (isinstance(value, bool) and t in ("integer", "number"))
            for t in types
        )
        assert ok, f"{where}: {value!r} is not {types}"
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key!r}"
        if schema.get("additionalProperties") is False:
            extra = set(value) - set(properties)
            assert not extra, f"{where}: undocumented {sorted(extra)}"
        for key, item in value.items():
            if key in properties:
                check_schema(item, properties[key], f"{where}.{key}")
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0), f"{where}: too few items"
        if "items" in schema:
            for i, item in enumerate(value):
                check_schema(item, schema["items"], f"{where}[{i}]")
    if isinstance(value, str):
        assert len(value) <= schema.get("maxLength", len(value)), f"{where}: too long"
        assert len(value) >= schema.get("minLength", 0), f"{where}: too short"
        if "pattern" in schema:
            assert re.search(schema["pattern"], value), f"{where}: {value!r} !~ {schema['pattern']}"


def route_template(rule: str) -> str:
    """A Klein/werkzeug rule (C{/a/<path:b>}) as an OpenAPI path template (C{/a/{b}})."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def operation_for(method: str, path: str) -> dict[str, JSONValue] | None:
    """The documented operation serving C{method path}, or C{None} for an unknown route."""
    adapter = AdminApp.app.url_map.bind("localhost")
    try:
        rule, _ = adapter.match(path.split("?", 1)[0], method=method, return_rule=True)
    except (NotFound, MethodNotAllowed):
        return None
    operation: dict[str, JSONValue] = OPENAPI["paths"][route_template(rule.rule)][method.lower()]
    return operation


def check_documented(method: str, path: str, response: Response) -> None:
    """
    Check a response against the OpenAPI document: a documented status, a
    body matching its schema (or no body), and JSON with C{no-store}.
    """
    operation = operation_for(method, path)
    if operation is None:
        return
    documented = operation["responses"].get(str(response.code))
    assert documented is not None, (
        f"{method} {path}: status {response.code} is not documented: {response.body!r}"
    )
    if "$ref" in documented:
        documented = _resolve(documented["$ref"])
    content = documented.get("content")
    if content is None:
        assert response.body == b"", f"{method} {path}: {response.code} has an undocumented body"
        return
    assert (response.header("Content-Type") or "").startswith("application/json")
    check_schema(json.loads(response.body), content["application/json"]["schema"], f"{method} {path}")


@dataclass(kw_only=True)
class AdminAPI:
    """
    A running admin API (and registry, at the same address) with its stores
    and a client.

    @ivar expected_failures: How many logged failures the test expects.
    """

    client: RegistryClient
    identity: IdentityStore
    secrets: SecretBox
    credentials: Credentials
    access: AccessControl
    tokens: TokenService
    uploads: UploadService
    database: IDatabase
    port: IListeningPort
    pool: ThreadPoolService
    log: LogCapture
    expected_failures: int = 0

    async def call(
        self,
        method: str,
        path: str,
        auth: dict[str, str] | None = None,
        body: JSONValue = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """
        Send one request (C{body} as JSON, or C{raw} bytes) and check the
        response against the OpenAPI document.
        """
        sent = dict(auth or {})
        sent.update(headers or {})
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        response = await self.client.request(method, path, headers=sent, body=data)
        check_documented(method, path, response)
        return response

    async def seed_user(self, name: str, email: str | None = None, managed: bool = False) -> None:
        """Create a user with a cheap bcrypt hash of its password in L{PASSWORDS}."""
        hashed = bcrypt.hashpw(PASSWORDS[name].encode(), bcrypt.gensalt(4)).decode()
        await self.identity.create_user(name, email, hashed, managed=managed)

    async def audit_actions(self) -> list[str]:
        """The actions of the audit log, oldest first."""
        return [e.action for e in reversed(await self.identity.audit_log(1000))]


def json_of(response: Response) -> JSONValue:
    """The response body as JSON, with the status in the assertion message."""
    assert response.body, response.code
    return json.loads(response.body)


def error_of(response: Response, status: int, code: str) -> str:
    """Check an error response of the registry's format; returns its message."""
    assert response.code == status, (response.code, response.body)
    document = json.loads(response.body)
    assert list(document) == ["errors"] and len(document["errors"]) == 1, document
    entry = document["errors"][0]
    assert entry["code"] == code, entry
    assert b"Traceback" not in response.body
    message: str = entry["message"]
    return message


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_test_database: DatabaseOpener
) -> AsyncIterator[AdminAPI]:
    """
    The admin API and the registry behind L{mount_admin_api} on loopback port
    0, over a new database of the kind under test, with the superuser C{root}
    and the users C{alice} and C{bob} seeded.
    """
    from twisted.internet import reactor

    # bcrypt at its production cost takes 0.2 s a hash; the tests hash many passwords.
    monkeypatch.setattr(quayd.cli, "BCRYPT_ROUNDS", 4)
    log = LogCapture()
    globalLogPublisher.addObserver(log)
    pool = ThreadPoolService(IReactorFromThreads(reactor), 1, 4)
    pool.startService()
    database = await open_test_database(tmp_path)
    identity = IdentityStore(database, reactor)
    secrets = load_secret_box(tmp_path / "keys" / "secret.key", generate=True)
    signing_key = load_signing_key(tmp_path / "keys" / "signing.pem", generate=True)
    superusers = frozenset({ROOT})
    tokens = TokenService(signing_key, reactor, SERVICE, "quayd-test", 300)
    credentials = Credentials(identity, secrets, pool, LoginThrottle(reactor), superusers)
    access = AccessControl(credentials, Policy(identity, superusers), tokens, f"http://{SERVICE}/v2/auth")
    app = AdminApp(
        identity=identity,
        secrets=secrets,
        access=access,
        run_blocking=pool,
        superusers=superusers,
        managed_source=CONFIG_PATH,
        clock=reactor,
    )
    store = MetadataStore(database, reactor)
    blobs = FilesystemBlobStore(tmp_path / "blobs", pool)
    uploads = UploadService(store, blobs, UploadLimits())
    registry = RegistryApp(
        store=store,
        blobs=blobs,
        uploads=uploads,
        authorizer=access,
        max_manifest_bytes=64 * 1024,
        token_endpoint=TokenEndpoint(access, credentials, tokens),
    )
    site = QuaydSite(
        mount_admin_api(app.resource(), registry.app.resource()),
        body_sink_factory=registry.sink_factory,
        max_buffered_body=1024 * 1024,
    )
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    api = AdminAPI(
        client=RegistryClient(reactor, f"http://127.0.0.1:{port.getHost().port}"),
        identity=identity,
        secrets=secrets,
        credentials=credentials,
        access=access,
        tokens=tokens,
        uploads=uploads,
        database=database,
        port=port,
        pool=pool,
        log=log,
    )
    for name in (ROOT, "alice", "bob"):
        await api.seed_user(name, f"{name}@example.com")
    try:
        yield api
    finally:
        await api.client.close()
        await deferLater(reactor, 0.01, lambda: None)
        await uploads.close()
        stopped = port.stopListening()
        if isinstance(stopped, Deferred):
            await stopped
        await database.close()
        pool.stopService()
        gc.collect()
        await deferLater(reactor, 0, lambda: None)
        globalLogPublisher.removeObserver(log)
    failures = log.failures()
    if len(failures) != api.expected_failures:
        pytest.fail(f"quayd logged {len(failures)} failures, expected {api.expected_failures}: {failures}")
