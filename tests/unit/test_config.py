"""
Tests for L{quayd.config}: loading, defaults, and every kind of validation error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel

from quayd.config import (
    DEFAULT_LISTEN,
    AuthConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    DeclaredObjects,
    LoggingConfig,
    OrganizationConfig,
    PermissionConfig,
    RegistryConfig,
    RepositoryConfig,
    RepositoryTokenConfig,
    RobotConfig,
    ServerConfig,
    StorageConfig,
    TeamConfig,
    UserConfig,
    load_config,
    parse_config,
)
from tests.support.certificates import write_certificate

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "quayd.yaml"


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """
    Run every test in its own working directory, against which relative paths resolve.
    """
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load_text(directory: Path, text: str) -> Config:
    """
    Write C{text} to a config file in C{directory} and load it.
    """
    path = directory / "quayd.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def config_error(data: object) -> ConfigError:
    """
    Parse C{data}, which must be invalid, and return the L{ConfigError}.
    """
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="<test>")
    return info.value


def listen_error(endpoint: str) -> str:
    """
    Parse a config listening on C{endpoint}, which must be invalid, and return the message.
    """
    error = config_error({"server": {"listen": ["tcp:5000:interface=127.0.0.1", endpoint]}})
    assert error.path == ("server", "listen", 1)
    return str(error)


def test_config_defaults_from_empty_file(workdir: Path) -> None:
    """An empty file yields the documented defaults, with paths under ./data made absolute."""
    config = load_text(workdir, "")
    data = workdir / "data"
    assert config == Config(
        data_dir=data,
        server=ServerConfig(
            hostname="localhost:5000", scheme="http", listen=("tcp:5000:interface=127.0.0.1",)
        ),
        storage=StorageConfig(driver="filesystem", path=data / "blobs"),
        database=DatabaseConfig(
            backend="sqlite", url=f"sqlite:{data / 'quayd.sqlite'}", path=data / "quayd.sqlite"
        ),
        registry=RegistryConfig(
            max_manifest_bytes=4194304,
            max_blob_bytes=None,
            max_chunk_bytes=None,
            upload_expiry=86400.0,
            delete_enabled=True,
            auto_mount=True,
        ),
        logging=LoggingConfig(format="text", level="info"),
        auth=AuthConfig(
            token_signing_key_file=data / "keys" / "token-signing.pem",
            secret_key_file=data / "keys" / "secret.key",
        ),
        source=str(workdir / "quayd.yaml"),
    )


def test_config_empty_sections_use_defaults() -> None:
    """Sections present without keys (YAML null) mean all defaults."""
    config = parse_config(
        {"server": None, "storage": None, "database": None, "registry": None, "logging": None},
        source="<test>",
    )
    assert config == parse_config({}, source="<test>")


def test_config_example_file_loads() -> None:
    """The annotated etc/quayd.yaml loads and spells out the defaults, plus the first superuser."""
    config = load_config(EXAMPLE)
    assert config.source == str(EXAMPLE)
    assert config.server.listen == DEFAULT_LISTEN
    assert config.auth.superusers == ("admin",)
    assert config == parse_config({"auth": {"superusers": ["admin"]}}, source=str(EXAMPLE))


def test_config_relative_paths_resolved(workdir: Path) -> None:
    """Relative data_dir, storage.path and sqlite paths resolve against the working directory."""
    config = parse_config(
        {"data_dir": "state/../var", "storage": {"path": "blobs"}, "database": {"url": "sqlite:db/q.sqlite"}},
        source="<test>",
    )
    assert config.data_dir == workdir / "var"
    assert config.storage.path == workdir / "blobs"
    assert config.database.path == workdir / "db" / "q.sqlite"
    assert config.database.url == "sqlite:db/q.sqlite"


def test_config_defaults_follow_data_dir() -> None:
    """The default blob directory and database live under an absolute data_dir."""
    config = parse_config({"data_dir": "/srv/quayd"}, source="<test>")
    assert config.data_dir == Path("/srv/quayd")
    assert config.storage.path == Path("/srv/quayd/blobs")
    assert config.database == DatabaseConfig(
        backend="sqlite", url="sqlite:/srv/quayd/quayd.sqlite", path=Path("/srv/quayd/quayd.sqlite")
    )


def test_config_error_formats_key_path() -> None:
    """A ConfigError reads as the dotted key path, list indexes in brackets, then the message."""
    assert str(ConfigError(("server", "listen", 0), "bad")) == "server.listen[0]: bad"
    assert str(ConfigError((), "no such file")) == "no such file"


def test_config_unknown_top_level_key_names_path() -> None:
    """An unknown top-level key is refused, naming the key."""
    error = config_error({"servr": {}})
    assert error.path == ("servr",)
    assert str(error).startswith("servr: unknown key")


def test_config_unknown_nested_key_names_path() -> None:
    """An unknown key inside a section is refused, naming its full path."""
    error = config_error({"registry": {"max_manifest_size": 1}})
    assert error.path == ("registry", "max_manifest_size")
    assert str(error).startswith("registry.max_manifest_size: unknown key")


def test_config_non_string_key_rejected(workdir: Path) -> None:
    """A key that YAML reads as a boolean (unquoted no) is refused with the section's path."""
    with pytest.raises(ConfigError) as info:
        load_text(workdir, "server:\n  no: 1\n")
    assert info.value.path == ("server",)
    assert "boolean" in str(info.value)


