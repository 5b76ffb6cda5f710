"""
Real registry clients and a real quayd process, for the end-to-end tests.

Everything here drives subprocesses: C{twistd -n quayd}, C{dockerd} and the
C{docker} CLI, C{podman} and C{skopeo}. Images are built in Python as OCI image
layouts (there is no Docker Hub to pull from), written to disk as streams so
that a layer of hundreds of MiB never sits in memory twice.

A client that is not installed makes the test skip, except under CI
(C{CI=true}), where every client must be present and a missing one fails.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Final, NoReturn, Protocol, TypeVar
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.identity import IdentitySeeder, Login, daemon_secret_key, seed_database

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: Decoded JSON (manifests, configs, index files).
JSONValue = Any
T = TypeVar("T")

#: The superuser every L{QuaydProcess} gets unless told otherwise.
DEFAULT_SUPERUSER: Final = "tester"

OCI_LAYOUT_VERSION: Final = "1.0.0"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_REF_NAME: Final = "org.opencontainers.image.ref.name"

#: Fixed timestamp for image configs and tar members, so builds differ only by content.
_EPOCH: Final = "2024-01-01T00:00:00Z"
_CHUNK: Final = 1024 * 1024
_EXTRA_SBIN: Final = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def in_ci() -> bool:
    """
    Tell whether the tests run under CI, where skipping is not allowed.

    @return: C{True} when the environment variable C{CI} is C{"true"}.
    """
    return os.environ.get("CI") == "true"


def skip_or_fail(reason: str) -> NoReturn:
    """
    Skip the current test, or fail it under CI.

    @param reason: Why the test cannot run; shown in the report either way.
    @raise pytest.skip.Exception: Outside CI.
    @raise pytest.fail.Exception: When C{CI=true}.
    """
    if in_ci():
        pytest.fail(f"{reason} (CI=true: every end-to-end prerequisite must be present)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """
    Find a client binary, or skip (fail under CI) the test when it is missing.

    The sbin directories are searched as well, since C{dockerd} lives there
    and may not be on an unprivileged C{PATH}.

    @param name: Binary name: C{skopeo}, C{docker}, C{dockerd}, C{podman}, ...
    @return: The absolute path of the binary.
    """
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_EXTRA_SBIN])
    path = shutil.which(name, path=search)
    if path is None:
        skip_or_fail(f"{name} is not installed")
    return path


def require_root(purpose: str) -> None:
    """
    Skip (fail under CI) the test unless it runs as root.

    @param purpose: What needs root, for the skip reason (e.g. C{"dockerd"}).
    """
    if os.geteuid() != 0:
        skip_or_fail(f"{purpose} needs root")


class CommandFailed(Exception):
    """
    A subprocess exited with a non-zero status; the message carries its output.
    """

    def __init__(self, argv: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        """
        @param argv: The command that was run.
        @param result: Its completed process, with captured output.
        """
        super().__init__(
            f"command {list(argv)!r} exited with {result.returncode}\n"
            f"--- stdout ---\n{_tail(result.stdout, 4000)}\n--- stderr ---\n{_tail(result.stderr, 4000)}"
        )
        self.result = result


def _tail(text: str, limit: int) -> str:
    """
    Keep the end of a long text.

    @param text: Any text, e.g. a command's output.
    @param limit: Most characters to keep.
    @return: C{text}, or its last C{limit} characters behind a marker.
    """
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
    check: bool = True,
    cwd: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """
    Run a command to completion with captured text output.

    @param argv: Program and arguments.
    @param env: Variables added to (or overriding) this process's environment.
    @param timeout: Seconds after which the command is killed and
        L{subprocess.TimeoutExpired} is raised.
    @param check: Raise L{CommandFailed} on a non-zero exit status.
    @param cwd: Working directory.
    @param input: Text for the command's standard input (a password, say);
        without it, standard input is C{/dev/null}.
    @return: The completed process.
    """
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        list(argv),
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL if input is None else None,
        input=input,
        check=False,
    )
    if check and result.returncode != 0:
        raise CommandFailed(argv, result)
    return result


def free_port() -> int:
    """
    Pick a TCP port on the loopback interface that is free right now.

    @return: A port number; it is released again before returning.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def file_tail(path: Path, limit: int = 6000) -> str:
    """
    Read the end of a log file.

    @param path: The file; it may not exist.
    @param limit: Most bytes to read.
    @return: The last C{limit} bytes decoded leniently, or a note that the file is missing.
    """
    try:
        with path.open("rb") as stream:
            stream.seek(0, os.SEEK_END)
            size = stream.tell()
            stream.seek(max(0, size - limit))
            data = stream.read()
    except FileNotFoundError:
        return f"({path} does not exist)"
    prefix = "[...]\n" if size > limit else ""
    return prefix + data.decode("utf-8", "replace")


