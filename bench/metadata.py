"""
Manifest GET benchmark: requests per second of quayd against a trivial Klein route.

One run starts a throwaway PostgreSQL cluster and, for SQLite and for PostgreSQL, one and then
two C{twistd quayd} processes on loopback ports, sharing one database, one blob directory and
one signing key (two processes behind one public host name, as behind a load balancer). It
pushes one small image (config blob, layer blob, manifest tagged C{latest}) with Basic
credentials, fetches a bearer token for C{repository:<name>:pull} once per measurement and
drives C{GET /v2/<name>/manifests/latest} (by tag) and C{GET /v2/<name>/manifests/sha256:...}
(by digest) with wrk in a separate process: 2 threads, 50 keep-alive connections, 10 s,
C{--latency}. With two processes each wrk thread (and so half of the connections) loads one
of them.

Each quayd measurement is paired with one, taken just before it, of the ceiling: a tiny Klein
app (this script with C{--serve-ceiling}, one or two processes) answering
C{GET /v2/x/manifests/<ref>} with the same manifest bytes and the same headers, without
authentication or a database. The table shows requests per second, wrk's p50 and p99 latency,
the ratio to the paired ceiling and where the CPU went. Each deployment and route is measured
in three such pairs (C{--pairs}); the target is the median of their ratios at least 0.5x, for
manifest GET by tag and by digest on both backends. An extra row shows the same
GET with Basic credentials on every request (SQLite, one process), for comparison only.

Every process the script starts is stopped, and the temporary directory removed, on exit,
on Ctrl-C, SIGTERM, SIGHUP and errors. See C{bench/README.md}.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import http.client
import io
import json
import math
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

if __package__ in (None, ""):  # run as a file: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import (
    CLOCK_TICKS,
    IDLE_THRESHOLD,
    BenchError,
    Interrupted,
    children_cpu,
    cleanup_on_signals,
    cpu_times,
    free_port,
    idle_fraction,
    self_cpu,
    verdict,
    wait_for_idle,
)

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTCP

#: Repository the benchmark pushes to.
REPOSITORY = "bench/metadata"
#: The superuser that pushes and fetches bearer tokens.
USER = "bench"
#: A second superuser, used only by the Basic-credentials row, so that quayd has never checked
#: its password before that row's warm-up.
BASIC_USER = "basic"
TAG = "latest"
#: Repository name in the ceiling app's URLs.
CEILING_REPOSITORY = "x"
#: quayd must reach this fraction of the ceiling's requests per second.
TARGET = 0.5
#: wrk threads; with two processes, thread i loads process i.
WRK_THREADS = 2
#: Seconds to wait for a server to answer after it was started.
STARTUP_TIMEOUT = 60.0
#: wrk's per-request timeout for the Basic-credentials row: its first requests wait for bcrypt.
BASIC_TIMEOUT = "30s"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
#: The C{Accept} header docker sends for manifests; quayd checks it on every GET.
ACCEPT = ", ".join(
    (
        OCI_MANIFEST,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    )
)
#: Response headers quayd and the ceiling must both send with the same values.
COMPARED_HEADERS = (
    "content-type",
    "content-length",
    "docker-content-digest",
    "etag",
    "docker-distribution-api-version",
)

BY_TAG = "by tag"
BY_DIGEST = "by digest"
ROUTES = (BY_TAG, BY_DIGEST)
SQLITE = "sqlite"
POSTGRESQL = "postgresql"
BACKENDS = (SQLITE, POSTGRESQL)


# Machine state


def _stat_cpu(path: str) -> float:
    """User plus system seconds from a C{stat} file of C{/proc} (0 once the process is gone)."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is "state" (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_cpu(pid: int) -> tuple[float, float]:
    """
    CPU seconds used so far by a process.

    @return: C{(all threads, main thread)}; in twistd the main thread is the reactor thread.
    """
    return _stat_cpu(f"/proc/{pid}/stat"), _stat_cpu(f"/proc/{pid}/task/{pid}/stat")


# Processes


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """
    A complete HTTP response.

    @ivar headers: Header values by lower-cased name (the last one wins).
    """

    status: int
    headers: dict[str, str]
    body: bytes