def test_config_section_not_mapping_rejected() -> None:
    """A section given as a scalar or a list is refused."""
    assert config_error({"server": "localhost"}).path == ("server",)
    assert config_error({"logging": ["text"]}).path == ("logging",)


def test_config_top_level_not_mapping_rejected(workdir: Path) -> None:
    """A document that is a list rather than a mapping is refused."""
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_text(workdir, "- server\n")


def test_config_yaml_no_is_not_a_string(workdir: Path) -> None:
    """An unquoted no (YAML 1.1 boolean) where a string belongs is refused with a hint to quote it."""
    with pytest.raises(ConfigError) as info:
        load_text(workdir, "logging:\n  format: no\n")
    assert info.value.path == ("logging", "format")
    assert "boolean" in str(info.value)
    assert "quote" in str(info.value)


def test_config_yaml_date_is_not_a_string(workdir: Path) -> None:
    """An unquoted date where a string belongs is refused."""
    with pytest.raises(ConfigError) as info:
        load_text(workdir, "data_dir: 2024-01-01\n")
    assert info.value.path == ("data_dir",)
    assert "date" in str(info.value)


def test_config_yaml_octal_is_not_a_string(workdir: Path) -> None:
    """An unquoted 010 (YAML 1.1 octal for 8) where a string belongs is refused."""
    with pytest.raises(ConfigError) as info:
        load_text(workdir, "data_dir: 010\n")
    assert info.value.path == ("data_dir",)
    assert "integer" in str(info.value)


def test_config_bool_is_not_an_int(workdir: Path) -> None:
    """A boolean is refused where an integer or a number belongs."""
    with pytest.raises(ConfigError) as info:
        load_text(workdir, "registry:\n  max_manifest_bytes: yes\n")
    assert info.value.path == ("registry", "max_manifest_bytes")
    assert config_error({"registry": {"upload_expiry": True}}).path == ("registry", "upload_expiry")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("registry", "max_manifest_bytes", "4M"),
        ("registry", "max_manifest_bytes", 4.5),
        ("registry", "max_blob_bytes", "1"),
        ("registry", "upload_expiry", "1d"),
        ("registry", "delete_enabled", "true"),
        ("registry", "auto_mount", 1),
        ("server", "hostname", 5000),
        ("server", "listen", "tcp:5000"),
        ("server", "scheme", None),
        ("storage", "path", 1),
        ("database", "url", ["sqlite:x"]),
    ],
)
def test_config_wrong_type_rejected(section: str, key: str, value: object) -> None:
    """A value of the wrong type is refused, naming its key path."""
    assert config_error({section: {key: value}}).path == (section, key)


def test_config_listen_item_wrong_type_names_index() -> None:
    """A non-string in the listen list is refused, naming its index."""
    assert config_error({"server": {"listen": ["tcp:5000", 5001]}}).path == ("server", "listen", 1)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_manifest_bytes", 0),
        ("max_manifest_bytes", -1),
        ("max_blob_bytes", 0),
        ("max_chunk_bytes", -4096),
        ("upload_expiry", 0),
        ("upload_expiry", -1.5),
        ("upload_expiry", float("inf")),
        ("upload_expiry", float("nan")),
    ],
)
def test_config_out_of_range_rejected(key: str, value: float) -> None:
    """Sizes and the upload expiry must be positive (and finite)."""
    error = config_error({"registry": {key: value}})
    assert error.path == ("registry", key)
    assert "greater than 0" in str(error)