def sha256_file(path: Path) -> str:
    """
    Digest a file without reading it into memory whole.

    @param path: The file.
    @return: Its digest, C{"sha256:<hex>"}.
    """
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# --- HTTP ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPResult:
    """
    A complete HTTP response, read and closed.
    """

    status: int
    headers: http.client.HTTPMessage
    body: bytes


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 30.0,
) -> HTTPResult:
    """
    Send one plain-HTTP request and read the whole response.

    Redirects are not followed. The connection is closed before returning, so
    no socket outlives the call.

    @param method: HTTP method.
    @param url: Absolute C{http://} URL.
    @param headers: Request headers.
    @param body: Request body, sent with a C{Content-Length}.
    @param timeout: Socket timeout in seconds.
    @return: Status, headers and body of the response.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"not an absolute http URL: {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        data = response.read()
        return HTTPResult(status=response.status, headers=response.headers, body=data)
    finally:
        connection.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class Download:
    """
    What a streamed C{GET} returned: the status and the body's size and digest.
    """

    status: int
    size: int
    digest: str
    headers: http.client.HTTPMessage


def http_download(url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 60.0) -> Download:
    """
    C{GET} a possibly large body, digesting it as it streams in.

    @param url: Absolute C{http://} URL.
    @param headers: Request headers.
    @param timeout: Socket timeout in seconds (per read, not in total).
    @return: Status, size and C{sha256:} digest of the body.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"not an absolute http URL: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", target, headers=dict(headers or {}))
        response = connection.getresponse()
        digest = hashlib.sha256()
        size = 0
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return Download(
            status=response.status, size=size, digest="sha256:" + digest.hexdigest(), headers=response.headers
        )
    finally:
        connection.close()


# --- quayd --------------------------------------------------------------------------------------


class QuaydStartError(Exception):
    """
    quayd exited, or did not answer C{GET /v2/} in time, while starting.
    """


