"""
Tests for L{quayd.auth.policy.AccessControl.authorize} with bearer tokens, the
per-request path of every pull: principals remembered per token subject, a
repository token looked up on every request (a deleted one stops working at
once), and challenges that name the needed scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from quayd.auth.keys import load_signing_key
from quayd.auth.policy import AccessControl, Action, Policy
from quayd.auth.tokens import ResourceAccess, TokenService
from quayd.db.identity import RepositoryToken
from quayd.errors import Unauthorized
from quayd.types import RepositoryName

REPO = RepositoryName("team/app")
PULL = frozenset({Action.PULL})


@dataclass
class _Identity:
    """The one identity lookup the bearer path makes: repository tokens by id."""

    tokens: dict[str, RepositoryToken] = field(default_factory=dict)
    lookups: int = 0

    async def get_repository_token(self, token_id: str) -> tuple[RepositoryToken, str] | None:
        """The token, if it still exists."""
        self.lookups += 1
        token = self.tokens.get(token_id)
        return None if token is None else (token, "ciphertext")


@dataclass
class _Credentials:
    """What L{AccessControl} reads of the credentials checker on the bearer path."""

    superusers: frozenset[str] = frozenset({"root"})


@dataclass
class _Setup:
    access: AccessControl
    tokens: TokenService
    identity: _Identity


@pytest.fixture
def setup(tmp_path: Path) -> _Setup:
    """An authorizer with a real token service and a fake identity store."""
    clock = Clock()
    clock.advance(1_700_000_000)
    tokens = TokenService(load_signing_key(tmp_path / "key.pem", True), clock, "registry.test", "quayd", 300)
    identity = _Identity()
    policy = Policy(identity, frozenset({"root"}))  # type: ignore[arg-type]  # only get_repository_token is used
    access = AccessControl(_Credentials(), policy, tokens, "https://registry.test/v2/auth")  # type: ignore[arg-type]  # only superusers is read
    return _Setup(access=access, tokens=tokens, identity=identity)


def _bearer(tokens: TokenService, subject: str, actions: frozenset[str], name: str = str(REPO)) -> Headers:
    token, _, _ = tokens.issue(subject, [ResourceAccess("repository", name, actions)])
    return Headers({b"authorization": [b"Bearer " + token.encode()]})


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_user_principal_is_remembered_per_subject(setup: _Setup) -> None:
    """Requests with tokens of one user get one principal value, built once, without lookups."""
    headers = _bearer(setup.tokens, "user:root", frozenset({"pull"}))
    first = await setup.access.authorize(headers, REPO, PULL)
    second = await setup.access.authorize(headers, REPO, PULL)
    assert first is second
    assert (first.kind, first.name, first.superuser, first.via) == ("user", "root", True, "bearer")
    other = await setup.access.authorize(_bearer(setup.tokens, "user:alice", frozenset({"pull"})), REPO, PULL)
    assert (other.name, other.superuser) == ("alice", False)
    assert setup.identity.lookups == 0


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_repository_token_is_looked_up_on_every_request(setup: _Setup) -> None:
    """A repository token's principal comes from the database each time: once deleted, it is anonymous."""
    setup.identity.tokens["t1"] = RepositoryToken(
        id="t1", repository=str(REPO), description="", role="read", managed=False, created_at=0.0
    )
    headers = _bearer(setup.tokens, "token:t1", frozenset({"pull"}))
    principal = await setup.access.authorize(headers, REPO, PULL)
    assert (principal.kind, principal.repository, principal.role) == ("token", str(REPO), "read")
    del setup.identity.tokens["t1"]
    principal = await setup.access.authorize(headers, REPO, PULL)
    assert principal.kind == "anonymous"
    assert setup.identity.lookups == 2


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_insufficient_scope_challenge_names_the_scope(setup: _Setup) -> None:
    """A token lacking an action gets 401 with the needed scope (sorted actions, a mount's source too)."""
    headers = _bearer(setup.tokens, "user:alice", frozenset({"pull"}))
    with pytest.raises(Unauthorized) as raised:
        await setup.access.authorize(
            headers, REPO, frozenset({Action.PUSH, Action.PULL}), mount_from=RepositoryName("team/base")
        )
    challenge = raised.value.headers["WWW-Authenticate"]
    assert 'scope="repository:team/app:pull,push repository:team/base:pull"' in challenge
    assert 'error="insufficient_scope"' in challenge


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_wildcard_token_grants_every_scope_action(setup: _Setup) -> None:
    """A token with C{*} on the repository allows pull, push and delete, never admin."""
    headers = _bearer(setup.tokens, "user:alice", frozenset({"*"}))
    principal = await setup.access.authorize(
        headers, REPO, frozenset({Action.PULL, Action.PUSH, Action.DELETE})
    )
    assert principal.name == "alice"
    with pytest.raises(Unauthorized):
        await setup.access.authorize(headers, REPO, frozenset({Action.ADMIN}))


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_token_for_another_repository_is_refused(setup: _Setup) -> None:
    """A token for one repository grants nothing on another."""
    headers = _bearer(setup.tokens, "user:alice", frozenset({"pull"}), name="team/other")
    with pytest.raises(Unauthorized) as raised:
        await setup.access.authorize(headers, REPO, PULL)
    assert 'scope="repository:team/app:pull"' in raised.value.headers["WWW-Authenticate"]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_invalid_token_challenge(setup: _Setup) -> None:
    """A token that does not verify gets 401 C{invalid_token}, naming the scope."""
    headers = Headers({b"authorization": [b"Bearer not-a-token"]})
    with pytest.raises(Unauthorized) as raised:
        await setup.access.authorize(headers, REPO, PULL)
    challenge = raised.value.headers["WWW-Authenticate"]
    assert 'error="invalid_token"' in challenge
    assert 'scope="repository:team/app:pull"' in challenge