def test_config_registry_values_accepted() -> None:
    """Positive limits are kept, and an integer upload expiry becomes a float."""
    config = parse_config(
        {
            "registry": {
                "max_manifest_bytes": 1,
                "max_blob_bytes": 10 * 2**30,
                "max_chunk_bytes": 2**20,
                "upload_expiry": 3600,
                "delete_enabled": False,
                "auto_mount": False,
            }
        },
        source="<test>",
    )
    assert config.registry == RegistryConfig(
        max_manifest_bytes=1,
        max_blob_bytes=10 * 2**30,
        max_chunk_bytes=2**20,
        upload_expiry=3600.0,
        delete_enabled=False,
        auto_mount=False,
    )
    assert isinstance(config.registry.upload_expiry, float)


def test_config_bad_scheme_rejected() -> None:
    """A scheme other than http or https is refused, listing the choices."""
    error = config_error({"server": {"scheme": "ftp"}})
    assert error.path == ("server", "scheme")
    assert "http, https" in str(error)


@pytest.mark.parametrize(
    "hostname",
    [
        "",
        "http://registry.example.com",
        "registry.example.com/v2",
        "registry.example.com:",
        "registry.example.com:99999",
        "registry.example.com:0",
        "::1",
        "[not-ipv6]:5000",
        "user@registry.example.com",
        "registry example.com",
        "-registry.example.com",
        "registry_1:5000",
    ],
)
def test_config_bad_hostname_rejected(hostname: str) -> None:
    """A hostname that is not host[:port] is refused."""
    assert config_error({"server": {"hostname": hostname}}).path == ("server", "hostname")


@pytest.mark.parametrize(
    "hostname", ["localhost:5000", "registry.example.com", "10.0.0.1:443", "[::1]:5000", "[2001:db8::1]"]
)
def test_config_good_hostname_accepted(hostname: str) -> None:
    """DNS names, IPv4 addresses and bracketed IPv6 addresses, with or without a port, are accepted."""
    assert parse_config({"server": {"hostname": hostname}}, source="<test>").server.hostname == hostname


def test_server_config_base_url() -> None:
    """The base URL joins the scheme and the hostname."""
    server = ServerConfig(hostname="registry.example.com", scheme="https")
    assert server.base_url == "https://registry.example.com"


def test_logging_config_level_maps_to_twisted() -> None:
    """The configured level names a Twisted LogLevel."""
    assert LoggingConfig(level="warn").log_level is LogLevel.warn
    assert parse_config({"logging": {"level": "debug"}}, source="<test>").logging.log_level is LogLevel.debug


def test_config_bad_logging_rejected() -> None:
    """Unknown log formats and levels are refused."""
    assert config_error({"logging": {"format": "xml"}}).path == ("logging", "format")
    assert config_error({"logging": {"level": "warning"}}).path == ("logging", "level")


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp:5000:interface=127.0.0.1",
        "tcp:0",
        "tcp:port=8080:interface=0.0.0.0:backlog=100",
        r"tcp6:5000:interface=\:\:1",
        "unix:/run/quayd/quayd.sock",
        "unix:/run/quayd/quayd.sock:mode=660",
        "systemd:domain=INET6:index=0",
        "systemd:domain=UNIX:name=admin",
    ],
)
def test_config_endpoint_accepted(endpoint: str) -> None:
    """TCP, TCP6, UNIX and systemd endpoint strings are accepted (systemd without LISTEN_FDS)."""
    config = parse_config({"server": {"listen": [endpoint]}}, source="<test>")
    assert config.server.listen == (endpoint,)


def test_config_escaped_endpoint_in_single_quotes_loads(workdir: Path) -> None:
    """A single-quoted YAML endpoint keeps its backslash escapes."""
    config = load_text(workdir, "server:\n  listen:\n    - 'tcp6:5000:interface=\\:\\:'\n")
    assert config.server.listen == ("tcp6:5000:interface=\\:\\:",)