class QuaydProcess:
    """
    One C{twistd --nodaemon quayd} process on a loopback port, with its config,
    data directory and log in a directory of its own.

    The config is written once; L{start} may be called again after L{stop} or
    L{kill} and reuses the same port, config and data.

    quayd enforces access control, so the config names a superuser (C{tester}
    by default, L{login}), whose password L{start} sets with C{quayd-admin
    set-password} before the first start. Clients log in with L{login}; raw
    HTTP requests send L{auth_headers} (Basic credentials, which the C{/v2}
    routes accept directly).

    @ivar login: The superuser's credentials, or C{None} without one.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        port: int | None = None,
        extra_config: Mapping[str, object] | None = None,
        startup_timeout: float = 20.0,
        superuser: str | None = DEFAULT_SUPERUSER,
    ) -> None:
        """
        Prepare (but do not start) a quayd process.

        @param base_dir: An empty directory owned by this process: the working
            directory of C{twistd}, holding C{quayd.yaml}, C{data/} and the logs.
        @param port: Loopback port to listen on; a free one by default.
        @param extra_config: Top-level config keys added to the minimal config
            (a key given here replaces the default one, C{auth} included).
        @param startup_timeout: Seconds to wait for C{GET /v2/} to answer 200.
        @param superuser: User created (with a random password) and listed under
            C{auth.superusers}; C{None} for a registry without users.
        """
        self.base_dir = base_dir
        self.port = port if port is not None else free_port()
        self.hostport = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.hostport}"
        self.data_dir = base_dir / "data"
        self.config_path = base_dir / "quayd.yaml"
        self.log_path = base_dir / "quayd.log"
        self.output_path = base_dir / "quayd.out"
        self.startup_timeout = startup_timeout
        self.twistd = Path(sys.executable).parent / "twistd"
        self.quayd_admin = Path(sys.executable).parent / "quayd-admin"
        self._process: subprocess.Popen[bytes] | None = None
        self._output: BinaryIO | None = None
        self.login: Login | None = (
            Login(username=superuser, password=secrets.token_urlsafe(18)) if superuser is not None else None
        )
        self._user_created = False
        config: dict[str, object] = {
            "data_dir": str(self.data_dir),
            "server": {
                "hostname": self.hostport,
                "scheme": "http",
                "listen": [f"tcp:{self.port}:interface=127.0.0.1"],
            },
            "logging": {"format": "json"},
        }
        if superuser is not None:
            config["auth"] = {"superusers": [superuser]}
        config.update(extra_config or {})
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def argv(self) -> list[str]:
        """
        The command line that starts this quayd.
        """
        return [
            str(self.twistd),
            "--nodaemon",
            "--pidfile=",
            f"--logfile={self.log_path}",
            "quayd",
            "--config",
            str(self.config_path),
        ]

    @property
    def database_path(self) -> Path:
        """
        The daemon's SQLite file (the default C{database} under C{data_dir}).
        """
        return self.data_dir / "quayd.sqlite"

    @property
    def secret_key_path(self) -> Path:
        """
        The secret key the daemon generates and loads (C{auth.secret_key_file} unset).
        """
        return daemon_secret_key(self.data_dir)

    @property
    def superuser(self) -> Login:
        """
        The superuser's credentials.

        @raise RuntimeError: If this quayd was made without a superuser.
        """
        if self.login is None:
            raise RuntimeError("this quayd has no superuser")
        return self.login

    @property
    def auth_headers(self) -> dict[str, str]:
        """
        Request headers carrying the superuser's Basic credentials (none without a superuser).
        """
        return self.login.headers if self.login is not None else {}

    def seed(self, seed: Callable[[IdentitySeeder], Awaitable[T]]) -> T:
        """
        Seed identity state into this quayd's database with the real stores, before
        it starts or while it runs (the daemon reads the database on every request).

        @param seed: Creates what the test needs; its result is returned.
        @return: What C{seed} returned.
        """
        return seed_database(self.database_path, self.secret_key_path, seed)

    @property
    def running(self) -> bool:
        """
        Whether the process has been started and has not exited.
        """
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """
        The process id of the running quayd.

        @raise RuntimeError: If it is not running.
        """
        if self._process is None:
            raise RuntimeError("quayd is not running")
        return self._process.pid

    def create_superuser(self) -> None:
        """
        Create the superuser with C{quayd-admin --config CFG set-password NAME}, the
        password on standard input, as an operator does before the first start.

        @raise QuaydStartError: If C{quayd-admin} is missing or fails.
        """
        if self.login is None or self._user_created:
            return
        if not self.quayd_admin.exists():
            raise QuaydStartError(f"{self.quayd_admin} does not exist (is quayd installed beside pytest?)")
        argv = [str(self.quayd_admin), "--config", str(self.config_path), "set-password", self.login.username]
        try:
            run(argv, input=self.login.password + "\n", timeout=60, cwd=self.base_dir)
        except CommandFailed as e:
            raise QuaydStartError(f"creating the superuser failed: {e}") from None
        self._user_created = True

    def start(self) -> None:
        """
        Create the superuser (once), start C{twistd} and wait until C{GET /v2/}
        answers 200 to the superuser's credentials (or, without a superuser,
        401 with a C{Bearer} challenge).

        @raise QuaydStartError: If the process exits first or the wait times out;
            the process is stopped and the message carries the log tails.
        """
        if self.running:
            raise RuntimeError("quayd is already running")
        if not self.twistd.exists():
            raise QuaydStartError(f"{self.twistd} does not exist (is Twisted installed beside pytest?)")
        self.create_superuser()
        self._output = self.output_path.open("ab")
        self._process = subprocess.Popen(
            self.argv,
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except QuaydStartError:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        """
        Poll C{GET /v2/} (with the superuser's credentials) until it answers as a
        ready quayd does, the process exits or time runs out.

        @raise QuaydStartError: On exit or timeout.
        """
        process = self._process
        assert process is not None
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                raise QuaydStartError(f"quayd exited with {code} while starting\n{self.diagnostics()}")
            try:
                result = http_request("GET", f"{self.url}/v2/", headers=self.auth_headers, timeout=2.0)
            except OSError as error:
                last = f"{type(error).__name__}: {error}"
            else:
                challenge = result.headers.get("WWW-Authenticate", "")
                if result.status == 200 or (
                    self.login is None and result.status == 401 and challenge.startswith("Bearer ")
                ):
                    return
                last = f"HTTP {result.status}: {result.body[:500]!r}"
            time.sleep(0.1)
        raise QuaydStartError(
            f"GET {self.url}/v2/ did not answer 200 within {self.startup_timeout} s ({last})\n"
            f"{self.diagnostics()}"
        )

    def kill(self) -> None:
        """
        SIGKILL the process and reap it, as a crash would end it.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        self._reaped()

    def stop(self, timeout: float = 15.0) -> int | None:
        """
        SIGTERM the process, wait for it, and SIGKILL it if it lingers.

        @param timeout: Seconds to wait after SIGTERM.
        @return: The exit status, or C{None} if it was not started.
        """
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        code = process.returncode
        self._reaped()
        return code

    def _reaped(self) -> None:
        """
        Forget the exited process and close its output file.
        """
        self._process = None
        if self._output is not None:
            self._output.close()
            self._output = None

    def diagnostics(self, limit: int = 6000) -> str:
        """
        Describe this quayd for a failure message.

        @param limit: Most bytes of each log to include.
        @return: The command line and the tails of the log and of stdout/stderr.
        """
        return (
            f"quayd command: {' '.join(self.argv)} (cwd {self.base_dir})\n"
            f"--- tail of {self.log_path} ---\n{file_tail(self.log_path, limit)}\n"
            f"--- tail of {self.output_path} (stdout/stderr) ---\n{file_tail(self.output_path, limit)}"
        )

    def blob_url(self, repository: str, digest: str) -> str:
        """
        @param repository: Repository name, e.g. C{team/app}.
        @param digest: Blob digest, C{sha256:<hex>}.
        @return: The blob's absolute URL on this quayd.
        """
        return f"{self.url}/v2/{repository}/blobs/{digest}"

    def committed_blob_path(self, digest: str) -> Path:
        """
        @param digest: Blob digest, C{sha256:<hex>}.
        @return: Where quayd's filesystem store keeps that blob once committed.
        """
        algorithm, _, hex_ = digest.partition(":")
        return self.data_dir / "blobs" / algorithm / hex_[:2] / hex_


# --- image building ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Layer:
    """
    How to build one layer: a few small files or one file of random bytes.

    @ivar files: Path inside the layer to file content.
    @ivar random_size: Size of a file of incompressible random bytes added as
        C{random.bin}, generated while the tar is written.
    @ivar compress: Store the layer gzip-compressed (C{tar+gzip}); otherwise
        as plain C{tar}.
    """

    files: Mapping[str, bytes] = field(default_factory=dict)
    random_size: int = 0
    compress: bool = True


#: A layer given as its one file's bytes (gzip), as a size of random data (plain tar), or in full.
LayerSpec = bytes | int | Layer


@dataclass(frozen=True, slots=True, kw_only=True)
class Descriptor:
    """
    An OCI content descriptor of a blob written into a layout.
    """

    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, JSONValue]:
        """
        @return: The descriptor as OCI JSON.
        """
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True, slots=True, kw_only=True)
class BuiltImage:
    """
    A single-platform image written into an OCI layout.

    @ivar manifest: Descriptor of the image manifest.
    @ivar config: Descriptor of the image config; its digest is the image ID
        that docker and podman report.
    @ivar layers: Descriptors of the layer blobs, in order.
    @ivar diff_ids: Digests of the uncompressed layer tars.
    """

    layout: Path
    tag: str
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]
    architecture: str
    os: str

    @property
    def reference(self) -> str:
        """
        The C{oci:} transport reference skopeo and podman understand.
        """
        return f"oci:{self.layout}:{self.tag}"

    def blob_path(self, digest: str) -> Path:
        """
        @param digest: A digest of a blob in the layout.
        @return: Its file.
        """
        return blob_path(self.layout, digest)


