"""
Push webhooks end to end: a real C{twistd quayd} (loopback receivers allowed,
short coalescing and backoff), webhooks created over its admin API by the
user who owns the namespace, real C{docker push}es and raw HTTP pushes, and a
real C{twisted.web} receiver on 127.0.0.1, in a subprocess of its own
(L{tests.support.webhooks.ReceiverProcess}), that records every request it gets.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode

import pytest

from tests.support.clients import (
    OCI_MANIFEST,
    BuiltImage,
    DockerDaemon,
    Layer,
    QuaydProcess,
    Skopeo,
    build_oci_layout,
    http_request,
)
from tests.support.identity import Login
from tests.support.webhooks import (
    SECRET,
    WEBHOOK_SETTINGS,
    JSONValue,
    ReceiverProcess,
    admin_api,
    create_webhook,
    list_deliveries,
    verify_signature,
)

pytestmark = pytest.mark.e2e

T = TypeVar("T")

#: What C{docker push} prints last: C{<tag>: digest: sha256:... size: N}.
_PUSHED_DIGEST = re.compile(r"^\S+: digest: (sha256:[0-9a-f]{64}) size: \d+$", re.MULTILINE)
_DELIVERY_ID = re.compile(r"[0-9a-f]{32}")


# --- helpers ---------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Setup:
    """
    A running quayd, the namespace owner's credentials and a running receiver.

    Requests authenticate as alice with bearer tokens: each Basic-authenticated request costs
    quayd a bcrypt check, a token only a signature check.
    """

    server: QuaydProcess
    alice: Login
    receiver: ReceiverProcess
    _tokens: dict[tuple[str, ...], dict[str, str]] = field(default_factory=dict)

    def api(
        self, method: str, path: str, body: JSONValue = None, headers: dict[str, str] | None = None
    ) -> tuple[int, JSONValue]:
        """Call the admin API (as alice unless C{headers} say otherwise); returns status and JSON."""
        return admin_api(self.server, method, path, headers if headers is not None else self.bearer(()), body)

    def create_repository(self, name: str, headers: dict[str, str] | None = None) -> None:
        """Create C{alice/name} over the admin API."""
        status, document = self.api(
            "POST", "/api/v1/repositories", {"namespace": "alice", "name": name}, headers
        )
        assert status == 201, document

    def create_webhook(self, repository: str, url: str, headers: dict[str, str] | None = None) -> str:
        """Add a webhook (signed with L{SECRET}) to a repository over the admin API; returns its id."""
        sent = headers if headers is not None else self.bearer(())
        return create_webhook(self.server, repository, url, sent)

    def deliveries(self, repository: str, webhook_id: str) -> list[dict[str, JSONValue]]:
        """The webhook's deliveries, newest first, from the admin API."""
        return list_deliveries(self.server, repository, webhook_id, self.bearer(()))

    def bearer(self, repositories: Sequence[str]) -> dict[str, str]:
        """
        Headers with a bearer token for alice, with push and pull on C{repositories}; one token
        per set of repositories (it outlives the tests' few seconds, and quayd restarts).
        """
        key = tuple(sorted(repositories))
        if key in self._tokens:
            return self._tokens[key]
        query = urlencode(
            [("service", self.server.hostport)]
            + [("scope", f"repository:{r}:pull,push") for r in repositories]
        )
        result = http_request("GET", f"{self.server.url}/v2/auth?{query}", headers=self.alice.headers)
        assert result.status == 200, result.body
        self._tokens[key] = {"Authorization": f"Bearer {json.loads(result.body)['token']}"}
        return self._tokens[key]

    def wait_for(self, what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
        """
        Poll C{check} until it returns something other than C{None}.

        @raise AssertionError: After C{timeout} seconds, with the receiver's hits and quayd's logs.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; receiver got {len(self.receiver.hits())} requests\n"
                    f"{self.server.diagnostics()}"
                )
            time.sleep(0.05)


def push_tiny_image(setup: Setup, repository: str, tag: str, label: str, headers: dict[str, str]) -> str:
    """
    Push a tiny image (config and one layer, monolithic uploads) and its manifest with raw HTTP.

    @return: The config digest's hex: the image id the payload reports.
    """
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "label": label}
    ).encode()
    layer = f"layer of {label}\n".encode()
    descriptors = []
    for blob, media_type in (
        (config, "application/vnd.oci.image.config.v1+json"),
        (layer, "application/vnd.oci.image.layer.v1.tar"),
    ):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        result = http_request(
            "POST",
            f"{setup.server.url}/v2/{repository}/blobs/uploads/?digest={digest}",
            headers=headers,
            body=blob,
        )
        assert result.status == 201, (result.status, result.body)
        descriptors.append({"mediaType": media_type, "digest": digest, "size": len(blob)})
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptors[0], "layers": descriptors[1:]}
    ).encode()
    result = http_request(
        "PUT",
        f"{setup.server.url}/v2/{repository}/manifests/{tag}",
        headers={**headers, "Content-Type": OCI_MANIFEST},
        body=manifest,
    )
    assert result.status == 201, (result.status, result.body)
    return hashlib.sha256(config).hexdigest()


def _delivered(receiver: ReceiverProcess, count: int) -> Callable[[], bool | None]:
    """A check for L{Setup.wait_for}: whether the receiver got C{count} distinct deliveries."""

    def check() -> bool | None:
        """C{True} once there are C{count} distinct delivery ids, else C{None}."""
        return True if len({h.delivery for h in receiver.hits()}) >= count else None

    return check


def settle(seconds: float = 1.5) -> None:
    """Wait long enough for an unwanted second POST (a duplicate, a second event) to show up."""
    time.sleep(seconds)


def _small_image(layout: Path, label: str) -> BuiltImage:
    """A two-layer image of a few KiB whose content depends on C{label}, tagged C{v1}."""
    return build_oci_layout(
        layout,
        [f"{label} base\n".encode(), Layer(files={"srv/hook.txt": f"{label} app\n".encode()})],
        tag="v1",
    )


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    """A started receiver subprocess; stopped in teardown."""
    process = ReceiverProcess(tmp_path / "receiver")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def setup(tmp_path: Path, receiver: ReceiverProcess) -> Iterator[Setup]:
    """
    A running quayd whose configuration allows loopback receivers, coalesces pushes for 0.5 s,
    retries after 0.2 s (at most 1 s apart), and declares the user alice (the owner of the
    namespace C{alice}); and a running receiver.
    """
    alice = Login(username="alice", password=secrets.token_urlsafe(18))
    password_file = tmp_path / "alice.password"
    password_file.write_text(alice.password + "\n")
    base = tmp_path / "quayd"
    base.mkdir()
    server = QuaydProcess(
        base,
        extra_config={
            "webhooks": WEBHOOK_SETTINGS,
            "users": [{"name": "alice", "password_file": str(password_file)}],
        },
    )
    try:
        server.start()
        yield Setup(server=server, alice=alice, receiver=receiver)
    finally:
        server.stop()


# --- tests ----------------------------------------------------------------------------------------


def test_webhooks_e2e_docker_push_delivers_quay_payload(
    setup: Setup, skopeo: Skopeo, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """A docker push makes the receiver get one signed POST with Quay's payload and docker's image ID."""
    setup.create_repository("app")
    webhook_id = setup.create_webhook("alice/app", setup.receiver.url())
    host = setup.server.hostport
    source = _small_image(tmp_path / "source", f"push {tmp_path.name}")
    local = f"quayd-e2e/hook-{tmp_path.name.lower()}:v1"
    remote = f"{host}/alice/app:v1"
    dockerd.login(host, setup.alice)
    try:
        dockerd.load(skopeo, source, local)
        dockerd.docker("tag", local, remote)
        pushed = _PUSHED_DIGEST.search(dockerd.docker("push", remote).stdout)
        assert pushed is not None, "docker push printed no digest"
        image_id = dockerd.image_id(remote).removeprefix("sha256:")

        [hit] = setup.wait_for("the push event", lambda: setup.receiver.hits() or None)
        settle()
        assert len(setup.receiver.hits()) == 1, "more than one POST for one push"
        assert hit.path == "/hook"
        assert hit.headers["content-type"] == "application/json"
        assert hit.headers["x-quayd-event"] == "push"
        assert _DELIVERY_ID.fullmatch(hit.delivery), hit.headers
        assert verify_signature(SECRET, hit.body, hit.headers["x-quayd-signature-256"])
        assert not verify_signature("another secret", hit.body, hit.headers["x-quayd-signature-256"])
        assert hit.json() == {
            "pushed_image_count": 1,
            "name": "app",
            "repository": "alice/app",
            "docker_url": f"{host}/alice/app",
            "updated_tags": {"v1": image_id},
            "namespace": "alice",
            "visibility": "private",
            "homepage": f"http://{host}/repository/alice/app",
            "event": "push",
            "manifest_digests": [pushed.group(1)],
        }
        [delivery] = setup.wait_for(
            "the delivery to be recorded",
            lambda: (
                [d for d in setup.deliveries("alice/app", webhook_id) if d["state"] == "delivered"] or None
            ),
        )
        assert (delivery["id"], delivery["event"], delivery["attempts"], delivery["last_status"]) == (
            hit.delivery,
            "push",
            1,
            200,
        )
    finally:
        dockerd.docker("rmi", "--force", source.config.digest, check=False)


def test_webhooks_e2e_docker_push_all_tags_one_post(
    setup: Setup, skopeo: Skopeo, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """docker push --all-tags of three tags of one image sends ONE POST listing the three tags."""
    setup.create_repository("app")
    setup.create_webhook("alice/app", setup.receiver.url())
    host = setup.server.hostport
    source = _small_image(tmp_path / "source", f"all tags {tmp_path.name}")
    local = f"quayd-e2e/tags-{tmp_path.name.lower()}:v1"
    dockerd.login(host, setup.alice)
    try:
        dockerd.load(skopeo, source, local)
        for tag in ("v1", "v1.0", "latest"):
            dockerd.docker("tag", local, f"{host}/alice/app:{tag}")
        dockerd.docker("push", "--all-tags", f"{host}/alice/app")
        image_id = dockerd.image_id(f"{host}/alice/app:latest").removeprefix("sha256:")

        [hit] = setup.wait_for("the push event", lambda: setup.receiver.hits() or None)
        settle()
        assert len(setup.receiver.hits()) == 1, [h.json()["updated_tags"] for h in setup.receiver.hits()]
        payload = hit.json()
        assert payload["updated_tags"] == {"v1": image_id, "v1.0": image_id, "latest": image_id}
        assert payload["pushed_image_count"] == 1
        assert verify_signature(SECRET, hit.body, hit.headers["x-quayd-signature-256"])
    finally:
        dockerd.docker("rmi", "--force", source.config.digest, check=False)


def test_webhooks_e2e_receiver_down_then_up(setup: Setup) -> None:
    """While the receiver is down the delivery fails and is retried; once it is back up, it arrives once."""
    setup.create_repository("app")
    webhook_id = setup.create_webhook("alice/app", setup.receiver.url())
    setup.receiver.stop()
    image_id = push_tiny_image(setup, "alice/app", "v1", "down then up", setup.bearer(["alice/app"]))

    def failing() -> dict[str, JSONValue] | None:
        """The delivery, once it has failed at least twice."""
        deliveries = setup.deliveries("alice/app", webhook_id)
        return deliveries[0] if deliveries and deliveries[0]["attempts"] >= 2 else None

    delivery = setup.wait_for("two failed attempts", failing)
    assert delivery["state"] == "pending"
    assert delivery["last_status"] is None
    assert "Connection" in delivery["last_error"] and "refused" in delivery["last_error"].lower()
    assert delivery["next_attempt_at"] is not None

    setup.receiver.start()
    [hit] = setup.wait_for("the delivery after the receiver came back", lambda: setup.receiver.hits() or None)
    assert hit.delivery == delivery["id"]
    assert hit.json()["updated_tags"] == {"v1": image_id}
    delivered = setup.wait_for(
        "the delivery to be recorded",
        lambda: next(
            (d for d in setup.deliveries("alice/app", webhook_id) if d["state"] == "delivered"), None
        ),
    )
    assert delivered["attempts"] >= 3 and delivered["last_status"] == 200
    settle()
    assert len(setup.receiver.hits()) == 1


def test_webhooks_e2e_500_then_200_retried(setup: Setup) -> None:
    """A receiver answering 500 twice gets the same delivery again until it answers 200."""
    setup.receiver.stop()
    setup.receiver.start(statuses=[500, 500])
    setup.create_repository("app")
    webhook_id = setup.create_webhook("alice/app", setup.receiver.url())
    push_tiny_image(setup, "alice/app", "v1", "500 then 200", setup.bearer(["alice/app"]))

    setup.wait_for("three attempts", lambda: setup.receiver.hits()[2:] or None)
    settle()
    hits = setup.receiver.hits()
    assert [h.status for h in hits] == [500, 500, 200]
    assert len({h.delivery for h in hits}) == 1
    assert len({h.body for h in hits}) == 1
    assert all(verify_signature(SECRET, h.body, h.headers["x-quayd-signature-256"]) for h in hits)
    [delivery] = setup.deliveries("alice/app", webhook_id)
    assert (delivery["id"], delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        hits[0].delivery,
        "delivered",
        3,
        200,
    )
    assert delivery["last_error"] is None


def test_webhooks_e2e_sigkill_after_manifest_put(setup: Setup) -> None:
    """quayd SIGKILLed right after a manifest PUT succeeded delivers that push's event once it restarts."""
    setup.create_repository("app")
    setup.create_webhook("alice/app", setup.receiver.url())
    image_id = push_tiny_image(setup, "alice/app", "v1", "sigkill", setup.bearer(["alice/app"]))
    setup.server.kill()
    assert setup.receiver.hits() == [], "delivered before the kill: the test proves nothing"
    time.sleep(1.0)
    assert setup.receiver.hits() == []

    setup.server.start()
    [hit] = setup.wait_for("the event after the restart", lambda: setup.receiver.hits() or None)
    assert hit.json()["updated_tags"] == {"v1": image_id}
    assert verify_signature(SECRET, hit.body, hit.headers["x-quayd-signature-256"])
    settle()
    assert len(setup.receiver.hits()) == 1


def test_webhooks_e2e_hundred_pushes_delivered_exactly_once(setup: Setup) -> None:
    """
    100 pushes to 10 repositories with 3 webhooks each, 4 at a time: every event reaches
    every webhook of its repository exactly once (300 unique deliveries, none lost).

    The pushes go in 10 rounds of one push per repository. A round starts once the last one's
    events have arrived, so that no two pushes to a repository fall into one coalescing window
    and each push is an event of its own.
    """
    repositories = [f"alice/r{i}" for i in range(10)]
    paths = ["/h0", "/h1", "/h2"]
    for repository in repositories:
        setup.create_repository(repository.removeprefix("alice/"))
        for path in paths:
            setup.create_webhook(repository, setup.receiver.url(path))
    push = setup.bearer(repositories)
    expected: dict[tuple[str, str], str] = {}

    def one(job: tuple[str, str]) -> tuple[tuple[str, str], str]:
        """Push one tiny image; returns (repository, tag) and its image id."""
        repository, tag = job
        return job, push_tiny_image(setup, repository, tag, f"{repository}:{tag}", push)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for round_ in range(10):
            jobs = [(repository, f"t{round_}") for repository in repositories]
            expected.update(pool.map(one, jobs))
            setup.wait_for(f"the deliveries of round {round_}", _delivered(setup.receiver, 30 * (round_ + 1)))
    settle()

    hits = setup.receiver.hits()
    assert len(hits) == 300, f"{len(hits)} POSTs for 300 deliveries"
    assert len({h.delivery for h in hits}) == 300
    assert all(h.status == 200 for h in hits)
    assert all(verify_signature(SECRET, h.body, h.headers["x-quayd-signature-256"]) for h in hits)
    received: Counter[tuple[str, str, str]] = Counter()
    for hit in hits:
        payload = hit.json()
        assert payload["pushed_image_count"] == 1, payload
        for tag, image_id in payload["updated_tags"].items():
            assert expected[(payload["repository"], tag)] == image_id
            received[(payload["repository"], tag, hit.path)] += 1
    assert received == Counter({(r, t, p): 1 for (r, t) in expected for p in paths})