def test_config_ssl_endpoint_with_certificate_accepted(workdir: Path) -> None:
    """An ssl endpoint whose certificate and key files exist is accepted."""
    cert, key = write_certificate(workdir)
    endpoint = f"ssl:5443:privateKey={key}:certKey={cert}"
    assert parse_config({"server": {"listen": [endpoint]}}, source="<test>").server.listen == (endpoint,)


def test_config_ssl_endpoint_missing_certificate_rejected(workdir: Path) -> None:
    """An ssl endpoint naming a certificate file that does not exist is refused, naming the file."""
    _, key = write_certificate(workdir)
    message = listen_error(f"ssl:5443:privateKey={key}:certKey={workdir / 'missing.pem'}")
    assert "missing.pem" in message
    assert "No such file" in message


def test_config_ssl_endpoint_invalid_certificate_rejected(workdir: Path) -> None:
    """An ssl endpoint whose files are not PEM is refused."""
    junk = workdir / "junk.pem"
    junk.write_text("not a certificate\n")
    assert "cannot load the TLS certificate or private key" in listen_error(f"ssl:5443:privateKey={junk}")


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("garbage", "unsupported endpoint type 'garbage'"),
        ("http:5000", "unsupported endpoint type 'http'"),
        ("tcp:abc", "invalid literal"),
        ("tcp:70000", "between 0 and 65535"),
        ("tcp:-1", "between 0 and 65535"),
        ("tcp:5000:bogus=1", "unknown option 'bogus'"),
        ("tcp:5000:interface=::", "escape colons"),
        ("tcp:5000\\", "lone backslash"),
        ("unix:", "needs a socket path"),
        ("unix:/run/q.sock:mode=999", "invalid literal"),
        ("systemd:index=0", "domain="),
        ("systemd:domain=INET6", "exactly one of index= or name="),
        ("systemd:domain=INET6:index=0:name=x", "exactly one of index= or name="),
        ("systemd:domain=INET6:index=first", "non-negative integer"),
        ("systemd:domain=APPLETALK:index=0", "domain="),
        ("systemd:domain=INET:index=0:backlog=5", "unknown option 'backlog'"),
    ],
)
def test_config_bad_endpoint_rejected(endpoint: str, reason: str) -> None:
    """A malformed or unsupported endpoint string is refused, naming its index and the reason."""
    message = listen_error(endpoint)
    assert message.startswith(f"server.listen[1]: invalid endpoint {endpoint!r}")
    assert reason in message


def test_config_empty_listen_rejected() -> None:
    """The listen list must name at least one endpoint."""
    assert config_error({"server": {"listen": []}}).path == ("server", "listen")


def test_config_duplicate_listen_rejected() -> None:
    """The same endpoint listed twice is refused."""
    error = config_error({"server": {"listen": ["tcp:5000", "tcp:5000"]}})
    assert error.path == ("server", "listen", 1)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://quayd:secret@db/quayd", "must not contain a password"),
        ("postgresql:///quayd", "needs a host and a database"),
        ("mysql://db/quayd", "unsupported database URL scheme 'mysql'"),
        ("quayd.sqlite", "must be a database URL"),
        ("sqlite:", "needs a file path"),
        ("sqlite:///var/lib/quayd/quayd.sqlite", "not 'sqlite://'"),
        ("sqlite::memory:", "in-memory"),
        ("", "must not be empty"),
    ],
)
def test_config_bad_database_url_rejected(url: str, reason: str) -> None:
    """Database URLs other than sqlite:PATH are refused without echoing credentials."""
    error = config_error({"database": {"url": url}})
    assert error.path == ("database", "url")
    assert reason in str(error)
    assert "secret" not in str(error)


def test_config_missing_file_rejected(workdir: Path) -> None:
    """A config file that does not exist is reported with its name."""
    missing = workdir / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.path == ()
    assert str(info.value) == f"cannot read config file {missing}: No such file or directory"


def test_config_yaml_syntax_error_rejected(workdir: Path) -> None:
    """A YAML syntax error is reported with its line and column."""
    with pytest.raises(ConfigError) as info:
        load_text(workdir, 'server:\n  hostname: "localhost:5000\n')
    assert info.value.path == ()
    assert "is not valid YAML" in str(info.value)
    assert "line 3" in str(info.value)