@dataclass(frozen=True, slots=True, kw_only=True)
class BuiltIndex:
    """
    A multi-platform image (an image index and its children) in an OCI layout.
    """

    layout: Path
    tag: str
    index: Descriptor
    children: tuple[BuiltImage, ...]

    @property
    def reference(self) -> str:
        """
        The C{oci:} transport reference skopeo understands.
        """
        return f"oci:{self.layout}:{self.tag}"

    def child(self, architecture: str) -> BuiltImage:
        """
        @param architecture: C{amd64}, C{arm64}, ...
        @return: The child image for that architecture.
        """
        for image in self.children:
            if image.architecture == architecture:
                return image
        raise KeyError(architecture)


def blob_path(layout: Path, digest: str) -> Path:
    """
    @param layout: An OCI image layout directory.
    @param digest: A blob digest, C{sha256:<hex>}.
    @return: The blob's file in the layout.
    """
    algorithm, _, hex_ = digest.partition(":")
    return layout / "blobs" / algorithm / hex_


class _Sink(Protocol):
    """
    Anything bytes can be written to: a file, a L{gzip.GzipFile}, another L{_HashingWriter}.
    """

    def write(self, data: ReadableBuffer, /) -> object:
        """
        @param data: A bytes-like chunk to write whole.
        """


class _HashingWriter(io.RawIOBase):
    """
    A write-only stream that digests and counts what passes through it to another stream.
    """

    def __init__(self, target: _Sink) -> None:
        """
        @param target: Where the bytes go on.
        """
        super().__init__()
        self._target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        """
        @return: Always C{True}.
        """
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        """
        Digest, count and forward a chunk.

        @param data: A bytes-like chunk.
        @return: The number of bytes written.
        """
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self._target.write(view)
        self.size += len(view)
        return len(view)


class _RandomReader(io.RawIOBase):
    """
    A readable stream of a fixed number of random bytes, generated on demand.
    """

    def __init__(self, size: int) -> None:
        """
        @param size: Total bytes the stream yields.
        """
        super().__init__()
        self._remaining = size

    def readable(self) -> bool:
        """
        @return: Always C{True}.
        """
        return True

    def read(self, size: int = -1) -> bytes:
        """
        @param size: Most bytes wanted; negative for all that remain.
        @return: Fresh random bytes; empty at the end.
        """
        if size < 0:
            size = self._remaining
        size = min(size, self._remaining, 4 * _CHUNK)
        self._remaining -= size
        return os.urandom(size)


def _init_layout(layout: Path) -> None:
    """
    Create the skeleton of an OCI image layout (idempotent).

    @param layout: The layout directory; created if missing.
    """
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}))


def _write_blob(layout: Path, data: bytes, media_type: str) -> Descriptor:
    """
    Store a small blob in a layout.

    @param layout: An initialised OCI layout.
    @param data: The blob bytes.
    @param media_type: Media type for the returned descriptor.
    @return: The blob's descriptor.
    """
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob_path(layout, digest).write_bytes(data)
    return Descriptor(media_type=media_type, digest=digest, size=len(data))


