"""
Two C{twistd quayd} processes sharing one PostgreSQL database and one blob
directory, as behind a load balancer.

Both processes have the same public name (C{server.hostname}, here the first
one's address, standing in for the load balancer's), the same key files and
one superuser, created once with C{quayd-admin set-password}: a bearer token
either process issues is valid on both. A client may therefore talk to either
process for any request: docker pushes through one and pulls through the
other, an upload started on one is finished on the other, concurrent pushes of
one tag through both end in one state, and a PostgreSQL restart in the middle
of a stream of pushes loses no acknowledged push and needs no quayd restart.
Both deliver push webhooks from the one queue in the database: every push
event reaches the receiver once, sent by one process or the other.

One more test moves a stopped SQLite quayd to PostgreSQL with the installed
C{quayd-admin copy-from-sqlite} and serves its image from the copy. The
restart test comes last: it restarts the session's cluster.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from quayd.auth.keys import load_secret_box, load_signing_key
from tests.support.clients import (
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    DockerDaemon,
    HTTPResult,
    JSONValue,
    Layer,
    QuaydProcess,
    Skopeo,
    build_oci_layout,
    free_port,
    http_request,
    run,
)
from tests.support.postgres import PostgresCluster
from tests.support.webhooks import (
    SECRET,
    WEBHOOK_SETTINGS,
    Hit,
    ReceiverProcess,
    admin_api,
    create_webhook,
    list_deliveries,
    verify_signature,
)

pytestmark = pytest.mark.e2e

#: What C{docker push} prints last: C{<tag>: digest: sha256:... size: N}.
_PUSHED_DIGEST = re.compile(r"^\S+: digest: (sha256:[0-9a-f]{64}) size: \d+$", re.MULTILINE)
#: Seconds a raw request may take before the test calls it a hang.
_REQUEST_TIMEOUT = 30.0


class _SharedDatabaseQuayd(QuaydProcess):
    """
    A quayd whose superuser already exists in the shared database: it was
    created once, through the first process's configuration.
    """

    def create_superuser(self) -> None:
        """Nothing to do: the first process created the superuser in the shared database."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QuaydPair:
    """
    Two running quayds over one database and one blob directory.

    @ivar first: The process whose address is the public name of both.
    @ivar second: The other process.
    @ivar database: The shared PostgreSQL database's name.
    """

    first: QuaydProcess
    second: QuaydProcess
    database: str

    @property
    def both(self) -> tuple[QuaydProcess, QuaydProcess]:
        """The two processes."""
        return (self.first, self.second)

    def diagnostics(self) -> str:
        """The log tails of both processes, for failure messages."""
        return "\n".join(server.diagnostics(3000) for server in self.both)


@contextmanager
def _running_pair(
    tmp_path: Path, postgres_cluster: PostgresCluster, extra_config: Mapping[str, object] | None = None
) -> Iterator[QuaydPair]:
    """
    Start two quayds on one new PostgreSQL database, one C{storage.path} and one
    pair of key files (generated here); stop both on the way out.

    @param extra_config: Top-level config sections both processes get as well.
    """
    database = postgres_cluster.create_database()
    shared = tmp_path / "shared"
    keys = shared / "keys"
    signing_key = keys / "token-signing.pem"
    secret_key = keys / "secret.key"
    load_signing_key(signing_key, generate=True)
    load_secret_box(secret_key, generate=True)
    first_port, second_port = free_port(), free_port()
    public_name = f"127.0.0.1:{first_port}"

    def config(port: int) -> dict[str, object]:
        return {
            "server": {
                "hostname": public_name,
                "scheme": "http",
                "listen": [f"tcp:{port}:interface=127.0.0.1"],
            },
            "database": {"url": postgres_cluster.url(database), "pool_size": 4},
            "storage": {"path": str(shared / "blobs")},
            "auth": {
                "superusers": ["tester"],
                "token_signing_key_file": str(signing_key),
                "secret_key_file": str(secret_key),
            },
            **(extra_config or {}),
        }

    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = QuaydProcess(tmp_path / "first", port=first_port, extra_config=config(first_port))
    second = _SharedDatabaseQuayd(tmp_path / "second", port=second_port, extra_config=config(second_port))
    second.login = first.login
    try:
        first.start()
        second.start()
        yield QuaydPair(first=first, second=second, database=database)
    finally:
        second.stop()
        first.stop()


