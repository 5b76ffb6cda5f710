"""
Real registry clients against a real quayd: skopeo, the docker engine and
podman push and pull, and an upload that quayd is killed in the middle of.

Every image is built in Python (there is no public registry to pull from);
each test gets a fresh quayd with its own data directory. quayd enforces
access control: the clients log in as the quayd's superuser, and raw HTTP
requests carry its Basic credentials.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import platform
import re
import socket
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from tests.support.clients import (
    OCI_INDEX,
    OCI_MANIFEST,
    BuiltImage,
    CommandFailed,
    DockerDaemon,
    Layer,
    Podman,
    QuaydProcess,
    Skopeo,
    build_oci_index_layout,
    build_oci_layout,
    http_download,
    http_request,
    iter_files,
    layout_blobs,
    read_layout_manifest,
    sha256_file,
)

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024

#: Accept header of a client that understands every manifest media type quayd stores.
_ACCEPT_MANIFESTS = ", ".join(
    [
        OCI_MANIFEST,
        OCI_INDEX,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)

#: What C{docker push} prints last: C{<tag>: digest: sha256:... size: N}.
_PUSHED_DIGEST = re.compile(r"^\S+: digest: (sha256:[0-9a-f]{64}) size: \d+$", re.MULTILINE)


def _small_image(layout: Path, label: str) -> BuiltImage:
    """
    Build a three-layer image of a few KiB (gzip layers, one of random bytes).

    @param layout: Where to write the OCI layout.
    @param label: Text that makes the layers' content distinct.
    @return: The image, tagged C{v1}.
    """
    return build_oci_layout(
        layout,
        [
            f"{label} base\n".encode(),
            Layer(files={"etc/e2e/random.txt": hashlib.sha256(label.encode()).hexdigest().encode() * 64}),
            Layer(files={"srv/app.txt": f"{label} app\n".encode(), "srv/empty": b""}),
        ],
        tag="v1",
    )


def _assert_same_blobs(source: BuiltImage, pulled_layout: Path) -> None:
    """
    Check that a pulled OCI layout holds the source image's config and layers, byte for byte.

    @param source: The image that was pushed.
    @param pulled_layout: The layout skopeo pulled into.
    """
    pulled = layout_blobs(pulled_layout)
    for descriptor in (source.config, *source.layers):
        assert descriptor.digest in pulled, f"{descriptor.digest} missing from the pulled layout"
        path = pulled[descriptor.digest]
        assert path.stat().st_size == descriptor.size
        assert filecmp.cmp(source.blob_path(descriptor.digest), path, shallow=False), descriptor.digest


def _host_architecture() -> str:
    """
    @return: The GOARCH name of this machine, which the docker engine pulls for.
    """
    machine = platform.machine()
    names = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    if machine not in names:
        pytest.skip(f"the multi-platform test image has no {machine} child")
    return names[machine]


def test_skopeo_large_image_round_trip(quayd_server: QuaydProcess, skopeo: Skopeo, tmp_path: Path) -> None:
    """skopeo pushes an image with a 100 MiB layer and pulls it back with the same digests and bytes."""
    source = build_oci_layout(
        tmp_path / "source",
        [b"small first layer\n", 100 * MiB + 12345, Layer(files={"etc/motd": b"top layer\n"})],
        tag="v1",
    )
    assert source.layers[1].size > 100 * MiB
    remote = f"docker://{quayd_server.hostport}/team/app:v1"
    skopeo.login(quayd_server.hostport, quayd_server.superuser)

    skopeo.copy(source.reference, remote)

    assert skopeo.remote_digest(remote) == source.manifest.digest
    raw = skopeo.raw_manifest(remote)
    assert raw == source.blob_path(source.manifest.digest).read_bytes()
    by_digest = f"docker://{quayd_server.hostport}/team/app@{source.manifest.digest}"
    assert skopeo.remote_digest(by_digest) == source.manifest.digest
    assert skopeo.list_tags(f"docker://{quayd_server.hostport}/team/app") == ["v1"]

    big = source.layers[1]
    fetched = http_download(quayd_server.blob_url("team/app", big.digest), headers=quayd_server.auth_headers)
    assert (fetched.status, fetched.size, fetched.digest) == (200, big.size, big.digest)

    pulled_layout = tmp_path / "pulled"
    skopeo.copy(remote, f"oci:{pulled_layout}:v1")

    descriptor, manifest = read_layout_manifest(pulled_layout, "v1")
    assert descriptor.digest == source.manifest.digest
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == source.manifest.digest
    _assert_same_blobs(source, pulled_layout)


def test_skopeo_multi_platform_index_round_trip(
    quayd_server: QuaydProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    """skopeo --all pushes an amd64+arm64 index and pulls it back with the index and child digests kept."""
    source = build_oci_index_layout(tmp_path / "source", tag="multi")
    remote = f"docker://{quayd_server.hostport}/team/multi:multi"
    skopeo.login(quayd_server.hostport, quayd_server.superuser)

    skopeo.copy(source.reference, remote, all_images=True)

    assert skopeo.remote_digest(remote) == source.index.digest
    index = json.loads(skopeo.raw_manifest(remote))
    assert index["mediaType"] == OCI_INDEX
    assert [entry["digest"] for entry in index["manifests"]] == [
        child.manifest.digest for child in source.children
    ]
    for child in source.children:
        child_ref = f"docker://{quayd_server.hostport}/team/multi@{child.manifest.digest}"
        assert skopeo.remote_digest(child_ref) == child.manifest.digest

    pulled_layout = tmp_path / "pulled"
    skopeo.copy(remote, f"oci:{pulled_layout}:multi", all_images=True)

    descriptor, _ = read_layout_manifest(pulled_layout, "multi")
    assert (descriptor.media_type, descriptor.digest) == (OCI_INDEX, source.index.digest)
    pulled = layout_blobs(pulled_layout)
    for child in source.children:
        assert child.manifest.digest in pulled
        _assert_same_blobs(child, pulled_layout)


def test_docker_pulls_its_platform_from_index(
    quayd_server: QuaydProcess, skopeo: Skopeo, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """The docker engine pulls a multi-platform index by tag and gets the child for its architecture."""
    source = build_oci_index_layout(tmp_path / "source", tag="multi")
    child = source.child(_host_architecture())
    skopeo.login(quayd_server.hostport, quayd_server.superuser)
    dockerd.login(quayd_server.hostport, quayd_server.superuser)
    skopeo.copy(source.reference, f"docker://{quayd_server.hostport}/team/multi:multi", all_images=True)
    reference = f"{quayd_server.hostport}/team/multi:multi"

    try:
        dockerd.docker("pull", reference)
        assert dockerd.image_id(reference) == child.config.digest
        assert f"{quayd_server.hostport}/team/multi@{source.index.digest}" in dockerd.repo_digests(reference)
    finally:
        dockerd.docker("rmi", "--force", child.config.digest, check=False)


def test_docker_push_pull_round_trip(
    quayd_server: QuaydProcess, skopeo: Skopeo, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """docker push, rmi and pull bring back the same image ID under the digest that push printed."""
    source = _small_image(tmp_path / "source", f"docker {tmp_path.name}")
    local = f"quayd-e2e/{tmp_path.name.lower()}:v1"
    remote = f"{quayd_server.hostport}/ns/img:tag1"
    skopeo.login(quayd_server.hostport, quayd_server.superuser)
    dockerd.login(quayd_server.hostport, quayd_server.superuser)
    try:
        image_id = dockerd.load(skopeo, source, local)
        assert image_id == source.config.digest
        dockerd.docker("tag", local, remote)

        pushed = _PUSHED_DIGEST.search(dockerd.docker("push", remote).stdout)
        assert pushed is not None, "docker push printed no digest"
        digest = pushed.group(1)
        assert skopeo.remote_digest(f"docker://{remote}") == digest

        dockerd.docker("rmi", remote, local)
        assert dockerd.docker("image", "inspect", image_id, check=False).returncode != 0

        dockerd.docker("pull", remote)
        assert dockerd.image_id(remote) == image_id
        assert dockerd.repo_digests(remote) == [f"{quayd_server.hostport}/ns/img@{digest}"]
    finally:
        dockerd.docker("rmi", "--force", source.config.digest, check=False)


def test_podman_push_pull_round_trip(quayd_server: QuaydProcess, podman: Podman, tmp_path: Path) -> None:
    """podman push and pull over plain HTTP keep the image ID, and quayd serves the pushed digest."""
    source = _small_image(tmp_path / "source", f"podman {tmp_path.name}")
    remote = f"{quayd_server.hostport}/ns/pod:v1"
    podman.login(quayd_server.hostport, quayd_server.superuser)
    image_id = podman("pull", "--quiet", source.reference).stdout.strip()
    assert f"sha256:{image_id}" == source.config.digest
    podman("tag", image_id, remote)
    digest_file = tmp_path / "pushed.digest"

    podman("push", "--tls-verify=false", f"--digestfile={digest_file}", remote)

    digest = digest_file.read_text().strip()
    served = http_request(
        "GET",
        f"{quayd_server.url}/v2/ns/pod/manifests/v1",
        headers={"Accept": _ACCEPT_MANIFESTS, **quayd_server.auth_headers},
    )
    assert served.status == 200
    assert "sha256:" + hashlib.sha256(served.body).hexdigest() == digest
    assert served.headers["Docker-Content-Digest"] == digest

    podman("rmi", "--force", image_id)
    assert podman("image", "exists", image_id, check=False).returncode == 1

    podman("pull", "--tls-verify=false", remote)
    assert podman.image_id(remote) == image_id
    assert podman("image", "inspect", "--format", "{{.Digest}}", remote).stdout.strip() == digest


def _stored_bytes(root: Path) -> int:
    """
    Add up the sizes of the files below a directory that is being written to.

    @param root: quayd's data directory.
    @return: Total bytes; files that vanish while being counted are skipped.
    """
    total = 0
    for path in iter_files(root):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def _stream_upload_until_killed(
    server: QuaydProcess, location: str, blob: Path, *, kill_after_staged: int, kill_after_sent: int
) -> tuple[int, int]:
    """
    Stream a blob as one chunked C{PATCH}, and SIGKILL quayd part-way through.

    The body goes out in 1 MiB chunks with short pauses, and quayd is killed
    as soon as its data directory has grown by C{kill_after_staged} bytes (so
    it dies while writing the staged upload), or at the latest once
    C{kill_after_sent} bytes have been sent. The body is never finished.

    @param server: The running quayd.
    @param location: Absolute URL of the upload session.
    @param blob: The blob's file.
    @param kill_after_staged: Growth of the data directory that triggers the kill.
    @param kill_after_sent: Bytes sent that trigger the kill regardless.
    @return: Bytes sent and bytes the data directory had grown by at the kill.
    """
    parts = urlsplit(location)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    baseline = _stored_bytes(server.data_dir)
    sent = staged = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock, blob.open("rb") as body:
        authorization = "".join(f"{name}: {value}\r\n" for name, value in server.auth_headers.items())
        sock.sendall(
            f"PATCH {target} HTTP/1.1\r\nHost: {server.hostport}\r\n{authorization}"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        while staged < kill_after_staged and sent < kill_after_sent:
            chunk = body.read(MiB)
            assert chunk, "the whole blob was sent before quayd was killed"
            sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            time.sleep(0.01)
            staged = _stored_bytes(server.data_dir) - baseline
        server.kill()
    return sent, staged


def test_upload_killed_midway_leaves_no_blob(
    quayd_server: QuaydProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    """A blob upload cut by SIGKILL is not visible after restart, and a full push of it then succeeds."""
    base = _small_image(tmp_path / "base", f"crash base {tmp_path.name}")
    skopeo.login(quayd_server.hostport, quayd_server.superuser)
    skopeo.copy(base.reference, f"docker://{quayd_server.hostport}/crash/base:v1")
    source = build_oci_layout(tmp_path / "source", [b"crash small layer\n", 200 * MiB], tag="v1")
    big = source.layers[1]
    name = "crash/app"

    started = http_request(
        "POST", f"{quayd_server.url}/v2/{name}/blobs/uploads/", headers=quayd_server.auth_headers, body=b""
    )
    assert started.status == 202, started.body
    location = urljoin(f"{quayd_server.url}/", started.headers["Location"])
    sent, staged = _stream_upload_until_killed(
        quayd_server,
        location,
        source.blob_path(big.digest),
        kill_after_staged=48 * MiB,
        kill_after_sent=160 * MiB,
    )
    assert not quayd_server.running
    assert 0 < sent < big.size

    quayd_server.start()

    head = http_request("HEAD", quayd_server.blob_url(name, big.digest), headers=quayd_server.auth_headers)
    assert head.status == 404, f"partial upload visible after the crash (sent {sent}, staged {staged})"
    hex_ = big.digest.partition(":")[2]
    leftovers = [path for path in iter_files(quayd_server.data_dir / "blobs") if hex_ in path.name]
    assert leftovers == []
    assert skopeo.remote_digest(f"docker://{quayd_server.hostport}/crash/base:v1") == base.manifest.digest

    skopeo.copy(source.reference, f"docker://{quayd_server.hostport}/{name}:v1")

    fetched = http_download(quayd_server.blob_url(name, big.digest), headers=quayd_server.auth_headers)
    assert (fetched.status, fetched.size, fetched.digest) == (200, big.size, big.digest)
    assert sha256_file(quayd_server.committed_blob_path(big.digest)) == big.digest
    assert skopeo.remote_digest(f"docker://{quayd_server.hostport}/{name}:v1") == source.manifest.digest


def test_skopeo_push_to_stopped_quayd_fails(
    quayd_server: QuaydProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    """The harness really talks to quayd: once it is stopped, a push to its port fails."""
    source = _small_image(tmp_path / "source", f"stopped {tmp_path.name}")
    skopeo.login(quayd_server.hostport, quayd_server.superuser)
    quayd_server.stop()

    with pytest.raises(CommandFailed):
        skopeo.copy(source.reference, f"docker://{quayd_server.hostport}/team/app:v1")
