"""
A throwaway PostgreSQL cluster for tests, made from the installed server binaries.

C{initdb} refuses to run as root, so when the tests run as root the cluster
belongs to the C{postgres} user. Without the binaries the tests that need the
cluster skip with the reason, except under C{CI=true}, where they fail.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest

_names = itertools.count()


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def _binaries() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresCluster:
    """
    A running throwaway cluster on a private loopback port.

    @ivar port: Its TCP port on 127.0.0.1.
    """

    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self._bindir = bindir
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0

    def _command(self, *argv: str) -> list[str]:
        if self._as_postgres:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def start(self) -> None:
        """initdb (first time) and start the server; wait until it accepts connections."""
        data = self.root / "data"
        if not data.exists():
            if self._as_postgres:
                shutil.chown(self.root, "postgres")
            subprocess.run(
                self._command(
                    str(self._bindir / "initdb"), "-D", str(data), "-U", "quayd", "--auth=trust", "-E", "UTF8"
                ),
                check=True,
                capture_output=True,
            )
        with open(self.root / "server.log", "ab") as log:
            self._process = subprocess.Popen(
                self._command(
                    str(self._bindir / "postgres"),
                    "-D",
                    str(data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-F",
                    "-c",
                    "max_connections=300",
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg2.connect(self.dsn("postgres")).close()
                return
            except psycopg2.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "PostgreSQL did not start: "
                        + (self.root / "server.log").read_text(errors="replace")[-2000:]
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (fast shutdown)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same port and data."""
        self.stop()
        self.start()

    def dsn(self, database: str) -> str:
        """A libpq connection string for C{database}."""
        return f"host=127.0.0.1 port={self.port} user=quayd dbname={database}"

    def new_database(self) -> str:
        """Create an empty database; returns its DSN."""
        name = f"quayd_test_{os.getpid()}_{next(_names)}"
        connection = psycopg2.connect(self.dsn("postgres"))
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.dsn(name)


@contextmanager
def throwaway_cluster() -> Iterator[PostgresCluster]:
    """Run a cluster for the duration of the block (skips or fails without binaries)."""
    bindir = _binaries()
    if bindir is None:
        _skip_or_fail("PostgreSQL server binaries are not installed (Debian package postgresql)")
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="quayd-pg-"))
    cluster = PostgresCluster(root, bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