@pytest.fixture
def quayd_pair(tmp_path: Path, postgres_cluster: PostgresCluster) -> Iterator[QuaydPair]:
    """
    Two quayds on one new PostgreSQL database, one C{storage.path} and one
    pair of key files (generated here); both stopped in teardown.
    """
    with _running_pair(tmp_path, postgres_cluster) as pair:
        yield pair


@pytest.fixture
def webhook_pair(tmp_path: Path, postgres_cluster: PostgresCluster) -> Iterator[QuaydPair]:
    """
    Two quayds as in L{quayd_pair}, both delivering webhooks with the end-to-end
    settings (L{WEBHOOK_SETTINGS}: loopback receivers, quick coalescing and retries).
    """
    with _running_pair(tmp_path, postgres_cluster, {"webhooks": WEBHOOK_SETTINGS}) as pair:
        yield pair


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    """A webhook receiver subprocess, not yet started (the test scripts its answers); stopped in teardown."""
    process = ReceiverProcess(tmp_path / "receiver")
    try:
        yield process
    finally:
        process.stop()


# Raw registry requests -------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    """The C{sha256:} digest of C{data}."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _request(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None = None,
    timeout: float = _REQUEST_TIMEOUT,
) -> HTTPResult:
    """One request with a timeout: a request that takes longer raises (a hang fails the test)."""
    return http_request(method, url, headers=headers, body=body, timeout=_REQUEST_TIMEOUT)


def _upload_path(result: HTTPResult) -> str:
    """The path (and query) of an upload's C{Location}, to send to either process."""
    location = result.headers["Location"]
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _with_digest(path: str, digest: str) -> str:
    """An upload URL path with the C{digest} query parameter added."""
    return f"{path}{'&' if '?' in path else '?'}digest={quote(digest)}"


def _bearer(server: QuaydProcess, repository: str) -> dict[str, str]:
    """
    Get a push and pull token for C{repository} from C{server}'s token endpoint
    (with the superuser's Basic credentials).
    """
    result = _request(
        "GET",
        f"{server.url}/v2/auth?service={server.hostport}&scope=repository:{repository}:push,pull",
        server.auth_headers,
    )
    assert result.status == 200, (result.status, result.body)
    token = json.loads(result.body)["token"]
    return {"Authorization": f"Bearer {token}"}


