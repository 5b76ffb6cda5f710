"""
Registry bearer tokens (Docker token authentication): scopes and JWTs.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from twisted.internet.interfaces import IReactorTime

from quayd.auth.keys import SigningKey

_SCOPE = re.compile(r"(?P<type>[a-z0-9]+)(?:\([a-z0-9]+\))?:(?P<name>[^:]+):(?P<actions>[a-z*,]*)")

#: Clock skew tolerated when verifying tokens, in seconds.
LEEWAY = 30


@dataclass(frozen=True, slots=True)
class ResourceAccess:
    """One entry of a token's C{access} claim or of a requested scope."""

    type: str
    name: str
    actions: frozenset[str]

    def scope(self) -> str:
        """The scope string (C{repository:ns/app:pull,push})."""
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


def parse_scopes(values: list[str]) -> list[ResourceAccess]:
    """
    Parse C{scope} parameters; several may be given, each may hold several
    space-separated scopes. Malformed scopes are ignored, as Distribution does.
    """
    found: list[ResourceAccess] = []
    for value in values:
        for item in value.split():
            match = _SCOPE.fullmatch(item)
            if match is None:
                continue
            actions = frozenset(a for a in match["actions"].split(",") if a)
            found.append(ResourceAccess(match["type"], match["name"], actions))
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedToken:
    """The claims of a valid token."""

    subject: str
    access: tuple[ResourceAccess, ...]

    def actions_on(self, type_: str, name: str) -> frozenset[str]:
        """The actions this token grants on one resource."""
        granted: set[str] = set()
        for entry in self.access:
            if entry.type == type_ and entry.name == name:
                granted |= entry.actions
        return frozenset(granted)


class TokenError(Exception):
    """A bearer token is invalid, expired, or for another service."""


class TokenService:
    """
    Issues and verifies ES256/RS256 JWTs for one service (the registry's host name).
    """

    def __init__(self, key: SigningKey, clock: IReactorTime, service: str, issuer: str, ttl: int) -> None:
        self._key = key
        self._clock = clock
        self.service = service
        self._issuer = issuer
        self.ttl = ttl
        self._public_key = key.public_key
        # Verified tokens, until their expiry: clients reuse one token for
        # many requests, and an ES256 check costs more than serving a manifest.
        self._verified: dict[str, tuple[float, VerifiedToken]] = {}

    def issue(self, subject: str, access: list[ResourceAccess]) -> tuple[str, int, str]:
        """
        Sign a token.

        @return: The token, its lifetime in seconds, and its issue time (RFC 3339).
        """
        now = int(self._clock.seconds())
        claims = {
            "iss": self._issuer,
            "sub": subject,
            "aud": self.service,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": secrets.token_urlsafe(16),
            "access": [{"type": a.type, "name": a.name, "actions": sorted(a.actions)} for a in access],
        }
        token = jwt.encode(
            claims, self._key.private_key, algorithm=self._key.algorithm, headers={"kid": self._key.kid}
        )
        issued_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return token, self.ttl, issued_at

    def verify(self, token: str) -> VerifiedToken:
        """
        Check signature, expiry, audience and issuer.

        @raise TokenError: If any check fails.
        """
        now = self._clock.seconds()
        cached = self._verified.get(token)
        if cached is not None:
            if now <= cached[0]:
                return cached[1]
            del self._verified[token]
        result, expires = self._verify(token, now)
        if len(self._verified) >= 10_000:
            self._verified = {t: entry for t, entry in self._verified.items() if entry[0] >= now}
            if len(self._verified) >= 10_000:
                self._verified.clear()
        self._verified[token] = (expires, result)
        return result

    def _verify(self, token: str, now: float) -> tuple[VerifiedToken, float]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") != self._key.kid:
                raise TokenError("token was signed with an unknown key")
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=[self._key.algorithm],
                audience=self.service,
                issuer=self._issuer,
                options={
                    "require": ["exp", "iat", "sub", "aud", "iss"],
                    "verify_iat": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as e:
            raise TokenError(str(e)) from None
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
            raise TokenError("malformed exp or nbf claim")
        if now > exp + LEEWAY:
            raise TokenError("token has expired")
        if now + LEEWAY < nbf:
            raise TokenError("token is not yet valid")
        access: list[ResourceAccess] = []
        raw = claims.get("access", [])
        if not isinstance(raw, list):
            raise TokenError("malformed access claim")
        for entry in raw:
            if not isinstance(entry, dict):
                raise TokenError("malformed access claim")
            actions = entry.get("actions", [])
            if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
                raise TokenError("malformed access claim")
            access.append(ResourceAccess(str(entry.get("type")), str(entry.get("name")), frozenset(actions)))
        subject = claims["sub"]
        if not isinstance(subject, str):
            raise TokenError("malformed subject")
        return VerifiedToken(subject=subject, access=tuple(access)), float(exp) + LEEWAY
