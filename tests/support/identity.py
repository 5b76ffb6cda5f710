"""
Identity state for tests, seeded through the real stores.

In-process tests wrap the L{IdentityStore} and L{SecretBox} of the app under
test in an L{IdentitySeeder}. End-to-end tests seed the SQLite file of a
C{twistd quayd} with L{seed_database}, before the daemon starts or while it
runs, using the very key file the daemon loads (C{<data_dir>/keys/secret.key},
generated here the way the daemon would generate it when it is missing), so
that the robot and repository tokens stored here decrypt in the daemon.

Users get real bcrypt hashes from L{quayd.cli.hash_password}; a test that logs
in hundreds of times may ask for fewer bcrypt rounds (C{bcrypt_rounds}), which
changes the cost of each check and nothing else.

L{start_access_registry} runs the registry app in process with access control
wired as the daemon wires it, for the HTTP tests of authentication and
authorization, over SQLite or over a database the caller opened (the HTTP
suites pass one of each backend, see C{tests/conftest.py}).
"""

from __future__ import annotations

import base64
import functools
import queue
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from unittest import mock

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorFromThreads, IReactorSocket, IReactorTime
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from quayd import cli
from quayd.auth.endpoint import TokenEndpoint
from quayd.auth.keys import (
    DEFAULT_SECRET_KEY,
    DEFAULT_SIGNING_KEY,
    SecretBox,
    SigningKey,
    load_secret_box,
    load_signing_key,
    new_token,
)
from quayd.auth.policy import AccessControl, Credentials, Policy
from quayd.auth.throttle import LoginThrottle
from quayd.auth.tokens import TokenService
from quayd.blocking import BlockingRunner, ThreadPoolService, run_synchronously
from quayd.db.identity import Account, IdentityStore, Repository, Team
from quayd.db.interfaces import IDatabase
from quayd.db.migrations import migrate
from quayd.db.sqlite import SQLiteDatabase
from quayd.db.store import MetadataStore
from quayd.http.site import QuaydSite
from quayd.registry.app import RegistryApp
from quayd.registry.uploads import UploadLimits, UploadService
from quayd.storage.filesystem import FilesystemBlobStore
from tests.support.databases import open_sqlite
from tests.support.http import RegistryClient

T = TypeVar("T")

#: The user name that logs in with a repository token.
TOKEN_USERNAME = "$token"


@dataclass(frozen=True, slots=True, kw_only=True)
class Login:
    """
    Credentials one principal logs in with: a user's password, a robot's
    token (user name C{ns+name}) or a repository token (user name C{$token}).
    """

    username: str
    password: str

    @property
    def basic(self) -> str:
        """The C{Authorization} header value for these credentials (C{Basic ...})."""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")

    @property
    def headers(self) -> dict[str, str]:
        """Request headers sending these credentials as Basic authentication."""
        return {"Authorization": self.basic}

    @property
    def creds(self) -> str:
        """C{user:password}, as C{skopeo --creds} takes it."""
        return f"{self.username}:{self.password}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenLogin(Login):
    """
    A repository token's credentials (user name C{$token}) and what it was made for.

    @ivar token_id: The token's id in the database.
    @ivar repository: The repository it acts on.
    @ivar role: C{read} or C{write}.
    """

    token_id: str
    repository: str
    role: str


def hash_password(password: str, rounds: int | None = None) -> str:
    """
    Hash a password with L{quayd.cli.hash_password}, optionally with another bcrypt cost.

    @param rounds: bcrypt work factor instead of L{quayd.cli.BCRYPT_ROUNDS}; the
        hash records it, so checking a password costs the same.
    @return: The bcrypt hash.
    """
    if rounds is None:
        return cli.hash_password(password)
    with mock.patch.object(cli, "BCRYPT_ROUNDS", rounds):
        return cli.hash_password(password)


def _subject(user: str | None, team: str | None, robot: str | None) -> tuple[str, str]:
    """
    The C{(kind, subject)} of a repository permission holder; exactly one must be given.

    @param user: A user name.
    @param team: A team as C{org/team}.
    @param robot: A robot as C{ns+name}.
    """
    given = [(kind, name) for kind, name in (("user", user), ("team", team), ("robot", robot)) if name]
    if len(given) != 1:
        raise ValueError("name exactly one of user, team or robot")
    return given[0]