def _manifest(config: bytes, layer: bytes) -> bytes:
    """An OCI image manifest naming C{config} and one uncompressed layer."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_TAR, "digest": _digest(layer), "size": len(layer)}],
    }
    return json.dumps(document, sort_keys=True).encode()


@dataclass
class _Push:
    """
    One image push by raw requests: the statuses of its requests, in order.

    @ivar acknowledged: The manifest digest, once the manifest PUT answered 201.
    """

    server: QuaydProcess
    tag: str
    statuses: list[int] = field(default_factory=list)
    acknowledged: str | None = None


def _push_image(
    server: QuaydProcess, headers: dict[str, str], repository: str, tag: str, config: bytes, layer: bytes
) -> _Push:
    """
    Push the config blob, the layer blob (POST then PUT with the digest) and
    the manifest under C{tag}; stop at the first answer that is not a success.
    """
    push = _Push(server=server, tag=tag)
    base = f"{server.url}/v2/{repository}"
    for blob in (config, layer):
        started = _request("POST", f"{base}/blobs/uploads/", headers)
        push.statuses.append(started.status)
        if started.status != 202:
            return push
        committed = _request(
            "PUT",
            server.url + _with_digest(_upload_path(started), _digest(blob)),
            {**headers, "Content-Type": "application/octet-stream"},
            blob,
        )
        push.statuses.append(committed.status)
        if committed.status != 201:
            return push
    manifest = _manifest(config, layer)
    put = _request("PUT", f"{base}/manifests/{tag}", {**headers, "Content-Type": OCI_MANIFEST}, manifest)
    push.statuses.append(put.status)
    if put.status == 201:
        assert put.headers["Docker-Content-Digest"] == _digest(manifest)
        push.acknowledged = _digest(manifest)
    return push


def _manifest_digest(server: QuaydProcess, headers: dict[str, str], repository: str, reference: str) -> str:
    """GET a manifest and return its digest, checking that the body matches it."""
    result = _request(
        "GET", f"{server.url}/v2/{repository}/manifests/{reference}", {**headers, "Accept": OCI_MANIFEST}
    )
    assert result.status == 200, (server.hostport, reference, result.status, result.body[:300])
    digest = result.headers["Docker-Content-Digest"]
    assert digest == _digest(result.body)
    return digest


def _wait_until_serving(pair: QuaydPair, headers: dict[str, str], within: float = 60.0) -> None:
    """Poll both processes with a database-backed request until both answer 200."""
    deadline = time.monotonic() + within
    pending = set(pair.both)
    while pending:
        for server in list(pending):
            result = _request("GET", f"{server.url}/v2/_catalog", headers)
            if result.status == 200:
                pending.discard(server)
            else:
                assert result.status == 503, (server.hostport, result.status, result.body[:300])
        if pending:
            assert time.monotonic() < deadline, f"not serving again within {within} s\n{pair.diagnostics()}"
            time.sleep(0.2)


# Tests -----------------------------------------------------------------------------------------


def test_cluster_docker_push_one_pull_other(
    quayd_pair: QuaydPair, skopeo: Skopeo, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """docker pushes an image through one process and pulls the same image ID and digest through the other."""
    first, second = quayd_pair.both
    source = build_oci_layout(
        tmp_path / "source",
        [f"{tmp_path.name} base\n".encode(), Layer(files={"srv/app.txt": b"cluster app\n"})],
        tag="v1",
    )
    local = f"quayd-e2e/{tmp_path.name.lower()}:v1"
    pushed_ref = f"{first.hostport}/cluster/app:v1"
    pulled_ref = f"{second.hostport}/cluster/app:v1"
    dockerd.login(first.hostport, first.superuser)
    dockerd.login(second.hostport, second.superuser)
    try:
        image_id = dockerd.load(skopeo, source, local)
        dockerd.docker("tag", local, pushed_ref)
        pushed = _PUSHED_DIGEST.search(dockerd.docker("push", pushed_ref).stdout)
        assert pushed is not None, "docker push printed no digest"
        dockerd.docker("rmi", pushed_ref, local)

        dockerd.docker("pull", pulled_ref)

        assert dockerd.image_id(pulled_ref) == image_id
        assert dockerd.repo_digests(pulled_ref) == [f"{second.hostport}/cluster/app@{pushed.group(1)}"]
    finally:
        dockerd.docker("rmi", "--force", source.config.digest, check=False)


def test_cluster_chunked_upload_continues_on_other_process(quayd_pair: QuaydPair) -> None:
    """An upload started and partly sent on one process is continued and committed on the other."""
    first, second = quayd_pair.both
    headers = first.auth_headers
    data = hashlib.sha256(b"cluster chunk").digest() * 40_000  # 1.28 MB
    middle = len(data) // 2
    digest = _digest(data)
    base = "/v2/cluster/chunked/blobs/uploads/"

    started = _request("POST", first.url + base, headers)
    assert started.status == 202, started.body
    first_chunk = _request(
        "PATCH",
        first.url + _upload_path(started),
        {**headers, "Content-Type": "application/octet-stream", "Content-Range": f"0-{middle - 1}"},
        data[:middle],
    )
    assert first_chunk.status == 202, first_chunk.body
    assert first_chunk.headers["Range"] == f"0-{middle - 1}"

    status = _request("GET", second.url + _upload_path(first_chunk), headers)
    assert status.status == 204, status.body
    assert status.headers["Range"] == f"0-{middle - 1}"
    second_chunk = _request(
        "PATCH",
        second.url + _upload_path(status),
        {**headers, "Content-Type": "application/octet-stream", "Content-Range": f"{middle}-{len(data) - 1}"},
        data[middle:],
    )
    assert second_chunk.status == 202, second_chunk.body
    committed = _request("PUT", second.url + _with_digest(_upload_path(second_chunk), digest), headers)
    assert committed.status == 201, committed.body
    assert committed.headers["Docker-Content-Digest"] == digest

    for server in quayd_pair.both:
        blob = _request("GET", f"{server.url}/v2/cluster/chunked/blobs/{digest}", headers)
        assert blob.status == 200
        assert _digest(blob.body) == digest


def test_cluster_concurrent_pushes_of_one_tag_agree(quayd_pair: QuaydPair) -> None:
    """
    20 concurrent pushes of one tag, half through each process, all succeed;
    the tag ends on one of the pushed manifests, and both processes serve that one.
    """
    repository = "cluster/race"
    headers = _bearer(quayd_pair.first, repository)
    layer = b"shared layer " * 1000
    barrier = threading.Barrier(20)

    def push(index: int) -> _Push:
        server = quayd_pair.both[index % 2]
        config = json.dumps({"architecture": "amd64", "os": "linux", "push": index}).encode()
        barrier.wait(timeout=60)
        return _push_image(server, headers, repository, "race", config, layer)

    with ThreadPoolExecutor(max_workers=20) as executor:
        pushes = list(executor.map(push, range(20)))

    for done in pushes:
        assert done.acknowledged is not None, (done.server.hostport, done.statuses, quayd_pair.diagnostics())
    pushed = {done.acknowledged for done in pushes}
    assert len(pushed) == 20
    served = {_manifest_digest(server, headers, repository, "race") for server in quayd_pair.both}
    assert len(served) == 1, served
    assert served <= pushed
    for server in quayd_pair.both:
        tags = _request("GET", f"{server.url}/v2/{repository}/tags/list", headers)
        assert tags.status == 200
        assert json.loads(tags.body)["tags"] == ["race"]


def test_cluster_copy_from_sqlite_then_serve(tmp_path: Path, postgres_cluster: PostgresCluster) -> None:
    """
    C{quayd-admin copy-from-sqlite} moves a stopped SQLite quayd's metadata
    into PostgreSQL; a quayd on the copy (same blob directory and keys) serves
    the pushed image to the same superuser.
    """
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = QuaydProcess(tmp_path / "old")
    try:
        old.start()
        config = json.dumps({"os": "linux", "copied": True}).encode()
        pushed = _push_image(old, old.auth_headers, "moved/app", "v1", config, b"moved layer " * 100)
        assert pushed.acknowledged is not None, pushed.statuses
    finally:
        old.stop()
    database = postgres_cluster.create_database()
    new = _SharedDatabaseQuayd(
        tmp_path / "new",
        extra_config={
            "database": {"url": postgres_cluster.url(database)},
            "storage": {"path": str(old.data_dir / "blobs")},
            "auth": {
                "superusers": ["tester"],
                "token_signing_key_file": str(old.data_dir / "keys" / "token-signing.pem"),
                "secret_key_file": str(old.secret_key_path),
            },
        },
    )
    new.login = old.login

    copied = run(
        [str(new.quayd_admin), "--config", str(new.config_path), "copy-from-sqlite", str(old.database_path)],
        timeout=120,
    )

    assert copied.stdout.splitlines()[-1].endswith("every table matches"), copied.stdout
    try:
        new.start()
        assert _manifest_digest(new, new.auth_headers, "moved/app", "v1") == pushed.acknowledged
        blob = _request("GET", new.blob_url("moved/app", _digest(config)), new.auth_headers)
        assert blob.status == 200
        assert blob.body == config
    finally:
        new.stop()


# Webhooks --------------------------------------------------------------------------------------

#: What the receiver answers to the first POSTs, whichever process sends them: failed
#: attempts the dispatchers must retry.
_SCRIPTED_FAILURES = (500, 503, 500, 503)
#: The pushes of the webhook test in rounds: tag C{t<i>} goes through process C{i % 2}, the
#: tags of a round are pushed at once, and the rounds are further apart than the coalescing
#: window, so that they make several push events. A round of one push is coalesced and first
#: sent by the process that took it (unless the other one happens to poll first); a round of
#: two leaves both processes racing for it.
_WEBHOOK_ROUNDS = ((0, 1), (2,), (3, 4), (5,), (6, 7), (8,), (9, 10), (11,))


def _log_events(server: QuaydProcess) -> list[dict[str, JSONValue]]:
    """The JSON events C{server} has logged so far (a line still being written is left out)."""
    if not server.log_path.exists():
        return []
    lines = server.log_path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]


def _delivery_attempts(server: QuaydProcess) -> list[tuple[str, int, bool]]:
    """
    The webhook delivery attempts C{server} logged: (delivery id, attempt number, whether
    that attempt delivered it).
    """
    return [
        (event["delivery_id"], int(event["attempt"]), "delivered (" in event["log_format"])
        for event in _log_events(server)
        if "delivery_id" in event and "attempt" in event
    ]


def _summary(hits: list[Hit]) -> str:
    """The receiver's hits, one a line, for failure messages."""
    return "\n".join(
        f"{hit.status} {hit.delivery} {sorted(hit.json().get('updated_tags', {}))}" for hit in hits
    )