def test_config_duplicate_yaml_key_rejected(workdir: Path) -> None:
    """A key repeated in one mapping is refused instead of the last one silently winning."""
    with pytest.raises(ConfigError, match=r"found duplicate key 'server' \(line 3, column 1\)"):
        load_text(workdir, "server:\n  scheme: 'https'\nserver:\n  scheme: 'http'\n")


def test_config_python_tag_rejected(workdir: Path) -> None:
    """YAML tags that construct Python objects are refused, as with yaml.safe_load."""
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_text(workdir, "data_dir: !!python/object/apply:os.getcwd []\n")


# Declared users, organizations and repositories.

HASH = "$2b$04$" + "a" * 53
HTPASSWD_HASH = "$2y$05$" + "b" * 53


def declared_document() -> dict[str, object]:
    """
    A document declaring every kind of object, as the example in etc/quayd.yaml does.
    """
    return {
        "users": [
            {
                "name": "alice",
                "email": "alice@example.com",
                "password_hash": HASH,
                "robots": [{"name": "ci", "description": "CI", "token_file": "/etc/quayd/ci.token"}],
            },
            {"name": "bob", "password_file": "/etc/quayd/bob.pw"},
        ],
        "organizations": [
            {
                "name": "acme",
                "email": None,
                "teams": [
                    {"name": "owners", "role": "admin", "description": "", "members": ["alice"]},
                    {"name": "devs", "role": "creator", "members": ["bob"]},
                ],
                "robots": [{"name": "deploy"}],
            }
        ],
        "repositories": [
            {
                "name": "acme/app",
                "visibility": "public",
                "permissions": [
                    {"user": "bob", "role": "read"},
                    {"team": "devs", "role": "write"},
                    {"robot": "acme+deploy", "role": "admin"},
                ],
                "tokens": [{"description": "ci pull", "role": "read", "token_file": None}],
            },
            {"name": "alice/tools"},
        ],
    }


def test_config_declared_objects_parsed() -> None:
    """The users, organizations and repositories sections become frozen dataclasses."""
    config = parse_config(declared_document(), source="<test>")
    assert config.users == (
        UserConfig(
            name="alice",
            email="alice@example.com",
            password_hash=HASH,
            robots=(RobotConfig(name="ci", description="CI", token_file=Path("/etc/quayd/ci.token")),),
        ),
        UserConfig(name="bob", password_file=Path("/etc/quayd/bob.pw")),
    )
    assert config.organizations == (
        OrganizationConfig(
            name="acme",
            teams=(
                TeamConfig(name="owners", role="admin", description="", members=("alice",)),
                TeamConfig(name="devs", role="creator", members=("bob",)),
            ),
            robots=(RobotConfig(name="deploy"),),
        ),
    )
    assert config.repositories == (
        RepositoryConfig(
            name="acme/app",
            visibility="public",
            permissions=(
                PermissionConfig(kind="user", subject="bob", role="read"),
                PermissionConfig(kind="team", subject="devs", role="write"),
                PermissionConfig(kind="robot", subject="acme+deploy", role="admin"),
            ),
            tokens=(RepositoryTokenConfig(description="ci pull", role="read"),),
        ),
        RepositoryConfig(name="alice/tools", visibility="private"),
    )
    assert config.declared == DeclaredObjects(
        users=config.users, organizations=config.organizations, repositories=config.repositories
    )
    assert config.repositories[0].namespace == "acme"


def test_config_declared_sections_default_to_empty() -> None:
    """Without the sections, or with them empty, nothing is declared."""
    assert parse_config({}, source="<test>").declared == DeclaredObjects()
    empty: dict[str, object] = {"users": None, "organizations": [], "repositories": None}
    assert parse_config(empty, source="<test>").declared == DeclaredObjects()


def test_config_declared_defaults() -> None:
    """Team roles default to member (admin for owners); visibility to private; optional text to null."""
    config = parse_config(
        {"organizations": [{"name": "acme", "teams": [{"name": "owners"}, {"name": "devs"}]}]},
        source="<test>",
    )
    owners, devs = config.organizations[0].teams
    assert (owners.role, devs.role) == ("admin", "member")
    assert devs.description is None and devs.members == ()
    assert config.organizations[0].email is None


