"""
A webhook receiver for the end-to-end tests, and the admin API calls that
point a quayd's webhooks at it.

The receiver runs in a subprocess of its own (L{receiver_main}), so that it
keeps answering while the test process blocks on C{docker} and HTTP calls, and
so that a test can take it down and bring it back on the same port. It
appends every request it gets (path, headers, exact body, the status it
answered) to a JSON-lines file that the tests read (L{ReceiverProcess.hits}).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet.address import IPv4Address
from twisted.web.resource import Resource
from twisted.web.server import Request

from tests.support.clients import QuaydProcess, file_tail, http_request

JSONValue = Any

#: The checkout, on whose path the receiver subprocess imports this module.
_ROOT = Path(__file__).resolve().parents[2]
#: The secret every webhook of the end-to-end tests signs with.
SECRET = "e2e webhook secret"
#: The C{webhooks} section of a quayd under test: loopback receivers, quick coalescing and retries.
WEBHOOK_SETTINGS = {"allow_loopback": True, "coalesce_window": 0.5, "initial_backoff": 0.2, "max_backoff": 1}


# --- the receiver subprocess ----------------------------------------------------------------------


class _RecordingReceiver(Resource):
    """Answers POSTs with scripted statuses (then 200), appending each request to a JSON-lines file."""

    isLeaf = True

    def __init__(self, log: BinaryIO, statuses: list[int]) -> None:
        """
        @param log: The file requests are appended to, one JSON object a line.
        @param statuses: Statuses for the first requests, in order; 200 after them.
        """
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted's base method is unannotated
        self._log = log
        self._statuses = statuses

    def render_POST(self, request: Request) -> bytes:
        """Record the request (its exact body base64-encoded), then answer."""
        assert request.content is not None
        body = request.content.read()
        status = self._statuses.pop(0) if self._statuses else 200
        record = {
            "path": request.path.decode(),
            "headers": {
                name.decode().lower(): values[0].decode()
                for name, values in request.requestHeaders.getAllRawHeaders()
            },
            "body": base64.b64encode(body).decode(),
            "status": status,
        }
        self._log.write(json.dumps(record).encode() + b"\n")
        self._log.flush()
        request.setResponseCode(status)
        return b"received"


def receiver_main(argv: Sequence[str]) -> None:
    """
    Run a webhook receiver on 127.0.0.1 until SIGTERM (the receiver subprocess's entry point).

    @param argv: C{--port N} (0 for any), C{--log FILE}, C{--ready FILE} (gets the port once
        listening) and C{--statuses 500,503} (answers to the first requests).
    """
    from twisted.internet import reactor
    from twisted.web.server import Site

    parser = argparse.ArgumentParser(prog="webhook-receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--statuses", default="")
    options = parser.parse_args(argv)
    statuses = [int(s) for s in options.statuses.split(",") if s]
    with options.log.open("ab") as log:
        site = Site(_RecordingReceiver(log, statuses))
        port = reactor.listenTCP(options.port, site, interface="127.0.0.1")  # type: ignore[arg-type]  # Twisted types the factory as an invariant generic ServerFactory
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        temporary = options.ready.with_suffix(".tmp")
        temporary.write_text(str(address.port))
        temporary.rename(options.ready)
        reactor.run()


@dataclass(frozen=True, slots=True, kw_only=True)
class Hit:
    """One POST the receiver got, and the status it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def delivery(self) -> str:
        """The delivery id (C{X-Quayd-Delivery})."""
        return self.headers.get("x-quayd-delivery", "")

    def json(self) -> dict[str, JSONValue]:
        """The body as JSON."""
        document: dict[str, JSONValue] = json.loads(self.body)
        return document


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """
    Check C{X-Quayd-Signature-256} as a receiver should: HMAC-SHA256 of the raw body with the
    shared secret, compared in constant time.
    """
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


class ReceiverProcess:
    """
    The receiver subprocess: started, stopped and restarted on the same port, and its log read.
    """

    def __init__(self, directory: Path) -> None:
        """
        @param directory: Where its log, ready file and output go.
        """
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.log_path = directory / "requests.jsonl"
        self.output_path = directory / "receiver.out"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, path: str = "/hook") -> str:
        """The URL of C{path} on this receiver."""
        assert self.port, "the receiver has not been started"
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, statuses: Sequence[int] = ()) -> None:
        """
        Start listening (on the port of the previous start, if any) and wait until it does.

        @param statuses: Answers to the first requests; 200 after them.
        """
        assert self._process is None, "the receiver is running"
        ready = self.directory / "ready"
        ready.unlink(missing_ok=True)
        code = "import sys; from tests.support.webhooks import receiver_main; receiver_main(sys.argv[1:])"
        argv = [sys.executable, "-c", code, "--port", str(self.port), "--log", str(self.log_path)]
        argv += ["--ready", str(ready), "--statuses", ",".join(str(s) for s in statuses)]
        with self.output_path.open("ab") as output:
            self._process = subprocess.Popen(
                argv, cwd=_ROOT, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the receiver did not start:\n{file_tail(self.output_path)}")
            time.sleep(0.02)
        self.port = int(ready.read_text())

    def stop(self) -> None:
        """SIGTERM the receiver (SIGKILL if it lingers); connections are refused afterwards."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def hits(self) -> list[Hit]:
        """Every request received so far, in order (a line still being written is left out)."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return []
        hits = []
        for line in data.split(b"\n")[:-1]:
            record = json.loads(line)
            hits.append(
                Hit(
                    path=record["path"],
                    headers=record["headers"],
                    body=base64.b64decode(record["body"]),
                    status=record["status"],
                )
            )
        return hits


# --- the admin API ---------------------------------------------------------------------------------


def admin_api(
    server: QuaydProcess,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: JSONValue = None,
) -> tuple[int, JSONValue]:
    """
    Call a quayd's admin API.

    @param path: The route, from C{/api/v1}.
    @param headers: The caller's credentials (Basic or a bearer token).
    @param body: Sent as JSON unless C{None}.
    @return: The status and the decoded JSON answer (C{None} without a body).
    """
    sent = dict(headers)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    result = http_request(method, f"{server.url}{path}", headers=sent, body=data)
    return result.status, json.loads(result.body) if result.body else None


def create_webhook(server: QuaydProcess, repository: str, url: str, headers: Mapping[str, str]) -> str:
    """
    Add a webhook (signed with L{SECRET}) to a repository over the admin API.

    @return: The new webhook's id.
    """
    path = f"/api/v1/repositories/{repository}/webhooks"
    status, document = admin_api(
        server, "POST", path, headers, {"url": url, "secret": SECRET, "description": "e2e"}
    )
    assert status == 201, document
    assert "secret" not in document and document["has_secret"] is True
    webhook_id: str = document["id"]
    return webhook_id


def list_deliveries(
    server: QuaydProcess, repository: str, webhook_id: str, headers: Mapping[str, str]
) -> list[dict[str, JSONValue]]:
    """A webhook's deliveries, newest first, from the admin API."""
    path = f"/api/v1/repositories/{repository}/webhooks/{webhook_id}/deliveries"
    status, document = admin_api(server, "GET", path, headers)
    assert status == 200, document
    deliveries: list[dict[str, JSONValue]] = document["deliveries"]
    return deliveries