def test_cluster_webhook_events_delivered_once(webhook_pair: QuaydPair, receiver: ReceiverProcess) -> None:
    """
    Twelve pushes to one repository, alternating between the processes and partly at once,
    with a receiver that fails the first POSTs: every pushed tag reaches the receiver in
    exactly one successful delivery, no delivery succeeds twice, each POST is one logged
    attempt of one process, and both processes deliver events.
    """
    first, second = webhook_pair.both
    repository = "tester/hooks"
    receiver.start(statuses=_SCRIPTED_FAILURES)
    status, document = admin_api(
        first, "POST", "/api/v1/repositories", first.auth_headers, {"namespace": "tester", "name": "hooks"}
    )
    assert status == 201, document
    webhook_id = create_webhook(second, repository, receiver.url(), first.auth_headers)
    headers = _bearer(first, repository)
    layer = b"webhook layer " * 100
    configs = {
        f"t{index}": json.dumps({"architecture": "amd64", "os": "linux", "push": index}).encode()
        for round_ in _WEBHOOK_ROUNDS
        for index in round_
    }

    def push(index: int) -> _Push:
        tag = f"t{index}"
        return _push_image(webhook_pair.both[index % 2], headers, repository, tag, configs[tag], layer)

    pushes: list[_Push] = []
    with ThreadPoolExecutor(max_workers=2) as executor:
        for round_ in _WEBHOOK_ROUNDS:
            pushes.extend(executor.map(push, round_))
            time.sleep(2 * WEBHOOK_SETTINGS["coalesce_window"])
    acknowledged: dict[str, str] = {}
    for done in pushes:
        assert done.acknowledged is not None, (
            done.server.hostport,
            done.statuses,
            webhook_pair.diagnostics(),
        )
        acknowledged[done.tag] = done.acknowledged
    assert acknowledged.keys() == configs.keys() and len(configs) == 12
    image_ids = {tag: hashlib.sha256(config).hexdigest() for tag, config in configs.items()}

    def settled() -> bool:
        """Every tag in a successful POST, and every delivery recorded as delivered."""
        delivered = {
            tag for hit in receiver.hits() if hit.status == 200 for tag in hit.json()["updated_tags"]
        }
        states = {d["state"] for d in list_deliveries(first, repository, webhook_id, headers)}
        return delivered >= acknowledged.keys() and states == {"delivered"}

    deadline = time.monotonic() + 60
    while not settled():
        assert time.monotonic() < deadline, (
            f"not every push delivered within 60 s; receiver got:\n{_summary(receiver.hits())}\n"
            f"{webhook_pair.diagnostics()}"
        )
        time.sleep(0.2)
    time.sleep(2.0)  # longer than the longest retry delay: a duplicate POST would be in by now

    hits = receiver.hits()
    summary = f"receiver got:\n{_summary(hits)}\n{webhook_pair.diagnostics()}"
    # The scripted failures were sent, and retried under the same delivery id.
    assert tuple(hit.status for hit in hits[: len(_SCRIPTED_FAILURES)]) == _SCRIPTED_FAILURES, summary
    assert {hit.status for hit in hits[len(_SCRIPTED_FAILURES) :]} == {200}, summary
    by_delivery: dict[str, list[Hit]] = {}
    for hit in hits:
        assert hit.headers["x-quayd-event"] == "push", hit.headers
        assert verify_signature(SECRET, hit.body, hit.headers["x-quayd-signature-256"])
        by_delivery.setdefault(hit.delivery, []).append(hit)
    assert any(len(attempts) > 1 for attempts in by_delivery.values()), summary
    # Each delivery (one push event) succeeded exactly once, on its last attempt, and every
    # attempt carried the same body.
    for delivery_id, attempts in by_delivery.items():
        assert [hit.status == 200 for hit in attempts] == [False] * (len(attempts) - 1) + [True], summary
        assert len({hit.body for hit in attempts}) == 1, delivery_id
    # Every pushed tag is in exactly one event, with its image and manifest.
    tags: Counter[str] = Counter()
    for attempts in by_delivery.values():
        payload = attempts[-1].json()
        assert payload["repository"] == repository
        assert payload["updated_tags"] == {tag: image_ids[tag] for tag in payload["updated_tags"]}
        assert payload["manifest_digests"] == [acknowledged[tag] for tag in payload["updated_tags"]]
        tags.update(list(payload["updated_tags"]))
    assert tags == Counter(dict.fromkeys(acknowledged, 1)), summary
    assert 1 <= len(by_delivery) <= 12

    # quayd recorded the same deliveries, each with as many attempts as the receiver got POSTs.
    recorded = list_deliveries(second, repository, webhook_id, headers)
    assert {d["id"]: (d["state"], d["attempts"], d["last_status"]) for d in recorded} == {
        delivery_id: ("delivered", len(attempts), 200) for delivery_id, attempts in by_delivery.items()
    }
    # Each POST is one attempt logged by one process: attempt numbers 1..n of each delivery once
    # each across both logs; the success was logged by one process; both processes delivered.
    logged = {server: _delivery_attempts(server) for server in webhook_pair.both}
    everything = sorted(
        (delivery_id, attempt) for attempts in logged.values() for delivery_id, attempt, _ in attempts
    )
    assert everything == sorted(
        (delivery_id, n + 1) for delivery_id, attempts in by_delivery.items() for n in range(len(attempts))
    ), summary
    delivered_by = {
        server: {delivery_id for delivery_id, _, delivered in attempts if delivered}
        for server, attempts in logged.items()
    }
    assert delivered_by[first].isdisjoint(delivered_by[second])
    assert delivered_by[first] | delivered_by[second] == by_delivery.keys()
    assert delivered_by[first] and delivered_by[second], (
        f"one process delivered every event: {delivered_by}\n{summary}"
    )
    # Neither process logged a failure or a traceback.
    for server in webhook_pair.both:
        assert not [event for event in _log_events(server) if "log_failure" in event], server.diagnostics()
        for path in (server.log_path, server.output_path):
            assert "Traceback" not in path.read_text(encoding="utf-8"), server.diagnostics()


