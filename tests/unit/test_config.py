"""
Tests for L{quayd.config}: loading, defaults, and every kind of validation error.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.logger import LogLevel

from quayd.config import (
    DEFAULT_LISTEN,
    AuthConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    LoggingConfig,
    RegistryConfig,
    ServerConfig,
    StorageConfig,
    load_config,
    parse_config,
)

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


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """
    Write a self-signed certificate and its private key as PEM files; return their paths.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


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
    """The annotated etc/quayd.yaml loads and spells out exactly the defaults."""
    config = load_config(EXAMPLE)
    assert config.source == str(EXAMPLE)
    assert config.server.listen == DEFAULT_LISTEN
    assert config == parse_config({}, source=str(EXAMPLE))


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
        ("postgresql://quayd:secret@db/quayd", "PostgreSQL is not supported yet"),
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