class IdentitySeeder:
    """
    Creates users, organizations, teams, robots, repositories, permissions and
    repository tokens with the real L{IdentityStore}, storing secrets exactly
    as quayd does (bcrypt hashes; tokens encrypted with the L{SecretBox}, with
    the keyed lookup hash for repository tokens).
    """

    def __init__(
        self,
        identity: IdentityStore,
        secret_box: SecretBox,
        *,
        run_blocking: BlockingRunner = run_synchronously,
        bcrypt_rounds: int | None = None,
    ) -> None:
        """
        @param identity: The store of the database being seeded.
        @param secret_box: The secret key the registry under test loads.
        @param run_blocking: Where bcrypt runs (at once, by default).
        @param bcrypt_rounds: bcrypt work factor for new users (quayd's own by default).
        """
        self.identity = identity
        self.secret_box = secret_box
        self._run = run_blocking
        self._rounds = bcrypt_rounds

    async def user(self, name: str, password: str | None = None, *, email: str | None = None) -> Login:
        """
        Create a user with a password.

        @param password: The password; a random one by default.
        @return: The user's credentials.
        """
        password = password if password is not None else secrets.token_urlsafe(18)
        hashed = await self._run(hash_password, password, self._rounds)
        await self.identity.create_user(name, email, hashed)
        return Login(username=name, password=password)

    async def org(self, name: str, *, owners: Iterable[str] = (), email: str | None = None) -> Account:
        """
        Create an organization; C{owners} join its C{owners} team (role C{admin}).
        """
        account = await self.identity.create_org(name, email)
        for owner in owners:
            await self.identity.add_team_member(name, "owners", owner)
        return account

    async def team(
        self, org: str, name: str, role: str, *, members: Iterable[str] = (), description: str = ""
    ) -> Team:
        """
        Create a team (role C{member}, C{creator} or C{admin}) with members.

        @return: The team as stored, with its members.
        """
        await self.identity.create_team(org, name, role, description)
        for member in members:
            await self.identity.add_team_member(org, name, member)
        team = await self.identity.get_team(org, name)
        assert team is not None
        return team

    async def add_member(self, org: str, team: str, user: str) -> None:
        """Add a user to a team."""
        await self.identity.add_team_member(org, team, user)

    async def robot(self, namespace: str, name: str, *, description: str = "") -> Login:
        """
        Create a robot account with a new token (stored encrypted).

        @return: Its credentials: user name C{namespace+name}, the token as password.
        """
        token = new_token()
        await self.identity.create_robot(namespace, name, self.secret_box.encrypt(token), description)
        return Login(username=f"{namespace}+{name}", password=token)

    async def repository(self, name: str, *, visibility: str = "private") -> Repository:
        """
        Create a repository's access settings, or change the visibility of an existing one.

        @param visibility: C{public} or C{private}.
        @return: The repository as stored.
        """
        if await self.identity.get_repository(name) is None:
            return await self.identity.create_repository(name, visibility)
        await self.identity.update_repository(name, visibility=visibility)
        repository = await self.identity.get_repository(name)
        assert repository is not None
        return repository

    async def set_visibility(self, name: str, visibility: str) -> None:
        """
        Make an existing repository C{public} or C{private}.

        @raise LookupError: If it does not exist.
        """
        if not await self.identity.update_repository(name, visibility=visibility):
            raise LookupError(f"no repository {name}")

    async def grant(
        self,
        repository: str,
        role: str,
        *,
        user: str | None = None,
        team: str | None = None,
        robot: str | None = None,
    ) -> None:
        """
        Give one user, team (C{org/team}) or robot (C{ns+name}) a role on a repository.

        @param role: C{read}, C{write} or C{admin}.
        """
        kind, subject = _subject(user, team, robot)
        await self.identity.set_permission(repository, kind, subject, role)

    async def revoke(
        self, repository: str, *, user: str | None = None, team: str | None = None, robot: str | None = None
    ) -> bool:
        """
        Take a direct role away.

        @return: Whether there was one.
        """
        kind, subject = _subject(user, team, robot)
        return await self.identity.delete_permission(repository, kind, subject)

    async def repository_token(self, repository: str, role: str, *, description: str = "") -> TokenLogin:
        """
        Create a repository token (stored encrypted, found by its keyed lookup hash).

        @param role: C{read} or C{write}.
        @return: Its credentials (user name C{$token}).
        """
        token = new_token()
        token_id = secrets.token_hex(8)
        await self.identity.create_repository_token(
            token_id,
            repository,
            description or f"test token {token_id}",
            role,
            self.secret_box.lookup(token),
            self.secret_box.encrypt(token),
        )
        return TokenLogin(
            username=TOKEN_USERNAME, password=token, token_id=token_id, repository=repository, role=role
        )


def daemon_secret_key(data_dir: Path) -> Path:
    """
    The secret key file a daemon with C{data_dir} generates and loads when its
    configuration names none (C{auth.secret_key_file} unset).
    """
    return data_dir / DEFAULT_SECRET_KEY


