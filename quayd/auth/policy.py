"""
The authorization seam every registry route calls.

Until identity and access control exist, L{OpenAccess} grants everything to
the anonymous principal; the example configuration therefore listens on the
loopback interface only. Handlers call L{IAuthorizer.authorize} for every
repository operation, so access control slots in here without touching them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from twisted.web.http_headers import Headers

from quayd.types import RepositoryName


class Action(enum.Enum):
    """What a principal wants to do with a repository."""

    PULL = "pull"
    PUSH = "push"
    DELETE = "delete"


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is making a request."""

    kind: str  # "anonymous", "user", "robot", "token"
    name: str | None = None


ANONYMOUS = Principal(kind="anonymous")


class OpenAccess:
    """Grants every action to everyone (no access control configured)."""

    async def authenticate(self, headers: Headers) -> Principal:
        """Everyone is anonymous."""
        return ANONYMOUS

    async def authorize(
        self, headers: Headers, repository: RepositoryName, actions: frozenset[Action]
    ) -> Principal:
        """Allow C{actions} on C{repository}."""
        return ANONYMOUS

    async def may_list(self, principal: Principal, repository: RepositoryName) -> bool:
        """Whether the catalog shows C{repository} to C{principal}."""
        return True