# Last: the restart of the session's cluster ---------------------------------------------------


def test_cluster_survives_postgres_restart(quayd_pair: QuaydPair, postgres_cluster: PostgresCluster) -> None:
    """
    PostgreSQL stops for three seconds in the middle of a stream of pushes
    through both processes: requests meanwhile fail with 503 (never 500, never
    a hang), both processes serve again without being restarted, and every
    push that was acknowledged with 201 can be pulled afterwards through both.
    """
    repository = "cluster/restart"
    headers = quayd_pair.first.auth_headers
    layer = b"restart layer " * 500
    pushes: list[_Push] = []
    restarted = threading.Event()
    errors: list[BaseException] = []

    def stream(worker: int) -> None:
        server = quayd_pair.both[worker % 2]
        index = 0
        after_restart = 0
        try:
            while after_restart < 5:
                config = json.dumps({"os": "linux", "worker": worker, "push": index}).encode()
                done = _push_image(server, headers, repository, f"w{worker}-{index}", config, layer)
                pushes.append(done)
                index += 1
                if restarted.is_set() and done.acknowledged is not None:
                    after_restart += 1
                if done.acknowledged is None:
                    time.sleep(0.1)
        except BaseException as e:  # a timeout (hang) or a broken connection fails the test
            errors.append(e)

    workers = [threading.Thread(target=stream, args=(worker,), daemon=True) for worker in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(2.0)
    postgres_cluster.restart(downtime=3.0)
    restarted.set()
    for worker in workers:
        worker.join(timeout=120)
    assert not any(worker.is_alive() for worker in workers), "pushes did not resume within 120 s"
    assert errors == [], f"{errors!r}\n{quayd_pair.diagnostics()}"

    statuses = [status for done in pushes for status in done.statuses]
    assert set(statuses) <= {201, 202, 503}, (sorted(set(statuses)), quayd_pair.diagnostics())
    assert 503 in statuses, "no request met the outage"
    acknowledged = [done for done in pushes if done.acknowledged is not None]
    for server in quayd_pair.both:
        assert any(done.server is server for done in acknowledged)
    _wait_until_serving(quayd_pair, headers)
    for done in acknowledged:
        for server in quayd_pair.both:
            assert _manifest_digest(server, headers, repository, done.tag) == done.acknowledged
