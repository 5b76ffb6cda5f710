"""
The C{twistd quayd} plugin as an operator (or systemd) runs it: the installed C{twistd} executable,
started from a scratch directory rather than the repository root, so that the plugin is found
through the installed distribution and not through the working directory on C{sys.path}.

Covers C{--help}, C{--check-config}, serving and shutting down on SIGTERM, JSON log files,
SIGHUP, startup failures, and adopting a listening socket the way C{systemd/quayd.socket} passes
it.

quayd enforces access control: C{GET /v2/} answers anonymous callers 401 with a C{Bearer}
challenge, which is how these tests tell that quayd is up; the serving test also creates a
superuser with C{quayd-admin set-password} and checks that its credentials get 200.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, closing, contextmanager, suppress
from pathlib import Path
from typing import Final

import pytest
import yaml

from tests.support.clients import HTTPResult, file_tail, free_port, http_request, run, skip_or_fail
from tests.support.identity import Login

pytestmark = pytest.mark.e2e

TWISTD: Final = Path(sys.executable).parent / "twistd"
QUAYD_ADMIN: Final = Path(sys.executable).parent / "quayd-admin"
SOCKET_UNIT: Final = Path(__file__).resolve().parents[2] / "systemd" / "quayd.socket"

#: Seconds allowed for quayd to answer C{GET /v2/} after it was started, and to exit after a signal.
_TIMEOUT: Final = 30.0

#: Variables that would change how the child behaves if they leaked from the test runner.
_CHILD_ENV_DROP: Final = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "QUAYD_LOG_FORMAT", "QUAYD_LOG_LEVEL")


def _child_env() -> dict[str, str]:
    """
    The environment for a C{twistd} child: this process's, less socket activation and log settings.

    @return: A fresh mapping.
    """
    return {key: value for key, value in os.environ.items() if key not in _CHILD_ENV_DROP}


def _twistd() -> str:
    """
    The C{twistd} console script installed beside this Python.

    @return: Its path.
    """
    assert TWISTD.exists(), f"{TWISTD} does not exist (is Twisted installed beside pytest?)"
    return str(TWISTD)


def _run_twistd(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """
    Run C{twistd} to completion with captured output.

    @param args: Arguments after C{twistd}.
    @param cwd: Working directory; never the repository root.
    @return: The completed process.
    """
    return subprocess.run(
        [_twistd(), *args],
        cwd=cwd,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _write_config(directory: Path, config: Mapping[str, object]) -> Path:
    """
    Write C{quayd.yaml} into a directory.

    @param directory: Where to write it.
    @param config: The YAML document.
    @return: The file's path.
    """
    path = directory / "quayd.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def _serving_config(port: int, **extra: object) -> dict[str, object]:
    """
    A configuration listening on one loopback port, with the data in the relative directory
    C{data} (so that it resolves against C{twistd}'s working directory, as under systemd).

    @param port: The TCP port.
    @param extra: Top-level sections to add or replace.
    @return: The YAML document.
    """
    config: dict[str, object] = {
        "data_dir": "data",
        "server": {
            "hostname": f"127.0.0.1:{port}",
            "listen": [f"tcp:{port}:interface=127.0.0.1"],
        },
    }
    config.update(extra)
    return config


class _Daemon:
    """
    A running C{twistd} whose standard output and error go to a file.

    @ivar process: The child process.
    @ivar output: The file holding its standard output and error.
    """

    def __init__(self, process: subprocess.Popen[bytes], output: Path) -> None:
        """
        @param process: The child process.
        @param output: The file holding its standard output and error.
        """
        self.process = process
        self.output = output

    def describe(self) -> str:
        """
        Explain the process's state for an assertion message.

        @return: Its exit status (if any) and the end of its output.
        """
        return f"exit status {self.process.poll()}; output:\n{file_tail(self.output)}"

    def get_v2(self, port: int, headers: Mapping[str, str] | None = None) -> HTTPResult:
        """
        Request the API version check.

        @param port: The loopback port quayd listens on.
        @param headers: Request headers (credentials, say); none by default.
        @return: The response.
        """
        return http_request("GET", f"http://127.0.0.1:{port}/v2/", headers=headers, timeout=_TIMEOUT)

    def wait_ready(self, port: int) -> HTTPResult:
        """
        Poll C{GET /v2/} (anonymously) until it answers as a serving quayd does:
        401 with a C{Bearer} challenge.

        @param port: The loopback port quayd listens on.
        @return: The first such response.
        @raise AssertionError: If the process exits or time runs out first.
        """
        deadline = time.monotonic() + _TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"quayd exited while starting: {self.describe()}")
            try:
                result = self.get_v2(port)
            except OSError:
                time.sleep(0.1)
                continue
            if result.status == 401 and result.headers.get("WWW-Authenticate", "").startswith("Bearer "):
                return result
        pytest.fail(
            f"quayd did not answer GET /v2/ with a 401 challenge within {_TIMEOUT} s: {self.describe()}"
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """
        Send a signal and wait for the process to exit.

        @param sig: The signal.
        @return: The exit status (negative for death by a signal, as in L{subprocess.Popen}).
        """
        self.process.send_signal(sig)
        return self.process.wait(timeout=_TIMEOUT)


@contextmanager
def _daemon(argv: Sequence[str], cwd: Path) -> Iterator[_Daemon]:
    """
    Start a long-running command and make sure it is gone afterwards.

    @param argv: The command; C{twistd -n ...} or a wrapper that execs it.
    @param cwd: Working directory, also holding the captured output C{twistd.out}.
    @return: A context manager yielding the running daemon.
    """
    output = cwd / "twistd.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield _Daemon(process, output)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=_TIMEOUT)


def _create_user(config: Path, cwd: Path, login: Login) -> None:
    """
    Create a user with C{quayd-admin --config CONFIG set-password NAME}, the password on
    standard input, as an operator does before the first start.

    @param config: The configuration file.
    @param cwd: Working directory (relative paths in the configuration resolve against it).
    @param login: The user's name and password.
    """
    assert QUAYD_ADMIN.exists(), f"{QUAYD_ADMIN} does not exist (is quayd installed beside pytest?)"
    run(
        [str(QUAYD_ADMIN), "--config", str(config), "set-password", login.username],
        input=login.password + "\n",
        cwd=cwd,
        timeout=60,
    )


def _foreground(config: Path, *twistd_options: str) -> list[str]:
    """
    The command line that runs quayd in the foreground, as C{systemd/quayd.service} does.

    @param config: The configuration file.
    @param twistd_options: More options for C{twistd} itself, such as C{--logfile=...}.
    @return: The argument vector.
    """
    return [_twistd(), "--nodaemon", "--pidfile=", *twistd_options, "quayd", "--config", str(config)]


def test_twistd_help_lists_quayd_plugin(tmp_path: Path) -> None:
    """C{twistd --help}, run outside the checkout, lists the quayd plugin among its commands."""
    result = _run_twistd(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+quayd\s+\S", result.stdout, re.MULTILINE), result.stdout


def test_twistd_check_config_accepts_valid_config(tmp_path: Path) -> None:
    """C{--check-config} exits 0 for a valid file and starts nothing: no data directory appears."""
    _write_config(tmp_path, _serving_config(free_port()))
    result = _run_twistd(["quayd", "--config", "quayd.yaml", "--check-config"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "quayd.yaml: configuration is valid" in result.stdout
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("config", "key_path"),
    [
        ({"server": {"listne": ["tcp:5000"]}}, "server.listne"),
        ({"server": {"listen": ["tcp:notaport"]}}, "server.listen[0]"),
        ({"server": {"listen": ["tcp:5000:interface=127.0.0.1", "carrier-pigeon:5000"]}}, "server.listen[1]"),
        ({"logging": {"format": "xml"}}, "logging.format"),
    ],
    ids=["unknown-key", "bad-port", "unknown-endpoint-type", "bad-log-format"],
)
def test_twistd_check_config_rejects_invalid_config(
    tmp_path: Path, config: dict[str, object], key_path: str
) -> None:
    """C{--check-config} exits non-zero for an invalid file and names the offending key path."""
    _write_config(tmp_path, config)
    result = _run_twistd(["quayd", "--config", "quayd.yaml", "--check-config"], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"{key_path}: " in output
    assert "configuration is valid" not in output


def test_twistd_quayd_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """
    C{twistd -n quayd} answers C{GET /v2/} (401 with the C{Bearer} challenge anonymously, 200
    with a user's credentials), and on SIGTERM shuts down cleanly, leaving a closed database
    under the relative data directory.

    twistd ends itself with the signal it stopped for, so the exit status is "killed by SIGTERM",
    not 0; systemd counts that as a clean stop.
    """
    port = free_port()
    config = _write_config(tmp_path, _serving_config(port, auth={"superusers": ["tester"]}))
    tester = Login(username="tester", password="correct horse battery staple")
    _create_user(config, tmp_path, tester)
    with _daemon(_foreground(config), tmp_path) as quayd:
        anonymous = quayd.wait_ready(port)
        assert anonymous.status == 401
        assert anonymous.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert anonymous.headers["WWW-Authenticate"] == (
            f'Bearer realm="http://127.0.0.1:{port}/v2/auth",service="127.0.0.1:{port}"'
        )
        assert json.loads(anonymous.body)["errors"][0]["code"] == "UNAUTHORIZED"
        wrong = quayd.get_v2(port, Login(username="tester", password="wrong").headers)
        assert wrong.status == 401
        response = quayd.get_v2(port, tester.headers)
        assert (response.status, json.loads(response.body)) == (200, {})
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert quayd.stop() == -signal.SIGTERM, quayd.describe()
    output = quayd.output.read_text()
    assert "Server Shut Down." in output
    assert "Traceback" not in output
    assert "Unhandled Error" not in output
    database = tmp_path / "data" / "quayd.sqlite"
    assert database.is_file()
    # A WAL file left behind would mean the database was not closed.
    assert not database.with_name("quayd.sqlite-wal").exists()
    with closing(sqlite3.connect(database)) as connection:
        (version,) = connection.execute("SELECT max(version) FROM schema_version").fetchone()
    assert version >= 1
    assert not (tmp_path / "twistd.pid").exists()


def test_twistd_quayd_json_log_file_has_one_object_per_line(tmp_path: Path) -> None:
    """With C{logging.format: json} and C{--logfile}, every line of the log file is a JSON object."""
    port = free_port()
    config = _write_config(tmp_path, _serving_config(port, logging={"format": "json"}))
    log = tmp_path / "quayd.log"
    with _daemon(_foreground(config, f"--logfile={log}"), tmp_path) as quayd:
        quayd.wait_ready(port)
        assert quayd.stop() == -signal.SIGTERM, quayd.describe()
    lines = log.read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    assert all(isinstance(event, dict) for event in events)
    formats = [event.get("log_format") for event in events]
    assert "quayd serving {base_url} on {listen}" in formats
    assert "Server Shut Down." in formats
    assert quayd.output.read_text() == "", "quayd wrote to standard output despite --logfile"


@pytest.mark.parametrize("log_to_file", [False, True], ids=["stdout", "logfile"])
def test_twistd_quayd_survives_sighup(tmp_path: Path, log_to_file: bool) -> None:
    """
    SIGHUP, which C{systemctl reload quayd} sends, leaves quayd running and serving; with
    C{--logfile}, quayd then writes to a new file of that name, as logrotate needs.
    """
    port = free_port()
    config = _write_config(tmp_path, _serving_config(port))
    log = tmp_path / "quayd.log"
    options = [f"--logfile={log}"] if log_to_file else []
    with _daemon(_foreground(config, *options), tmp_path) as quayd:
        quayd.wait_ready(port)
        if log_to_file:
            log.rename(tmp_path / "quayd.log.1")
        quayd.process.send_signal(signal.SIGHUP)
        try:
            response = quayd.get_v2(port)
        except OSError as e:
            with suppress(subprocess.TimeoutExpired):
                quayd.process.wait(timeout=5)
            pytest.fail(f"quayd stopped answering after SIGHUP ({e}): {quayd.describe()}")
        assert response.status == 401
        assert quayd.process.poll() is None, quayd.describe()
        assert quayd.stop() == -signal.SIGTERM, quayd.describe()
    if log_to_file:
        assert log.exists(), "quayd did not reopen its log file after SIGHUP"
        assert "Server Shut Down." in log.read_text()


@pytest.mark.parametrize(
    "cause",
    [
        "port-taken",
        "data-dir-unusable",
    ],
)
def test_twistd_quayd_start_failure_exits_nonzero(tmp_path: Path, cause: str) -> None:
    """When quayd cannot start (port taken, data directory unusable), twistd exits non-zero."""
    with ExitStack() as stack:
        port = free_port()
        config = _serving_config(port)
        if cause == "port-taken":
            taken = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            taken.bind(("127.0.0.1", port))
            taken.listen()
            expected = "Address already in use"
        else:
            (tmp_path / "not-a-directory").touch()
            config["data_dir"] = str(tmp_path / "not-a-directory" / "data")
            expected = "NotADirectoryError"
        config_path = _write_config(tmp_path, config)
        quayd = stack.enter_context(_daemon(_foreground(config_path), tmp_path))
        try:
            status = quayd.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"quayd is still running after failing to start: {quayd.describe()}")
    assert expected in quayd.output.read_text()
    assert status > 0, f"twistd exited with {status}: {quayd.describe()}"


def _socket_unit_setting(key: str) -> str:
    """
    Read one setting of the C{[Socket]} section of C{systemd/quayd.socket}.

    @param key: For example C{ListenStream}.
    @return: Its (single) value.
    """
    values: list[str] = re.findall(rf"^{key}=(.*)$", SOCKET_UNIT.read_text(), re.MULTILINE)
    assert len(values) == 1, f"{key}= is set {len(values)} times in {SOCKET_UNIT.name}"
    return values[0].strip()


def test_twistd_quayd_adopts_socket_from_systemd(tmp_path: Path) -> None:
    """
    quayd serves on a socket passed the way C{systemd/quayd.socket} passes it, configured with
    the C{systemd:} listen string that unit documents.

    C{systemd-socket-activate} stands in for systemd: it binds the C{ListenStream=} address (on a
    free port), sets C{LISTEN_FDS}, C{LISTEN_PID} and C{LISTEN_FDNAMES} (which systemd always
    sets, and without which Twisted ignores the descriptors) and execs C{twistd} on the first
    connection.
    """
    activate = Path("/usr/bin/systemd-socket-activate")
    if not activate.exists():
        skip_or_fail(f"{activate} is not installed (Debian package systemd)")
    documented = re.findall(r'"(systemd:[^"]+)"', SOCKET_UNIT.read_text())
    assert documented, f"{SOCKET_UNIT.name} shows no systemd: listen string"
    host, _, _ = _socket_unit_setting("ListenStream").rpartition(":")
    assert host == "127.0.0.1", "this test connects over IPv4 loopback"
    port = free_port()
    config = _serving_config(port)
    config["server"] = {"hostname": f"127.0.0.1:{port}", "listen": [documented[0]]}
    config_path = _write_config(tmp_path, config)
    argv = [
        str(activate),
        f"--listen={host}:{port}",
        f"--fdname={_socket_unit_setting('FileDescriptorName')}",
        *_foreground(config_path),
    ]
    with _daemon(argv, tmp_path) as quayd:
        # Connections are refused until systemd-socket-activate has bound the port. The first
        # one it accepts makes it exec twistd, and waits in the listen backlog meanwhile, as it
        # would under systemd.
        response = quayd.wait_ready(port)
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert response.headers["WWW-Authenticate"].startswith(
            f'Bearer realm="http://127.0.0.1:{port}/v2/auth"'
        )
        assert quayd.stop() == -signal.SIGTERM, quayd.describe()
    assert "Traceback" not in quayd.output.read_text()
