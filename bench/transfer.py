"""
End-to-end blob transfer benchmark: quayd uploads and downloads against raw sha256 and nginx.

One run creates an incompressible blob file, measures this machine's single-thread sha256
throughput and the disk's durable write rate, starts a real C{twistd quayd} process and a
plain nginx on loopback ports, and then, after one warm-up round, interleaves these transfers
round by round (all with curl as the client, so the client is a C program in every case):

    - upload, chunked PATCH: C{POST} a session, one C{Transfer-Encoding: chunked} C{PATCH}
      streaming the whole file (as docker and skopeo push), then C{PUT ?digest=};
    - upload, monolithic PUT: C{POST} a session, then C{PUT ?digest=} carrying the file
      with a C{Content-Length};
    - download from quayd: C{GET /v2/<name>/blobs/<digest>};
    - download from nginx: the same bytes as a static file, C{sendfile on};
    - when CNCF Distribution's C{registry} binary is installed (Debian: C{docker-registry}),
      the two uploads and the download against it too, for comparison.

Every upload is a new blob (the upload file's last bytes change before each one). When quayd
enforces authentication, the script creates a user with C{quayd-admin} and sends bearer tokens.

For each transfer it records wall-clock throughput, the server's CPU time per GiB (its kernel
part and the part spent on quayd's reactor thread), curl's CPU time per GiB, for uploads the
time left after the body was written (fsync and commit), the server's resident memory
(C{VmRSS} sampled during the transfer and C{VmHWM}, reset before each transfer) and how busy
the rest of the machine was meanwhile. Medians are printed with PASS/FAIL against the targets:
uploads at least 0.4x raw sha256, downloads at least 0.9x nginx, quayd peak RSS below 150 MiB;
then quayd's figures as multiples of Distribution's.

Every process the script starts is stopped, and the temporary directory removed, on exit,
on Ctrl-C, SIGTERM, SIGHUP and errors. See C{bench/README.md}.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import http.client
import json
import mmap
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
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
from quayd.storage.filesystem import sync_file_range_writeback

MIB = 1 << 20
GIB = 1 << 30
#: Repository the benchmark pushes to.
REPOSITORY = "bench/blob"
#: Targets, as ratios and an absolute memory bound.
UPLOAD_TARGET = 0.4
DOWNLOAD_TARGET = 0.9
RSS_TARGET_MIB = 150.0
#: How often the server's memory and write counter are sampled during a transfer, in seconds.
SAMPLE_INTERVAL = 0.02
#: Bytes at the end of the upload file replaced before each upload, so each is a new blob.
TAIL = 32
#: Seconds to wait for a server to answer after it was started.
STARTUP_TIMEOUT = 60.0
#: Seconds one curl transfer may take before the run is abandoned.
TRANSFER_TIMEOUT = 600.0

UPLOAD_CHUNKED = "upload, chunked PATCH"
UPLOAD_MONOLITHIC = "upload, monolithic PUT"
DOWNLOAD_QUAYD = "download, quayd"
DOWNLOAD_NGINX = "download, nginx"
DISTRIBUTION_CHUNKED = "Distribution, PATCH"
DISTRIBUTION_MONOLITHIC = "Distribution, PUT"
DISTRIBUTION_DOWNLOAD = "Distribution, download"
VARIANTS = (UPLOAD_CHUNKED, UPLOAD_MONOLITHIC, DOWNLOAD_QUAYD, DOWNLOAD_NGINX)
DISTRIBUTION_VARIANTS = (DISTRIBUTION_CHUNKED, DISTRIBUTION_MONOLITHIC, DISTRIBUTION_DOWNLOAD)

QUAYD, DISTRIBUTION, NGINX = "quayd", "distribution", "nginx"
CHUNKED, MONOLITHIC, DOWNLOAD = "chunked", "monolithic", "download"
#: Each variant's server and transfer kind.
PLAN = {
    UPLOAD_CHUNKED: (QUAYD, CHUNKED),
    UPLOAD_MONOLITHIC: (QUAYD, MONOLITHIC),
    DOWNLOAD_QUAYD: (QUAYD, DOWNLOAD),
    DOWNLOAD_NGINX: (NGINX, DOWNLOAD),
    DISTRIBUTION_CHUNKED: (DISTRIBUTION, CHUNKED),
    DISTRIBUTION_MONOLITHIC: (DISTRIBUTION, MONOLITHIC),
    DISTRIBUTION_DOWNLOAD: (DISTRIBUTION, DOWNLOAD),
}
#: quayd's variants and Distribution's counterparts, compared after the targets.
COUNTERPARTS = (
    (UPLOAD_CHUNKED, DISTRIBUTION_CHUNKED),
    (UPLOAD_MONOLITHIC, DISTRIBUTION_MONOLITHIC),
    (DOWNLOAD_QUAYD, DISTRIBUTION_DOWNLOAD),
)


# Machine state


# Processes under measurement


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessCPU:
    """
    CPU seconds used so far by a process.

    @ivar total: User plus system time of all threads.
    @ivar system: System (kernel) time of all threads.
    @ivar main_thread: User plus system time of the main thread.
    """

    total: float
    system: float
    main_thread: float


class ProcessMonitor:
    """
    Reads CPU time and memory of one running process from C{/proc}.

    C{/proc/<pid>/stat} sums all threads; C{/proc/<pid>/task/<pid>/stat} is the main
    thread alone, which in twistd is the reactor thread.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid

    @staticmethod
    def _stat_cpu(path: str) -> tuple[float, float]:
        """C{(utime, stime)} in seconds from a C{stat} file of C{/proc}."""
        with open(path, encoding="ascii") as f:
            text = f.read()
        fields = text[text.rindex(")") + 2 :].split()
        # fields[0] is "state" (field 3 of proc(5)); utime and stime are fields 14 and 15.
        return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS

    def cpu(self) -> ProcessCPU:
        """CPU seconds used since the process started."""
        user, system = self._stat_cpu(f"/proc/{self.pid}/stat")
        main_user, main_system = self._stat_cpu(f"/proc/{self.pid}/task/{self.pid}/stat")
        return ProcessCPU(total=user + system, system=system, main_thread=main_user + main_system)

    def bytes_written(self) -> int:
        """
        Bytes the process has passed to C{write} and friends (C{wchar} of C{/proc/<pid>/io}).

        Socket C{send}s are not counted, so for a server receiving an upload this is the
        body written to its staged file (plus a few KiB of database writes).
        """
        with open(f"/proc/{self.pid}/io", encoding="ascii") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
        raise BenchError(f"no wchar in /proc/{self.pid}/io")

    def memory_kib(self, key: str) -> int:
        """
        One C{KiB} figure from C{/proc/<pid>/status}.

        @param key: For example C{VmRSS} or C{VmHWM}.
        """
        with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise BenchError(f"no {key} in /proc/{self.pid}/status")

    def reset_peak_rss(self) -> bool:
        """
        Reset C{VmHWM} to the current RSS (C{clear_refs} value 5).

        @return: Whether the kernel allowed it; if not, C{VmHWM} stays cumulative.
        """
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
        except OSError:
            return False
        return True


