"""
Fixtures for the end-to-end tests: a quayd process per test (with a superuser,
since quayd enforces access control), one private C{dockerd} per session, and
isolated skopeo and podman helpers (each with credentials of its own).

When a test fails, the tails of the logs of every quayd it started are added
to its report as a section, so the failure explains itself.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.support.clients import (
    DockerDaemon,
    Podman,
    QuaydProcess,
    Skopeo,
    require_root,
    require_tool,
)

_QUAYDS = pytest.StashKey[list[QuaydProcess]]()


@pytest.fixture
def quayd_process(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[QuaydProcess]:
    """
    A quayd on a free loopback port, with its data in C{tmp_path}, prepared but
    not started, so that a test can seed its database first
    (L{QuaydProcess.seed}). Its superuser C{tester} is created on the first
    start. It is always stopped in teardown.
    """
    base = tmp_path / "quayd"
    base.mkdir()
    server = QuaydProcess(base)
    request.node.stash.setdefault(_QUAYDS, []).append(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def quayd_server(quayd_process: QuaydProcess) -> QuaydProcess:
    """
    A running quayd (see L{quayd_process}); clients log in as its superuser,
    L{QuaydProcess.superuser}.

    A test may L{QuaydProcess.kill} and L{QuaydProcess.start} it.
    """
    quayd_process.start()
    return quayd_process


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """
    Attach the quayd logs to the report of a failed test.

    @param item: The test item.
    @param call: The phase that just ran.
    @return: The report, with one extra section per quayd the test started.
    """
    report = yield
    if report.failed:
        for server in item.stash.get(_QUAYDS, []):
            report.sections.append((f"quayd {server.hostport} logs ({call.when})", server.diagnostics()))
    return report


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerDaemon]:
    """
    A private Docker engine for the whole session (vfs storage, no iptables or bridge).

    127.0.0.0/8 registries are plain HTTP to it without configuration.
    """
    require_root("dockerd")
    daemon = DockerDaemon(require_tool("dockerd"), require_tool("docker"))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    """
    skopeo, with a scratch directory of its own.
    """
    return Skopeo(require_tool("skopeo"), tmp_path_factory.mktemp("skopeo"))


@pytest.fixture
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """
    podman as root with private vfs storage; its images are removed in teardown.
    """
    require_root("podman")
    helper = Podman(require_tool("podman"), tmp_path_factory.mktemp("podman"))
    try:
        yield helper
    finally:
        helper.cleanup()