def test_config_secret_files_resolved(workdir: Path) -> None:
    """Relative password_file and token_file paths resolve against the working directory."""
    config = parse_config(
        {
            "users": [
                {
                    "name": "bob",
                    "password_file": "secrets/bob.pw",
                    "robots": [{"name": "ci", "token_file": "ci"}],
                }
            ],
            "repositories": [
                {"name": "bob/app", "tokens": [{"description": "d", "role": "write", "token_file": "t"}]}
            ],
        },
        source="<test>",
    )
    assert config.users[0].password_file == workdir / "secrets" / "bob.pw"
    assert config.users[0].robots[0].token_file == workdir / "ci"
    assert config.repositories[0].tokens[0].token_file == workdir / "t"


def test_config_password_hash_not_in_repr() -> None:
    """A user's password hash is left out of its repr, so that it never reaches a log by accident."""
    assert HASH not in repr(parse_config(declared_document(), source="<test>"))


def test_config_htpasswd_hash_loads_unquoted(workdir: Path) -> None:
    """A $2y$ hash as htpasswd prints it loads from YAML, quoted or not."""
    config = load_text(
        workdir,
        f"users:\n  - name: alice\n    password_hash: {HTPASSWD_HASH}\n"
        f"  - name: bob\n    password_hash: '{HASH}'\n",
    )
    assert [user.password_hash for user in config.users] == [HTPASSWD_HASH, HASH]


