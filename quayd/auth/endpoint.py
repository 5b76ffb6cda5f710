"""
The token endpoint of Docker token authentication (C{/v2/auth}).

C{GET} with optional Basic credentials is what docker, podman and skopeo use;
C{POST} implements the OAuth2 password grant containerd tries first. No
refresh tokens are issued.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from quayd.auth.policy import ANONYMOUS, AccessControl, Credentials, Principal, parse_basic
from quayd.auth.tokens import ResourceAccess, TokenService, parse_scopes
from quayd.errors import JSONValue, RegistryError, Unauthorized


class TokenRequestInvalid(RegistryError):
    """The token request is malformed or for another service."""

    code = "UNSUPPORTED"
    status = 400
    default_message = "invalid token request"


def _args(request: IRequest, name: str) -> list[str]:
    return [v.decode("utf-8", "replace") for v in request.args.get(name.encode(), [])]


class TokenEndpoint:
    """
    Authenticates the caller, downscopes the requested access to what the
    policy allows (never an error for asking too much) and signs a token.
    """

    def __init__(self, access: AccessControl, credentials: Credentials, tokens: TokenService) -> None:
        self._access = access
        self._credentials = credentials
        self._tokens = tokens

    async def handle(self, request: IRequest, client: str) -> dict[str, JSONValue]:
        """
        Answer one token request.

        @raise Unauthorized: For wrong credentials (401 with the challenge).
        @raise TokenRequestInvalid: For a request naming another service or grant.
        """
        service = _args(request, "service")
        if service and service[0] != self._tokens.service:
            raise TokenRequestInvalid(
                f"this registry is service {self._tokens.service!r}, not {service[0][:100]!r}"
            )
        principal = await self._principal(request, client)
        requested = parse_scopes(_args(request, "scope"))
        granted = await self._access.grant(principal, [(s.type, s.name, s.actions) for s in requested])
        token, ttl, issued_at = self._tokens.issue(
            principal.subject, [ResourceAccess(type_, name, actions) for type_, name, actions in granted]
        )
        document: dict[str, JSONValue] = {"access_token": token, "expires_in": ttl, "issued_at": issued_at}
        if request.method != b"POST":
            document["token"] = token
        return document

    async def _principal(self, request: IRequest, client: str) -> Principal:
        if request.method == b"POST":
            grant = _args(request, "grant_type")
            if grant != ["password"]:
                raise TokenRequestInvalid("only the password grant is supported")
            username, password = _args(request, "username"), _args(request, "password")
            if not username or not password:
                raise Unauthorized("username and password are required", headers=self._challenge())
            return await self._check(username[0], password[0], client)
        try:
            basic = parse_basic(request.requestHeaders)
        except Unauthorized as e:
            raise Unauthorized(e.message, headers=self._challenge()) from None
        if basic is None:
            return ANONYMOUS
        return await self._check(basic[0], basic[1], client)

    async def _check(self, username: str, password: str, client: str) -> Principal:
        try:
            return await self._credentials.check(username, password, client)
        except Unauthorized as e:
            raise Unauthorized(e.message, headers=self._challenge()) from None

    def _challenge(self) -> dict[str, str]:
        return {"WWW-Authenticate": self._access.challenge()}
