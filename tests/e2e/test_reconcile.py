"""
Config-file-driven administration end to end: a real C{twistd quayd} applies the users and
repositories its configuration declares before it listens, and again on SIGHUP (what
C{systemctl reload quayd} sends); a broken edit is rejected while quayd keeps serving.

quayd logs JSON events to a file here, so that the tests can wait for the reconciler's events
(C{applied ...}, C{rejected ...}) instead of sleeping.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

import bcrypt
import pytest
import yaml

from tests.support.clients import HTTPResult, file_tail, free_port, http_request

pytestmark = pytest.mark.e2e

TWISTD: Final = Path(sys.executable).parent / "twistd"

#: Seconds allowed for quayd to start, to apply a reload and to exit.
_TIMEOUT: Final = 30.0

#: Variables that would change how the child behaves if they leaked from the test runner.
_CHILD_ENV_DROP: Final = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "QUAYD_LOG_FORMAT", "QUAYD_LOG_LEVEL")

Event = dict[str, object]


def _hash(password: str) -> str:
    """
    A bcrypt hash in the form C{htpasswd -nbB} prints (C{$2y$}), with a low cost.

    @param password: The password.
    @return: The hash.
    """
    return "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode("ascii")[4:]


class Daemon:
    """
    One C{twistd --nodaemon quayd} on a loopback port, logging JSON events to a file.

    @ivar directory: Its working directory, holding the configuration, data and logs.
    @ivar config_path: The configuration file, rewritten by L{write_config}.
    @ivar log_path: The JSON log file.
    @ivar url: The registry's base URL.
    """

    def __init__(self, directory: Path) -> None:
        """
        @param directory: An empty directory for this daemon.
        """
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = directory / "quayd.yaml"
        self.log_path = directory / "quayd.log"
        self.output_path = directory / "quayd.out"
        self._process: subprocess.Popen[bytes] | None = None

    def config(self, **declared: object) -> dict[str, object]:
        """
        A configuration serving on this daemon's port, with the given declared sections.

        @param declared: C{users}, C{organizations}, C{repositories}, or anything else.
        @return: The YAML document.
        """
        return {
            "data_dir": str(self.directory / "data"),
            "server": {
                "hostname": f"127.0.0.1:{self.port}",
                "listen": [f"tcp:{self.port}:interface=127.0.0.1"],
            },
            "logging": {"format": "json"},
            **declared,
        }

    def write_config(self, document: Mapping[str, object]) -> None:
        """
        Replace the configuration file.

        @param document: The YAML document.
        """
        self.config_path.write_text(yaml.safe_dump(dict(document), sort_keys=False))

    def start(self) -> None:
        """
        Start twistd and wait until it answers C{GET /v2/} (401: authentication is required).
        """
        assert TWISTD.exists(), f"{TWISTD} does not exist (is Twisted installed beside pytest?)"
        env = {key: value for key, value in os.environ.items() if key not in _CHILD_ENV_DROP}
        argv = [
            str(TWISTD),
            "--nodaemon",
            "--pidfile=",
            f"--logfile={self.log_path}",
            "quayd",
            "--config",
            str(self.config_path),
        ]
        with self.output_path.open("wb") as output:
            self._process = subprocess.Popen(
                argv,
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + _TIMEOUT
        while time.monotonic() < deadline:
            if not self.running:
                pytest.fail(f"quayd exited while starting:\n{self.diagnostics()}")
            try:
                status = http_request("GET", f"{self.url}/v2/", timeout=2.0).status
            except OSError:
                time.sleep(0.1)
                continue
            if status in (200, 401):
                return
            time.sleep(0.1)
        pytest.fail(f"quayd did not answer GET /v2/ within {_TIMEOUT} s:\n{self.diagnostics()}")

    @property
    def running(self) -> bool:
        """
        Whether the process has been started and has not exited.
        """
        return self._process is not None and self._process.poll() is None

    def stop(self) -> int | None:
        """
        SIGTERM the process and wait for it (SIGKILL if it lingers).

        @return: Its exit status, or C{None} if it was never started.
        """
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def events(self) -> list[Event]:
        """
        The JSON events logged so far (a line still being written is ignored).

        @return: The events, oldest first.
        """
        events: list[Event] = []
        if not self.log_path.exists():
            return events
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def count(self, template: str) -> int:
        """
        How many events were logged with a message template.

        @param template: The template's start, for example C{"applied {source}"}.
        @return: The count.
        """
        return sum(str(event.get("log_format", "")).startswith(template) for event in self.events())

    def reload(self, template: str) -> None:
        """
        Send SIGHUP and wait for one more event with the given template.

        @param template: The template's start, for example C{"applied {source}"}.
        """
        before = self.count(template)
        assert self._process is not None
        self._process.send_signal(signal.SIGHUP)
        self.wait_until(lambda: self.count(template) > before, f"an event {template!r} after SIGHUP")

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """
        Poll a condition until it holds.

        @param condition: The check.
        @param what: What is awaited, for the failure message.
        """
        deadline = time.monotonic() + _TIMEOUT
        while time.monotonic() < deadline:
            if condition():
                return
            if not self.running:
                pytest.fail(f"quayd exited while waiting for {what}:\n{self.diagnostics()}")
            time.sleep(0.1)
        pytest.fail(f"no {what} within {_TIMEOUT} s:\n{self.diagnostics()}")

    def token(self, username: str | None, password: str = "", scope: str | None = None) -> HTTPResult:
        """
        Ask the token endpoint for a token, as docker login does.

        @param username: The user name for Basic credentials; C{None} for none.
        @param password: The password or token.
        @param scope: An optional C{scope} parameter.
        @return: The response.
        """
        headers = {}
        if username is not None:
            basic = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {basic}"
        query = f"?scope={scope}" if scope else ""
        return http_request("GET", f"{self.url}/v2/auth{query}", headers=headers, timeout=_TIMEOUT)

    def diagnostics(self) -> str:
        """
        The tails of the log and of standard output, for failure messages.

        @return: Both tails.
        """
        return (
            f"--- {self.log_path} ---\n{file_tail(self.log_path)}\n"
            f"--- {self.output_path} ---\n{file_tail(self.output_path)}"
        )


def _granted(result: HTTPResult) -> list[object]:
    """
    The C{access} claim of the token in a token endpoint response (not verified: the test only
    reads what was granted).

    @param result: A 200 response of C{/v2/auth}.
    @return: The granted access entries.
    """
    token = json.loads(result.body)["token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    access = claims.get("access", [])
    assert isinstance(access, list)
    return access


@pytest.fixture
def quayd(tmp_path: Path) -> Iterator[Daemon]:
    """
    A quayd declaring the user alice (password C{alice-password}) and her public repository
    C{alice/app}, started and stopped around the test; it must not have logged a failure.
    """
    daemon = Daemon(tmp_path)
    daemon.write_config(daemon.config(**_alice()))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
    failures = [event for event in daemon.events() if "log_failure" in event]
    assert not failures, f"quayd logged failures:\n{daemon.diagnostics()}"


def _alice(*extra_users: Mapping[str, object]) -> dict[str, object]:
    """
    The declared sections of the fixture's configuration, with more users if given.

    @param extra_users: Further entries of C{users}.
    @return: The C{users} and C{repositories} sections.
    """
    return {
        "users": [{"name": "alice", "password_hash": _hash("alice-password")}, *extra_users],
        "repositories": [{"name": "alice/app", "visibility": "public"}],
    }


def test_reconcile_applies_config_before_listening(quayd: Daemon) -> None:
    """
    The declared user can log in and the declared public repository can be pulled anonymously
    as soon as quayd answers: the configuration was applied before the listeners started.
    """
    assert quayd.token("alice", "alice-password").status == 200
    assert quayd.token("alice", "wrong").status == 401
    anonymous = quayd.token(None, scope="repository:alice/app:pull")
    assert anonymous.status == 200
    assert _granted(anonymous) == [{"type": "repository", "name": "alice/app", "actions": ["pull"]}]
    formats = [event.get("log_format") for event in quayd.events()]
    applied = next(i for i, f in enumerate(formats) if str(f).startswith("applied {source}"))
    serving = formats.index("quayd serving {base_url} on {listen}")
    assert applied < serving
    assert "alice-password" not in quayd.log_path.read_text()


def test_reconcile_sighup_applies_edit(quayd: Daemon) -> None:
    """
    After an edit adding a user with a password file, SIGHUP applies it: the new user can
    authenticate at C{GET /v2/auth}; logrotate's reopening of the log file still works.
    """
    assert quayd.token("bob", "bob-password").status == 401
    password_file = quayd.directory / "bob.password"
    password_file.write_text("bob-password\n")
    quayd.write_config(quayd.config(**_alice({"name": "bob", "password_file": str(password_file)})))
    quayd.log_path.rename(quayd.directory / "quayd.log.1")
    quayd.reload("applied {source}")
    assert quayd.token("bob", "bob-password").status == 200
    assert quayd.token("alice", "alice-password").status == 200
    created = [e for e in quayd.events() if e.get("log_format") == "created {object} declared in {source}"]
    assert [e["object"] for e in created] == ["user bob"]
    assert "bob-password" not in quayd.log_path.read_text()


def test_reconcile_sighup_with_broken_config_keeps_running(quayd: Daemon) -> None:
    """
    A broken edit is rejected on SIGHUP with its key path logged; quayd keeps serving with the
    state it had, and nothing of the broken file is applied.
    """
    broken = quayd.config(**_alice({"name": "carol", "password_hash": "carol-password"}))
    quayd.write_config(broken)
    quayd.reload("rejected {source}")
    (rejected,) = [e for e in quayd.events() if str(e.get("log_format", "")).startswith("rejected {source}")]
    assert rejected["key_path"] == "users[1].password_hash"
    assert "carol-password" not in quayd.log_path.read_text()
    assert quayd.running
    assert http_request("GET", f"{quayd.url}/v2/", timeout=_TIMEOUT).status == 401
    assert quayd.token("alice", "alice-password").status == 200
    assert quayd.token("carol", "carol-password").status == 401
    quayd.config_path.write_text("users: [\n")
    quayd.reload("rejected {source}")
    assert quayd.running
    assert quayd.token("alice", "alice-password").status == 200


def test_reconcile_sighup_removes_managed_user(quayd: Daemon) -> None:
    """Removing the user (and her repository) from the configuration and reloading removes her."""
    quayd.write_config(quayd.config(users=[], repositories=[]))
    quayd.reload("applied {source}")
    assert quayd.token("alice", "alice-password").status == 401
    assert quayd.token(None, scope="repository:alice/app:pull").status == 200
    assert _granted(quayd.token(None, scope="repository:alice/app:pull")) == []
    removed = [
        e["object"]
        for e in quayd.events()
        if e.get("log_format") == "removed {object}: no longer declared in {source}"
    ]
    assert removed == ["repository alice/app", "user alice"]