@asynccontextmanager
async def open_seeder(
    database_path: Path, secret_key_file: Path, *, bcrypt_rounds: int | None = None
) -> AsyncIterator[IdentitySeeder]:
    """
    Open (and migrate) an SQLite database and load (or generate) a secret key, for seeding.

    The database is closed on exit. It may be one a running daemon uses: SQLite
    serialises the two connections.

    @param database_path: The daemon's C{database.path} (C{<data_dir>/quayd.sqlite} by default).
    @param secret_key_file: The key file the daemon loads; see L{daemon_secret_key}.
    @param bcrypt_rounds: bcrypt work factor for new users (quayd's own by default).
    """
    from twisted.internet import reactor

    database = await open_sqlite(database_path)
    try:
        secret_box = load_secret_box(secret_key_file, generate=True)
        yield IdentitySeeder(IdentityStore(database, reactor), secret_box, bcrypt_rounds=bcrypt_rounds)
    finally:
        await database.close()


@implementer(IReactorFromThreads)
class _CallPump:
    """
    A stand-in for the reactor's C{callFromThread}, so that the stores can run
    from synchronous code that must not (or cannot) spin the global reactor:
    an end-to-end test's body runs inside a reactor callback under
    pytest-twisted. The database thread's results queue here and L{run}
    delivers them in the calling thread.
    """

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()

    def callFromThread(self, callable: Callable[..., object], *args: object, **kwargs: object) -> None:
        """Queue a call for L{run} (any thread)."""
        self._calls.put(functools.partial(callable, *args, **kwargs))

    def run(self, d: Deferred[T], timeout: float) -> T:
        """
        Deliver queued calls until C{d} fires.

        @return: Its result.
        @raise TimeoutError: If it has not fired after C{timeout} seconds.
        """
        outcome: list[T | Failure] = []
        d.addBoth(outcome.append)
        deadline = time.monotonic() + timeout
        while not outcome:
            try:
                call = self._calls.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"seeding did not finish within {timeout} s") from None
            call()
        result = outcome[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result


def seed_database(
    database_path: Path,
    secret_key_file: Path,
    seed: Callable[[IdentitySeeder], Awaitable[T]],
    *,
    bcrypt_rounds: int | None = None,
    timeout: float = 120.0,
) -> T:
    """
    Run C{seed} against a database from synchronous code (end-to-end tests).

    The real L{SQLiteDatabase} and L{IdentityStore} run without the global
    reactor (see L{_CallPump}), so this works in fixtures and in test bodies
    alike, before the daemon starts or while it runs. The schema is migrated
    first, and the secret key loaded (generated if missing, as the daemon would).

    @param seed: Creates what the test needs; its result is returned.
    @return: What C{seed} returned (for example the credentials it created).
    """
    pump = _CallPump()
    clock = Clock()
    clock.advance(time.time())
    database = SQLiteDatabase(database_path, pump)

    async def body() -> T:
        await database.open()
        try:
            await migrate(database)
            secret_box = load_secret_box(secret_key_file, generate=True)
            seeder = IdentitySeeder(IdentityStore(database, clock), secret_box, bcrypt_rounds=bcrypt_rounds)
            return await seed(seeder)
        finally:
            await database.close()

    return pump.run(Deferred.fromCoroutine(body()), timeout)


# An in-process registry with access control ------------------------------------------------------


@implementer(ILogObserver)
@dataclass
class FailureLog:
    """Collects the failures quayd logs (C{log_failure} events: crashes, unhandled errors)."""

    events: list[LogEvent] = field(default_factory=list)

    def __call__(self, event: LogEvent) -> None:
        """Keep C{event} if it carries a failure."""
        if "log_failure" in event:
            self.events.append(event)

    def describe(self) -> list[str]:
        """One line per logged failure: its message and exception."""
        lines = []
        for event in self.events:
            failure = event.get("log_failure")
            message = formatEvent(event) if event.get("log_format") else "(no message)"
            lines.append(f"{message}: {failure.getErrorMessage() if failure is not None else ''!s}"[:300])
        return lines


@dataclass(kw_only=True)
class AccessRegistry:
    """
    The registry app with access control, assembled as
    C{QuaydService._build_access} and C{QuaydService._build} assemble it, serving
    on a loopback port: a metadata database (SQLite in a directory unless the
    caller passed one), the filesystem blob store and generated key files in
    that directory, L{AccessControl}, L{TokenEndpoint}, L{RegistryApp} and
    L{QuaydSite}.

    @ivar base_url: C{http://127.0.0.1:PORT}.
    @ivar service: The token service name (the C{server.hostname}, C{127.0.0.1:PORT}).
    @ivar realm: The token endpoint's URL, as the challenge names it.
    @ivar client: A client with its own connection pool, closed on stop.
    @ivar seeder: Seeds identity state into the registry's database.
    @ivar throttle_clock: The login throttle's clock (the reactor unless a test passed one).
    @ivar failures: Failures quayd logged so far.
    """

    base_url: str
    service: str
    realm: str
    issuer: str
    client: RegistryClient
    seeder: IdentitySeeder
    identity: IdentityStore
    store: MetadataStore
    uploads: UploadService
    tokens: TokenService
    signing_key: SigningKey
    throttle_clock: IReactorTime
    failures: FailureLog
    port: IListeningPort
    database: IDatabase
    pool: ThreadPoolService

    def challenge(self, scope: str | None = None, error: str | None = None) -> str:
        """
        The exact C{WWW-Authenticate} value quayd is expected to answer with.

        @param scope: The C{scope} parameter, if any (C{repository:NAME:ACTIONS}).
        @param error: The C{error} parameter, if any (C{invalid_token}, C{insufficient_scope}).
        """
        value = f'Bearer realm="{self.realm}",service="{self.service}"'
        if scope is not None:
            value += f',scope="{scope}"'
        if error is not None:
            value += f',error="{error}"'
        return value

    async def stop(self) -> None:
        """Close the client, stop listening, then close the uploads, database and pool."""
        from twisted.internet import reactor

        await self.client.close()
        await deferLater(reactor, 0.01, lambda: None)
        await self.uploads.close()
        stopped = self.port.stopListening()
        if isinstance(stopped, Deferred):
            await stopped
        await self.database.close()
        self.pool.stopService()
        globalLogPublisher.removeObserver(self.failures)


async def start_access_registry(
    directory: Path,
    *,
    superusers: Iterable[str] = (),
    issuer: str = "quayd",
    token_ttl: int = 300,
    token_clock: IReactorTime | None = None,
    throttle_clock: IReactorTime | None = None,
    bcrypt_rounds: int | None = 4,
    max_manifest_bytes: int = 4 * 1024 * 1024,
    database: IDatabase | None = None,
) -> AccessRegistry:
    """
    Start an L{AccessRegistry} on a free loopback port; the caller stops it.

    The listening socket is bound first, so that the service name and realm
    carry the real port, as the daemon's configuration would.

    @param directory: Holds the database, the blobs and the generated C{keys/}.
    @param superusers: The C{auth.superusers} list.
    @param token_clock: The L{TokenService}'s clock (the reactor by default).
    @param throttle_clock: The L{LoginThrottle}'s clock (the reactor by default).
    @param bcrypt_rounds: bcrypt work factor of the users the seeder creates.
    @param database: An open, migrated, empty database to serve (closed by
        L{AccessRegistry.stop}, as the daemon closes its own); by default a new
        SQLite file in C{directory}.
    """
    from twisted.internet import reactor

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    service = f"127.0.0.1:{sock.getsockname()[1]}"
    base_url = f"http://{service}"
    pool = ThreadPoolService(IReactorFromThreads(reactor), 1, 4)
    pool.startService()
    if database is None:
        database = await open_sqlite(directory / "quayd.sqlite")
    signing_key = await pool(load_signing_key, directory / DEFAULT_SIGNING_KEY, True)
    secret_box = await pool(load_secret_box, directory / DEFAULT_SECRET_KEY, True)
    identity = IdentityStore(database, reactor)
    superuser_names = frozenset(superusers)
    tokens = TokenService(signing_key, token_clock or reactor, service, issuer, token_ttl)
    throttle_clock = throttle_clock or reactor
    credentials = Credentials(identity, secret_box, pool, LoginThrottle(throttle_clock), superuser_names)
    realm = f"{base_url}/v2/auth"
    access = AccessControl(credentials, Policy(identity, superuser_names), tokens, realm)
    store = MetadataStore(database, reactor)
    blobs = FilesystemBlobStore(directory / "blobs", pool)
    uploads = UploadService(store, blobs, UploadLimits())
    registry = RegistryApp(
        store=store,
        blobs=blobs,
        uploads=uploads,
        authorizer=access,
        token_endpoint=TokenEndpoint(access, credentials, tokens),
        max_manifest_bytes=max_manifest_bytes,
    )
    site = QuaydSite(
        registry.app.resource(), body_sink_factory=registry.sink_factory, max_buffered_body=max_manifest_bytes
    )
    try:
        port = IReactorSocket(reactor).adoptStreamPort(sock.fileno(), socket.AF_INET, site)  # type: ignore[arg-type]  # Twisted types the factory as an invariant generic ServerFactory
    finally:
        sock.close()
    failures = FailureLog()
    globalLogPublisher.addObserver(failures)
    return AccessRegistry(
        base_url=base_url,
        service=service,
        realm=realm,
        issuer=issuer,
        client=RegistryClient(reactor, base_url),
        seeder=IdentitySeeder(identity, secret_box, run_blocking=pool, bcrypt_rounds=bcrypt_rounds),
        identity=identity,
        store=store,
        uploads=uploads,
        tokens=tokens,
        signing_key=signing_key,
        throttle_clock=throttle_clock,
        failures=failures,
        port=port,
        database=database,
        pool=pool,
    )