class ProcessSampler:
    """
    Samples a server process in a background thread during one transfer.

    It keeps the largest C{VmRSS} seen and, for uploads, notes when the server has written
    the whole body to its staged file (C{wchar} grew by the body size). That splits an
    upload's wall time into streaming the body in and the work after it (fsync, commit,
    database update, response).

    @ivar peak_kib: Largest C{VmRSS} sampled.
    @ivar body_written_at: C{time.perf_counter()} of the first sample after the body was written.
    """

    def __init__(
        self, monitor: ProcessMonitor, body_size: int | None, interval: float = SAMPLE_INTERVAL
    ) -> None:
        self._monitor = monitor
        self._body_size = body_size
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)
        self._written_before = monitor.bytes_written() if body_size is not None else 0
        self.peak_kib = 0
        self.body_written_at: float | None = None

    def _run(self) -> None:
        while True:
            try:
                self.peak_kib = max(self.peak_kib, self._monitor.memory_kib("VmRSS"))
                if (
                    self._body_size is not None
                    and self.body_written_at is None
                    and self._monitor.bytes_written() - self._written_before >= self._body_size
                ):
                    self.body_written_at = time.perf_counter()
            except (OSError, BenchError):
                return
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> ProcessSampler:
        """Start sampling."""
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop sampling and wait for the thread."""
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """
    One measured transfer.

    @ivar mib_s: Bytes moved over wall-clock time, in MiB/s.
    @ivar server_cpu: Server CPU seconds per GiB (all threads, user plus system).
    @ivar server_sys: The system (kernel) part of C{server_cpu}.
    @ivar server_main_cpu: Server CPU seconds per GiB on its main (reactor) thread.
    @ivar client_cpu: curl CPU seconds per GiB.
    @ivar after_body: Uploads: seconds from the server having written the whole body to its
        staged file to the end of the upload (fsync, commit, response); C{None} for downloads.
    @ivar rss_mib: Largest sampled server C{VmRSS} during the transfer.
    @ivar hwm_mib: Server C{VmHWM} after the transfer (reset before it when possible).
    @ivar background: CPU cores used by everything else on the machine meanwhile.
    """

    mib_s: float
    server_cpu: float
    server_sys: float
    server_main_cpu: float
    client_cpu: float
    after_body: float | None
    rss_mib: float
    hwm_mib: float
    background: float


def measure(monitor: ProcessMonitor, size: int, transfer: Callable[[], None], upload: bool) -> Sample:
    """
    Run one transfer and measure it.

    @param monitor: The server process.
    @param size: Bytes the transfer moves (the blob size).
    @param transfer: Performs the transfer with curl and checks its outcome.
    @param upload: Whether the server receives the bytes (then the time after the body is noted).
    """
    monitor.reset_peak_rss()
    gib = size / GIB
    before = monitor.cpu()
    children0, self0 = children_cpu(), self_cpu()
    busy0 = cpu_times()[0]
    with ProcessSampler(monitor, size if upload else None) as sampler:
        start = time.perf_counter()
        transfer()
        end = time.perf_counter()
    busy1 = cpu_times()[0]
    after = monitor.cpu()
    wall = end - start
    server = after.total - before.total
    client = children_cpu() - children0
    own = self_cpu() - self0
    system_busy = (busy1 - busy0) / CLOCK_TICKS
    after_body = None
    if upload and sampler.body_written_at is not None:
        # The last sample may land just after the transfer ended.
        after_body = max(end - sampler.body_written_at, 0.0)
    return Sample(
        mib_s=size / MIB / wall,
        server_cpu=server / gib,
        server_sys=(after.system - before.system) / gib,
        server_main_cpu=(after.main_thread - before.main_thread) / gib,
        client_cpu=client / gib,
        after_body=after_body,
        rss_mib=sampler.peak_kib / 1024,
        hwm_mib=monitor.memory_kib("VmHWM") / 1024,
        background=max(system_busy - server - client - own, 0.0) / wall,
    )


# Files and hashing


def create_blob(path: Path, size: int) -> None:
    """Write C{size} random (incompressible) bytes to C{path}, fsynced so no writeback follows."""
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = os.urandom(min(MIB, remaining))
            f.write(chunk)
            remaining -= len(chunk)
        f.flush()
        os.fsync(f.fileno())


def durable_copy(source: Path, target: Path, passes: int = 2) -> float:
    """
    Copy a page-cached file with C{write} in 1 MiB pieces and C{fsync} it: what a registry
    must do with an upload before it answers.

    Writeback of every 8 MiB written is started at once (C{sync_file_range}, where available),
    so the disk works while the copy goes on, as it would while an upload streams in; the
    figure is then the disk's sustained durable write rate. Virtual disks vary a lot, so this
    is the best of C{passes} copies.

    @return: Throughput in MiB/s: no durable upload can be faster on this disk.
    """
    start_writeback = sync_file_range_writeback()
    best = 0.0
    for _ in range(passes):
        start = time.perf_counter()
        with open(source, "rb") as src, open(target, "wb") as dst:
            written = flushed = 0
            while chunk := src.read(MIB):
                dst.write(chunk)
                written += len(chunk)
                if start_writeback is not None and written - flushed >= 8 * MIB:
                    dst.flush()
                    start_writeback(dst.fileno(), flushed, written - flushed)
                    flushed = written
            dst.flush()
            os.fsync(dst.fileno())
        best = max(best, written / MIB / (time.perf_counter() - start))
    return best


def _hash_mapped(view: memoryview, chunk: int) -> tuple[str, float]:
    hasher = hashlib.sha256()
    start = time.perf_counter()
    for offset in range(0, len(view), chunk):
        hasher.update(view[offset : offset + chunk])
    return hasher.hexdigest(), time.perf_counter() - start


@dataclass(frozen=True, slots=True, kw_only=True)
class HashSpeed:
    """
    Raw single-thread sha256 throughput over the blob.

    @ivar hex: The blob's sha256, in hex.
    @ivar prefix: sha256 state after all but the last L{TAIL} bytes (copy before use).
    @ivar mib_s: Median throughput with 1 MiB C{update} calls (the upload target's basis).
    @ivar mib_s_64k: Throughput with 64 KiB C{update} calls (for context).
    @ivar runs: The individual 1 MiB figures.
    """

    hex: str
    prefix: hashlib._Hash
    mib_s: float
    mib_s_64k: float
    runs: tuple[float, ...]


def hash_speed(path: Path, passes: int) -> HashSpeed:
    """
    Measure hashlib sha256 over the file's bytes, memory-mapped and pre-faulted.

    The mapping is populated and hashed once untimed, so the timed passes hash memory
    only (no page faults, no disk).
    """
    size = path.stat().st_size
    with (
        open(path, "rb") as f,
        mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ) as mapped,
    ):
        view = memoryview(mapped)
        try:
            prefix = hashlib.sha256(view[: size - TAIL])
            whole = prefix.copy()
            whole.update(view[size - TAIL :])
            hex_ = whole.hexdigest()
            runs: list[float] = []
            for _ in range(passes):
                digest, seconds = _hash_mapped(view, MIB)
                if digest != hex_:
                    raise BenchError("sha256 of the blob changed between passes")
                runs.append(size / MIB / seconds)
            _, seconds_64k = _hash_mapped(view, 64 * 1024)
        finally:
            view.release()
    return HashSpeed(
        hex=hex_,
        prefix=prefix,
        mib_s=statistics.median(runs),
        mib_s_64k=size / MIB / seconds_64k,
        runs=tuple(runs),
    )


class UploadSource:
    """
    The file uploads read: a copy of the blob whose last L{TAIL} bytes change before each
    upload, so every upload is a new blob (committed by rename, as on a first push) rather
    than a duplicate of one the registry already has.
    """

    def __init__(self, path: Path, size: int, prefix: hashlib._Hash) -> None:
        self.path = path
        self._size = size
        self._prefix = prefix

    def fresh(self) -> str:
        """Give the file a new random tail; returns its sha256 in hex."""
        tail = os.urandom(TAIL)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, tail, self._size - TAIL)
        finally:
            os.close(fd)
        hasher = self._prefix.copy()
        hasher.update(tail)
        return hasher.hexdigest()


# Servers


class Server:
    """
    A server process started by the benchmark, stopped by its pid only.

    @ivar process: The running process.
    @ivar port: The loopback port it listens on.
    """

    def __init__(self, name: str, argv: Sequence[str], port: int, log: Path, cwd: Path) -> None:
        self.name = name
        self.port = port
        self.log = log
        self._log_file: IO[bytes] = open(log, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops the server
            )
        except OSError as e:
            self._log_file.close()
            raise BenchError(f"cannot start {name} ({argv[0]}): {e}") from None
        self.monitor = ProcessMonitor(self.process.pid)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's output, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> http.client.HTTPResponse:
        """
        Send a small request without a body and read the whole response.

        @return: The response; its body has been read (and discarded).
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            response.read()
            return response
        finally:
            connection.close()

    def wait_ready(self, path: str, method: str = "GET", statuses: tuple[int, ...] = (200,)) -> None:
        """
        Poll C{method path} until it answers with one of C{statuses}.

        @raise BenchError: If the process exits or does not answer in time.
        """
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with status {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if self.request(method, path).status in statuses:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchError(
            f"{self.name} did not answer GET {path} within {STARTUP_TIMEOUT} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 15 s) and close its log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


def create_user(config: Path, user: str, password: str) -> bool:
    """
    Create a registry user with C{quayd-admin set-password}, if this quayd has that command.

    The user owns the namespace of L{REPOSITORY}, so it may push there when quayd
    enforces authentication.

    @return: Whether the user was created; C{False} when there is no C{quayd-admin}.
    @raise BenchError: If the command failed.
    """
    admin = Path(sys.executable).parent / "quayd-admin"
    if not admin.exists():
        return False
    completed = subprocess.run(
        [str(admin), "--config", str(config), "set-password", user],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        raise BenchError(f"quayd-admin set-password failed: {completed.stderr.strip()[-500:]}")
    return True


def start_quayd(workdir: Path, blob_dir: Path, user: str, password: str, started: list[Server]) -> Server:
    """
    Write a config into C{workdir}, create the benchmark user and start C{twistd quayd} on a
    free loopback port.

    @param blob_dir: The filesystem blob store's directory.
    @param user: Registry user to create (see L{create_user}).
    @param password: Its password.
    @param started: The server is appended as soon as its process exists, for cleanup.
    """
    port = free_port()
    config = workdir / "quayd.yaml"
    config.write_text(
        f'data_dir: "{workdir / "quayd-data"}"\n'
        "storage:\n"
        '  driver: "filesystem"\n'
        f'  path: "{blob_dir}"\n'
        "server:\n"
        f'  hostname: "127.0.0.1:{port}"\n'
        '  scheme: "http"\n'
        "  listen:\n"
        f'    - "tcp:{port}:interface=127.0.0.1"\n'
        "logging:\n"
        '  format: "text"\n'
        '  level: "warn"\n',
        encoding="utf-8",
    )
    create_user(config, user, password)
    twistd = Path(sys.executable).parent / "twistd"
    argv = [str(twistd), "--nodaemon", "--pidfile=", "quayd", "--config", str(config)]
    server = Server("quayd", argv, port, workdir / "quayd.log", workdir)
    started.append(server)
    server.wait_ready("/v2/", statuses=(200, 401))
    return server


class RegistryAuth:
    """
    Docker token authentication for the benchmark user, when quayd asks for it.

    If C{GET /v2/} answers 200, no credentials are sent. If it answers 401 with a C{Bearer}
    challenge, a token for C{repository:<REPOSITORY>:pull,push} is fetched from the realm with
    Basic credentials and renewed (outside the timed part) once half its lifetime has passed.
    curl reads the header from a file, so the token never appears in a command line or message.
    """

    def __init__(self, quayd: Server, user: str, password: str, header_file: Path) -> None:
        self._quayd = quayd
        self._user = user
        self._password = password
        self._header_file = header_file
        self._header: dict[str, str] | None = None
        self._renew_at = 0.0

    def refresh(self) -> None:
        """Fetch or renew the token if it is missing or due within a minute (call outside timing)."""
        if self._header is None or (self._header and time.monotonic() >= self._renew_at - 60):
            self._header = self._fetch()
            self._header_file.write_text(
                "".join(f"{name}: {value}\n" for name, value in self._header.items()), encoding="ascii"
            )
            self._header_file.chmod(0o600)

    def headers(self) -> dict[str, str]:
        """The C{Authorization} header to send (empty without authentication)."""
        if self._header is None:
            self.refresh()
        assert self._header is not None
        return self._header

    def curl_args(self) -> list[str]:
        """curl options sending the current header."""
        return ["-H", f"@{self._header_file}"] if self.headers() else []

    def _fetch(self) -> dict[str, str]:
        response = self._quayd.request("GET", "/v2/")
        if response.status == 200:
            return {}
        challenge = response.getheader("WWW-Authenticate") or ""
        if response.status != 401 or not challenge.lower().startswith("bearer "):
            raise BenchError(f"GET /v2/ answered {response.status} with challenge {challenge!r}")
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = urlsplit(params.get("realm", ""))
        query = urlencode(
            {"service": params.get("service", ""), "scope": f"repository:{REPOSITORY}:pull,push"}
        )
        basic = base64.b64encode(f"{self._user}:{self._password}".encode()).decode("ascii")
        connection = http.client.HTTPConnection(realm.hostname or "127.0.0.1", realm.port or 80, timeout=60)
        try:
            connection.request("GET", f"{realm.path}?{query}", headers={"Authorization": f"Basic {basic}"})
            token_response = connection.getresponse()
            body = token_response.read()
        finally:
            connection.close()
        if token_response.status != 200:
            raise BenchError(
                f"token request to {params.get('realm')!r} answered {token_response.status}"
                " (does this quayd have quayd-admin to create the benchmark user?)"
            )
        document = json.loads(body)
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str):
            raise BenchError("the token response has no token")
        lifetime = document.get("expires_in", 60)
        self._renew_at = time.monotonic() + (lifetime / 2 if isinstance(lifetime, (int, float)) else 30)
        return {"Authorization": f"Bearer {token}"}


def start_nginx(workdir: Path, blob: Path, nginx: str, started: list[Server]) -> Server:
    """
    Write a minimal config into C{workdir}; start a single-process nginx serving C{blob}'s directory.

    @param started: The server is appended as soon as its process exists, for cleanup.
    """
    port = free_port()
    temp = workdir / "nginx-temp"
    temp.mkdir()
    config = workdir / "nginx.conf"
    config.write_text(
        f"""daemon off;
master_process off;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "nginx-error.log"} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    default_type application/octet-stream;
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    server {{
        listen 127.0.0.1:{port};
        root {blob.parent};
    }}
}}
""",
        encoding="utf-8",
    )
    argv = [nginx, "-p", str(workdir), "-c", str(config), "-e", str(workdir / "nginx-error.log")]
    server = Server("nginx", argv, port, workdir / "nginx.log", workdir)
    started.append(server)
    server.wait_ready(f"/{blob.name}", "HEAD")
    return server


@dataclass(frozen=True, slots=True)
class Registry:
    """
    A registry under measurement.

    @ivar server: Its process and port.
    @ivar auth: The credentials it asks for (none for Distribution).
    @ivar blob_file: The file holding a committed blob's bytes, by the digest's hex.
    """

    server: Server
    auth: RegistryAuth
    blob_file: Callable[[str], Path]

    @property
    def base(self) -> str:
        """The registry's URL root."""
        return f"http://127.0.0.1:{self.server.port}"


def distribution_version(binary: str) -> str:
    """
    What C{<binary> --version} says, for example C{Distribution 2.8.2+ds1}.

    @raise BenchError: If it cannot be run.
    """
    try:
        completed = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=STARTUP_TIMEOUT, check=True
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise BenchError(f"cannot run {binary} --version: {e}") from None
    words = completed.stdout.split()
    return f"Distribution {words[-1]}" if words else "Distribution"


def start_distribution(workdir: Path, binary: str, started: list[Server]) -> Registry:
    """
    Write a config into C{workdir} and start CNCF Distribution (C{registry serve}) on a free
    loopback port: filesystem storage under C{workdir}, no authentication, no access log,
    no upload purging (no background work during the transfers).

    @param binary: The registry binary (Debian's C{docker-registry}, or C{registry} from a release).
    @param started: The server is appended as soon as its process exists, for cleanup.
    """
    port = free_port()
    root = workdir / "distribution-data"
    config = workdir / "distribution.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n"
        "  level: warn\n"
        "  accesslog:\n"
        "    disabled: true\n"
        "storage:\n"
        "  filesystem:\n"
        f'    rootdirectory: "{root}"\n'
        "  maintenance:\n"
        "    uploadpurging:\n"
        "      enabled: false\n"
        "http:\n"
        f'  addr: "127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    server = Server(
        "distribution", [binary, "serve", str(config)], port, workdir / "distribution.log", workdir
    )
    started.append(server)
    server.wait_ready("/v2/")
    blobs = root / "docker" / "registry" / "v2" / "blobs" / "sha256"
    return Registry(
        server,
        RegistryAuth(server, "", "", workdir / "distribution-auth-header"),
        lambda hex_: blobs / hex_[:2] / hex_ / "data",
    )


# Transfers


@dataclass(frozen=True, slots=True, kw_only=True)
class CurlResult:
    """
    What curl reported.

    @ivar status: The final HTTP status.
    @ivar headers: The final response's headers, names lower-cased.
    @ivar downloaded: Body bytes received.
    """

    status: int
    headers: dict[str, str]
    downloaded: int


_WRITE_OUT = "\n%{http_code} %{size_download}\n"


def curl(args: Sequence[str]) -> CurlResult:
    """
    Run curl with C{args}, capturing the final response's headers.

    The body goes wherever C{args} say (C{-o /dev/null} or C{-o -}); headers are dumped to
    standard output followed by the status and download size.
    """
    argv = ["curl", "-sS", "--fail-with-body", "-D", "-", "-H", "Expect:", *args, "-w", _WRITE_OUT]
    completed = subprocess.run(argv, capture_output=True, timeout=TRANSFER_TIMEOUT, check=False)
    output = completed.stdout.decode("latin-1")
    if completed.returncode != 0:
        raise BenchError(
            f"curl {' '.join(args)} failed ({completed.returncode}): {completed.stderr!r} {output[-500:]!r}"
        )
    head, _, trailer = output.rstrip("\n").rpartition("\n")
    status_text, size_text = trailer.split()
    blocks = [block for block in head.split("\r\n\r\n") if block.strip()]
    headers: dict[str, str] = {}
    for line in blocks[-1].split("\r\n")[1:] if blocks else []:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return CurlResult(status=int(status_text), headers=headers, downloaded=int(size_text))


class Transfers:
    """
    Every variant's transfer. L{prepare} readies one (outside the timed part) and returns a
    callable that moves the blob once and checks the outcome.

    @ivar nginx: The reference static file server.
    """

    def __init__(
        self,
        registries: dict[str, Registry],
        nginx: Server,
        blob: Path,
        hex_: str,
        source: UploadSource,
    ) -> None:
        """
        @param registries: By name: C{quayd} and, when measured, C{distribution}.
        """
        self._registries = registries
        self.nginx = nginx
        self._blob = blob
        self._digest = f"sha256:{hex_}"
        self._size = blob.stat().st_size
        self._source = source
        self._last_upload: tuple[Registry, str] | None = None

    def _start_session(self, registry: Registry) -> str:
        response = registry.server.request(
            "POST", f"/v2/{REPOSITORY}/blobs/uploads/", {"Content-Length": "0", **registry.auth.headers()}
        )
        location = response.getheader("Location")
        if response.status != 202 or location is None:
            raise BenchError(
                f"POST upload session to {registry.server.name} answered {response.status},"
                f" Location {location!r}"
            )
        return location if location.startswith("http") else registry.base + location

    @staticmethod
    def _with_digest(location: str, digest: str) -> str:
        return f"{location}{'&' if '?' in location else '?'}digest={digest}"

    @staticmethod
    def _check_created(status: int, got: str | None, digest: str, what: str) -> None:
        if status != 201 or got != digest:
            raise BenchError(f"{what} answered {status} with Docker-Content-Digest {got!r}, not {digest}")

    def upload_chunked(self, registry: Registry, path: Path, digest: str) -> None:
        """POST, one chunked PATCH streaming the file (curl C{-T}), then an empty PUT ?digest=."""
        location = self._start_session(registry)
        patched = curl(
            [
                *("-X", "PATCH", "-T", str(path), "-o", "/dev/null"),
                *("-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/octet-stream"),
                *registry.auth.curl_args(),
                location,
            ]
        )
        next_location = patched.headers.get("location")
        if patched.status != 202 or next_location is None:
            raise BenchError(f"PATCH answered {patched.status}, Location {next_location!r}")
        if patched.headers.get("range") != f"0-{self._size - 1}":
            raise BenchError(f"PATCH left the session at Range {patched.headers.get('range')!r}")
        path_only = next_location.removeprefix(registry.base)
        response = registry.server.request(
            "PUT", self._with_digest(path_only, digest), {"Content-Length": "0", **registry.auth.headers()}
        )
        self._check_created(response.status, response.getheader("Docker-Content-Digest"), digest, "final PUT")

    def upload_monolithic(self, registry: Registry, path: Path, digest: str) -> None:
        """POST, then one PUT ?digest= carrying the file with a Content-Length (curl C{-T})."""
        location = self._start_session(registry)
        put = curl(
            [
                *("-X", "PUT", "-T", str(path), "-o", "/dev/null"),
                *("-H", "Content-Type: application/octet-stream"),
                *registry.auth.curl_args(),
                self._with_digest(location, digest),
            ]
        )
        self._check_created(put.status, put.headers.get("docker-content-digest"), digest, "monolithic PUT")

    def _download(self, url: str, auth: Sequence[str] = ()) -> None:
        got = curl(["-o", "/dev/null", *auth, url])
        if got.status != 200 or got.downloaded != self._size:
            raise BenchError(f"GET {url} answered {got.status} with {got.downloaded} of {self._size} bytes")

    def download_registry(self, registry: Registry) -> None:
        """GET the blob from a registry."""
        self._download(f"{registry.base}/v2/{REPOSITORY}/blobs/{self._digest}", registry.auth.curl_args())

    def download_nginx(self) -> None:
        """GET the same bytes from nginx."""
        self._download(f"http://127.0.0.1:{self.nginx.port}/{self._blob.name}")

    def seed(self) -> None:
        """Upload the blob itself (chunked) to every registry, so that they can serve it (warm-up)."""
        for registry in self._registries.values():
            registry.auth.refresh()
            self.upload_chunked(registry, self._blob, self._digest)

    def verify_downloads(self) -> None:
        """Download the blob from every registry once and check its sha256 (warm-up only: costs CPU here)."""
        for registry in self._registries.values():
            url = f"{registry.base}/v2/{REPOSITORY}/blobs/{self._digest}"
            argv = ["curl", "-sS", "--fail", *registry.auth.curl_args(), url]
            with subprocess.Popen(argv, stdout=subprocess.PIPE) as process:
                assert process.stdout is not None
                hasher = hashlib.sha256()
                while chunk := process.stdout.read(MIB):
                    hasher.update(chunk)
                process.wait(TRANSFER_TIMEOUT)
            if process.returncode != 0 or f"sha256:{hasher.hexdigest()}" != self._digest:
                raise BenchError(
                    f"{registry.server.name} served different bytes for {self._digest}"
                    f" (curl status {process.returncode})"
                )

    def prepare(self, variant: str) -> Callable[[], None]:
        """
        Ready one transfer of the named variant; uploads get a fresh blob first.

        Before an upload, the file of the blob uploaded last is deleted from its registry's
        store, at this moment and not right after that upload: see L{discard_last_upload}.

        @return: The transfer itself, to be timed.
        """
        target, kind = PLAN[variant]
        if target == NGINX:
            return self.download_nginx
        registry = self._registries[target]
        registry.auth.refresh()
        if kind == DOWNLOAD:
            return functools.partial(self.download_registry, registry)
        self.discard_last_upload()
        digest = f"sha256:{self._source.fresh()}"
        upload = self.upload_chunked if kind == CHUNKED else self.upload_monolithic
        self._last_upload = (registry, digest)
        return functools.partial(upload, registry, self._source.path, digest)

    def discard_last_upload(self) -> None:
        """
        Delete the file of the blob uploaded last, outside the timed part, to bound disk use.

        L{prepare} calls this just before the next upload, so that every upload finds the
        memory of the one before it freed a moment ago. On a virtual machine whose balloon
        device reports free pages to the host, memory left free for about two seconds goes
        back to the host, and the next process to write into it pays the host's page faults:
        an upload started after a pause spent 2.3-3.4 instead of 1.0 s/GiB in the kernel. The
        rounds put pauses in different places for different variants (a download, the idle
        wait), which made the chunked PATCH look 25-37% slower than the PUT instead of 12-17%.

        This reaches into the registry's store (L{Registry.blob_file}); if the layout
        differs, the blob is simply kept.
        """
        if self._last_upload is None:
            return
        registry, digest = self._last_upload
        registry.blob_file(digest.removeprefix("sha256:")).unlink(missing_ok=True)
        self._last_upload = None

    def server_for(self, variant: str) -> Server:
        """The server a variant loads."""
        target, _ = PLAN[variant]
        return self.nginx if target == NGINX else self._registries[target].server


# Reporting


@dataclass(slots=True)
class Results:
    """All kept samples, by variant, plus the quayd memory peaks seen outside transfers."""

    variants: tuple[str, ...]
    samples: dict[str, list[Sample]] = field(init=False)
    quayd_other_peaks_mib: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.samples = {variant: [] for variant in self.variants}

    def values(self, variant: str, attribute: str) -> list[float]:
        """One attribute of a variant's samples, leaving out C{None}."""
        found = (getattr(s, attribute) for s in self.samples[variant])
        return [float(v) for v in found if v is not None]

    def median(self, variant: str, attribute: str) -> float:
        """The median of one attribute of a variant's samples."""
        return statistics.median(self.values(variant, attribute))

    def maximum(self, variant: str, attribute: str) -> float:
        """The maximum of one attribute of a variant's samples."""
        return max(self.values(variant, attribute))


def print_table(results: Results) -> None:
    """Print one row per variant: medians, individual throughputs and memory maxima."""
    columns = (
        ("srv CPU", "s/GiB"),
        ("srv sys", "s/GiB"),
        ("reactor", "s/GiB"),
        ("curl CPU", "s/GiB"),
        ("post-body", "s"),
        ("RSS max", "MiB"),
        ("HWM max", "MiB"),
        ("bg cores", ""),
    )
    header = f"{'variant':<24} {'MiB/s':>6}  {'rounds (MiB/s)':<20}" + "".join(f" {a:>9}" for a, _ in columns)
    print(header)
    print(f"{'':<24} {'median':>6}  {'':<20}" + "".join(f" {b:>9}" for _, b in columns))
    print("-" * len(header))
    for variant in results.variants:
        runs = "[" + ", ".join(f"{s.mib_s:.0f}" for s in results.samples[variant]) + "]"
        post_body = (
            f"{results.median(variant, 'after_body'):>9.2f}"
            if results.values(variant, "after_body")
            else f"{'-':>9}"
        )
        print(
            f"{variant:<24} {results.median(variant, 'mib_s'):>6.0f}  {runs:<20}"
            f" {results.median(variant, 'server_cpu'):>9.2f}"
            f" {results.median(variant, 'server_sys'):>9.2f}"
            f" {results.median(variant, 'server_main_cpu'):>9.2f}"
            f" {results.median(variant, 'client_cpu'):>9.2f}"
            f" {post_body}"
            f" {results.maximum(variant, 'rss_mib'):>9.1f}"
            f" {results.maximum(variant, 'hwm_mib'):>9.1f}"
            f" {results.median(variant, 'background'):>9.2f}"
        )
    print(
        "medians, except RSS/HWM max. srv CPU: server process, all threads, user+sys; srv sys: its\n"
        "kernel part; reactor: server main thread (in quayd, the reactor); curl CPU: the client;\n"
        "post-body: upload time left after the server had written the whole body to its staged file\n"
        f"(fsync, commit, response); RSS max: largest VmRSS sampled every {SAMPLE_INTERVAL * 1000:.0f} ms;\n"
        "HWM max: VmHWM after each transfer (reset before it); bg cores: CPU used by other processes\n"
        "during the transfer (noise)."
    )


def print_verdicts(results: Results, sha: HashSpeed, disk_mib_s: float, distribution: str | None) -> bool:
    """
    Print ratios against the targets, then against Distribution when it was measured.

    @param disk_mib_s: The durable write (write plus fsync) rate of the temporary directory's disk.
    @param distribution: Distribution's version, when its variants were measured.
    @return: Whether every target was met.
    """
    checks: list[bool] = []

    def check(name: str, value: str, target: str, ok: bool) -> None:
        checks.append(ok)
        print(f"{name:<24} {value:<20} {'(target ' + target + ')':<20} {verdict(ok)}")

    print()
    print(f"raw sha256 (1 MiB updates, single thread): {sha.mib_s:.0f} MiB/s")
    for variant in (UPLOAD_CHUNKED, UPLOAD_MONOLITHIC):
        ratio = results.median(variant, "mib_s") / sha.mib_s
        check(variant, f"{ratio:.2f}x raw sha256", f">= {UPLOAD_TARGET}x", ratio >= UPLOAD_TARGET)
    ratio = results.median(DOWNLOAD_QUAYD, "mib_s") / results.median(DOWNLOAD_NGINX, "mib_s")
    check(DOWNLOAD_QUAYD, f"{ratio:.2f}x nginx", f">= {DOWNLOAD_TARGET}x", ratio >= DOWNLOAD_TARGET)
    quayd_variants = (UPLOAD_CHUNKED, UPLOAD_MONOLITHIC, DOWNLOAD_QUAYD)
    peak = max(
        [results.maximum(v, "hwm_mib") for v in quayd_variants]
        + [results.maximum(v, "rss_mib") for v in quayd_variants]
        + results.quayd_other_peaks_mib
    )
    check("quayd peak RSS", f"{peak:.1f} MiB", f"< {RSS_TARGET_MIB:.0f} MiB", peak < RSS_TARGET_MIB)
    if distribution is not None:
        print(f"\nquayd against {distribution} in the same rounds (for comparison; not a target):")
        for ours, theirs in COUNTERPARTS:
            ratio = results.median(ours, "mib_s") / results.median(theirs, "mib_s")
            cpu = results.median(ours, "server_cpu") / results.median(theirs, "server_cpu")
            print(f"{ours:<24} {ratio:.2f}x Distribution's MiB/s, {cpu:.2f}x its server CPU per GiB")
    needed = UPLOAD_TARGET * sha.mib_s
    if disk_mib_s < needed:
        print(
            f"note: the upload target needs {needed:.0f} MiB/s, but this disk writes and fsyncs at most"
            f" {disk_mib_s:.0f} MiB/s;\n      quayd fsyncs an upload before it answers, so the target"
            " cannot be met on this disk."
        )
    passed = all(checks)
    print(f"\noverall: {verdict(passed)}")
    return passed


# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024, help="blob size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds after the warm-up (default 3)")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="before each round, wait up to this long for the machine to be idle (default 60)",
    )
    parser.add_argument(
        "--max-background",
        type=float,
        default=0.25,
        metavar="CORES",
        help="repeat a round in which other processes used more CPU than this in a transfer (default 0.25)",
    )
    parser.add_argument(
        "--max-repeats",
        type=int,
        default=6,
        help="give up repeating disturbed rounds after this many, keeping them with a note (default 6)",
    )
    parser.add_argument("--tmpdir", type=Path, default=None, help="parent of the temporary directory")
    parser.add_argument("--nginx", default="/usr/sbin/nginx", help="nginx binary (default /usr/sbin/nginx)")
    parser.add_argument(
        "--distribution",
        default=None,
        metavar="PATH",
        help="CNCF Distribution's registry binary to compare with (default: docker-registry or registry"
        " on PATH, skipped when neither is there)",
    )
    parser.add_argument("--no-distribution", action="store_true", help="do not measure Distribution")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (for debugging)")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.rounds < 1 or args.max_repeats < 0:
        parser.error("--size-mib and --rounds must be at least 1, --max-repeats at least 0")
    if args.no_distribution:
        args.distribution = None
    elif args.distribution is None:
        args.distribution = shutil.which("docker-registry") or shutil.which("registry")
    elif shutil.which(args.distribution) is None:
        parser.error(f"--distribution {args.distribution} is not an executable")
    return args


def run(args: argparse.Namespace, workdir: Path, servers: list[Server]) -> bool:
    """
    The whole benchmark inside C{workdir}; started servers are appended to C{servers}.

    @return: Whether every target was met.
    """
    size = args.size_mib * MIB
    print(
        f"quayd transfer benchmark: {args.size_mib} MiB blob, 1 warm-up + {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        flush=True,
    )
    one, five, fifteen = os.getloadavg()
    idle = idle_fraction()
    print(f"machine: load average {one:.2f} {five:.2f} {fifteen:.2f}, {idle:.0%} idle over 1 s", flush=True)
    if idle < IDLE_THRESHOLD or one > 0.5 * (os.cpu_count() or 1):
        print("WARNING: the machine is not idle; results will be noisy", flush=True)

    www = workdir / "www"
    www.mkdir()
    blob = www / "blob.bin"
    start = time.perf_counter()
    create_blob(blob, size)
    print(
        f"created {blob} ({args.size_mib} MiB of os.urandom) in {time.perf_counter() - start:.1f} s",
        flush=True,
    )

    wait_for_idle(args.wait_idle, "the sha256 and disk measurements")
    sha = hash_speed(blob, passes=3)
    runs = ", ".join(f"{r:.0f}" for r in sha.runs)
    print(
        f"raw sha256: {sha.mib_s:.0f} MiB/s with 1 MiB updates [{runs}], "
        f"{sha.mib_s_64k:.0f} MiB/s with 64 KiB\n            digest sha256:{sha.hex}",
        flush=True,
    )
    upload_file = workdir / "upload.bin"
    disk = durable_copy(blob, upload_file)
    print(
        f"disk: {disk:.0f} MiB/s durable writes (write + fsync, best of 2): a ceiling for uploads", flush=True
    )

    blob_dir = workdir / "quayd-data" / "blobs"
    user, password = REPOSITORY.partition("/")[0], secrets.token_urlsafe(24)
    quayd = start_quayd(workdir, blob_dir, user, password, servers)
    nginx = start_nginx(workdir, blob, args.nginx, servers)
    print(
        f"quayd pid {quayd.process.pid} on port {quayd.port}; "
        f"nginx pid {nginx.process.pid} on port {nginx.port}"
    )
    registries = {
        QUAYD: Registry(
            quayd,
            RegistryAuth(quayd, user, password, workdir / "auth-header"),
            lambda hex_: blob_dir / "sha256" / hex_[:2] / hex_,
        )
    }
    variants: tuple[str, ...] = VARIANTS
    version = None
    if args.distribution is not None:
        version = distribution_version(args.distribution)
        registries[DISTRIBUTION] = distribution = start_distribution(workdir, args.distribution, servers)
        variants += DISTRIBUTION_VARIANTS
        server = distribution.server
        print(f"{version} ({args.distribution}) pid {server.process.pid} on port {server.port}")
    else:
        print(
            "Distribution: not measured (--no-distribution, or neither docker-registry nor registry on PATH)"
        )
    results = Results(variants)
    results.quayd_other_peaks_mib.append(quayd.monitor.memory_kib("VmHWM") / 1024)

    source = UploadSource(upload_file, size, sha.prefix)
    transfers = Transfers(registries, nginx, blob, sha.hex, source)
    print("warm-up round (not measured) ...", flush=True)
    transfers.seed()
    for variant in variants:
        transfers.prepare(variant)()
    transfers.verify_downloads()
    results.quayd_other_peaks_mib.append(quayd.monitor.memory_kib("VmHWM") / 1024)

    measured = repeated = attempt = 0
    while measured < args.rounds:
        label = f"round {measured + 1}" + (f" (repeat {attempt})" if attempt else "")
        wait_for_idle(args.wait_idle, label)
        order = variants[measured % len(variants) :] + variants[: measured % len(variants)]
        samples: dict[str, Sample] = {}
        for variant in order:
            server = transfers.server_for(variant)
            transfer = transfers.prepare(variant)
            samples[variant] = measure(server.monitor, size, transfer, upload=PLAN[variant][1] != DOWNLOAD)
        if quayd.process.poll() is not None:
            raise BenchError(f"quayd exited with status {quayd.process.returncode}:\n{quayd.log_tail()}")
        line = "; ".join(f"{v} {samples[v].mib_s:.0f}" for v in order)
        worst = max(sample.background for sample in samples.values())
        if worst > args.max_background and repeated < args.max_repeats:
            repeated += 1
            attempt += 1
            print(f"{label}: {line} MiB/s: DISCARDED, other processes used {worst:.2f} cores", flush=True)
            continue
        for variant, sample in samples.items():
            results.samples[variant].append(sample)
        measured += 1
        attempt = 0
        note = f" (disturbed: other processes used {worst:.2f} cores)" if worst > args.max_background else ""
        print(f"{label}: {line} MiB/s{note}", flush=True)

    print()
    print(
        f"{args.rounds} rounds ({repeated} disturbed rounds discarded and repeated), {args.size_mib} MiB"
        " per transfer, curl client, loopback"
    )
    print_table(results)
    return print_verdicts(results, sha, disk, version)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the benchmark.

    @return: 0 if every target was met, 1 if one was missed, 2 on errors.
    """
    args = parse_args(argv)
    if shutil.which("curl") is None:
        print("curl is required", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="quayd-bench-", dir=args.tmpdir))
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
        for server in reversed(servers):
            server.stop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
