"""
Tests for the systemd files in C{systemd/}: C{systemd-analyze verify} accepts the units without a
single warning, the service runs C{twistd} in the foreground, and the socket unit documents a
C{systemd:} listen string that quayd's configuration accepts.

C{systemd-analyze verify} exits 0 even for a misspelt directive or an unparsable value (it only
warns and ignores the line), so these tests treat every line it prints about quayd's units as a
failure. A missing C{systemd-analyze} skips the tests, except under C{CI=true}, where it fails.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pytest

from quayd.config import ConfigError, parse_config
from tests.support.clients import skip_or_fail

SYSTEMD_DIR: Final = Path(__file__).resolve().parents[2] / "systemd"
SERVICE: Final = SYSTEMD_DIR / "quayd.service"
SOCKET: Final = SYSTEMD_DIR / "quayd.socket"
SYSUSERS: Final = SYSTEMD_DIR / "quayd.sysusers"

#: The documented install location in C{ExecStart=}, replaced by the real C{twistd} for C{verify}.
DOCUMENTED_TWISTD: Final = "/opt/quayd/bin/twistd"

#: Highest C{systemd-analyze security} exposure accepted (0 is fully locked down, 10 is unsandboxed).
MAX_EXPOSURE: Final = 2.0

_SYSTEMD_LISTEN: Final = re.compile(r'"(systemd:[^"]+)"')

Directive = tuple[str, str, str]
"""
One assignment in a unit file: section, key and value.
"""


def _tool(name: str) -> str:
    """
    Find a systemd tool, or skip (fail under CI) when it is not installed.

    @param name: For example C{systemd-analyze}.
    @return: Its absolute path.
    """
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/bin", "/bin"]))
    if path is None:
        skip_or_fail(f"{name} is not installed (Debian package systemd)")
    return path


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """
    Run a systemd tool with plain, uncoloured output.

    @param argv: The tool and its arguments.
    @return: The completed process, with captured text output; its status is not checked.
    """
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""},
        check=False,
    )


def _parse_unit(text: str) -> list[Directive]:
    """
    Read the assignments of a unit file in order, keeping repeated keys.

    @param text: The unit file's content; it has no line continuations.
    @return: Every C{Key=value} line with the section it is in.
    """
    section = ""
    directives: list[Directive] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, separator, value = line.partition("=")
        assert separator, f"not a Key=value line: {raw!r}"
        directives.append((section, key.strip(), value.strip()))
    return directives


def _values(path: Path, section: str, key: str) -> list[str]:
    """
    Every value of a key in one section of a unit file.

    @param path: The unit file.
    @param section: For example C{Service}.
    @param key: For example C{ExecStart}.
    @return: The values in file order; empty if the key is absent.
    """
    return [value for s, k, value in _parse_unit(path.read_text()) if (s, k) == (section, key)]


def _single(path: Path, section: str, key: str) -> str:
    """
    The value of a key that must be set exactly once.

    @param path: The unit file.
    @param section: The section.
    @param key: The key.
    @return: Its value.
    """
    values = _values(path, section, key)
    assert len(values) == 1, f"{path.name}: [{section}] {key}= is set {len(values)} times: {values}"
    return values[0]


def _exec_start_argv() -> list[str]:
    """
    The command line of the service's C{ExecStart=}.

    @return: Its words, split as a shell would (the units use no specifiers that differ).
    """
    return shlex.split(_single(SERVICE, "Service", "ExecStart"))


def _installable_units(tmp_path: Path, service_text: str | None = None) -> list[Path]:
    """
    Copy the units into a directory of their own, with C{ExecStart=} pointing at the C{twistd}
    installed beside this Python, because C{verify} fails on a command that does not exist.

    @param tmp_path: An empty directory.
    @param service_text: The service unit to use instead of the one in C{systemd/}.
    @return: The paths of the service and socket copies.
    """
    twistd = Path(sys.executable).parent / "twistd"
    assert twistd.exists(), f"{twistd} does not exist (is Twisted installed beside pytest?)"
    text = SERVICE.read_text() if service_text is None else service_text
    assert f"ExecStart={DOCUMENTED_TWISTD} " in text
    service = tmp_path / SERVICE.name
    service.write_text(text.replace(f"ExecStart={DOCUMENTED_TWISTD} ", f"ExecStart={twistd} "))
    socket = tmp_path / SOCKET.name
    shutil.copyfile(SOCKET, socket)
    return [service, socket]


def _verify_problems(units: Sequence[Path]) -> list[str]:
    """
    Run C{systemd-analyze verify} on units and collect what it says about them.

    Lines about other units (the targets quayd's units refer to, which come from the host) are
    left out, so that an odd host unit cannot fail these tests.

    @param units: Unit files in one directory.
    @return: The lines naming one of the units, plus a note if the exit status is non-zero.
    """
    analyze = _tool("systemd-analyze")
    result = _run([analyze, "verify", "--man=no", "--generators=no", *map(str, units)])
    names = {unit.name for unit in units}
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if any(name in line for name in names) or str(units[0].parent) in line
    ]
    if result.returncode != 0:
        problems.append(f"exit status {result.returncode}: {result.stderr.strip()}")
    return problems


def test_systemd_units_verify_cleanly(tmp_path: Path) -> None:
    """C{systemd-analyze verify} reports nothing about the service and socket units."""
    assert _verify_problems(_installable_units(tmp_path)) == []


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("ProtectHome=yes", "ProtectHom=yes"),
        ("ProtectHome=yes", "ProtectHome=maybe"),
        ("[Service]", "[Servce]"),
    ],
    ids=["misspelt-key", "bad-value", "misspelt-section"],
)
def test_systemd_units_verify_reports_mistakes(tmp_path: Path, good: str, bad: str) -> None:
    """The verify check fails for a misspelt directive or section and for an invalid value."""
    text = SERVICE.read_text()
    assert text.count(good) == 1
    problems = _verify_problems(_installable_units(tmp_path, text.replace(good, bad)))
    assert problems, f"systemd-analyze verify said nothing about {bad!r}"


def test_systemd_service_runs_twistd_in_foreground() -> None:
    """C{ExecStart=} runs C{twistd --nodaemon --pidfile= quayd --config /etc/quayd/quayd.yaml}."""
    argv = _exec_start_argv()
    assert Path(argv[0]).is_absolute()
    assert Path(argv[0]).name == "twistd"
    assert "quayd" in argv
    twistd_options = argv[1 : argv.index("quayd")]
    assert "--nodaemon" in twistd_options or "-n" in twistd_options
    # systemd tracks the main PID itself; a pid file would only go stale.
    assert "--pidfile=" in twistd_options
    assert argv[argv.index("quayd") + 1 :] == ["--config", "/etc/quayd/quayd.yaml"]
    # twistd does not call sd_notify(), so Type=notify would time out.
    assert _single(SERVICE, "Service", "Type") in {"simple", "exec"}


def test_systemd_service_reload_sends_hup() -> None:
    """C{ExecReload=} sends SIGHUP to the main process."""
    argv = shlex.split(_single(SERVICE, "Service", "ExecReload"))
    assert Path(argv[0]).name == "kill"
    assert argv[1:] == ["-HUP", "$MAINPID"]


def test_systemd_service_state_directory_is_working_directory() -> None:
    """The service runs as quayd in the C{/var/lib/quayd} that C{StateDirectory=} creates."""
    assert _single(SERVICE, "Service", "StateDirectory") == "quayd"
    assert _single(SERVICE, "Service", "WorkingDirectory") == "/var/lib/quayd"
    assert _single(SERVICE, "Service", "User") == "quayd"
    assert _single(SERVICE, "Service", "Group") == "quayd"
    assert _single(SERVICE, "Service", "Restart") == "on-failure"


def test_systemd_service_exposure_is_low(tmp_path: Path) -> None:
    """C{systemd-analyze security} rates the service's sandbox at most L{MAX_EXPOSURE}."""
    analyze = _tool("systemd-analyze")
    service, _ = _installable_units(tmp_path)
    threshold = f"--threshold={MAX_EXPOSURE * 10:.0f}"  # in tenths
    result = _run([analyze, "security", "--offline=yes", "--man=no", threshold, str(service)])
    overall = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert overall is not None, result.stdout + result.stderr
    assert float(overall[1]) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_systemd_socket_documents_valid_listen_string() -> None:
    """The C{systemd:} listen string shown in the socket unit is accepted by quayd's config."""
    documented = _SYSTEMD_LISTEN.findall(SOCKET.read_text())
    assert documented, "quayd.socket shows no systemd: listen string"
    for description in documented:
        try:
            parse_config({"server": {"listen": [description]}}, source="quayd.socket")
        except ConfigError as e:
            pytest.fail(f"{description!r} from quayd.socket is rejected: {e}")


def test_systemd_socket_family_matches_listen_string() -> None:
    """The first listen string shown names the address family of C{ListenStream=}."""
    listen = _single(SOCKET, "Socket", "ListenStream")
    expected = "INET" if re.fullmatch(r"\d+\.\d+\.\d+\.\d+:\d+", listen) else "INET6"
    first = _SYSTEMD_LISTEN.findall(SOCKET.read_text())[0]
    assert f"domain={expected}:" in first


def test_systemd_sysusers_creates_service_user(tmp_path: Path) -> None:
    """C{systemd-sysusers} accepts the sysusers file and would create the user the service runs as."""
    sysusers = _tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    result = _run([sysusers, f"--root={tmp_path}", "--dry-run", str(SYSUSERS)])
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    user = _single(SERVICE, "Service", "User")
    assert f"Creating user '{user}'" in output
    assert f"Creating group '{_single(SERVICE, 'Service', 'Group')}'" in output
    assert not (tmp_path / "etc" / "passwd").exists(), "--dry-run wrote to the root"
