"""
The daemon's configuration: one YAML file, validated at load into frozen dataclasses.

L{load_config} reads the file with a L{yaml.SafeLoader} (that also rejects duplicate keys) and
L{parse_config} checks every value: unknown keys, types, ranges, host names, database URLs and
the Twisted endpoint strings to listen on. Every problem is reported as a L{ConfigError} naming
the key path (C{server.listen[0]: ...}), so nothing downstream ever has to re-validate a value.

YAML 1.1 turns some unquoted scalars into other types (C{no} is C{False}, C{010} is C{8},
C{2024-01-01} is a L{datetime.date}); such values fail the type checks here instead of being
coerced, and the error message suggests quoting them.

Relative paths are resolved against the process working directory when the file is loaded, so
the dataclasses only ever hold absolute paths.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Final, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogLevel

from quayd.webhooks.targets import TargetRefused, check_url

__all__ = [
    "DEFAULT_LISTEN",
    "NAMESPACE_NAME",
    "OWNERS_TEAM",
    "PERMISSION_KINDS",
    "REPOSITORY_ROLES",
    "ROBOT_NAME",
    "TEAM_NAME",
    "TEAM_ROLES",
    "TOKEN_ROLES",
    "VISIBILITIES",
    "AuthConfig",
    "Config",
    "ConfigError",
    "ConfigPath",
    "DatabaseBackend",
    "DatabaseConfig",
    "DeclaredObjects",
    "LogFormat",
    "LogLevelName",
    "LoggingConfig",
    "OrganizationConfig",
    "PermissionConfig",
    "PermissionKind",
    "RegistryConfig",
    "RepositoryConfig",
    "RepositoryRole",
    "RepositoryTokenConfig",
    "RepositoryWebhookConfig",
    "RobotConfig",
    "Scheme",
    "ServerConfig",
    "StorageConfig",
    "StorageDriver",
    "TeamConfig",
    "TeamRole",
    "TokenRole",
    "UserConfig",
    "Visibility",
    "load_config",
    "namespace_problem",
    "parse_config",
]

ConfigPath = tuple[str | int, ...]
"""
The path of a value in the config file: mapping keys as C{str}, list indexes as C{int}.
"""

Scheme = Literal["http", "https"]
StorageDriver = Literal["filesystem"]
DatabaseBackend = Literal["sqlite", "postgresql"]
LogFormat = Literal["text", "json"]
LogLevelName = Literal["debug", "info", "warn", "error", "critical"]

_SCHEMES: Final[tuple[Scheme, ...]] = ("http", "https")
_STORAGE_DRIVERS: Final[tuple[StorageDriver, ...]] = ("filesystem",)
_LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")
_LOG_LEVELS: Final[tuple[LogLevelName, ...]] = ("debug", "info", "warn", "error", "critical")

TeamRole = Literal["member", "creator", "admin"]
RepositoryRole = Literal["read", "write", "admin"]
TokenRole = Literal["read", "write"]
Visibility = Literal["private", "public"]
PermissionKind = Literal["user", "team", "robot"]

TEAM_ROLES: Final[tuple[TeamRole, ...]] = ("member", "creator", "admin")
REPOSITORY_ROLES: Final[tuple[RepositoryRole, ...]] = ("read", "write", "admin")
TOKEN_ROLES: Final[tuple[TokenRole, ...]] = ("read", "write")
VISIBILITIES: Final[tuple[Visibility, ...]] = ("private", "public")
PERMISSION_KINDS: Final[tuple[PermissionKind, ...]] = ("user", "team", "robot")

OWNERS_TEAM: Final = "owners"
"""
The team every organization has, with the role C{admin}.
"""

NAMESPACE_NAME: Final = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
"""
User and organization names: one component of the distribution-spec repository grammar.
"""

ROBOT_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,254}")
"""
Robot names, without the C{namespace+} prefix.
"""

TEAM_NAME: Final = NAMESPACE_NAME
"""
Team names, without the organization: the grammar of user and organization names.
"""

_MAX_NAME_LENGTH: Final = 255
#: Longest description of a declared webhook (the admin API's limit).
_MAX_DESCRIPTION_LENGTH: Final = 1000
_ROBOT_NAME_RULE: Final = (
    "must start with a lowercase letter, followed by up to 254 lowercase letters, digits or '_'"
)
_TEAM_NAME_RULE: Final = (
    "must be lowercase letters and digits, optionally separated by '.', '_', '__' or '-'"
    " (as in 'devs' or 'release-managers')"
)
_BCRYPT_HASH: Final = re.compile(r"\$2[aby]\$(?P<cost>[0-9]{2})\$[./A-Za-z0-9]{53}")
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+")

DEFAULT_LISTEN: Final[tuple[str, ...]] = ("tcp:5000:interface=127.0.0.1",)
"""
Listen on loopback only: the registry has no access control yet.
"""

_DEFAULT_DATA_DIR: Final = "data"
_DEFAULT_MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024
_DEFAULT_UPLOAD_EXPIRY: Final = 86400.0

_T = TypeVar("_T")


def _format_path(path: ConfigPath) -> str:
    """
    Spell a key path the way an operator reads it in the YAML file.

    @param path: Keys and list indexes from the document root.
    @return: For example C{server.listen[0]}; the empty string for the root.
    """
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


class ConfigError(Exception):
    """
    The configuration is unreadable or invalid.

    C{str(error)} is C{"<key path>: <message>"}, for example
    C{"server.listen[0]: unsupported endpoint type 'garbage'"}; problems with the file as a
    whole (missing, not YAML) have an empty path and read as the message alone.

    @ivar path: Where the problem is: mapping keys and list indexes from the document root.
    @ivar message: What is wrong, written for the operator.
    """

    def __init__(self, path: ConfigPath, message: str) -> None:
        """
        Record where the problem is and what it is.

        @param path: Where the problem is: mapping keys and list indexes from the root.
        @param message: What is wrong, written for the operator.
        """
        super().__init__(path, message)
        self.path = tuple(path)
        self.message = message

    @property
    def key_path(self) -> str:
        """
        The key path as the operator reads it (C{server.listen[0]}); empty for the file as a whole.
        """
        return _format_path(self.path)

    def __str__(self) -> str:
        """
        Render the error as shown to the operator.

        @return: The key path and the message.
        """
        where = self.key_path
        return f"{where}: {self.message}" if where else self.message


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """
    How clients reach the registry and where the daemon listens.

    @ivar hostname: C{host[:port]} that clients use to reach the registry; it goes into
        absolute URLs, the token realm and webhook payloads (C{docker_url}).
    @ivar scheme: C{http} or C{https}, as seen by clients (a TLS-terminating proxy in front of
        a plain C{tcp} listener still means C{https}).
    @ivar listen: Twisted server endpoint strings, at least one; checked at load.
    """

    hostname: str = "localhost:5000"
    scheme: Scheme = "http"
    listen: tuple[str, ...] = DEFAULT_LISTEN

    def __post_init__(self) -> None:
        """
        Check the values that do not need I/O: the host name, the scheme and a non-empty
        listen list. Endpoint strings are checked by L{parse_config}.

        @raise ConfigError: If a value is out of range.
        """
        problem = _hostname_problem(self.hostname)
        if problem is not None:
            raise ConfigError(("server", "hostname"), problem)
        if self.scheme not in _SCHEMES:
            raise ConfigError(("server", "scheme"), f"must be one of {_listing(_SCHEMES)}")
        if not self.listen:
            raise ConfigError(("server", "listen"), "must list at least one endpoint")

    @property
    def base_url(self) -> str:
        """
        The registry's absolute URL as clients see it, without a trailing slash.
        """
        return f"{self.scheme}://{self.hostname}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    """
    Where blobs are stored.

    @ivar driver: The blob store implementation; only C{filesystem} exists so far.
    @ivar path: Absolute directory of the filesystem blob store.
    """

    driver: StorageDriver = "filesystem"
    path: Path

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If the driver is unknown or the path is relative.
        """
        if self.driver not in _STORAGE_DRIVERS:
            raise ConfigError(("storage", "driver"), f"must be one of {_listing(_STORAGE_DRIVERS)}")
        if not self.path.is_absolute():
            raise ConfigError(("storage", "path"), "must be an absolute path")


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseConfig:
    """
    Where the metadata database lives.

    @ivar backend: The database backend; only C{sqlite} exists so far.
    @ivar url: The URL as configured (or the computed default). Future backends' URLs may carry
        credentials, so never log it.
    @ivar path: Absolute path of the SQLite database file; C{None} for backends without one.
    @ivar password_file: PostgreSQL: a file holding the password (never in the URL).
    @ivar pool_size: PostgreSQL: connections in the pool.
    @ivar statement_timeout: PostgreSQL: server-side limit of one statement, in seconds.
    """

    backend: DatabaseBackend = "sqlite"
    url: str
    path: Path | None
    password_file: Path | None = None
    pool_size: int = 4
    statement_timeout: float = 30.0

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If an SQLite database has no absolute path.
        """
        if self.backend == "sqlite" and (self.path is None or not self.path.is_absolute()):
            raise ConfigError(("database", "url"), "an SQLite database needs an absolute path")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryConfig:
    """
    Limits and switches of the distribution API.

    @ivar max_manifest_bytes: Largest manifest accepted on push.
    @ivar max_blob_bytes: Largest blob accepted on push; C{None} for no limit.
    @ivar max_chunk_bytes: Largest single upload request body; C{None} for no limit.
    @ivar upload_expiry: Seconds after which an abandoned upload session is removed.
    @ivar delete_enabled: Whether manifests and tags may be deleted through the API.
    @ivar auto_mount: Whether a cross-repository mount without C{from} may find the blob in any
        repository the client can pull from.
    """

    max_manifest_bytes: int = _DEFAULT_MAX_MANIFEST_BYTES
    max_blob_bytes: int | None = None
    max_chunk_bytes: int | None = None
    upload_expiry: float = _DEFAULT_UPLOAD_EXPIRY
    delete_enabled: bool = True
    auto_mount: bool = True

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If a size or the expiry is not positive.
        """
        if self.max_manifest_bytes <= 0:
            raise ConfigError(("registry", "max_manifest_bytes"), "must be greater than 0")
        if self.max_blob_bytes is not None and self.max_blob_bytes <= 0:
            raise ConfigError(("registry", "max_blob_bytes"), "must be greater than 0 (or null for no limit)")
        if self.max_chunk_bytes is not None and self.max_chunk_bytes <= 0:
            raise ConfigError(
                ("registry", "max_chunk_bytes"), "must be greater than 0 (or null for no limit)"
            )
        if not (math.isfinite(self.upload_expiry) and self.upload_expiry > 0):
            raise ConfigError(
                ("registry", "upload_expiry"), "must be a finite number of seconds greater than 0"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    """
    How the daemon logs.

    @ivar format: C{text} for human-readable lines, C{json} for one JSON event per line.
    @ivar level: The lowest level that is emitted, named as in L{LogLevel}.
    """

    format: LogFormat = "text"
    level: LogLevelName = "info"

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If the format or level is unknown.
        """
        if self.format not in _LOG_FORMATS:
            raise ConfigError(("logging", "format"), f"must be one of {_listing(_LOG_FORMATS)}")
        if self.level not in _LOG_LEVELS:
            raise ConfigError(("logging", "level"), f"must be one of {_listing(_LOG_LEVELS)}")

    @property
    def log_level(self) -> LogLevel:
        """
        The configured level as a L{LogLevel}, for a L{twisted.logger.LogLevelFilterPredicate}.
        """
        level: LogLevel = LogLevel.levelWithName(self.level)  # constantly's lookup returns Any
        return level


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhooksConfig:
    """
    Push webhook delivery.

    @ivar timeout: Seconds to wait for a receiver's answer.
    @ivar initial_backoff: Delay before the first retry; doubles each time (with jitter).
    @ivar max_backoff: Longest delay between two attempts.
    @ivar max_age: After this many seconds without success a delivery is marked failed.
    @ivar concurrency: Deliveries sent at once by one process.
    @ivar coalesce_window: Writes by one principal to one repository less than this many seconds
        apart make one push event.
    @ivar allow_loopback: Allow receivers on loopback addresses (tests, same-host receivers).
    @ivar allow_private: Allow receivers on private, unique-local and CGNAT addresses.
    """

    timeout: float = 10.0
    initial_backoff: float = 1.0
    max_backoff: float = 3600.0
    max_age: float = 86400.0
    concurrency: int = 8
    coalesce_window: float = 2.0
    allow_loopback: bool = False
    allow_private: bool = False

    def __post_init__(self) -> None:
        """
        @raise ConfigError: If a value is out of range.
        """
        if not 0 < self.timeout <= 300:
            raise ConfigError(("webhooks", "timeout"), "must be > 0 and <= 300 seconds")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ConfigError(("webhooks", "initial_backoff"), "must be > 0 and <= max_backoff")
        if not self.max_age > 0:
            raise ConfigError(("webhooks", "max_age"), "must be greater than 0")
        if not 1 <= self.concurrency <= 256:
            raise ConfigError(("webhooks", "concurrency"), "must be between 1 and 256")
        if not 0 <= self.coalesce_window <= 60:
            raise ConfigError(("webhooks", "coalesce_window"), "must be between 0 and 60 seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    """
    Authentication: key files, token lifetime, superusers.

    @ivar token_signing_key_file: PEM private key (EC P-256 or RSA >= 2048) signing bearer tokens.
    @ivar secret_key_file: Fernet key encrypting robot and repository tokens at rest.
    @ivar generate_signing_key: Whether a missing signing key is generated (only at the default
        path under the data directory; a key file named in the configuration must exist).
    @ivar generate_secret_key: The same for the secret key.
    @ivar token_ttl: Lifetime of registry bearer tokens, in seconds.
    @ivar issuer: The C{iss} claim of issued tokens.
    @ivar superusers: User names that may do everything.
    """

    token_signing_key_file: Path
    secret_key_file: Path
    generate_signing_key: bool = True
    generate_secret_key: bool = True
    token_ttl: int = 300
    issuer: str = "quayd"
    superusers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """
        @raise ConfigError: If the token lifetime is out of range.
        """
        if not 30 <= self.token_ttl <= 86400:
            raise ConfigError(("auth", "token_ttl"), "must be between 30 and 86400 seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class RobotConfig:
    """
    A robot account declared in the configuration: C{namespace+name}.

    Its token is generated when the robot is created (and kept afterwards), unless
    C{token_file} names a file holding the token to use.

    @ivar name: The robot's own name, without the namespace (C{[a-z][a-z0-9_]{0,254}}).
    @ivar description: Its description; C{None} leaves the current one as it is.
    @ivar token_file: Absolute path of a file holding the token, read at apply time; C{None}
        to have quayd generate one.
    """

    name: str
    description: str | None = None
    token_file: Path | None = None

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If the name does not follow the robot name grammar.
        """
        if not ROBOT_NAME.fullmatch(self.name):
            raise ConfigError(("robots", "name"), _ROBOT_NAME_RULE)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserConfig:
    """
    A user declared in the configuration.

    At most one of C{password_hash} and C{password_file} is set; with neither, the configuration
    does not manage the password (a user it creates has no password login).

    @ivar name: The user name, which is also a namespace.
    @ivar email: The email address; C{None} leaves the current one as it is.
    @ivar password_hash: A bcrypt hash (C{$2a$}, C{$2b$} or C{$2y$}), as C{htpasswd -nbB} prints.
    @ivar password_file: Absolute path of a file holding the password in clear, read and hashed
        at apply time.
    @ivar robots: Robot accounts of the user's namespace.
    """

    name: str
    email: str | None = None
    password_hash: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    robots: tuple[RobotConfig, ...] = ()

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If the name, the hash or the password settings are invalid.
        """
        problem = namespace_problem(self.name)
        if problem is not None:
            raise ConfigError(("users", "name"), problem)
        if self.password_hash is not None and self.password_file is not None:
            raise ConfigError(("users", "password_hash"), "give password_hash or password_file, not both")
        if self.password_hash is not None:
            problem = _bcrypt_problem(self.password_hash)
            if problem is not None:
                raise ConfigError(("users", "password_hash"), problem)


@dataclass(frozen=True, slots=True, kw_only=True)
class TeamConfig:
    """
    A team of an organization declared in the configuration.

    @ivar name: The team name (lowercase letters and digits with C{.}, C{_}, C{-} separators);
        C{owners} always exists, with role C{admin}.
    @ivar role: C{member}, C{creator} (may create repositories) or C{admin}.
    @ivar description: Its description; C{None} leaves the current one as it is.
    @ivar members: User names; the declared list is the whole membership.
    """

    name: str
    role: TeamRole = "member"
    description: str | None = None
    members: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If the name or role is invalid.
        """
        if not _valid_team_name(self.name):
            raise ConfigError(("teams", "name"), _TEAM_NAME_RULE)
        if self.role not in TEAM_ROLES:
            raise ConfigError(("teams", "role"), f"must be one of {_listing(TEAM_ROLES)}")
        if self.name == OWNERS_TEAM and self.role != "admin":
            raise ConfigError(("teams", "role"), "the owners team always has the role admin")


@dataclass(frozen=True, slots=True, kw_only=True)
class OrganizationConfig:
    """
    An organization declared in the configuration.

    @ivar name: The organization name, which is also a namespace.
    @ivar email: The email address given when the organization is created.
    @ivar teams: Declared teams; C{owners} exists whether declared or not.
    @ivar robots: Robot accounts of the organization's namespace.
    """

    name: str
    email: str | None = None
    teams: tuple[TeamConfig, ...] = ()
    robots: tuple[RobotConfig, ...] = ()

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If the name does not follow the namespace grammar.
        """
        problem = namespace_problem(self.name)
        if problem is not None:
            raise ConfigError(("organizations", "name"), problem)


@dataclass(frozen=True, slots=True, kw_only=True)
class PermissionConfig:
    """
    A direct role on a repository, for a user, a team of the repository's organization, or a
    robot of the repository's namespace.

    @ivar kind: C{user}, C{team} or C{robot}.
    @ivar subject: The user name, the team name (without the organization) or the robot's full
        name C{namespace+name}.
    @ivar role: C{read}, C{write} or C{admin}.
    """

    kind: PermissionKind
    subject: str
    role: RepositoryRole

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If the kind or role is unknown.
        """
        if self.kind not in PERMISSION_KINDS:
            raise ConfigError(("permissions",), f"must name one of {_listing(PERMISSION_KINDS)}")
        if self.role not in REPOSITORY_ROLES:
            raise ConfigError(("permissions", "role"), f"must be one of {_listing(REPOSITORY_ROLES)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RepositoryTokenConfig:
    """
    A repository token (used with the user name C{$token}), identified by its description.

    @ivar description: What the token is for; unique within the repository.
    @ivar role: C{read} or C{write}.
    @ivar token_file: Absolute path of a file holding the token, read at apply time; C{None} to
        have quayd generate one.
    """

    description: str
    role: TokenRole
    token_file: Path | None = None

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If the description is empty or the role unknown.
        """
        if not self.description:
            raise ConfigError(("tokens", "description"), "must not be empty")
        if self.role not in TOKEN_ROLES:
            raise ConfigError(("tokens", "role"), f"must be one of {_listing(TOKEN_ROLES)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RepositoryWebhookConfig:
    """
    A push webhook of a declared repository, identified by its URL.

    @ivar url: Where push events are POSTed (C{http} or C{https}, no credentials); unique
        within the repository. Whether its address may be reached is checked at delivery
        time (C{webhooks.allow_loopback}, C{webhooks.allow_private}).
    @ivar description: What the webhook is for; C{None} leaves the current one as it is.
    @ivar secret_file: Absolute path of a file holding the secret that signs the deliveries,
        read at apply time; C{None} leaves the current secret as it is (a new webhook then has
        none, and its deliveries are not signed).
    """

    url: str
    description: str | None = None
    secret_file: Path | None = None

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If the URL is not one webhooks may use, or the description is too
            long.
        """
        problem = _webhook_url_problem(self.url)
        if problem is not None:
            raise ConfigError(("webhooks", "url"), problem)
        if self.description is not None and len(self.description) > _MAX_DESCRIPTION_LENGTH:
            raise ConfigError(
                ("webhooks", "description"), f"must be at most {_MAX_DESCRIPTION_LENGTH} characters"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class RepositoryConfig:
    """
    A repository declared in the configuration (its access settings; content arrives by push).

    @ivar name: C{namespace/name}; the namespace is a declared user or organization, or one that
        exists in the database.
    @ivar visibility: C{private} or C{public} (anyone may pull).
    @ivar permissions: Direct roles; the declared list is the whole set the configuration manages.
    @ivar tokens: Repository tokens, identified by their descriptions.
    @ivar webhooks: Push webhooks, identified by their URLs; the declared list is the whole set
        the configuration manages.
    """

    name: str
    visibility: Visibility = "private"
    permissions: tuple[PermissionConfig, ...] = ()
    tokens: tuple[RepositoryTokenConfig, ...] = ()
    webhooks: tuple[RepositoryWebhookConfig, ...] = ()

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If the name or the visibility is invalid.
        """
        problem = _repository_problem(self.name)
        if problem is not None:
            raise ConfigError(("repositories", "name"), problem)
        if self.visibility not in VISIBILITIES:
            raise ConfigError(("repositories", "visibility"), f"must be one of {_listing(VISIBILITIES)}")

    @property
    def namespace(self) -> str:
        """
        The owning user or organization: the first path component.
        """
        return self.name.split("/", 1)[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeclaredObjects:
    """
    Everything the configuration declares for the reconciler to apply.

    @ivar users: Declared users with their robots.
    @ivar organizations: Declared organizations with their teams and robots.
    @ivar repositories: Declared repositories with their permissions and tokens.
    """

    users: tuple[UserConfig, ...] = ()
    organizations: tuple[OrganizationConfig, ...] = ()
    repositories: tuple[RepositoryConfig, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """
    The whole, validated configuration.

    @ivar data_dir: Absolute directory holding the default database and blob store.
    @ivar server: Public host name and listeners.
    @ivar storage: The blob store.
    @ivar database: The metadata database.
    @ivar registry: Limits and switches of the distribution API.
    @ivar logging: Log format and level.
    @ivar auth: Key files, token lifetime and superusers.
    @ivar source: Where the configuration came from (the file name), for messages.
    @ivar users: Declared users (section C{users}), applied by the reconciler.
    @ivar organizations: Declared organizations (section C{organizations}).
    @ivar repositories: Declared repositories (section C{repositories}).
    """

    data_dir: Path
    server: ServerConfig
    storage: StorageConfig
    database: DatabaseConfig
    registry: RegistryConfig
    logging: LoggingConfig
    auth: AuthConfig
    source: str
    webhooks: WebhooksConfig = field(default_factory=lambda: WebhooksConfig())
    users: tuple[UserConfig, ...] = ()
    organizations: tuple[OrganizationConfig, ...] = ()
    repositories: tuple[RepositoryConfig, ...] = ()

    def __post_init__(self) -> None:
        """
        Validate the values, also when the object is built directly in code.

        @raise ConfigError: If the data directory is relative.
        """
        if not self.data_dir.is_absolute():
            raise ConfigError(("data_dir",), "must be an absolute path")

    @property
    def declared(self) -> DeclaredObjects:
        """
        The declared users, organizations and repositories, for the reconciler.
        """
        return DeclaredObjects(
            users=self.users, organizations=self.organizations, repositories=self.repositories
        )


def load_config(path: str | Path) -> Config:
    """
    Read and validate the YAML configuration file.

    @param path: The file to read. Relative paths inside it are resolved against the current
        working directory, not the file's directory.
    @return: The validated configuration.
    @raise ConfigError: If the file cannot be read, is not YAML, or holds an invalid value.
    """
    source = str(path)
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError((), f"cannot read config file {source}: {e.strerror or e}") from None
    try:
        data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - _ConfigLoader is a SafeLoader
    except yaml.YAMLError as e:
        raise ConfigError((), f"config file {source} is not valid YAML: {_yaml_problem(e)}") from None
    return parse_config(data, source=source)


def parse_config(data: object, *, source: str) -> Config:
    """
    Validate a decoded YAML document.

    @param data: What L{yaml.safe_load} returned: a mapping, or C{None} for an empty file.
    @param source: Where the document came from, kept in L{Config.source}.
    @return: The validated configuration.
    @raise ConfigError: On the first unknown key, wrong type or out-of-range value.
    """
    root = _mapping(
        data,
        (),
        (
            "data_dir",
            "server",
            "storage",
            "database",
            "registry",
            "logging",
            "auth",
            "webhooks",
            "users",
            "organizations",
            "repositories",
        ),
    )
    data_dir = _absolute(_non_empty_string(root.get("data_dir", _DEFAULT_DATA_DIR), ("data_dir",)))
    server = _parse_server(root.get("server"), ("server",))
    storage = _parse_storage(root.get("storage"), ("storage",), data_dir)
    database = _parse_database(root.get("database"), ("database",), data_dir)
    registry = _parse_registry(root.get("registry"), ("registry",))
    logging = _parse_logging(root.get("logging"), ("logging",))
    auth = _parse_auth(root.get("auth"), ("auth",), data_dir)
    declared = DeclaredObjects(
        users=_parse_users(root.get("users"), ("users",)),
        organizations=_parse_organizations(root.get("organizations"), ("organizations",)),
        repositories=_parse_repositories(root.get("repositories"), ("repositories",)),
    )
    _check_references(declared)
    return Config(
        data_dir=data_dir,
        server=server,
        storage=storage,
        database=database,
        registry=registry,
        logging=logging,
        auth=auth,
        source=source,
        webhooks=_parse_webhooks(root.get("webhooks"), ("webhooks",)),
        users=declared.users,
        organizations=declared.organizations,
        repositories=declared.repositories,
    )


def _parse_webhooks(data: object, path: ConfigPath) -> WebhooksConfig:
    """
    Validate the C{webhooks} section (delivery settings).

    @param data: The section, or C{None} when absent or empty.
    @param path: The section's key path.
    @return: The validated section.
    """
    names = (
        "timeout",
        "initial_backoff",
        "max_backoff",
        "max_age",
        "concurrency",
        "coalesce_window",
        "allow_loopback",
        "allow_private",
    )
    section = _mapping(data, path, names)
    defaults = WebhooksConfig()
    return WebhooksConfig(
        timeout=_number(section.get("timeout", defaults.timeout), (*path, "timeout")),
        initial_backoff=_number(
            section.get("initial_backoff", defaults.initial_backoff), (*path, "initial_backoff")
        ),
        max_backoff=_number(section.get("max_backoff", defaults.max_backoff), (*path, "max_backoff")),
        max_age=_number(section.get("max_age", defaults.max_age), (*path, "max_age")),
        concurrency=_integer(section.get("concurrency", defaults.concurrency), (*path, "concurrency")),
        coalesce_window=_number(
            section.get("coalesce_window", defaults.coalesce_window), (*path, "coalesce_window")
        ),
        allow_loopback=_boolean(section.get("allow_loopback", False), (*path, "allow_loopback")),
        allow_private=_boolean(section.get("allow_private", False), (*path, "allow_private")),
    )


def _parse_server(data: object, path: ConfigPath) -> ServerConfig:
    """
    Validate the C{server} section.

    @param data: The section, or C{None} when absent or empty.
    @param path: The section's key path.
    @return: The validated section.
    """
    section = _mapping(data, path, ("hostname", "scheme", "listen"))
    hostname = _string(section.get("hostname", "localhost:5000"), (*path, "hostname"))
    scheme = _choice(section.get("scheme", "http"), (*path, "scheme"), _SCHEMES)
    listen_path = (*path, "listen")
    listen = _string_list(section.get("listen", list(DEFAULT_LISTEN)), listen_path)
    if not listen:
        raise ConfigError(listen_path, "must list at least one endpoint")
    for index, description in enumerate(listen):
        if description in listen[:index]:
            raise ConfigError((*listen_path, index), f"endpoint {description!r} is listed twice")
        _check_endpoint(description, (*listen_path, index))
    return ServerConfig(hostname=hostname, scheme=scheme, listen=listen)


def _parse_storage(data: object, path: ConfigPath, data_dir: Path) -> StorageConfig:
    """
    Validate the C{storage} section.

    @param data: The section, or C{None} when absent or empty.
    @param path: The section's key path.
    @param data_dir: The absolute data directory, parent of the default blob directory.
    @return: The validated section.
    """
    section = _mapping(data, path, ("driver", "path"))
    driver = _choice(section.get("driver", "filesystem"), (*path, "driver"), _STORAGE_DRIVERS)
    configured = section.get("path")
    blob_path = (
        data_dir / "blobs"
        if configured is None
        else _absolute(_non_empty_string(configured, (*path, "path")))
    )
    return StorageConfig(driver=driver, path=blob_path)


def _parse_database(data: object, path: ConfigPath, data_dir: Path) -> DatabaseConfig:
    """
    Validate the C{database} section.

    Only C{sqlite:PATH} URLs are accepted so far. Error messages quote the URL's scheme but never
    the URL itself, which may one day carry a password.

    @param data: The section, or C{None} when absent or empty.
    @param path: The section's key path.
    @param data_dir: The absolute data directory, parent of the default database file.
    @return: The validated section.
    """
    section = _mapping(data, path, ("url", "password_file", "pool_size", "statement_timeout"))
    url_path = (*path, "url")
    configured = section.get("url")
    if configured is None:
        default = data_dir / "quayd.sqlite"
        return DatabaseConfig(backend="sqlite", url=f"sqlite:{default}", path=default)
    url = _non_empty_string(configured, url_path)
    scheme, colon, rest = url.partition(":")
    if not colon:
        raise ConfigError(url_path, "must be a database URL such as 'sqlite:/var/lib/quayd/quayd.sqlite'")
    if scheme == "sqlite":
        if rest.startswith("//"):
            raise ConfigError(
                url_path,
                "write 'sqlite:PATH' (for example 'sqlite:/var/lib/quayd/quayd.sqlite'), not 'sqlite://'",
            )
        if not rest:
            raise ConfigError(url_path, "needs a file path after 'sqlite:'")
        if rest == ":memory:":
            raise ConfigError(
                url_path, "an in-memory SQLite database is not supported: the metadata must persist"
            )
        return DatabaseConfig(backend="sqlite", url=url, path=_absolute(rest))
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(url)
        if parts.password is not None:
            raise ConfigError(url_path, "must not contain a password; use database.password_file")
        if not parts.hostname or not parts.path.strip("/"):
            raise ConfigError(
                url_path, "needs a host and a database, as in 'postgresql://quayd@db:5432/quayd'"
            )
        password_file = section.get("password_file")
        pool_size = _integer(section.get("pool_size", 4), (*path, "pool_size"))
        if not 1 <= pool_size <= 100:
            raise ConfigError((*path, "pool_size"), "must be between 1 and 100")
        timeout = _number(section.get("statement_timeout", 30), (*path, "statement_timeout"))
        if not 0 < timeout <= 3600:
            raise ConfigError((*path, "statement_timeout"), "must be > 0 and <= 3600 seconds")
        return DatabaseConfig(
            backend="postgresql",
            url=url,
            path=None,
            password_file=(
                None
                if password_file is None
                else _absolute(_non_empty_string(password_file, (*path, "password_file")))
            ),
            pool_size=pool_size,
            statement_timeout=timeout,
        )
    raise ConfigError(
        url_path, f"unsupported database URL scheme {scheme!r}; use 'sqlite:PATH' or 'postgresql://'"
    )


def _parse_registry(data: object, path: ConfigPath) -> RegistryConfig:
    """
    Validate the C{registry} section.

    @param data: The section, or C{None} when absent or empty.
    @param path: The section's key path.
    @return: The validated section.
    """
    section = _mapping(
        data,
        path,
        (
            "max_manifest_bytes",
            "max_blob_bytes",
            "max_chunk_bytes",
            "upload_expiry",
            "delete_enabled",
            "auto_mount",
        ),
    )
    max_blob = section.get("max_blob_bytes")
    max_chunk = section.get("max_chunk_bytes")
    return RegistryConfig(
        max_manifest_bytes=_integer(
            section.get("max_manifest_bytes", _DEFAULT_MAX_MANIFEST_BYTES), (*path, "max_manifest_bytes")
        ),
        max_blob_bytes=None if max_blob is None else _integer(max_blob, (*path, "max_blob_bytes")),
        max_chunk_bytes=None if max_chunk is None else _integer(max_chunk, (*path, "max_chunk_bytes")),
        upload_expiry=_number(section.get("upload_expiry", _DEFAULT_UPLOAD_EXPIRY), (*path, "upload_expiry")),
        delete_enabled=_boolean(section.get("delete_enabled", True), (*path, "delete_enabled")),
        auto_mount=_boolean(section.get("auto_mount", True), (*path, "auto_mount")),
    )


def _parse_auth(data: object, path: ConfigPath, data_dir: Path) -> AuthConfig:
    """
    Validate the C{auth} section.

    @param data: The section, or C{None} when absent or empty.
    @param path: The section's key path.
    @param data_dir: Where generated keys live by default.
    @return: The validated section.
    """
    section = _mapping(
        data, path, ("token_signing_key_file", "secret_key_file", "token_ttl", "issuer", "superusers")
    )
    signing = section.get("token_signing_key_file")
    secret = section.get("secret_key_file")
    superusers = _string_list(section.get("superusers", []), (*path, "superusers"))
    return AuthConfig(
        token_signing_key_file=(
            data_dir / "keys" / "token-signing.pem"
            if signing is None
            else _absolute(_non_empty_string(signing, (*path, "token_signing_key_file")))
        ),
        secret_key_file=(
            data_dir / "keys" / "secret.key"
            if secret is None
            else _absolute(_non_empty_string(secret, (*path, "secret_key_file")))
        ),
        generate_signing_key=signing is None,
        generate_secret_key=secret is None,
        token_ttl=_integer(section.get("token_ttl", 300), (*path, "token_ttl")),
        issuer=_non_empty_string(section.get("issuer", "quayd"), (*path, "issuer")),
        superusers=superusers,
    )


def _parse_logging(data: object, path: ConfigPath) -> LoggingConfig:
    """
    Validate the C{logging} section.

    @param data: The section, or C{None} when absent or empty.
    @param path: The section's key path.
    @return: The validated section.
    """
    section = _mapping(data, path, ("format", "level"))
    return LoggingConfig(
        format=_choice(section.get("format", "text"), (*path, "format"), _LOG_FORMATS),
        level=_choice(section.get("level", "info"), (*path, "level"), _LOG_LEVELS),
    )


def _parse_users(data: object, path: ConfigPath) -> tuple[UserConfig, ...]:
    """
    Validate the C{users} section.

    @param data: The section: a list of mappings, or C{None} when absent or empty.
    @param path: The section's key path.
    @return: The declared users.
    """
    users: list[UserConfig] = []
    for index, item in enumerate(_list(data, path)):
        where = (*path, index)
        section = _mapping(item, where, ("name", "email", "password_hash", "password_file", "robots"))
        name = _namespace(section.get("name"), (*where, "name"))
        if any(user.name == name for user in users):
            raise ConfigError((*where, "name"), f"user {name!r} is declared twice")
        password_hash = section.get("password_hash")
        password_file = section.get("password_file")
        if password_hash is not None and password_file is not None:
            raise ConfigError(where, "give password_hash or password_file, not both")
        hash_text = None
        if password_hash is not None:
            hash_text = _string(password_hash, (*where, "password_hash"))
            problem = _bcrypt_problem(hash_text)
            if problem is not None:
                raise ConfigError((*where, "password_hash"), problem)
        users.append(
            UserConfig(
                name=name,
                email=_email(section.get("email"), (*where, "email")),
                password_hash=hash_text,
                password_file=_optional_path(password_file, (*where, "password_file")),
                robots=_parse_robots(section.get("robots"), (*where, "robots")),
            )
        )
    return tuple(users)


def _parse_organizations(data: object, path: ConfigPath) -> tuple[OrganizationConfig, ...]:
    """
    Validate the C{organizations} section.

    @param data: The section: a list of mappings, or C{None} when absent or empty.
    @param path: The section's key path.
    @return: The declared organizations.
    """
    organizations: list[OrganizationConfig] = []
    for index, item in enumerate(_list(data, path)):
        where = (*path, index)
        section = _mapping(item, where, ("name", "email", "teams", "robots"))
        name = _namespace(section.get("name"), (*where, "name"))
        if any(organization.name == name for organization in organizations):
            raise ConfigError((*where, "name"), f"organization {name!r} is declared twice")
        organizations.append(
            OrganizationConfig(
                name=name,
                email=_email(section.get("email"), (*where, "email")),
                teams=_parse_teams(section.get("teams"), (*where, "teams")),
                robots=_parse_robots(section.get("robots"), (*where, "robots")),
            )
        )
    return tuple(organizations)


def _parse_teams(data: object, path: ConfigPath) -> tuple[TeamConfig, ...]:
    """
    Validate the C{teams} list of an organization.

    @param data: The list, or C{None} when absent or empty.
    @param path: Its key path.
    @return: The declared teams, each name once.
    """
    teams: list[TeamConfig] = []
    for index, item in enumerate(_list(data, path)):
        where = (*path, index)
        section = _mapping(item, where, ("name", "role", "description", "members"))
        name = _string(_required(section, "name", where), (*where, "name"))
        if not _valid_team_name(name):
            raise ConfigError((*where, "name"), _TEAM_NAME_RULE)
        if any(team.name == name for team in teams):
            raise ConfigError((*where, "name"), f"team {name!r} is declared twice")
        role = _choice(
            section.get("role", "admin" if name == OWNERS_TEAM else "member"), (*where, "role"), TEAM_ROLES
        )
        if name == OWNERS_TEAM and role != "admin":
            raise ConfigError((*where, "role"), "the owners team always has the role admin")
        members_path = (*where, "members")
        members = _string_list(section.get("members", []), members_path)
        for position, member in enumerate(members):
            problem = namespace_problem(member)
            if problem is not None:
                raise ConfigError(
                    (*members_path, position), f"{member!r} is not a valid user name: {problem}"
                )
            if member in members[:position]:
                raise ConfigError((*members_path, position), f"{member!r} is listed twice")
        description = section.get("description")
        teams.append(
            TeamConfig(
                name=name,
                role=role,
                description=None if description is None else _string(description, (*where, "description")),
                members=members,
            )
        )
    return tuple(teams)


def _parse_robots(data: object, path: ConfigPath) -> tuple[RobotConfig, ...]:
    """
    Validate the C{robots} list of a user or organization.

    @param data: The list, or C{None} when absent or empty.
    @param path: Its key path.
    @return: The declared robots, each name once.
    """
    robots: list[RobotConfig] = []
    for index, item in enumerate(_list(data, path)):
        where = (*path, index)
        section = _mapping(item, where, ("name", "description", "token_file"))
        name = _string(_required(section, "name", where), (*where, "name"))
        if not ROBOT_NAME.fullmatch(name):
            raise ConfigError((*where, "name"), _ROBOT_NAME_RULE)
        if any(robot.name == name for robot in robots):
            raise ConfigError((*where, "name"), f"robot {name!r} is declared twice")
        description = section.get("description")
        robots.append(
            RobotConfig(
                name=name,
                description=None if description is None else _string(description, (*where, "description")),
                token_file=_optional_path(section.get("token_file"), (*where, "token_file")),
            )
        )
    return tuple(robots)


def _parse_repositories(data: object, path: ConfigPath) -> tuple[RepositoryConfig, ...]:
    """
    Validate the C{repositories} section.

    @param data: The section: a list of mappings, or C{None} when absent or empty.
    @param path: The section's key path.
    @return: The declared repositories, each name once.
    """
    repositories: list[RepositoryConfig] = []
    for index, item in enumerate(_list(data, path)):
        where = (*path, index)
        section = _mapping(item, where, ("name", "visibility", "permissions", "tokens", "webhooks"))
        name = _string(_required(section, "name", where), (*where, "name"))
        problem = _repository_problem(name)
        if problem is not None:
            raise ConfigError((*where, "name"), problem)
        if any(repository.name == name for repository in repositories):
            raise ConfigError((*where, "name"), f"repository {name!r} is declared twice")
        repositories.append(
            RepositoryConfig(
                name=name,
                visibility=_choice(
                    section.get("visibility", "private"), (*where, "visibility"), VISIBILITIES
                ),
                permissions=_parse_permissions(section.get("permissions"), (*where, "permissions")),
                tokens=_parse_tokens(section.get("tokens"), (*where, "tokens")),
                webhooks=_parse_repository_webhooks(section.get("webhooks"), (*where, "webhooks")),
            )
        )
    return tuple(repositories)


def _parse_permissions(data: object, path: ConfigPath) -> tuple[PermissionConfig, ...]:
    """
    Validate the C{permissions} list of a repository: C{{user|team|robot: NAME, role: ROLE}}.

    @param data: The list, or C{None} when absent or empty.
    @param path: Its key path.
    @return: The declared permissions, each subject once.
    """
    permissions: list[PermissionConfig] = []
    for index, item in enumerate(_list(data, path)):
        where = (*path, index)
        section = _mapping(item, where, (*PERMISSION_KINDS, "role"))
        kinds = [kind for kind in PERMISSION_KINDS if kind in section]
        if len(kinds) != 1:
            raise ConfigError(where, f"needs exactly one of {_listing(PERMISSION_KINDS)}, and a role")
        kind = kinds[0]
        subject = _string(section[kind], (*where, kind))
        problem = _subject_problem(kind, subject)
        if problem is not None:
            raise ConfigError((*where, kind), problem)
        if any(p.kind == kind and p.subject == subject for p in permissions):
            raise ConfigError((*where, kind), f"{kind} {subject!r} is given a role twice")
        role = _choice(_required(section, "role", where), (*where, "role"), REPOSITORY_ROLES)
        permissions.append(PermissionConfig(kind=kind, subject=subject, role=role))
    return tuple(permissions)


def _parse_tokens(data: object, path: ConfigPath) -> tuple[RepositoryTokenConfig, ...]:
    """
    Validate the C{tokens} list of a repository.

    @param data: The list, or C{None} when absent or empty.
    @param path: Its key path.
    @return: The declared tokens, each description once.
    """
    tokens: list[RepositoryTokenConfig] = []
    for index, item in enumerate(_list(data, path)):
        where = (*path, index)
        section = _mapping(item, where, ("description", "role", "token_file"))
        description = _non_empty_string(_required(section, "description", where), (*where, "description"))
        if any(token.description == description for token in tokens):
            raise ConfigError(
                (*where, "description"),
                f"another token has the description {description!r}; it identifies the token",
            )
        tokens.append(
            RepositoryTokenConfig(
                description=description,
                role=_choice(_required(section, "role", where), (*where, "role"), TOKEN_ROLES),
                token_file=_optional_path(section.get("token_file"), (*where, "token_file")),
            )
        )
    return tuple(tokens)


def _parse_repository_webhooks(data: object, path: ConfigPath) -> tuple[RepositoryWebhookConfig, ...]:
    """
    Validate the C{webhooks} list of a repository: C{{url: URL, description: TEXT, secret_file:
    PATH}}. A secret is only ever read from a file, never written inline.

    @param data: The list, or C{None} when absent or empty.
    @param path: Its key path.
    @return: The declared webhooks, each URL once.
    """
    webhooks: list[RepositoryWebhookConfig] = []
    for index, item in enumerate(_list(data, path)):
        where = (*path, index)
        section = _mapping(item, where, ("url", "description", "secret_file"))
        url = _non_empty_string(_required(section, "url", where), (*where, "url"))
        problem = _webhook_url_problem(url)
        if problem is not None:
            raise ConfigError((*where, "url"), problem)
        if any(webhook.url == url for webhook in webhooks):
            raise ConfigError(
                (*where, "url"), "another webhook of this repository has this URL; it identifies the webhook"
            )
        description = section.get("description")
        if description is not None:
            description = _string(description, (*where, "description"))
            if len(description) > _MAX_DESCRIPTION_LENGTH:
                raise ConfigError(
                    (*where, "description"), f"must be at most {_MAX_DESCRIPTION_LENGTH} characters"
                )
        webhooks.append(
            RepositoryWebhookConfig(
                url=url,
                description=description,
                secret_file=_optional_path(section.get("secret_file"), (*where, "secret_file")),
            )
        )
    return tuple(webhooks)


def _webhook_url_problem(url: str) -> str | None:
    """
    Check a webhook URL as the admin API does (L{quayd.webhooks.targets.check_url}).

    @param url: The declared URL.
    @return: What is wrong with it, or C{None}.
    """
    try:
        check_url(url)
    except TargetRefused as e:
        return str(e)
    return None


def _check_references(declared: DeclaredObjects) -> None:
    """
    Check what the declared objects say about each other; references to objects the
    configuration does not declare are checked against the database when it is applied.

    Users and organizations share one namespace; team members and user permissions must not
    name declared organizations; a team permission cannot be given on a repository of a
    declared user; a robot permission must name a robot of the repository's own namespace.

    @param declared: The parsed C{users}, C{organizations} and C{repositories} sections.
    @raise ConfigError: Naming the path of the first broken reference.
    """
    users = {user.name for user in declared.users}
    organizations = {organization.name for organization in declared.organizations}
    for index, organization in enumerate(declared.organizations):
        if organization.name in users:
            raise ConfigError(
                ("organizations", index, "name"),
                f"{organization.name!r} is also declared as a user;"
                " users and organizations share one namespace",
            )
        for team_index, team in enumerate(organization.teams):
            for position, member in enumerate(team.members):
                if member in organizations:
                    raise ConfigError(
                        ("organizations", index, "teams", team_index, "members", position),
                        f"{member!r} is an organization, not a user",
                    )
    for index, repository in enumerate(declared.repositories):
        namespace = repository.namespace
        for position, permission in enumerate(repository.permissions):
            where: ConfigPath = ("repositories", index, "permissions", position, permission.kind)
            if permission.kind == "user" and permission.subject in organizations:
                raise ConfigError(where, f"{permission.subject!r} is an organization, not a user")
            if permission.kind == "team" and namespace in users:
                raise ConfigError(where, f"{namespace!r} is a user; only organizations have teams")
            if permission.kind == "robot":
                robot_namespace, _, _ = permission.subject.partition("+")
                if robot_namespace != namespace:
                    raise ConfigError(
                        where,
                        f"robot {permission.subject!r} belongs to another namespace; only robots of "
                        f"{namespace!r} may have roles on its repositories",
                    )


def namespace_problem(name: str) -> str | None:
    """
    Check a user or organization name.

    @param name: The candidate name.
    @return: What is wrong with it, or C{None} if it is fine.
    """
    if not name:
        return "must not be empty"
    if len(name) > _MAX_NAME_LENGTH:
        return f"must be at most {_MAX_NAME_LENGTH} characters long"
    if not NAMESPACE_NAME.fullmatch(name):
        return (
            "must be lowercase letters and digits, optionally separated by '.', '_', '__' or '-'"
            " (as in 'acme' or 'build-bot')"
        )
    return None


def _valid_team_name(name: str) -> bool:
    """
    Check a team name.

    @param name: The candidate name, without the organization.
    @return: Whether it follows L{TEAM_NAME} and is at most 255 characters long.
    """
    return len(name) <= _MAX_NAME_LENGTH and TEAM_NAME.fullmatch(name) is not None


def _repository_problem(name: str) -> str | None:
    """
    Check a declared repository name: C{namespace/name}, following the distribution-spec
    grammar.

    @param name: The candidate name.
    @return: What is wrong with it, or C{None} if it is fine.
    """
    if len(name) > _MAX_NAME_LENGTH:
        return f"must be at most {_MAX_NAME_LENGTH} characters long"
    components = name.split("/")
    if len(components) < 2:
        return "must be 'namespace/name', as in 'acme/app'"
    if not all(NAMESPACE_NAME.fullmatch(component) for component in components):
        return (
            "each '/'-separated part must be lowercase letters and digits, optionally separated by"
            " '.', '_', '__' or '-'"
        )
    return None


def _subject_problem(kind: PermissionKind, subject: str) -> str | None:
    """
    Check the subject of a declared repository permission.

    @param kind: C{user}, C{team} or C{robot}.
    @param subject: A user name, a team name, or a robot's C{namespace+name}.
    @return: What is wrong with it, or C{None} if it is fine.
    """
    if kind == "user":
        problem = namespace_problem(subject)
        return None if problem is None else f"{subject!r} is not a valid user name: {problem}"
    if kind == "team":
        return (
            None if _valid_team_name(subject) else f"{subject!r} is not a valid team name: {_TEAM_NAME_RULE}"
        )
    namespace, plus, robot = subject.partition("+")
    if not plus or namespace_problem(namespace) is not None or not ROBOT_NAME.fullmatch(robot):
        return f"{subject!r} is not a robot name; write 'namespace+name', as in 'acme+deploy'"
    return None


def _bcrypt_problem(text: str) -> str | None:
    """
    Check a password hash: bcrypt in the modular crypt format, as C{htpasswd -nbB} prints it.

    @param text: The configured hash.
    @return: What is wrong with it, or C{None} if it is fine. The message never quotes the
        value.
    """
    _, colon, rest = text.partition(":")
    if colon and rest.startswith("$2"):
        return "this is an htpasswd line 'user:hash'; give only the hash, after the colon"
    match = _BCRYPT_HASH.fullmatch(text)
    if match is None:
        return (
            "must be a bcrypt hash as printed by 'htpasswd -nbB user password' (after the colon):"
            " '$2y$' or '$2b$', a two-digit cost, '$', then 53 characters of [./A-Za-z0-9]"
        )
    if not 4 <= int(match["cost"]) <= 31:
        return "the bcrypt cost must be between 04 and 31"
    return None


def _list(data: object, path: ConfigPath) -> list[object]:
    """
    Require a list (of mappings, for the declared objects).

    @param data: The decoded value; C{None} (absent, or present and empty) means an empty list.
    @param path: Its key path.
    @return: The list.
    @raise ConfigError: If the value is not a list.
    """
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError(path, f"expected a list (each item starting with '- '), got {_describe(data)}")
    return data


def _required(section: dict[str, object], key: str, path: ConfigPath) -> object:
    """
    Require a key of a mapping to be present and not null.

    @param section: The mapping.
    @param key: The key.
    @param path: The mapping's key path.
    @return: The value.
    @raise ConfigError: Naming the key's path if it is missing or null.
    """
    value = section.get(key)
    if value is None:
        raise ConfigError((*path, key), "is required")
    return value


def _namespace(value: object, path: ConfigPath) -> str:
    """
    Require a user or organization name.

    @param value: A decoded YAML value; C{None} when the key is missing.
    @param path: Its key path.
    @return: The name.
    @raise ConfigError: If it is missing, not a string, or not a valid name.
    """
    if value is None:
        raise ConfigError(path, "is required")
    name = _string(value, path)
    problem = namespace_problem(name)
    if problem is not None:
        raise ConfigError(path, problem)
    return name


def _email(value: object, path: ConfigPath) -> str | None:
    """
    Require an email address, or null.

    @param value: A decoded YAML value.
    @param path: Its key path.
    @return: The address, or C{None}.
    @raise ConfigError: If the value is not a string of the form C{local@domain}.
    """
    if value is None:
        return None
    text = _string(value, path)
    if not _EMAIL.fullmatch(text):
        raise ConfigError(path, "must be an email address such as 'alice@example.com', or null")
    return text


def _optional_path(value: object, path: ConfigPath) -> Path | None:
    """
    Require a file path, or null; a relative path is resolved against the working directory.

    @param value: A decoded YAML value.
    @param path: Its key path.
    @return: The absolute path, or C{None}.
    @raise ConfigError: If the value is neither a non-empty string nor null.
    """
    if value is None:
        return None
    return _absolute(_non_empty_string(value, path))


# Scalar and container checks.


def _describe(value: object) -> str:
    """
    Name a decoded YAML value's type for an error message, with a hint where YAML 1.1 turned
    an unquoted scalar into something else.

    @param value: The offending value.
    @return: For example C{"a boolean (YAML reads unquoted yes/no/on/off as booleans)"}.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean (YAML reads unquoted yes/no/on/off/true/false as booleans)"
    if isinstance(value, int):
        return "an integer (YAML reads unquoted digits, and 0-prefixed octal, as integers)"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, date):
        return "a date (YAML reads unquoted YYYY-MM-DD as a date)"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a value of type {type(value).__name__}"


def _mapping(data: object, path: ConfigPath, allowed: tuple[str, ...]) -> dict[str, object]:
    """
    Check that a section is a mapping with string keys, all of them known.

    @param data: The decoded section; C{None} (absent, or present with no keys) means empty.
    @param path: The section's key path.
    @param allowed: The keys the section may hold.
    @return: The section, with keys typed as strings.
    @raise ConfigError: Naming the path of the first unknown or non-string key.
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping of keys to values, got {_describe(data)}")
    section: dict[str, object] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(path, f"keys must be strings, got {_describe(key)} ({key!r}); quote the key")
        if key not in allowed:
            raise ConfigError((*path, key), f"unknown key; expected one of {_listing(allowed)}")
        section[key] = value
    return section


def _string(value: object, path: ConfigPath) -> str:
    """
    Require a string.

    @param value: A decoded YAML value.
    @param path: Its key path.
    @return: The value, if it is a string.
    @raise ConfigError: If it is not; the message suggests quoting.
    """
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {_describe(value)}; quote the value")
    return value


def _non_empty_string(value: object, path: ConfigPath) -> str:
    """
    Require a string that is not empty.

    @param value: A decoded YAML value.
    @param path: Its key path.
    @return: The value, if it is a string that is not empty.
    @raise ConfigError: If it is not.
    """
    text = _string(value, path)
    if not text:
        raise ConfigError(path, "must not be empty")
    return text


def _integer(value: object, path: ConfigPath) -> int:
    """
    Require an integer.

    @param value: A decoded YAML value.
    @param path: Its key path.
    @return: The value, if it is an integer (a boolean is not).
    @raise ConfigError: If it is not.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected an integer, got {_describe(value)}")
    return value


def _number(value: object, path: ConfigPath) -> float:
    """
    Require a number of seconds or similar: an integer or a float.

    @param value: A decoded YAML value.
    @param path: Its key path.
    @return: The value as a float, if it is an integer or a float (a boolean is not).
    @raise ConfigError: If it is not.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(path, f"expected a number, got {_describe(value)}")
    return float(value)


def _boolean(value: object, path: ConfigPath) -> bool:
    """
    Require a boolean.

    @param value: A decoded YAML value.
    @param path: Its key path.
    @return: The value, if it is a boolean.
    @raise ConfigError: If it is not.
    """
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {_describe(value)}")
    return value


def _choice(value: object, path: ConfigPath, choices: tuple[_T, ...]) -> _T:
    """
    Require one of a fixed set of strings.

    @param value: A decoded YAML value.
    @param path: Its key path.
    @param choices: The accepted strings.
    @return: The matching element of C{choices}, so that the result has their (literal) type.
    @raise ConfigError: If the value is not a string or not one of the choices.
    """
    text = _string(value, path)
    for choice in choices:
        if choice == text:
            return choice
    raise ConfigError(path, f"must be one of {_listing(choices)}, got {text!r}")


def _string_list(value: object, path: ConfigPath) -> tuple[str, ...]:
    """
    Require a list of strings.

    @param value: A decoded YAML value.
    @param path: Its key path.
    @return: The value as a tuple, if it is a list of strings.
    @raise ConfigError: Naming the list, or the index of the first element that is no string.
    """
    if not isinstance(value, list):
        raise ConfigError(path, f"expected a list of strings, got {_describe(value)}")
    return tuple(_string(item, (*path, index)) for index, item in enumerate(value))


def _listing(choices: tuple[object, ...]) -> str:
    """
    Spell a set of accepted values for an error message.

    @param choices: Accepted values.
    @return: The values, comma-separated, for an error message.
    """
    return ", ".join(str(choice) for choice in choices)


def _absolute(path: str) -> Path:
    """
    Resolve a configured path against the working directory, without touching the filesystem.

    @param path: A path from the config file, absolute or relative.
    @return: The normalised absolute path (symbolic links are not resolved).
    """
    return Path(os.path.abspath(path))


# Host names.

_HOST_LABELS: Final = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
)
_HOST_PORT: Final = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[0-9]{1,5}))?")


def _hostname_problem(hostname: str) -> str | None:
    """
    Check a C{host[:port]} as clients use it in image references and URLs.

    @param hostname: A DNS name, an IPv4 address or a bracketed IPv6 address, with an optional
        port.
    @return: What is wrong with it, or C{None} if it is fine.
    """
    if not hostname:
        return "must not be empty"
    if "://" in hostname:
        return "must be host[:port] without a scheme; set server.scheme instead"
    if "/" in hostname:
        return "must be host[:port] without a path"
    match = _HOST_PORT.fullmatch(hostname)
    if match is None:
        return "must be host[:port]; write IPv6 addresses in brackets, as in '[::1]:5000'"
    host, port = match["host"], match["port"]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host!r} is not a valid IPv6 address"
    elif not _HOST_LABELS.fullmatch(host):
        return f"{host!r} is not a valid host name"
    if port is not None and not 1 <= int(port) <= 65535:
        return "the port must be between 1 and 65535"
    return None


# Endpoint strings.

_ENDPOINT_TYPES: Final = ("tcp", "tcp6", "ssl", "unix", "systemd")
_SYSTEMD_DOMAINS: Final = ("INET", "INET6", "UNIX")


def _split_endpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Split an endpoint string into positional and keyword arguments, as Twisted's
    C{serverFromString} does: C{:} separates arguments, the first C{=} of an argument makes it a
    keyword argument, and a backslash escapes the next character.

    @param description: An endpoint string such as C{tcp6:5000:interface=\\:\\:}.
    @return: The positional arguments (the endpoint type first) and the keyword arguments.
    @raise ValueError: If the string ends with a lone backslash.
    """
    arguments: list[list[str]] = [[""]]
    characters = iter(description)
    for character in characters:
        if character == "\\":
            escaped = next(characters, None)
            if escaped is None:
                raise ValueError("it ends with a lone backslash")
            arguments[-1][-1] += escaped
        elif character == ":":
            arguments.append([""])
        elif character == "=" and len(arguments[-1]) == 1:
            arguments[-1].append("")
        else:
            arguments[-1][-1] += character
    positional = [parts[0] for parts in arguments if len(parts) == 1]
    keywords = {parts[0]: parts[1] for parts in arguments if len(parts) == 2}
    return positional, keywords


def _check_endpoint(description: str, path: ConfigPath) -> None:
    """
    Check a server endpoint string as far as possible without listening.

    C{tcp}, C{tcp6}, C{ssl} and C{unix} strings are parsed by C{serverFromString} against a
    L{MemoryReactor}, which also reads the certificate and key files of C{ssl} endpoints; ports
    are then checked to be in range, since Twisted accepts any integer. C{systemd} strings are
    checked for their syntax only, because the inherited descriptors exist only when systemd
    starts the daemon (not, for example, for C{--check-config}). Other endpoint types are
    refused, so that validating never scans for endpoint plugins.

    @param description: The endpoint string.
    @param path: Its key path.
    @raise ConfigError: Naming the path and the reason.
    """
    where = f"invalid endpoint {description!r}"
    try:
        positional, keywords = _split_endpoint(description)
    except ValueError as e:
        raise ConfigError(path, f"{where}: {e}") from None
    kind = positional[0]
    if kind not in _ENDPOINT_TYPES:
        raise ConfigError(
            path, f"{where}: unsupported endpoint type {kind!r}; use one of {_listing(_ENDPOINT_TYPES)}"
        )
    if kind == "systemd":
        problem = _systemd_problem(positional[1:], keywords)
        if problem is not None:
            raise ConfigError(path, f"{where}: {problem}")
        return
    try:
        # serverFromString and MemoryReactor.__init__ are not annotated in Twisted.
        serverFromString(MemoryReactor(), description)
    except OSError as e:
        raise ConfigError(path, f"{where}: {e.strerror or e}: {e.filename}") from None
    except Exception as e:
        # Endpoint parsers report problems with whatever their code raises: ValueError and
        # TypeError for bad arguments, AttributeError for an unknown sslmethod, OpenSSL.SSL.Error
        # for a bad certificate or key. All of them mean the string is unusable.
        raise ConfigError(path, f"{where}: {_endpoint_problem(e)}") from None
    if kind == "unix":
        address = keywords.get("address", positional[1] if len(positional) > 1 else "")
        if not address:
            raise ConfigError(path, f"{where}: needs a socket path, as in 'unix:/run/quayd/quayd.sock'")
    else:
        port = int(keywords.get("port", positional[1] if len(positional) > 1 else "0"))
        if not 0 <= port <= 65535:
            raise ConfigError(path, f"{where}: the port must be between 0 and 65535")


def _endpoint_problem(error: Exception) -> str:
    """
    Turn an exception raised by an endpoint parser into a message for the operator.

    @param error: What C{serverFromString} raised.
    @return: The reason the string is unusable.
    """
    text = str(error)
    if type(error).__module__.startswith("OpenSSL"):
        return f"cannot load the TLS certificate or private key ({text})"
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", text)
    if unexpected is not None:
        return f"unknown option {unexpected[1]!r}"
    repeated = re.search(r"multiple values for (?:keyword )?argument '(\w+)'", text)
    if repeated is not None:
        return (
            f"option {repeated[1]!r} is given twice; escape colons inside values with a backslash,"
            " as in 'tcp6:5000:interface=\\:\\:1'"
        )
    return text or type(error).__name__


def _systemd_problem(positional: list[str], keywords: dict[str, str]) -> str | None:
    """
    Check the arguments of a C{systemd:domain=INET6:index=0} (or C{:name=NAME}) endpoint.

    @param positional: The positional arguments after the type; there must be none.
    @param keywords: The keyword arguments.
    @return: What is wrong, or C{None} if the syntax is fine.
    """
    if positional:
        return "systemd endpoints take only keyword options (domain, and index or name)"
    unknown = sorted(set(keywords) - {"domain", "index", "name"})
    if unknown:
        return f"unknown option {unknown[0]!r}"
    if keywords.get("domain") not in _SYSTEMD_DOMAINS:
        return f"needs domain= set to one of {_listing(_SYSTEMD_DOMAINS)}"
    if ("index" in keywords) == ("name" in keywords):
        return "needs exactly one of index= or name="
    if "index" in keywords and not keywords["index"].isdecimal():
        return "index= must be a non-negative integer"
    if "name" in keywords and not keywords["name"]:
        return "name= must not be empty"
    return None


# YAML loading.


class _ConfigLoader(yaml.SafeLoader):
    """
    L{yaml.SafeLoader} that refuses duplicate keys in a mapping, which PyYAML would otherwise
    resolve silently in favour of the last one (a second C{server:} section would quietly
    replace the first).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, object]:
        """
        Build a mapping after checking that no scalar key appears twice. Keys merged in with
        C{<<} may still be overridden, as YAML intends.

        @param node: The mapping node.
        @param deep: Whether to build nested values immediately.
        @return: The mapping.
        @raise yaml.constructor.ConstructorError: On a duplicate key.
        """
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """
    Describe a YAML error in one line, with its position.

    @param error: What PyYAML raised.
    @return: For example
        C{"while constructing a mapping: found duplicate key 'server' (line 7, column 1)"}.
    """
    if isinstance(error, yaml.MarkedYAMLError) and error.problem is not None:
        mark = error.problem_mark or error.context_mark
        problem = f"{error.context}: {error.problem}" if error.context else error.problem
        if mark is not None:
            return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
        return problem
    return " ".join(str(error).split())
