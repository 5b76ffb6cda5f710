"""
Identity metadata: users, organizations, teams, robots, repository visibility,
permissions and tokens, and the audit log. Each method is one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from quayd.db.interfaces import IDatabase, Row, Transaction
from quayd.db.sql import set_clause
from quayd.errors import Conflict

#: Repository roles, weakest first.
REPOSITORY_ROLES = ("read", "write", "admin")
#: Team roles, weakest first.
TEAM_ROLES = ("member", "creator", "admin")


def stronger(a: str | None, b: str | None, order: tuple[str, ...]) -> str | None:
    """The stronger of two roles in C{order} (C{None} is weakest)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if order.index(a) >= order.index(b) else b


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """A user or an organization."""

    name: str
    kind: str  # "user" or "org"
    email: str | None
    managed: bool
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Team:
    """A team of an organization."""

    org: str
    name: str
    role: str
    description: str
    managed: bool
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Robot:
    """A robot account C{namespace+name}; its token is fetched separately."""

    namespace: str
    name: str
    description: str
    managed: bool
    created_at: float

    @property
    def full_name(self) -> str:
        """The login name, C{namespace+name}."""
        return f"{self.namespace}+{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Repository:
    """A repository's access settings."""

    name: str
    visibility: str
    managed: bool
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Permission:
    """A direct repository role of a user, team (C{org/team}) or robot (C{ns+name})."""

    repository: str
    kind: str
    subject: str
    role: str
    managed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RepositoryToken:
    """A per-repository access token (its secret is fetched separately)."""

    id: str
    repository: str
    description: str
    role: str
    managed: bool
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One administrative change."""

    id: int
    at: float
    actor: str
    client: str
    action: str
    target: str
    detail: dict[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessFacts:
    """
    What the policy needs to know about one principal and one repository.

    @ivar namespace_kind: C{user}, C{org}, or C{None} if the namespace does not exist.
    @ivar org_role: The principal's strongest team role in the namespace organization.
    @ivar repository_role: The strongest direct role (own, through teams, or the robot's).
    """

    repository_exists: bool
    visibility: str | None
    namespace_kind: str | None
    org_role: str | None
    repository_role: str | None


def _account(row: Row) -> Account:
    return Account(name=row[0], kind=row[1], email=row[2], managed=bool(row[3]), created_at=float(row[4]))


def _robot(row: Row) -> Robot:
    return Robot(
        namespace=row[0], name=row[1], description=row[2], managed=bool(row[3]), created_at=float(row[4])
    )


def _repository(row: Row) -> Repository:
    return Repository(name=row[0], visibility=row[1], managed=bool(row[2]), created_at=float(row[3]))


def _permission(row: Row) -> Permission:
    return Permission(repository=row[0], kind=row[1], subject=row[2], role=row[3], managed=bool(row[4]))


def _token(row: Row) -> RepositoryToken:
    return RepositoryToken(
        id=row[0],
        repository=row[1],
        description=row[2],
        role=row[3],
        managed=bool(row[4]),
        created_at=float(row[5]),
    )


_ACCOUNT = "name, kind, email, managed, created_at"
_ROBOT = "namespace, name, description, managed, created_at"
_REPOSITORY = "name, visibility, managed, created_at"
_PERMISSION = "repository, kind, subject, role, managed"
_TOKEN_COLUMNS = "id, repository, description, role, managed, created_at"  # noqa: S105 - column names


class IdentityStore:
    """
    Identity and access metadata over an L{IDatabase}.
    """

    def __init__(self, database: IDatabase, clock: IReactorTime) -> None:
        self._db = database
        self._clock = clock

    # Accounts

    async def create_user(
        self, name: str, email: str | None, password_hash: str | None, managed: bool = False
    ) -> Account:
        """
        Create a user.

        @raise Conflict: If the name is taken by a user or an organization.
        """
        rows = await self._db.execute(
            f"INSERT INTO account ({_ACCOUNT}, password_hash) VALUES (?, 'user', ?, ?, ?, ?) "
            f"RETURNING {_ACCOUNT}",
            (name, email, int(managed), self._clock.seconds(), password_hash),
        )
        return _account(rows[0])

    async def create_org(self, name: str, email: str | None = None, managed: bool = False) -> Account:
        """
        Create an organization with its C{owners} team (role C{admin}).

        @raise Conflict: If the name is taken.
        """

        async def body(txn: Transaction) -> Account:
            rows = await txn.execute(
                f"INSERT INTO account ({_ACCOUNT}) VALUES (?, 'org', ?, ?, ?) RETURNING {_ACCOUNT}",
                (name, email, int(managed), self._clock.seconds()),
            )
            await txn.execute(
                "INSERT INTO team (org, name, role, description, managed) "
                "VALUES (?, 'owners', 'admin', ?, ?)",
                (name, "Administrators of the organization", int(managed)),
            )
            return _account(rows[0])

        return await self._db.run_interaction(body)

    async def get_account(self, name: str) -> Account | None:
        """A user or organization by name."""
        rows = await self._db.execute(f"SELECT {_ACCOUNT} FROM account WHERE name = ?", (name,))
        return _account(rows[0]) if rows else None

    async def list_accounts(self, kind: str) -> list[Account]:
        """All users (C{kind="user"}) or organizations (C{kind="org"})."""
        rows = await self._db.execute(f"SELECT {_ACCOUNT} FROM account WHERE kind = ? ORDER BY name", (kind,))
        return [_account(r) for r in rows]

    async def password_hash(self, user: str) -> str | None:
        """A user's bcrypt hash, or C{None} (no such user, or no password)."""
        rows = await self._db.execute(
            "SELECT password_hash FROM account WHERE name = ? AND kind = 'user'", (user,)
        )
        return rows[0][0] if rows else None

    async def update_user(
        self,
        name: str,
        *,
        email: str | None = None,
        password_hash: str | None = None,
        managed: bool | None = None,
    ) -> bool:
        """Change a user's email, password hash or managed flag; C{False} if no such user."""
        sets, args = set_clause(email=email, password_hash=password_hash, managed=managed)
        if not sets:
            return await self.get_account(name) is not None
        rows = await self._db.execute(
            f"UPDATE account SET {sets} WHERE name = ? AND kind = 'user' RETURNING name",
            (*args, name),
        )
        return bool(rows)

    async def set_account_managed(self, name: str, managed: bool) -> None:
        """Mark a user or organization as declared by the configuration, or not."""
        await self._db.execute("UPDATE account SET managed = ? WHERE name = ?", (int(managed), name))

    async def delete_account(self, name: str) -> bool:
        """
        Delete a user or organization with its teams, robots and repositories.

        @return: C{False} if it did not exist.
        """

        async def body(txn: Transaction) -> bool:
            repos = await txn.execute(
                "SELECT name FROM repository WHERE name LIKE ? ESCAPE '!'", (_like_prefix(name),)
            )
            for (repo,) in repos:
                await _delete_repository(txn, repo)
            await txn.execute(
                "DELETE FROM repository_permission WHERE kind = 'user' AND subject = ?", (name,)
            )
            await txn.execute(
                "DELETE FROM repository_permission WHERE kind IN ('team', 'robot') AND "
                "(subject LIKE ? ESCAPE '!' OR subject LIKE ? ESCAPE '!')",
                (_like_prefix(name), name.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "+%"),
            )
            rows = await txn.execute("DELETE FROM account WHERE name = ? RETURNING name", (name,))
            return bool(rows)

        return await self._db.run_interaction(body)

    # Teams

    async def create_team(
        self, org: str, name: str, role: str, description: str = "", managed: bool = False
    ) -> Team:
        """
        Create a team in C{org}.

        @raise Conflict: If the team exists or C{org} is not an organization.
        """

        async def body(txn: Transaction) -> Team:
            kind = await txn.execute("SELECT kind FROM account WHERE name = ?", (org,))
            if not kind or kind[0][0] != "org":
                raise Conflict(f"{org} is not an organization")
            await txn.execute(
                "INSERT INTO team (org, name, role, description, managed) VALUES (?, ?, ?, ?, ?)",
                (org, name, role, description, int(managed)),
            )
            return Team(org=org, name=name, role=role, description=description, managed=managed, members=())

        return await self._db.run_interaction(body)

    async def list_teams(self, org: str) -> list[Team]:
        """Teams of C{org} with their members."""
        teams = await self._db.execute(
            "SELECT name, role, description, managed FROM team WHERE org = ? ORDER BY name", (org,)
        )
        members = await self._db.execute(
            "SELECT team, member FROM team_member WHERE org = ? ORDER BY member", (org,)
        )
        by_team: dict[str, list[str]] = {}
        for team, member in members:
            by_team.setdefault(team, []).append(member)
        return [
            Team(org=org, name=n, role=r, description=d, managed=bool(m), members=tuple(by_team.get(n, [])))
            for n, r, d, m in teams
        ]

    async def get_team(self, org: str, name: str) -> Team | None:
        """One team of C{org}."""
        for team in await self.list_teams(org):
            if team.name == name:
                return team
        return None

    async def update_team(
        self,
        org: str,
        name: str,
        *,
        role: str | None = None,
        description: str | None = None,
        managed: bool | None = None,
    ) -> bool:
        """Change a team's role, description or managed flag; C{False} if no such team."""
        sets, args = set_clause(role=role, description=description, managed=managed)
        if not sets:
            return await self.get_team(org, name) is not None
        rows = await self._db.execute(
            f"UPDATE team SET {sets} WHERE org = ? AND name = ? RETURNING name", (*args, org, name)
        )
        return bool(rows)

    async def delete_team(self, org: str, name: str) -> bool:
        """Delete a team and its repository permissions."""

        async def body(txn: Transaction) -> bool:
            await txn.execute(
                "DELETE FROM repository_permission WHERE kind = 'team' AND subject = ?", (f"{org}/{name}",)
            )
            rows = await txn.execute(
                "DELETE FROM team WHERE org = ? AND name = ? RETURNING name", (org, name)
            )
            return bool(rows)

        return await self._db.run_interaction(body)

    async def add_team_member(self, org: str, team: str, user: str) -> None:
        """
        Add a user to a team (no error if already a member).

        @raise Conflict: If the team or the user does not exist, or C{user} is an organization.
        """

        async def body(txn: Transaction) -> None:
            kind = await txn.execute("SELECT kind FROM account WHERE name = ?", (user,))
            if not kind or kind[0][0] != "user":
                raise Conflict(f"{user} is not a user")
            await txn.execute(
                "INSERT INTO team_member (org, team, member) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (org, team, user),
            )

        await self._db.run_interaction(body)

    async def remove_team_member(self, org: str, team: str, user: str) -> bool:
        """Remove a user from a team."""
        rows = await self._db.execute(
            "DELETE FROM team_member WHERE org = ? AND team = ? AND member = ? RETURNING member",
            (org, team, user),
        )
        return bool(rows)

    # Robots

    async def create_robot(
        self, namespace: str, name: str, token_ciphertext: str, description: str = "", managed: bool = False
    ) -> Robot:
        """
        Create a robot account in a user or organization namespace.

        @raise Conflict: If it exists or the namespace does not.
        """
        rows = await self._db.execute(
            f"INSERT INTO robot ({_ROBOT}, token_ciphertext) VALUES (?, ?, ?, ?, ?, ?) RETURNING {_ROBOT}",
            (namespace, name, description, int(managed), self._clock.seconds(), token_ciphertext),
        )
        return _robot(rows[0])

    async def get_robot(self, namespace: str, name: str) -> Robot | None:
        """A robot account."""
        rows = await self._db.execute(
            f"SELECT {_ROBOT} FROM robot WHERE namespace = ? AND name = ?", (namespace, name)
        )
        return _robot(rows[0]) if rows else None

    async def robot_token_ciphertext(self, namespace: str, name: str) -> str | None:
        """The robot's encrypted token."""
        rows = await self._db.execute(
            "SELECT token_ciphertext FROM robot WHERE namespace = ? AND name = ?", (namespace, name)
        )
        return rows[0][0] if rows else None

    async def list_robots(self, namespace: str) -> list[Robot]:
        """Robots of a namespace."""
        rows = await self._db.execute(
            f"SELECT {_ROBOT} FROM robot WHERE namespace = ? ORDER BY name", (namespace,)
        )
        return [_robot(r) for r in rows]

    async def update_robot(
        self,
        namespace: str,
        name: str,
        *,
        token_ciphertext: str | None = None,
        description: str | None = None,
        managed: bool | None = None,
    ) -> bool:
        """Replace a robot's token, description or managed flag; C{False} if no such robot."""
        sets, args = set_clause(token_ciphertext=token_ciphertext, description=description, managed=managed)
        if not sets:
            return await self.get_robot(namespace, name) is not None
        rows = await self._db.execute(
            f"UPDATE robot SET {sets} WHERE namespace = ? AND name = ? RETURNING name",
            (*args, namespace, name),
        )
        return bool(rows)

    async def delete_robot(self, namespace: str, name: str) -> bool:
        """Delete a robot and its repository permissions."""

        async def body(txn: Transaction) -> bool:
            await txn.execute(
                "DELETE FROM repository_permission WHERE kind = 'robot' AND subject = ?",
                (f"{namespace}+{name}",),
            )
            rows = await txn.execute(
                "DELETE FROM robot WHERE namespace = ? AND name = ? RETURNING name", (namespace, name)
            )
            return bool(rows)

        return await self._db.run_interaction(body)

    # Repositories

    async def create_repository(
        self, name: str, visibility: str = "private", managed: bool = False
    ) -> Repository:
        """
        Create a repository (access settings only; content arrives by push).

        @raise Conflict: If it exists.
        """
        rows = await self._db.execute(
            f"INSERT INTO repository ({_REPOSITORY}) VALUES (?, ?, ?, ?) RETURNING {_REPOSITORY}",
            (name, visibility, int(managed), self._clock.seconds()),
        )
        return _repository(rows[0])

    async def claim_repository(self, name: str, creator: str) -> bool:
        """
        Create a repository pushed to for the first time, with C{creator} as its
        admin; nothing happens if it exists.

        @return: Whether it was created.
        """

        async def body(txn: Transaction) -> bool:
            rows = await txn.execute(
                f"INSERT INTO repository ({_REPOSITORY}) VALUES (?, 'private', 0, ?) "
                "ON CONFLICT (name) DO NOTHING RETURNING name",
                (name, self._clock.seconds()),
            )
            if not rows:
                return False
            await txn.execute(
                f"INSERT INTO repository_permission ({_PERMISSION}) VALUES (?, 'user', ?, 'admin', 0) "
                "ON CONFLICT (repository, kind, subject) DO NOTHING",
                (name, creator),
            )
            return True

        exists = await self._db.execute("SELECT 1 FROM repository WHERE name = ?", (name,))
        if exists:
            return False
        return await self._db.run_interaction(body)

    async def get_repository(self, name: str) -> Repository | None:
        """A repository's access settings."""
        rows = await self._db.execute(f"SELECT {_REPOSITORY} FROM repository WHERE name = ?", (name,))
        return _repository(rows[0]) if rows else None

    async def list_repositories(self, namespace: str | None = None) -> list[Repository]:
        """Repositories, all or of one namespace."""
        if namespace is None:
            rows = await self._db.execute(f"SELECT {_REPOSITORY} FROM repository ORDER BY name")
        else:
            rows = await self._db.execute(
                f"SELECT {_REPOSITORY} FROM repository WHERE name LIKE ? ESCAPE '!' ORDER BY name",
                (_like_prefix(namespace),),
            )
        return [_repository(r) for r in rows]

    async def update_repository(
        self, name: str, *, visibility: str | None = None, managed: bool | None = None
    ) -> bool:
        """Change visibility or the managed flag; C{False} if no such repository."""
        sets, args = set_clause(visibility=visibility, managed=managed)
        if not sets:
            return await self.get_repository(name) is not None
        rows = await self._db.execute(
            f"UPDATE repository SET {sets} WHERE name = ? RETURNING name", (*args, name)
        )
        return bool(rows)

    async def delete_repository(self, name: str) -> bool:
        """Delete a repository with its tags, manifests, permissions and tokens."""

        async def body(txn: Transaction) -> bool:
            return await _delete_repository(txn, name)

        return await self._db.run_interaction(body)

    # Permissions

    async def set_permission(
        self, repository: str, kind: str, subject: str, role: str, managed: bool = False
    ) -> None:
        """
        Grant or change a direct repository role.

        @raise Conflict: If the repository does not exist.
        """
        await self._db.execute(
            f"INSERT INTO repository_permission ({_PERMISSION}) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (repository, kind, subject) DO UPDATE SET "
            "role = excluded.role, managed = excluded.managed",
            (repository, kind, subject, role, int(managed)),
        )

    async def delete_permission(self, repository: str, kind: str, subject: str) -> bool:
        """Revoke a direct repository role."""
        rows = await self._db.execute(
            "DELETE FROM repository_permission WHERE repository = ? AND kind = ? AND subject = ? "
            "RETURNING role",
            (repository, kind, subject),
        )
        return bool(rows)

    async def list_permissions(self, repository: str | None = None) -> list[Permission]:
        """Direct roles, all or on one repository."""
        if repository is None:
            rows = await self._db.execute(
                f"SELECT {_PERMISSION} FROM repository_permission ORDER BY repository, kind, subject"
            )
        else:
            rows = await self._db.execute(
                f"SELECT {_PERMISSION} FROM repository_permission WHERE repository = ? "
                "ORDER BY kind, subject",
                (repository,),
            )
        return [_permission(r) for r in rows]

    # Repository tokens

    async def create_repository_token(
        self,
        token_id: str,
        repository: str,
        description: str,
        role: str,
        lookup: str,
        token_ciphertext: str,
        managed: bool = False,
    ) -> RepositoryToken:
        """
        Create a repository token.

        @raise Conflict: If the repository does not exist.
        """
        rows = await self._db.execute(
            f"INSERT INTO repository_token ({_TOKEN_COLUMNS}, lookup, token_ciphertext) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            f"RETURNING {_TOKEN_COLUMNS}",
            (
                token_id,
                repository,
                description,
                role,
                int(managed),
                self._clock.seconds(),
                lookup,
                token_ciphertext,
            ),
        )
        return _token(rows[0])

    async def find_repository_token(self, lookup: str) -> tuple[RepositoryToken, str] | None:
        """A token by the keyed hash of its secret, with its encrypted secret."""
        rows = await self._db.execute(
            f"SELECT {_TOKEN_COLUMNS}, token_ciphertext FROM repository_token WHERE lookup = ?", (lookup,)
        )
        return (_token(rows[0]), rows[0][6]) if rows else None

    async def get_repository_token(self, token_id: str) -> tuple[RepositoryToken, str] | None:
        """A token by id, with its encrypted secret."""
        rows = await self._db.execute(
            f"SELECT {_TOKEN_COLUMNS}, token_ciphertext FROM repository_token WHERE id = ?", (token_id,)
        )
        return (_token(rows[0]), rows[0][6]) if rows else None

    async def list_repository_tokens(self, repository: str) -> list[RepositoryToken]:
        """Tokens of one repository."""
        rows = await self._db.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM repository_token WHERE repository = ? ORDER BY created_at, id",
            (repository,),
        )
        return [_token(r) for r in rows]

    async def update_repository_token(
        self,
        token_id: str,
        *,
        role: str | None = None,
        description: str | None = None,
        managed: bool | None = None,
    ) -> bool:
        """Change a token's role, description or managed flag."""
        sets, args = set_clause(role=role, description=description, managed=managed)
        if not sets:
            return await self.get_repository_token(token_id) is not None
        rows = await self._db.execute(
            f"UPDATE repository_token SET {sets} WHERE id = ? RETURNING id", (*args, token_id)
        )
        return bool(rows)

    async def delete_repository_token(self, token_id: str) -> bool:
        """Delete a token; it stops working at once."""
        rows = await self._db.execute("DELETE FROM repository_token WHERE id = ? RETURNING id", (token_id,))
        return bool(rows)

    # Policy facts

    async def user_access_facts(self, user: str, repository: str, namespace: str) -> AccessFacts:
        """What the policy needs for a user on a repository."""

        async def body(txn: Transaction) -> AccessFacts:
            repo = await txn.execute("SELECT visibility FROM repository WHERE name = ?", (repository,))
            ns = await txn.execute("SELECT kind FROM account WHERE name = ?", (namespace,))
            org_roles = await txn.execute(
                "SELECT t.role FROM team_member m JOIN team t ON t.org = m.org AND t.name = m.team "
                "WHERE m.org = ? AND m.member = ?",
                (namespace, user),
            )
            repo_roles = await txn.execute(
                "SELECT role FROM repository_permission WHERE repository = ? AND ("
                "(kind = 'user' AND subject = ?) OR (kind = 'team' AND subject IN "
                "(SELECT org || '/' || team FROM team_member WHERE member = ?)))",
                (repository, user, user),
            )
            org_role: str | None = None
            for (role,) in org_roles:
                org_role = stronger(org_role, role, TEAM_ROLES)
            repo_role: str | None = None
            for (role,) in repo_roles:
                repo_role = stronger(repo_role, role, REPOSITORY_ROLES)
            return AccessFacts(
                repository_exists=bool(repo),
                visibility=repo[0][0] if repo else None,
                namespace_kind=ns[0][0] if ns else None,
                org_role=org_role,
                repository_role=repo_role,
            )

        return await self._db.run_interaction(body)

    async def robot_access_facts(self, robot: str, repository: str) -> AccessFacts:
        """What the policy needs for a robot (C{ns+name}) on a repository."""

        async def body(txn: Transaction) -> AccessFacts:
            repo = await txn.execute("SELECT visibility FROM repository WHERE name = ?", (repository,))
            roles = await txn.execute(
                "SELECT role FROM repository_permission "
                "WHERE repository = ? AND kind = 'robot' AND subject = ?",
                (repository, robot),
            )
            return AccessFacts(
                repository_exists=bool(repo),
                visibility=repo[0][0] if repo else None,
                namespace_kind=None,
                org_role=None,
                repository_role=roles[0][0] if roles else None,
            )

        return await self._db.run_interaction(body)

    async def visibility(self, repository: str) -> str | None:
        """A repository's visibility, or C{None} if it does not exist."""
        rows = await self._db.execute("SELECT visibility FROM repository WHERE name = ?", (repository,))
        return rows[0][0] if rows else None

    # Audit

    async def audit(
        self, actor: str, client: str, action: str, target: str, detail: dict[str, object]
    ) -> None:
        """Record one administrative change."""
        await self._db.execute(
            "INSERT INTO audit_log (at, actor, client, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (self._clock.seconds(), actor, client, action, target, json.dumps(detail, sort_keys=True)),
        )

    async def audit_log(self, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
        """Recent audit entries, newest first."""
        sql = "SELECT id, at, actor, client, action, target, detail FROM audit_log"
        args: list[object] = []
        if before_id is not None:
            sql += " WHERE id < ?"
            args.append(before_id)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        rows = await self._db.execute(sql, args)
        return [
            AuditEntry(
                id=int(r[0]),
                at=float(r[1]),
                actor=r[2],
                client=r[3],
                action=r[4],
                target=r[5],
                detail=json.loads(r[6]),
            )
            for r in rows
        ]


def _like_prefix(namespace: str) -> str:
    """A LIKE pattern (escape character C{!}) matching C{namespace/...}."""
    return namespace.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "/%"


async def _delete_repository(txn: Transaction, name: str) -> bool:
    await txn.execute("DELETE FROM tag WHERE repository = ?", (name,))
    await txn.execute("DELETE FROM manifest_child WHERE repository = ?", (name,))
    await txn.execute("DELETE FROM manifest_blob WHERE repository = ?", (name,))
    await txn.execute("DELETE FROM manifest WHERE repository = ?", (name,))
    rows = await txn.execute("DELETE FROM repository WHERE name = ? RETURNING name", (name,))
    return bool(rows)