def http_request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> Response:
    """Send one request to C{127.0.0.1:port} on a new connection and read the whole response."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return Response(
            status=response.status,
            headers={name.lower(): value for name, value in response.getheaders()},
            body=data,
        )
    finally:
        connection.close()


class Server:
    """
    A server process started by the benchmark, stopped by its pid only.

    @ivar process: The running process.
    @ivar port: The loopback port it listens on (0 for a database server).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        log: Path,
        cwd: Path,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.port = port
        self.log = log
        self._stop_signal = stop_signal
        self._log_file: IO[bytes] = open(log, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops the server
                user=user,
                group=user,
                extra_groups=[] if user is not None else None,
            )
        except OSError as e:
            self._log_file.close()
            raise BenchError(f"cannot start {name} ({argv[0]}): {e}") from None

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's output, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_running(self) -> None:
        """
        @raise BenchError: If the process has exited.
        """
        if self.process.poll() is not None:
            raise BenchError(f"{self.name} exited with status {self.process.returncode}:\n{self.log_tail()}")

    def wait_ready(self, path: str, statuses: tuple[int, ...] = (200,)) -> None:
        """
        Poll C{GET path} until it answers with one of C{statuses}.

        @raise BenchError: If the process exits or does not answer in time.
        """
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            self.check_running()
            try:
                if http_request(self.port, "GET", path).status in statuses:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchError(
            f"{self.name} did not answer GET {path} within {STARTUP_TIMEOUT} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Signal the process (SIGKILL after 30 s), wait for it and close its log."""
        if self.process.poll() is None:
            self.process.send_signal(self._stop_signal)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


def stop_all(servers: list[Server]) -> None:
    """Stop the servers, last started first, and forget them."""
    while servers:
        servers.pop().stop()


# PostgreSQL


def postgres_bindir(configured: str | None) -> Path:
    """
    The directory of C{initdb} and C{postgres}: C{configured}, else the newest
    C{/usr/lib/postgresql/*/bin}, else C{PATH}.

    @raise BenchError: If there is none.
    """
    candidates = [Path(configured)] if configured else sorted(Path("/usr/lib/postgresql").glob("*/bin"))[::-1]
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    found = shutil.which("initdb")
    if found is not None and not configured:
        return Path(found).parent
    raise BenchError("PostgreSQL server binaries not found (Debian package postgresql); see --pg-bindir")


def start_postgres(root: Path, bindir: Path, started: list[Server]) -> tuple[Server, str]:
    """
    Create a throwaway cluster in C{root} and start it on a free loopback port.

    C{initdb} refuses to run as root, so when the benchmark runs as root the cluster
    belongs to the C{postgres} user (C{root} and its parent are opened up for it). The
    superuser C{quayd} is trusted on loopback and owns the database C{quayd}.

    @param started: The server is appended as soon as its process exists, for cleanup.
    @return: The server (stopped with SIGINT, PostgreSQL's fast shutdown) and quayd's
        database URL.
    """
    user = "postgres" if os.geteuid() == 0 else None
    root.mkdir()
    if user is not None:
        root.parent.chmod(0o711)
        shutil.chown(root, user, user)
    data = root / "data"
    initdb = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "quayd", "--auth=trust", "-E", "UTF8"],
        cwd=root,
        user=user,
        group=user,
        extra_groups=[] if user is not None else None,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )
    if initdb.returncode != 0:
        raise BenchError(f"initdb failed: {initdb.stderr.strip()[-1000:]}")
    port = free_port()
    argv = [
        str(bindir / "postgres"),
        *("-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(root)),
        *("-c", "max_connections=100"),
    ]
    server = Server("postgres", argv, 0, root / "server.log", root, user=user, stop_signal=signal.SIGINT)
    started.append(server)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        server.check_running()
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "quayd"],
            check=False,
            timeout=30,
        )
        if ready.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"PostgreSQL did not start:\n{server.log_tail()}")
        time.sleep(0.2)
    created = subprocess.run(
        [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "quayd", "quayd"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if created.returncode != 0:
        raise BenchError(f"createdb failed: {created.stderr.strip()[-1000:]}")
    return server, f"postgresql://quayd@127.0.0.1:{port}/quayd"


# quayd


class Deployment:
    """
    One or two quayd processes on one database, one data directory (blob store and keys)
    and one public host name (the first process's address), so that a token issued by one
    process is valid on the other, as behind a load balancer.

    @ivar processes: The running quayd processes, in start order.
    @ivar passwords: The superusers' passwords, by name (set by L{create_users}).
    """

    def __init__(self, root: Path, backend: str, database_url: str | None, token_ttl: int | None) -> None:
        self.root = root
        self.backend = backend
        self._database_url = database_url
        self._token_ttl = token_ttl
        self.passwords: dict[str, str] = {}
        self._data_dir = root / "data"
        self._public_port = free_port()
        self.processes: list[Server] = []
        root.mkdir()

    @property
    def hostname(self) -> str:
        """The public C{host:port} of every process (the first one's address)."""
        return f"127.0.0.1:{self._public_port}"

    @property
    def ports(self) -> list[int]:
        """The ports of the running processes."""
        return [server.port for server in self.processes]

    def _write_config(self, index: int, port: int) -> Path:
        config = self.root / f"quayd-{index}.yaml"
        database = f'database:\n  url: "{self._database_url}"\n' if self._database_url else ""
        ttl = f"  token_ttl: {self._token_ttl}\n" if self._token_ttl is not None else ""
        config.write_text(
            f'data_dir: "{self._data_dir}"\n'
            f"{database}"
            "server:\n"
            f'  hostname: "{self.hostname}"\n'
            '  scheme: "http"\n'
            "  listen:\n"
            f'    - "tcp:{port}:interface=127.0.0.1"\n'
            "auth:\n"
            f"  superusers: [{USER}, {BASIC_USER}]\n"
            f"{ttl}"
            "logging:\n"
            '  format: "text"\n'
            '  level: "warn"\n',
            encoding="utf-8",
        )
        return config

    def create_users(self) -> None:
        """
        Create the superusers L{USER} and L{BASIC_USER} with random passwords, with C{quayd-admin
        set-password} (password on stdin), before any process starts.

        @raise BenchError: If the command is missing or fails.
        """
        config = self._write_config(0, self._public_port)
        admin = Path(sys.executable).parent / "quayd-admin"
        if not admin.exists():
            raise BenchError(f"{admin} does not exist (is quayd installed in this virtualenv?)")
        for user in (USER, BASIC_USER):
            password = secrets.token_urlsafe(24)
            completed = subprocess.run(
                [str(admin), "--config", str(config), "set-password", user],
                input=password + "\n",
                capture_output=True,
                text=True,
                cwd=self.root,
                timeout=STARTUP_TIMEOUT,
                check=False,
            )
            if completed.returncode != 0:
                raise BenchError(f"quayd-admin set-password failed: {completed.stderr.strip()[-500:]}")
            self.passwords[user] = password

    def authorization(self, user: str) -> str:
        """The C{Authorization} value with C{user}'s Basic credentials."""
        return basic_header(user, self.passwords[user])

    def start_process(self, started: list[Server]) -> Server:
        """
        Start one more C{twistd quayd} (the first on the public port) and wait for C{GET /v2/}.

        @param started: The server is appended as soon as its process exists, for cleanup
            (as it is to L{processes}).
        """
        index = len(self.processes)
        port = self._public_port if index == 0 else free_port()
        config = self._write_config(index, port)
        twistd = Path(sys.executable).parent / "twistd"
        argv = [str(twistd), "--nodaemon", "--pidfile=", "quayd", "--config", str(config)]
        server = Server(
            f"quayd ({self.backend}, process {index + 1})",
            argv,
            port,
            self.root / f"quayd-{index}.log",
            self.root,
        )
        started.append(server)
        self.processes.append(server)
        server.wait_ready("/v2/", statuses=(401,))
        return server


def basic_header(user: str, password: str) -> str:
    """The value of an C{Authorization} header carrying Basic credentials."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def fetch_token(port: int, authorization: str, repository: str) -> str:
    """
    Fetch a bearer token for C{repository:<repository>:pull} as docker does: C{GET /v2/}, then
    the realm of its C{Bearer} challenge with Basic credentials.

    @param port: Where to send C{GET /v2/} (the realm's own address is used for the token).
    @return: The token.
    @raise BenchError: If there is no challenge or no token.
    """
    probe = http_request(port, "GET", "/v2/")
    challenge = probe.headers.get("www-authenticate", "")
    if probe.status != 401 or not challenge.lower().startswith("bearer "):
        raise BenchError(f"GET /v2/ answered {probe.status} with challenge {challenge!r}")
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = urlsplit(params.get("realm", ""))
    query = urlencode({"service": params.get("service", ""), "scope": f"repository:{repository}:pull"})
    response = http_request(
        realm.port or 80, "GET", f"{realm.path}?{query}", headers={"Authorization": authorization}
    )
    if response.status != 200:
        raise BenchError(f"token request answered {response.status}: {response.body[:300]!r}")
    document = json.loads(response.body)
    token = document.get("token") or document.get("access_token")
    if not isinstance(token, str):
        raise BenchError("the token response has no token")
    return token


# The image


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """
    A small OCI image: one gzipped layer, a config and the manifest naming both.

    @ivar blobs: C{(digest, bytes)} of the config and the layer.
    @ivar manifest: The manifest's exact bytes.
    @ivar digest: The manifest's digest.
    """

    blobs: tuple[tuple[str, bytes], ...]
    manifest: bytes
    digest: str


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_image() -> Image:
    """Build the image in memory, reproducibly (fixed timestamps, no gzip name or mtime)."""
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        content = b"quayd metadata benchmark\n"
        info = tarfile.TarInfo("etc/bench.txt")
        info.size, info.mtime, info.mode = len(content), 1704067200, 0o644
        tar.addfile(info, io.BytesIO(content))
    layer_tar = tar_buffer.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "created": "2024-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [_sha256(layer_tar)]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "bench/metadata.py"}],
        },
        separators=(",", ":"),
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": _sha256(layer), "size": len(layer)}],
            "annotations": {"org.opencontainers.image.title": "quayd metadata benchmark"},
        },
        indent=3,  # as docker and buildkit write them: the bytes, not a re-serialisation, are served
    ).encode()
    return Image(
        blobs=((_sha256(config), config), (_sha256(layer), layer)),
        manifest=manifest,
        digest=_sha256(manifest),
    )


def push_image(port: int, authorization: str, image: Image) -> None:
    """
    Push the image with Basic credentials: each blob as one monolithic C{POST ?digest=}, then
    the manifest with C{PUT} under L{TAG}.

    @raise BenchError: If quayd refuses a step.
    """
    for digest, data in image.blobs:
        response = http_request(
            port,
            "POST",
            f"/v2/{REPOSITORY}/blobs/uploads/?{urlencode({'digest': digest})}",
            headers={"Authorization": authorization, "Content-Type": "application/octet-stream"},
            body=data,
        )
        if response.status != 201:
            raise BenchError(f"blob upload answered {response.status}: {response.body[:300]!r}")
    response = http_request(
        port,
        "PUT",
        f"/v2/{REPOSITORY}/manifests/{TAG}",
        headers={"Authorization": authorization, "Content-Type": OCI_MANIFEST},
        body=image.manifest,
    )
    if response.status != 201 or response.headers.get("docker-content-digest") != image.digest:
        raise BenchError(f"manifest PUT answered {response.status}: {response.body[:300]!r}")


def check_manifest(port: int, path: str, authorization: str | None, image: Image) -> dict[str, str]:
    """
    GET a manifest once and check it is the pushed one.

    @return: The values of L{COMPARED_HEADERS}.
    @raise BenchError: If the status, bytes or digest differ.
    """
    headers = {"Accept": ACCEPT}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = http_request(port, "GET", path, headers=headers)
    if response.status != 200 or response.body != image.manifest:
        raise BenchError(f"GET {path} on port {port} answered {response.status}: {response.body[:300]!r}")
    if response.headers.get("docker-content-digest") != image.digest:
        raise BenchError(f"GET {path} on port {port} has the wrong Docker-Content-Digest")
    return {name: response.headers.get(name, "") for name in COMPARED_HEADERS}


# The ceiling


def serve_ceiling(port: int, manifest_file: Path) -> None:
    """
    Serve C{GET /v2/<name>/manifests/<reference>} with a fixed manifest until SIGTERM.

    A plain Klein route on a stock C{twisted.web} site with the headers quayd sends
    (C{Content-Type}, C{Content-Length}, C{Docker-Content-Digest}, C{ETag},
    C{Docker-Distribution-API-Version}), without authentication, database or access log: the
    most a Twisted and Klein process can do for this response.
    """
    from klein import Klein
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.task import react
    from twisted.web.iweb import IRequest
    from twisted.web.server import Site

    body = manifest_file.read_bytes()
    digest = _sha256(body).encode("ascii")
    media_type = json.loads(body)["mediaType"].encode("ascii")
    app = Klein()

    @app.route("/v2/<path:name>/manifests/<reference>", methods=["GET", "HEAD"])
    def manifest(request: IRequest, name: str, reference: str) -> bytes:
        headers = request.responseHeaders
        headers.setRawHeaders(b"Docker-Distribution-API-Version", [b"registry/2.0"])
        headers.setRawHeaders(b"Content-Type", [media_type])
        headers.setRawHeaders(b"Content-Length", [str(len(body)).encode("ascii")])
        headers.setRawHeaders(b"Docker-Content-Digest", [digest])
        headers.setRawHeaders(b"ETag", [b'"' + digest + b'"'])
        return b"" if request.method == b"HEAD" else body

    class QuietSite(Site):
        """A stock site without its access log (stock sites log every request)."""

        def log(self, request: object) -> None:
            """Log nothing."""

    def main(reactor: IReactorTCP) -> Deferred[None]:
        endpoint = TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
        forever: Deferred[None] = Deferred()
        listening = endpoint.listen(QuietSite(app.resource()))  # type: ignore[no-untyped-call]  # Site.__init__ is unannotated
        listening.addErrback(forever.errback)
        return forever

    react(main)


def start_ceiling(workdir: Path, manifest_file: Path, index: int, started: list[Server]) -> Server:
    """
    Start one ceiling process (this script with C{--serve-ceiling}) on a free port.

    @param started: The server is appended as soon as its process exists, for cleanup.
    """
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-ceiling", str(port), str(manifest_file)]
    server = Server(f"ceiling {index + 1}", argv, port, workdir / f"ceiling-{index}.log", workdir)
    started.append(server)
    server.wait_ready(f"/v2/{CEILING_REPOSITORY}/manifests/{TAG}")
    return server


# wrk


@dataclass(frozen=True, slots=True, kw_only=True)
class WrkResult:
    """
    What wrk reported.

    @ivar rps: Requests per second (wrk's C{Requests/sec}).
    @ivar requests: Completed requests.
    @ivar p50_ms: Median latency in milliseconds.
    @ivar p99_ms: 99th percentile latency in milliseconds.
    @ivar non_2xx: Responses with a status outside 2xx and 3xx.
    @ivar socket_errors: C{connect}, C{read}, C{write} and C{timeout} counts.
    """

    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: dict[str, int]


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(output: str) -> WrkResult:
    """
    Parse wrk's report (with C{--latency}).

    @raise BenchError: If a figure is missing.
    """
    percentiles = {
        int(p): float(v) * _UNITS_MS[u]
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    }
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    requests = re.search(r"^\s+(\d+) requests in ", output, re.MULTILINE)
    if rps is None or requests is None or 50 not in percentiles or 99 not in percentiles:
        raise BenchError(f"cannot parse wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        rps=float(rps[1]),
        requests=int(requests[1]),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=dict(
            zip(("connect", "read", "write", "timeout"), (int(n) for n in sockets.groups()), strict=True)
        )
        if sockets
        else {},
    )


def _lua_string(text: str) -> str:
    """A Lua string literal for an ASCII text (JSON's escapes are valid Lua for ASCII)."""
    if not text.isascii():
        raise BenchError(f"{text!r} is not ASCII")
    return json.dumps(text)


def write_wrk_script(path: Path, ports: Sequence[int], header_file: Path | None) -> None:
    """
    Write the wrk Lua script: it points wrk thread i at C{ports[i % len(ports)]} and, when
    C{header_file} is given, sends the C{Authorization} value read from that file (so that no
    credential appears in a command line). Every request also carries docker's C{Accept}.
    """
    lines = [
        "-- generated by bench/metadata.py",
        f"local ports = {{{', '.join(str(p) for p in ports)}}}",
        f"wrk.headers[{_lua_string('Accept')}] = {_lua_string(ACCEPT)}",
    ]
    if header_file is not None:
        lines += [
            f"local f = assert(io.open({_lua_string(str(header_file))}, 'r'))",
            "wrk.headers['Authorization'] = f:read('*l')",
            "f:close()",
        ]
    lines += [
        "local started = 0",
        "function setup(thread)",
        "  local port = ports[(started % #ports) + 1]",
        "  started = started + 1",
        "  thread.addr = wrk.lookup('127.0.0.1', tostring(port))[1]",
        "end",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def run_wrk(
    ports: Sequence[int],
    path: str,
    script: Path,
    duration: float,
    connections: int,
    timeout: str | None = None,
) -> WrkResult:
    """
    Run C{wrk -t2 -cN -dS --latency} against C{path}, spreading the threads over C{ports}.

    @raise BenchError: If wrk fails or its output cannot be parsed.
    """
    seconds = max(1, math.ceil(duration))
    argv = [
        "wrk",
        *(f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)),
        *(("--timeout", timeout) if timeout else ()),
        f"http://127.0.0.1:{ports[0]}{path}",
    ]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if completed.returncode != 0:
        raise BenchError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()[-500:]}")
    return parse_wrk(completed.stdout)


# Measurements


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """
    CPU use during one measured wrk run, in cores (CPU seconds over wall seconds).

    @ivar server: The measured server processes, all threads.
    @ivar per_request_us: The servers' CPU time per completed request, in microseconds: less
        sensitive than requests per second to other programs competing for the CPUs.
    @ivar reactor: The busiest server main (reactor) thread; 1.0 means it was saturated.
    @ivar wrk: The load generator.
    @ivar other: Everything else on the machine (PostgreSQL, other programs).
    """

    server: float
    per_request_us: float
    reactor: float
    wrk: float
    other: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """
    One measured wrk run.

    @ivar server: C{quayd} or C{ceiling}.
    @ivar ratio: quayd's requests per second over the paired ceiling's; C{None} for the ceiling.
    """

    backend: str
    processes: int
    route: str
    server: str
    result: WrkResult
    usage: Usage
    ratio: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    """
    One wrk load: what to request from which servers.

    @ivar header_file: File holding the C{Authorization} value, or C{None}.
    @ivar timeout: wrk's C{--timeout}, or C{None} for its default (2 s).
    """

    servers: tuple[Server, ...]
    path: str
    header_file: Path | None
    timeout: str | None = None


def _servers_cpu(servers: Sequence[Server]) -> float:
    return sum(process_cpu(server.pid)[0] for server in servers)


def wait_quiet(servers: Sequence[Server], max_wait: float = 60.0) -> float:
    """
    Wait until the servers are idle (below 0.05 cores over a quarter second): work queued by
    a run that wrk has ended (a thread pool's backlog) must not run into the next one.

    @return: Seconds waited.
    """
    start = time.monotonic()
    before = _servers_cpu(servers)
    while time.monotonic() - start < max_wait:
        time.sleep(0.25)
        after = _servers_cpu(servers)
        if after - before < 0.05 * 0.25:
            break
        before = after
    return time.monotonic() - start


def measure(
    load: Load, script: Path, duration: float, warmup: float, connections: int
) -> tuple[WrkResult, Usage]:
    """
    Warm the servers up with an unmeasured run, then run wrk once and measure CPU use.

    @return: wrk's result and the CPU use during the measured run.
    @raise BenchError: If wrk fails or a server dies.
    """
    ports = [server.port for server in load.servers]
    write_wrk_script(script, ports, load.header_file)
    if warmup > 0:
        run_wrk(ports, load.path, script, warmup, connections, load.timeout)
        drained = wait_quiet(load.servers)
        if drained > 2:
            print(f"  (after the warm-up the servers kept working for {drained:.0f} s)", flush=True)
    before = [process_cpu(server.pid) for server in load.servers]
    children0, self0, busy0 = children_cpu(), self_cpu(), cpu_times()[0]
    start = time.perf_counter()
    result = run_wrk(ports, load.path, script, duration, connections, load.timeout)
    wall = time.perf_counter() - start
    busy1 = cpu_times()[0]
    after = [process_cpu(server.pid) for server in load.servers]
    for server in load.servers:
        server.check_running()
    server_cpu = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    wrk_cpu = children_cpu() - children0
    other = (busy1 - busy0) / CLOCK_TICKS - server_cpu - wrk_cpu - (self_cpu() - self0)
    drained = wait_quiet(load.servers)
    if drained > 2:
        print(f"  (the servers kept working for {drained:.0f} s after wrk stopped)", flush=True)
    return result, Usage(
        server=server_cpu / wall,
        per_request_us=server_cpu / max(result.requests, 1) * 1e6,
        reactor=max(a[1] - b[1] for a, b in zip(after, before, strict=True)) / wall,
        wrk=wrk_cpu / wall,
        other=max(other, 0.0) / wall,
    )


# Reporting


def errors(result: WrkResult) -> str:
    """wrk's non-2xx/3xx responses and socket errors, or an empty string when there were none."""
    counts = {"non-2xx": result.non_2xx, **result.socket_errors}
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v)


def print_row(m: Measurement) -> None:
    """Print one table row."""
    ratio = f"{m.ratio:.2f}x" if m.ratio is not None else "-"
    print(
        f"{m.backend:<11} {m.processes:>5}  {m.route:<17} {m.server:<8}"
        f" {m.result.rps:>8.0f} {m.result.p50_ms:>8.2f} {m.result.p99_ms:>8.2f} {ratio:>6}"
        f" {m.usage.server:>7.2f} {m.usage.per_request_us:>7.0f} {m.usage.reactor:>7.2f}"
        f" {m.usage.wrk:>7.2f} {m.usage.other:>6.2f}"
        f"  {errors(m.result) or '-'}",
        flush=True,
    )


def print_header() -> None:
    """Print the table header."""
    header = (
        f"{'backend':<11} {'procs':>5}  {'route':<17} {'server':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'ratio':>6} {'srv CPU':>7} {'us/req':>7} {'reactor':>7} {'wrk CPU':>7} {'other':>6}  errors"
    )
    print(header)
    print("-" * (len(header) + 14), flush=True)


def print_verdicts(measurements: list[Measurement]) -> bool:
    """
    Print, for each quayd bearer deployment and route, the median of its pairs' ratios
    against the target; a deployment and route whose runs had non-2xx responses or socket
    errors fails whatever its ratio, since errors can be fast.

    @return: Whether every one met it.
    """
    groups: dict[tuple[str, int, str], list[Measurement]] = {}
    for m in measurements:
        if m.server == "quayd" and m.ratio is not None and m.route in ROUTES:
            groups.setdefault((m.backend, m.processes, m.route), []).append(m)
    checks: list[bool] = []
    print()
    for (backend, processes, route), runs in groups.items():
        ratios = [m.ratio for m in runs if m.ratio is not None]
        middle = statistics.median(ratios)
        failed = "; ".join(e for e in (errors(m.result) for m in runs) if e)
        ok = middle >= TARGET and not failed
        checks.append(ok)
        label = f"{backend}, {processes} process{'es' if processes > 1 else ''}, {route}"
        each = f" (median of {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""
        note = f"   ({failed})" if failed else ""
        print(f"{label:<34} {middle:.2f}x ceiling{each}   (target >= {TARGET}x)   {verdict(ok)}{note}")
    passed = bool(checks) and all(checks)
    print(f"\noverall: {verdict(passed)}")
    return passed


# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per measured wrk run (default 10)"
    )
    parser.add_argument(
        "--connections", type=int, default=50, help="concurrent keep-alive connections (default 50)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of unmeasured load before each run (default 2)"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="before each pair of runs, wait up to this long for the machine to be idle (default 20)",
    )
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help=f"comma-separated subset of {','.join(BACKENDS)}"
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="ceiling/quayd pairs per deployment and route; the verdict takes their median ratio (default 3)",
    )
    parser.add_argument("--no-basic", action="store_true", help="skip the Basic-credentials row")
    parser.add_argument("--pg-bindir", default=None, help="directory of initdb and postgres")
    parser.add_argument("--tmpdir", type=Path, default=None, help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (for debugging)")
    parser.add_argument("--serve-ceiling", nargs=2, metavar=("PORT", "MANIFEST"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_ceiling is None:
        if args.duration < 1 or args.warmup < 0:
            parser.error("--duration must be at least 1 and --warmup at least 0")
        if args.pairs < 1:
            parser.error("--pairs must be at least 1")
        if args.connections < WRK_THREADS * 2:
            parser.error(f"--connections must be at least {WRK_THREADS * 2}")
        backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
        if not backends or not set(backends) <= set(BACKENDS):
            parser.error(f"--backends must name some of {', '.join(BACKENDS)}")
        args.backends = backends
    return args


class Bench:
    """
    The measurements of one run, with the shared parts: options, the image, the ceiling
    processes and the wrk script and header files.
    """

    def __init__(self, args: argparse.Namespace, workdir: Path, image: Image, ceilings: list[Server]) -> None:
        self._args = args
        self._workdir = workdir
        self._image = image
        self._ceilings = ceilings
        self._script = workdir / "wrk.lua"
        self._header_file = workdir / "authorization"
        self.measurements: list[Measurement] = []

    def write_header(self, value: str) -> Path:
        """Store an C{Authorization} value (mode 0600) for the wrk script; returns the file."""
        self._header_file.write_text(value + "\n", encoding="ascii")
        self._header_file.chmod(0o600)
        return self._header_file

    def _record(self, m: Measurement) -> None:
        self.measurements.append(m)
        ratio = f", {m.ratio:.2f}x ceiling" if m.ratio is not None else ""
        failed = errors(m.result)
        print(
            f"  {m.backend}, {m.processes} process(es), {m.route}, {m.server}: {m.result.rps:.0f} req/s,"
            f" p50 {m.result.p50_ms:.2f} ms, p99 {m.result.p99_ms:.2f} ms{ratio}"
            + (f" -- {failed}" if failed else ""),
            flush=True,
        )

    def _run(self, load: Load) -> tuple[WrkResult, Usage]:
        """Warm up, then measure one load with the run's duration and connections."""
        return measure(load, self._script, self._args.duration, self._args.warmup, self._args.connections)

    def pair(self, deployment: Deployment, route: str, authorization: str) -> None:
        """
        Measure the ceiling with as many processes as C{deployment} has, then quayd, on one route.

        @param authorization: Basic credentials, to fetch a fresh bearer token for the run.
        """
        processes = len(deployment.processes)
        reference = TAG if route == BY_TAG else self._image.digest
        wait_for_idle(self._args.wait_idle, f"{deployment.backend}, {processes} process(es), {route}")
        ceiling = Load(
            servers=tuple(self._ceilings[:processes]),
            path=f"/v2/{CEILING_REPOSITORY}/manifests/{reference}",
            header_file=None,
        )
        token = fetch_token(deployment.ports[0], authorization, REPOSITORY)
        header_file = self.write_header(f"Bearer {token}")
        result, usage = self._run(ceiling)
        ceiling_rps = result.rps
        self._record(
            Measurement(
                backend=deployment.backend,
                processes=processes,
                route=route,
                server="ceiling",
                result=result,
                usage=usage,
            )
        )
        quayd = Load(
            servers=tuple(deployment.processes),
            path=f"/v2/{REPOSITORY}/manifests/{reference}",
            header_file=header_file,
        )
        result, usage = self._run(quayd)
        self._record(
            Measurement(
                backend=deployment.backend,
                processes=processes,
                route=route,
                server="quayd",
                result=result,
                usage=usage,
                ratio=result.rps / ceiling_rps,
            )
        )

    def basic(self, deployment: Deployment) -> None:
        """
        Measure GET by digest with Basic credentials on every request, for comparison only; the
        ratio is against the last ceiling measured for the same process count and route.

        quayd remembers a successful password check for 30 s. The credentials are those of
        L{BASIC_USER}, which quayd has not checked before; one request per process first makes
        each remember them (one bcrypt check each), so that the warm-up and the measured run,
        shorter than 30 s together, see the steady state: a database lookup of the password
        hash and a keyed hash per request, instead of an ES256 check. (Were the first requests
        to come from all connections at once, each would run bcrypt.)
        """
        processes = len(deployment.processes)
        for port in deployment.ports:
            check_manifest(
                port,
                f"/v2/{REPOSITORY}/manifests/{self._image.digest}",
                deployment.authorization(BASIC_USER),
                self._image,
            )
        load = Load(
            servers=tuple(deployment.processes),
            path=f"/v2/{REPOSITORY}/manifests/{self._image.digest}",
            header_file=self.write_header(deployment.authorization(BASIC_USER)),
            timeout=BASIC_TIMEOUT,
        )
        result, usage = self._run(load)
        ceilings = [
            m.result.rps
            for m in self.measurements
            if m.server == "ceiling" and m.processes == processes and m.route == BY_DIGEST
        ]
        self._record(
            Measurement(
                backend=deployment.backend,
                processes=processes,
                route="by digest (Basic)",
                server="quayd",
                result=result,
                usage=usage,
                ratio=result.rps / ceilings[-1] if ceilings else None,
            )
        )

    def backend(self, backend: str, database_url: str | None, started: list[Server]) -> None:
        """
        Measure one backend: start a process, push, verify, measure both routes; start the
        second process, verify and measure both routes again; then stop both.

        @param started: Servers are appended as soon as their processes exist, for cleanup,
            and removed again once stopped.
        """
        args = self._args
        # A bearer token must outlive its warm-up and measured run.
        needed = math.ceil(args.duration + args.warmup) + 120
        deployment = Deployment(
            self._workdir / backend, backend, database_url, needed if needed > 300 else None
        )
        deployment.create_users()
        authorization = deployment.authorization(USER)
        try:
            first = deployment.start_process(started)
            push_image(first.port, authorization, self._image)
            for processes in (1, 2):
                if processes == 2:
                    deployment.start_process(started)
                print(
                    f"{backend}: quayd pid(s) {', '.join(str(s.pid) for s in deployment.processes)}"
                    f" on port(s) {', '.join(str(p) for p in deployment.ports)}",
                    flush=True,
                )
                self._verify(deployment, authorization)
                for route in ROUTES:
                    for _ in range(args.pairs):
                        self.pair(deployment, route, authorization)
                if processes == 1 and backend == SQLITE and not args.no_basic:
                    self.basic(deployment)
        finally:
            for server in reversed(deployment.processes):
                server.stop()
                started.remove(server)

    def _verify(self, deployment: Deployment, authorization: str) -> None:
        """Check that every process serves the pushed manifest with the ceiling's headers."""
        token = fetch_token(deployment.ports[0], authorization, REPOSITORY)
        reference_headers = check_manifest(
            self._ceilings[0].port, f"/v2/{CEILING_REPOSITORY}/manifests/{TAG}", None, self._image
        )
        for port in deployment.ports:
            for reference in (TAG, self._image.digest):
                headers = check_manifest(
                    port, f"/v2/{REPOSITORY}/manifests/{reference}", f"Bearer {token}", self._image
                )
                if headers != reference_headers:
                    raise BenchError(f"quayd sends {headers}, the ceiling {reference_headers}")


def run(args: argparse.Namespace, workdir: Path, servers: list[Server]) -> bool:
    """
    The whole benchmark inside C{workdir}; started servers are appended to C{servers}.

    @return: Whether every target was met.
    """
    print(
        f"quayd metadata benchmark: manifest GET, wrk -t{WRK_THREADS} -c{args.connections}"
        f" -d{max(1, math.ceil(args.duration))}s --latency (after {args.warmup:g} s warm-up),"
        f" {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        flush=True,
    )
    one, five, fifteen = os.getloadavg()
    idle = idle_fraction()
    print(f"machine: load average {one:.2f} {five:.2f} {fifteen:.2f}, {idle:.0%} idle over 1 s", flush=True)
    if idle < IDLE_THRESHOLD or one > 0.5 * (os.cpu_count() or 1):
        print("WARNING: the machine is not idle; results will be noisy", flush=True)
    if shutil.which("wrk") is None:
        raise BenchError("wrk is required (Debian package wrk)")

    image = build_image()
    manifest_file = workdir / "manifest.json"
    manifest_file.write_bytes(image.manifest)
    print(
        f"image: manifest {image.digest} ({len(image.manifest)} bytes), {len(image.blobs)} blobs", flush=True
    )
    ceilings = [start_ceiling(workdir, manifest_file, index, servers) for index in range(2)]
    print(f"ceiling: Klein pids {', '.join(str(s.pid) for s in ceilings)}", flush=True)

    database_url = None
    if POSTGRESQL in args.backends:
        postgres, database_url = start_postgres(
            workdir / "postgres", postgres_bindir(args.pg_bindir), servers
        )
        print(f"postgresql: pid {postgres.pid}, {database_url}", flush=True)

    bench = Bench(args, workdir, image, ceilings)
    for backend in args.backends:
        bench.backend(backend, database_url if backend == POSTGRESQL else None, servers)
    print()
    print_header()
    for m in bench.measurements:
        print_row(m)
    print(
        "\nreq/s, p50, p99: wrk; ratio: quayd over the ceiling row just above it (the same process count\n"
        "and reference, measured just before); srv CPU: the measured server processes, in cores; us/req:\n"
        "their CPU time per completed request, in microseconds (steadier than req/s when other programs\n"
        "compete for the CPUs); reactor: the busiest server main thread's share of one core (1.00 =\n"
        "saturated); wrk CPU: the load generator, in cores; other: everything else (PostgreSQL, other\n"
        "programs), in cores; errors: wrk's non-2xx/3xx responses and socket errors."
    )
    return print_verdicts(bench.measurements)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the benchmark (or, with C{--serve-ceiling}, be a ceiling process).

    @return: 0 if every target was met, 1 if one was missed, 2 on errors.
    """
    args = parse_args(argv)
    if args.serve_ceiling is not None:
        port, manifest = args.serve_ceiling
        serve_ceiling(int(port), Path(manifest))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="quayd-bench-metadata-", dir=args.tmpdir))
    servers: list[Server] = []
    try:
        with cleanup_on_signals():
            return 0 if run(args, workdir, servers) else 1
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted):
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        stop_all(servers)
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