def _canonical_json(value: JSONValue) -> bytes:
    """
    @param value: A JSON document.
    @return: Its compact, key-sorted encoding, as stored in the layout.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _as_layer(spec: LayerSpec, index: int) -> Layer:
    """
    Normalise a layer spec.

    @param spec: Bytes (one small file, gzip), an int (that many random
        bytes, plain tar) or a L{Layer}.
    @param index: Position of the layer, used to name its files.
    @return: The layer to build.
    """
    if isinstance(spec, Layer):
        return spec
    if isinstance(spec, int):
        return Layer(random_size=spec, compress=False)
    return Layer(files={f"layer{index}/content.txt": spec}, compress=True)


def _write_layer(layout: Path, layer: Layer, index: int) -> tuple[Descriptor, str]:
    """
    Write one layer as a tar (optionally gzip-compressed) streamed to disk.

    The tar is digested as it is produced (its diff ID) and the stored blob
    as it is written (its digest), so even a large random layer needs one
    pass and constant memory.

    @param layout: An initialised OCI layout.
    @param layer: What the layer holds.
    @param index: Position of the layer, used to name its directory.
    @return: The blob's descriptor and the layer's diff ID.
    """
    temporary = layout / "blobs" / "sha256" / f".tmp-{uuid.uuid4().hex}"
    with temporary.open("wb") as raw:
        blob = _HashingWriter(raw)
        compressor = (
            gzip.GzipFile(fileobj=blob, mode="wb", mtime=0, compresslevel=6) if layer.compress else None
        )
        tar_stream = _HashingWriter(compressor if compressor is not None else blob)
        random_name = f"layer{index}/random.bin"
        names = [*layer.files, *([random_name] if layer.random_size else [])]
        directories = {str(parent) for name in names for parent in PurePosixPath(name).parents} - {"."}
        with tarfile.open(fileobj=tar_stream, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            for name in sorted(directories):
                directory = tarfile.TarInfo(name)
                directory.type = tarfile.DIRTYPE
                directory.mode = 0o755
                archive.addfile(directory)
            for name, content in sorted(layer.files.items()):
                member = tarfile.TarInfo(name)
                member.size = len(content)
                member.mode = 0o644
                archive.addfile(member, io.BytesIO(content))
            if layer.random_size:
                member = tarfile.TarInfo(random_name)
                member.size = layer.random_size
                member.mode = 0o644
                archive.addfile(member, _RandomReader(layer.random_size))
        if compressor is not None:
            compressor.close()
    digest = "sha256:" + blob.digest.hexdigest()
    os.replace(temporary, blob_path(layout, digest))
    media_type = OCI_LAYER_GZIP if layer.compress else OCI_LAYER_TAR
    diff_id = "sha256:" + tar_stream.digest.hexdigest()
    return Descriptor(media_type=media_type, digest=digest, size=blob.size), diff_id


def _write_index_json(layout: Path, manifests: Sequence[JSONValue]) -> None:
    """
    Write the layout's top-level C{index.json}, keeping entries of other tags.

    @param layout: An initialised OCI layout.
    @param manifests: New descriptors (with C{ref.name} annotations) to add;
        an existing entry with the same tag is replaced.
    """
    path = layout / "index.json"
    existing: list[JSONValue] = json.loads(path.read_text())["manifests"] if path.exists() else []
    tags = {entry["annotations"][OCI_REF_NAME] for entry in manifests}
    kept = [entry for entry in existing if entry.get("annotations", {}).get(OCI_REF_NAME) not in tags]
    path.write_bytes(_canonical_json({"schemaVersion": 2, "manifests": [*kept, *manifests]}))


def _build_image_blobs(
    layout: Path, layers: Sequence[LayerSpec], architecture: str, os_name: str, variant: str | None
) -> BuiltImage:
    """
    Write an image's layers, config and manifest into a layout, without tagging it.

    @param layout: An initialised OCI layout.
    @param layers: The layers, bottom first.
    @param architecture: GOARCH of the image.
    @param os_name: GOOS of the image.
    @param variant: CPU variant (C{v8} for arm64), if any.
    @return: The image, with an empty tag.
    """
    built = [_write_layer(layout, _as_layer(spec, index), index) for index, spec in enumerate(layers)]
    descriptors = tuple(descriptor for descriptor, _ in built)
    diff_ids = tuple(diff_id for _, diff_id in built)
    platform: dict[str, JSONValue] = {"architecture": architecture, "os": os_name}
    if variant is not None:
        platform["variant"] = variant
    config_json: dict[str, JSONValue] = {
        **platform,
        "created": _EPOCH,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/true"],
            # A nonce keeps every built image (and so its image ID) distinct.
            "Labels": {"org.quayd.e2e.build": uuid.uuid4().hex},
        },
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [
            {"created": _EPOCH, "created_by": f"quayd e2e layer {index} ({descriptor.size} bytes)"}
            for index, descriptor in enumerate(descriptors)
        ],
    }
    config = _write_blob(layout, _canonical_json(config_json), OCI_CONFIG)
    manifest_json: dict[str, JSONValue] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [descriptor.to_json() for descriptor in descriptors],
    }
    manifest = _write_blob(layout, _canonical_json(manifest_json), OCI_MANIFEST)
    return BuiltImage(
        layout=layout,
        tag="",
        manifest=manifest,
        config=config,
        layers=descriptors,
        diff_ids=diff_ids,
        architecture=architecture,
        os=os_name,
    )


def build_oci_layout(
    layout: Path,
    layers: Sequence[LayerSpec],
    *,
    tag: str = "latest",
    arch: str = "amd64",
    os: str = "linux",
) -> BuiltImage:
    """
    Build a single-platform image into an OCI image layout.

    @param layout: Layout directory, created if missing; an existing layout
        gains the image (and the tag moves to it).
    @param layers: Layers, bottom first: C{bytes} is one small file in a gzip
        layer, an C{int} is that many random bytes in a plain tar layer, a
        L{Layer} says exactly what to build.
    @param tag: The C{org.opencontainers.image.ref.name} of the image.
    @param arch: Architecture in the config (C{amd64}, C{arm64}, ...).
    @param os: Operating system in the config.
    @return: The image and its blobs' descriptors.
    """
    _init_layout(layout)
    variant = "v8" if arch == "arm64" else None
    image = _build_image_blobs(layout, layers, arch, os, variant)
    _write_index_json(layout, [{**image.manifest.to_json(), "annotations": {OCI_REF_NAME: tag}}])
    return BuiltImage(
        layout=layout,
        tag=tag,
        manifest=image.manifest,
        config=image.config,
        layers=image.layers,
        diff_ids=image.diff_ids,
        architecture=arch,
        os=os,
    )


def build_oci_index_layout(
    layout: Path,
    *,
    tag: str = "latest",
    platforms: Sequence[str] = ("linux/amd64", "linux/arm64"),
    layers_per_image: int = 2,
) -> BuiltIndex:
    """
    Build a multi-platform image: one small image per platform and an image index over them.

    The layout's C{index.json} points at the image index blob under C{tag},
    which is what C{skopeo copy --all oci:DIR:TAG ...} copies.

    @param layout: Layout directory, created if missing.
    @param tag: The tag of the image index.
    @param platforms: C{os/arch} of each child.
    @param layers_per_image: Small gzip layers in each child (distinct content per platform).
    @return: The index and its children.
    """
    _init_layout(layout)
    children: list[BuiltImage] = []
    entries: list[JSONValue] = []
    for platform in platforms:
        os_name, _, architecture = platform.partition("/")
        variant = "v8" if architecture == "arm64" else None
        layers: list[LayerSpec] = [
            f"{platform} layer {index} {uuid.uuid4().hex}\n".encode() for index in range(layers_per_image)
        ]
        child = _build_image_blobs(layout, layers, architecture, os_name, variant)
        children.append(child)
        child_platform: dict[str, JSONValue] = {"architecture": architecture, "os": os_name}
        if variant is not None:
            child_platform["variant"] = variant
        entries.append({**child.manifest.to_json(), "platform": child_platform})
    index = _write_blob(
        layout, _canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}), OCI_INDEX
    )
    _write_index_json(layout, [{**index.to_json(), "annotations": {OCI_REF_NAME: tag}}])
    return BuiltIndex(layout=layout, tag=tag, index=index, children=tuple(children))


def read_layout_manifest(layout: Path, tag: str) -> tuple[Descriptor, bytes]:
    """
    Find the manifest (or index) a tag names in an OCI layout.

    @param layout: An OCI image layout, e.g. one skopeo wrote.
    @param tag: The C{ref.name} to look up.
    @return: The descriptor from C{index.json} and the manifest bytes.
    @raise KeyError: If the tag is not in the layout.
    """
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get(OCI_REF_NAME) == tag:
            descriptor = Descriptor(media_type=entry["mediaType"], digest=entry["digest"], size=entry["size"])
            return descriptor, blob_path(layout, descriptor.digest).read_bytes()
    raise KeyError(f"{tag!r} not in {layout}/index.json")


def layout_blobs(layout: Path) -> dict[str, Path]:
    """
    @param layout: An OCI image layout.
    @return: Every blob in it, by digest.
    """
    return {
        f"sha256:{path.name}": path
        for path in (layout / "blobs" / "sha256").iterdir()
        if path.is_file() and not path.name.startswith(".")
    }


# --- skopeo -------------------------------------------------------------------------------------


class Skopeo:
    """
    Runs C{skopeo} against an insecure (plain HTTP) registry.

    Credentials stored by L{login} go to an auth file of this helper's own
    (C{REGISTRY_AUTH_FILE}), never to the host's, and every command uses it.
    """

    def __init__(self, executable: str, work_dir: Path) -> None:
        """
        @param executable: Path of the skopeo binary.
        @param work_dir: Scratch directory (C{TMPDIR} for skopeo's temporary
            files, and the auth file).
        """
        self.executable = executable
        self.work_dir = work_dir
        self.auth_file = work_dir / "auth.json"
        work_dir.mkdir(parents=True, exist_ok=True)
        if not self.auth_file.exists():
            self.auth_file.write_text('{"auths": {}}\n')

    @property
    def env(self) -> dict[str, str]:
        """
        Environment for skopeo: its scratch directory and its own auth file.
        """
        return {"TMPDIR": str(self.work_dir), "REGISTRY_AUTH_FILE": str(self.auth_file)}

    def __call__(
        self, *args: str, timeout: float = 600.0, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """
        Run C{skopeo --insecure-policy ARGS...}.

        The policy is bypassed so that the tests do not depend on
        C{/etc/containers/policy.json}.

        @param args: Subcommand and arguments.
        @param timeout: Seconds before the command is killed.
        @param check: Raise L{CommandFailed} on a non-zero exit.
        @param input: Standard input (a password for C{--password-stdin}).
        @return: The completed process.
        @raise CommandFailed: On a non-zero exit.
        """
        return run(
            [self.executable, "--insecure-policy", *args],
            env=self.env,
            timeout=timeout,
            check=check,
            input=input,
        )

    def login(self, registry: str, login: Login) -> None:
        """
        C{skopeo login} over plain HTTP, the password on standard input.

        @param registry: C{host:port}.
        @param login: The credentials.
        """
        self(
            "login",
            "--tls-verify=false",
            "--username",
            login.username,
            "--password-stdin",
            registry,
            input=login.password + "\n",
            timeout=120,
        )

    def copy(
        self, source: str, destination: str, *, all_images: bool = False, src_no_creds: bool = False
    ) -> None:
        """
        Copy an image without changing any digest, over plain HTTP.

        C{--preserve-digests} stops skopeo from compressing plain-tar layers
        or converting manifests, so the registry must store exactly the source.

        @param source: Source reference (C{oci:...}, C{docker://...}).
        @param destination: Destination reference.
        @param all_images: Copy every image of an index (C{--all}).
        @param src_no_creds: Read the source anonymously (C{--src-no-creds}).
        """
        flags = ["--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests", "--retry-times=0"]
        if all_images:
            flags.append("--all")
        if src_no_creds:
            flags.append("--src-no-creds")
        self("copy", *flags, source, destination)

    def remote_digest(self, reference: str) -> str:
        """
        @param reference: A C{docker://} reference.
        @return: The digest the registry reports for the manifest (or index).
        """
        return self(
            "inspect", "--tls-verify=false", "--no-tags", "--format", "{{.Digest}}", reference
        ).stdout.strip()

    def list_tags(self, repository: str) -> list[str]:
        """
        @param repository: A C{docker://host/name} repository (no tag).
        @return: The tags the registry lists for it.
        """
        tags: list[str] = json.loads(self("list-tags", "--tls-verify=false", repository).stdout)["Tags"]
        return tags

    def raw_manifest(self, reference: str) -> bytes:
        """
        @param reference: A C{docker://} reference.
        @return: The exact manifest (or index) bytes the registry serves.
        """
        # Text mode would translate newlines; skopeo prints the bytes unchanged.
        result = subprocess.run(
            [self.executable, "--insecure-policy", "inspect", "--tls-verify=false", "--raw", reference],
            env={**os.environ, **self.env},
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise CommandFailed(
                [self.executable, "inspect", "--raw", reference],
                subprocess.CompletedProcess(
                    result.args,
                    result.returncode,
                    result.stdout.decode("utf-8", "replace"),
                    result.stderr.decode("utf-8", "replace"),
                ),
            )
        return result.stdout


# --- dockerd ------------------------------------------------------------------------------------


class DockerDaemon:
    """
    A private C{dockerd} (vfs storage, no networking set-up) and the CLI to drive it.

    Its directories live under a short path in C{/tmp}, because the daemon's
    unix sockets must fit in C{sun_path} (108 bytes).
    """

    def __init__(self, dockerd: str, docker: str) -> None:
        """
        @param dockerd: Path of the daemon binary.
        @param docker: Path of the CLI binary.
        """
        self.dockerd = dockerd
        self.docker_cli = docker
        self.root = Path(tempfile.mkdtemp(prefix="qd-", dir="/tmp"))
        self.data_root = self.root / "data"
        self.exec_root = self.root / "x"
        self.socket = self.root / "d.sock"
        self.pidfile = self.root / "d.pid"
        self.log_path = self.root / "dockerd.log"
        self.cli_config = self.root / "cli"
        self.host = f"unix://{self.socket}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def env(self) -> dict[str, str]:
        """
        Environment for docker clients: this daemon, and a private CLI config dir.
        """
        return {"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.cli_config)}

    def start(self, timeout: float = 60.0) -> None:
        """
        Start the daemon and wait until C{docker info} succeeds.

        @param timeout: Seconds to wait for the daemon.
        @raise RuntimeError: If it exits or does not answer in time; it is
            stopped and the message carries its log.
        """
        self.cli_config.mkdir(parents=True, exist_ok=True)
        daemon_json = self.root / "daemon.json"
        # An empty config file of our own, so /etc/docker/daemon.json cannot conflict with the flags.
        daemon_json.write_text("{}\n")
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                self.dockerd,
                f"--config-file={daemon_json}",
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-masq=false",
                f"--data-root={self.data_root}",
                f"--exec-root={self.exec_root}",
                f"--host={self.host}",
                f"--pidfile={self.pidfile}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise RuntimeError(f"dockerd exited with {code}\n{file_tail(self.log_path)}")
            result = self.docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
            if result.returncode == 0:
                return
            last = result.stderr
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {timeout} s: {last}\n{file_tail(self.log_path)}")

    def docker(
        self, *args: str, check: bool = True, timeout: float = 600.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """
        Run the docker CLI against this daemon.

        @param args: Subcommand and arguments.
        @param check: Raise L{CommandFailed} on a non-zero exit.
        @param timeout: Seconds before the command is killed.
        @param input: Standard input (a password for C{--password-stdin}).
        @return: The completed process.
        """
        return run([self.docker_cli, *args], env=self.env, check=check, timeout=timeout, input=input)

    def login(self, registry: str, login: Login) -> None:
        """
        C{docker login} (the password on standard input) into this CLI's private config.

        The engine then authenticates its pushes and pulls to C{registry} with
        these credentials, fetching bearer tokens as the registry asks.

        @param registry: C{host:port}; loopback registries are plain HTTP to the engine.
        @param login: The credentials.
        """
        self.docker(
            "login",
            "--username",
            login.username,
            "--password-stdin",
            registry,
            input=login.password,
            timeout=120,
        )

    def logout(self, registry: str) -> None:
        """
        Forget the credentials for C{registry}, so the engine goes anonymous there.

        @param registry: C{host:port}.
        """
        self.docker("logout", registry, check=False, timeout=60)

    def load(self, skopeo: Skopeo, image: BuiltImage, name: str) -> str:
        """
        Put an OCI-layout image into the engine under a name.

        skopeo writes it through the daemon's API (C{docker-daemon:}); it
        ignores C{DOCKER_HOST}, hence C{--dest-daemon-host}.

        @param skopeo: The skopeo helper.
        @param image: An image built by L{build_oci_layout}.
        @param name: C{repository:tag} to give it in the engine.
        @return: The engine's image ID for it.
        """
        skopeo("copy", f"--dest-daemon-host={self.host}", image.reference, f"docker-daemon:{name}")
        return self.image_id(name)

    def image_id(self, reference: str) -> str:
        """
        @param reference: An image reference known to the engine.
        @return: Its image ID (C{sha256:} of its config).
        """
        return self.docker("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()

    def repo_digests(self, reference: str) -> list[str]:
        """
        @param reference: An image reference known to the engine.
        @return: Its C{RepoDigests} (C{name@sha256:...}).
        """
        output = self.docker("image", "inspect", "--format", "{{json .RepoDigests}}", reference).stdout
        digests: list[str] = json.loads(output)
        return digests

    def stop(self, timeout: float = 30.0) -> None:
        """
        SIGTERM the daemon (SIGKILL after C{timeout}) and reap it.

        @param timeout: Seconds to wait for a clean shutdown.
        """
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        """
        Stop the daemon and remove its directories.
        """
        self.stop()
        _unmount_below(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def _unmount_below(root: Path) -> None:
    """
    Lazily unmount anything a daemon left mounted under a directory, deepest first.

    dockerd bind-mounts a network namespace file under its exec root; if it
    dies uncleanly that mount would make removing the directory fail.

    @param root: The directory being removed.
    """
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = str(root) + "/"
    targets = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False, stdin=subprocess.DEVNULL)


# --- podman -------------------------------------------------------------------------------------


class Podman:
    """
    Runs C{podman} as root with private vfs storage and no systemd dependency.
    """

    def __init__(self, executable: str, base_dir: Path) -> None:
        """
        @param executable: Path of the podman binary.
        @param base_dir: Directory for storage, run state and temporary files.
        """
        self.executable = executable
        self.base_dir = base_dir
        self.storage_root = base_dir / "storage"
        self.run_root = base_dir / "run"
        self.tmp_dir = base_dir / "tmp"
        for directory in (self.storage_root, self.run_root, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.containers_conf = base_dir / "containers.conf"
        self.containers_conf.write_text(
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            f'events_logfile_path = "{base_dir / "events.log"}"\n'
        )
        # podman refuses to run with a REGISTRY_AUTH_FILE that does not exist.
        self.auth_file = base_dir / "auth.json"
        self.auth_file.write_text('{"auths": {}}\n')
        self.storage_conf = base_dir / "storage.conf"
        self.storage_conf.write_text(
            f'[storage]\ndriver = "vfs"\nrunroot = "{self.run_root}"\ngraphroot = "{self.storage_root}"\n'
        )

    @property
    def global_args(self) -> list[str]:
        """
        Options that isolate every podman call from the host's storage and systemd.
        """
        return [
            f"--root={self.storage_root}",
            f"--runroot={self.run_root}",
            "--storage-driver=vfs",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
            f"--tmpdir={self.tmp_dir}",
        ]

    @property
    def env(self) -> dict[str, str]:
        """
        Environment pointing podman at this helper's configuration files and
        its own auth file (never the host's C{/run/containers/0/auth.json}).
        """
        return {
            "CONTAINERS_CONF": str(self.containers_conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
            "TMPDIR": str(self.tmp_dir),
            "REGISTRY_AUTH_FILE": str(self.auth_file),
        }

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 600.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """
        Run C{podman GLOBAL-OPTIONS ARGS...}.

        @param args: Subcommand and arguments.
        @param check: Raise L{CommandFailed} on a non-zero exit.
        @param timeout: Seconds before the command is killed.
        @param input: Standard input (a password for C{--password-stdin}).
        @return: The completed process.
        """
        return run(
            [self.executable, *self.global_args, *args],
            env=self.env,
            check=check,
            timeout=timeout,
            input=input,
        )

    def login(self, registry: str, login: Login) -> None:
        """
        C{podman login} over plain HTTP, the password on standard input.

        @param registry: C{host:port}.
        @param login: The credentials.
        """
        self(
            "login",
            "--tls-verify=false",
            "--username",
            login.username,
            "--password-stdin",
            registry,
            input=login.password + "\n",
            timeout=120,
        )

    def image_id(self, reference: str) -> str:
        """
        @param reference: An image in podman's storage.
        @return: Its full image ID (the hex of its config digest).
        """
        return self("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()

    def cleanup(self) -> None:
        """
        Remove every image podman stored, then the directories.
        """
        self("rmi", "--all", "--force", check=False, timeout=120)
        _unmount_below(self.base_dir)
        shutil.rmtree(self.base_dir, ignore_errors=True)


def iter_files(root: Path) -> Iterator[Path]:
    """
    @param root: A directory (may be missing).
    @return: Every regular file below it.
    """
    if not root.exists():
        return iter(())
    return (path for path in root.rglob("*") if path.is_file())