def _edited(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """The declared document with one edit applied."""
    document: dict[str, Any] = declared_document()
    edit(document)
    return document


@pytest.mark.parametrize(
    ("edit", "key_path", "message"),
    [
        (lambda d: d.update(users={"name": "alice"}), "users", "expected a list"),
        (lambda d: d.update(users=["alice"]), "users[0]", "expected a mapping"),
        (lambda d: d["users"][0].pop("name"), "users[0].name", "is required"),
        (lambda d: d["users"][0].update(name="Alice"), "users[0].name", "lowercase"),
        (lambda d: d["users"][0].update(name="al/ice"), "users[0].name", "lowercase"),
        (lambda d: d["users"][0].update(name="a" * 256), "users[0].name", "at most 255"),
        (lambda d: d["users"][0].update(passwd="x"), "users[0].passwd", "unknown key"),
        (lambda d: d["users"][1].update(name="alice"), "users[1].name", "declared twice"),
        (lambda d: d["users"][0].update(password_file="/pw"), "users[0]", "not both"),
        (lambda d: d["users"][0].update(password_hash="s3cret"), "users[0].password_hash", "bcrypt hash"),
        (lambda d: d["users"][0].update(password_hash="$1$abc$def"), "users[0].password_hash", "bcrypt hash"),
        (lambda d: d["users"][0].update(password_hash=HASH[:-1]), "users[0].password_hash", "bcrypt hash"),
        (
            lambda d: d["users"][0].update(password_hash=f"alice:{HASH}"),
            "users[0].password_hash",
            "htpasswd line",
        ),
        (
            lambda d: d["users"][0].update(password_hash="$2b$03$" + "a" * 53),
            "users[0].password_hash",
            "cost",
        ),
        (lambda d: d["users"][0].update(password_hash=12), "users[0].password_hash", "expected a string"),
        (lambda d: d["users"][1].update(password_file=""), "users[1].password_file", "must not be empty"),
        (lambda d: d["users"][0].update(email="alice"), "users[0].email", "email address"),
        (lambda d: d["users"][0].update(robots={"name": "ci"}), "users[0].robots", "expected a list"),
        (
            lambda d: d["users"][0]["robots"][0].update(name="CI"),
            "users[0].robots[0].name",
            "lowercase letter",
        ),
        (
            lambda d: d["users"][0]["robots"][0].update(name="1ci"),
            "users[0].robots[0].name",
            "lowercase letter",
        ),
        (
            lambda d: d["users"][0]["robots"][0].update(name="c-i"),
            "users[0].robots[0].name",
            "lowercase letter",
        ),
        (lambda d: d["users"][0]["robots"][0].update(token="x"), "users[0].robots[0].token", "unknown key"),
        (
            lambda d: d["users"][0]["robots"].append({"name": "ci"}),
            "users[0].robots[1].name",
            "declared twice",
        ),
        (
            lambda d: d["organizations"][0].update(name="alice"),
            "organizations[0].name",
            "share one namespace",
        ),
        (lambda d: d["organizations"].append({"name": "acme"}), "organizations[1].name", "declared twice"),
        (lambda d: d["organizations"][0].update(owner="alice"), "organizations[0].owner", "unknown key"),
        (
            lambda d: d["organizations"][0]["teams"][1].update(role="owner"),
            "organizations[0].teams[1].role",
            "one of",
        ),
        (
            lambda d: d["organizations"][0]["teams"][0].update(role="member"),
            "organizations[0].teams[0].role",
            "admin",
        ),
        (
            lambda d: d["organizations"][0]["teams"][1].update(name="Devs"),
            "organizations[0].teams[1].name",
            "lowercase",
        ),
        (
            lambda d: d["organizations"][0]["teams"].append({"name": "devs"}),
            "organizations[0].teams[2].name",
            "twice",
        ),
        (
            lambda d: d["organizations"][0]["teams"][1].update(members="bob"),
            "organizations[0].teams[1].members",
            "list",
        ),
        (
            lambda d: d["organizations"][0]["teams"][1].update(members=["bob", "bob"]),
            "organizations[0].teams[1].members[1]",
            "listed twice",
        ),
        (
            lambda d: d["organizations"][0]["teams"][1].update(members=["Bob"]),
            "organizations[0].teams[1].members[0]",
            "not a valid user name",
        ),
        (
            lambda d: d["organizations"][0]["teams"][1].update(members=["acme"]),
            "organizations[0].teams[1].members[0]",
            "is an organization",
        ),
        (lambda d: d["repositories"][0].update(name="app"), "repositories[0].name", "namespace/name"),
        (lambda d: d["repositories"][0].update(name="acme/App"), "repositories[0].name", "lowercase"),
        (lambda d: d["repositories"][1].update(name="acme/app"), "repositories[1].name", "declared twice"),
        (lambda d: d["repositories"][0].update(visibility="hidden"), "repositories[0].visibility", "one of"),
        (lambda d: d["repositories"][0].update(tags=[]), "repositories[0].tags", "unknown key"),
        (
            lambda d: d["repositories"][0]["permissions"].append({"role": "read"}),
            "repositories[0].permissions[3]",
            "exactly one of user, team, robot",
        ),
        (
            lambda d: d["repositories"][0]["permissions"].append({"user": "x", "team": "y", "role": "read"}),
            "repositories[0].permissions[3]",
            "exactly one of",
        ),
        (
            lambda d: d["repositories"][0]["permissions"][0].pop("role"),
            "repositories[0].permissions[0].role",
            "is required",
        ),
        (
            lambda d: d["repositories"][0]["permissions"][0].update(role="owner"),
            "repositories[0].permissions[0].role",
            "one of read, write, admin",
        ),
        (
            lambda d: d["repositories"][0]["permissions"].append({"user": "bob", "role": "write"}),
            "repositories[0].permissions[3].user",
            "twice",
        ),
        (
            lambda d: d["repositories"][0]["permissions"][2].update(robot="deploy"),
            "repositories[0].permissions[2].robot",
            "namespace+name",
        ),
        (
            lambda d: d["repositories"][0]["permissions"][2].update(robot="alice+ci"),
            "repositories[0].permissions[2].robot",
            "another namespace",
        ),
        (
            lambda d: d["repositories"][0]["permissions"][0].update(user="acme"),
            "repositories[0].permissions[0].user",
            "is an organization",
        ),
        (
            lambda d: d["repositories"][1].update(permissions=[{"team": "devs", "role": "read"}]),
            "repositories[1].permissions[0].team",
            "only organizations have teams",
        ),
        (
            lambda d: d["repositories"][0]["permissions"][1].update(team="acme/devs"),
            "repositories[0].permissions[1].team",
            "not a valid team name",
        ),
        (
            lambda d: d["repositories"][0]["tokens"][0].pop("description"),
            "repositories[0].tokens[0].description",
            "is required",
        ),
        (
            lambda d: d["repositories"][0]["tokens"][0].update(description=""),
            "repositories[0].tokens[0].description",
            "must not be empty",
        ),
        (
            lambda d: d["repositories"][0]["tokens"][0].update(role="admin"),
            "repositories[0].tokens[0].role",
            "one of read, write",
        ),
        (
            lambda d: d["repositories"][0]["tokens"].append({"description": "ci pull", "role": "write"}),
            "repositories[0].tokens[1].description",
            "identifies the token",
        ),
        (
            lambda d: d["repositories"][0]["tokens"][0].update(token="abc"),
            "repositories[0].tokens[0].token",
            "unknown key",
        ),
    ],
)
def test_config_declared_invalid_rejected(
    edit: Callable[[dict[str, Any]], object], key_path: str, message: str
) -> None:
    """Every invalid declared value is refused, naming its key path."""
    error = config_error(_edited(edit))
    assert error.key_path == key_path
    assert str(error).startswith(f"{key_path}: ")
    assert message in error.message


def test_config_declared_error_never_quotes_password_hash() -> None:
    """An invalid password hash (perhaps a password pasted by mistake) is not repeated in the error."""
    error = config_error({"users": [{"name": "alice", "password_hash": "hunter2-secret"}]})
    assert "hunter2" not in str(error)


@pytest.mark.parametrize(
    ("text", "key_path", "kind"),
    [
        ("users:\n  - name: no\n", "users[0].name", "boolean"),
        ("organizations:\n  - name: 010\n", "organizations[0].name", "integer"),
        (
            "organizations:\n  - name: acme\n    teams:\n      - name: devs\n        members: [yes]\n",
            "organizations[0].teams[0].members[0]",
            "boolean",
        ),
        ("repositories:\n  - name: a/b\n    visibility: off\n", "repositories[0].visibility", "boolean"),
        (
            "repositories:\n  - name: a/b\n    tokens:\n      - {description: 2024-01-01, role: read}\n",
            "repositories[0].tokens[0].description",
            "date",
        ),
        ("users:\n  name: alice\n", "users", "a mapping"),
    ],
    ids=["no-name", "octal-name", "yes-member", "off-visibility", "date-description", "mapping-not-list"],
)
def test_config_declared_yaml_pitfalls(workdir: Path, text: str, key_path: str, kind: str) -> None:
    """Unquoted scalars that YAML turns into other types are refused with a hint."""
    with pytest.raises(ConfigError) as info:
        load_text(workdir, text)
    assert info.value.key_path == key_path
    assert kind in str(info.value)


def test_config_declared_references_to_undeclared_objects_accepted() -> None:
    """
    Names the configuration does not declare (a team member, a permission subject, a namespace)
    are left for the reconciler to check against the database.
    """
    config = parse_config(
        {
            "organizations": [{"name": "acme", "teams": [{"name": "devs", "members": ["carol"]}]}],
            "repositories": [
                {
                    "name": "acme/app",
                    "permissions": [
                        {"user": "carol", "role": "read"},
                        {"team": "ops", "role": "write"},
                        {"robot": "acme+bot", "role": "read"},
                    ],
                },
                {"name": "other/app", "permissions": [{"team": "ops", "role": "read"}]},
            ],
        },
        source="<test>",
    )
    assert len(config.repositories) == 2


def test_config_declared_dataclasses_validate() -> None:
    """The declared dataclasses check their values when built in code too."""
    with pytest.raises(ConfigError):
        UserConfig(name="Alice")
    with pytest.raises(ConfigError):
        UserConfig(name="alice", password_hash="plain")
    with pytest.raises(ConfigError):
        UserConfig(name="alice", password_hash=HASH, password_file=Path("/pw"))
    with pytest.raises(ConfigError):
        RobotConfig(name="Bot")
    with pytest.raises(ConfigError):
        TeamConfig(name="owners", role="member")
    with pytest.raises(ConfigError):
        RepositoryConfig(name="app")
    with pytest.raises(ConfigError):
        RepositoryTokenConfig(description="", role="read")


def test_config_example_declared_sections_load(workdir: Path) -> None:
    """The commented-out example of the declared sections in etc/quayd.yaml loads once uncommented."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# users:")
    uncommented = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines[start:]]
    config = load_text(workdir, "\n".join(uncommented))
    assert [user.name for user in config.users] == ["alice", "bob"]
    assert [organization.name for organization in config.organizations] == ["acme"]
    assert [team.name for team in config.organizations[0].teams] == ["owners", "devs"]
    assert [repository.name for repository in config.repositories] == ["acme/app"]
    assert len(config.repositories[0].permissions) == 3
