"""
Access control with real clients against a real C{twistd quayd}: the docker
engine, skopeo and podman log in (as a user, a robot and with repository
tokens), push and pull; anonymous clients pull public repositories and are
refused private ones; a revoked permission stops the next pull.

Each test seeds the daemon's SQLite file through the real identity store before
the daemon starts, with the secret key the daemon then loads, so the robot and
repository tokens made here work there. Revocation writes to the same file
while the daemon runs: it reads the database for every token request. (The
admin API in C{quayd/admin/api.py} is not mounted by C{quayd/service.py} yet,
so the database is the way in.)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.clients import (
    BuiltImage,
    DockerDaemon,
    Layer,
    Podman,
    QuaydProcess,
    Skopeo,
    build_oci_layout,
    read_layout_manifest,
    require_tool,
)
from tests.support.identity import IdentitySeeder, Login, TokenLogin

pytestmark = pytest.mark.e2e

#: Private repository: robot C{acme+ci} writes, C{bob} reads, repository tokens act on it.
APP = "acme/app"
#: Public repository.
PUBLIC = "acme/public"
#: Private repository nobody but the superuser may use.
PRIVATE = "acme/private"

#: What a client prints when the registry refused it (401 or 403), in any wording.
_REFUSED = re.compile(r"denied|unauthorized|authentication required|requested access", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Principals:
    """
    The credentials seeded into the test's quayd.

    @ivar alice: A user, owner of the C{alice} namespace.
    @ivar bob: A user with read on L{APP}.
    @ivar robot: C{acme+ci}, with write on L{APP}.
    @ivar write_token: A write token of L{APP}.
    @ivar read_token: A read token of L{APP}.
    """

    alice: Login
    bob: Login
    robot: Login
    write_token: TokenLogin
    read_token: TokenLogin


async def _seed(seeder: IdentitySeeder) -> Principals:
    """Create the users, organization, repositories, robot, permissions and tokens of L{Principals}."""
    alice = await seeder.user("alice")
    bob = await seeder.user("bob")
    await seeder.org("acme")
    await seeder.repository(APP)
    await seeder.repository(PUBLIC, visibility="public")
    await seeder.repository(PRIVATE)
    robot = await seeder.robot("acme", "ci")
    await seeder.grant(APP, "write", robot=robot.username)
    await seeder.grant(APP, "read", user=bob.username)
    return Principals(
        alice=alice,
        bob=bob,
        robot=robot,
        write_token=await seeder.repository_token(APP, "write"),
        read_token=await seeder.repository_token(APP, "read"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Seeded:
    """A running quayd and the principals seeded into it before it started."""

    server: QuaydProcess
    principals: Principals


@pytest.fixture
def seeded(quayd_process: QuaydProcess) -> Seeded:
    """A quayd whose database was seeded with L{Principals} before it started."""
    principals = quayd_process.seed(_seed)
    quayd_process.start()
    return Seeded(server=quayd_process, principals=principals)


@pytest.fixture
def tester_skopeo(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    """skopeo logged in as the superuser, for setting up content."""
    helper = Skopeo(require_tool("skopeo"), tmp_path_factory.mktemp("skopeo-tester"))
    helper.login(seeded.server.hostport, seeded.server.superuser)
    return helper


def _image(layout: Path, label: str) -> BuiltImage:
    """
    A small two-layer image whose content depends on C{label}.

    @param layout: Where to write the OCI layout.
    @return: The image, tagged C{v1}.
    """
    return build_oci_layout(
        layout,
        [
            f"{label} base\n".encode(),
            Layer(files={"srv/auth.txt": hashlib.sha256(label.encode()).hexdigest().encode() * 32}),
        ],
        tag="v1",
    )


def _refused(result_stderr: str, result_stdout: str) -> bool:
    """Whether a client's output says the registry refused it."""
    return _REFUSED.search(result_stderr + result_stdout) is not None


def _docker_round_trip(
    dockerd: DockerDaemon, skopeo: Skopeo, image: BuiltImage, local: str, remote: str
) -> None:
    """
    Load C{image} into the engine, push it as C{remote}, remove it and pull it back.

    @param local: The name it gets in the engine first.
    """
    assert dockerd.load(skopeo, image, local) == image.config.digest
    dockerd.docker("tag", local, remote)
    dockerd.docker("push", remote)
    dockerd.docker("rmi", remote, local)
    assert dockerd.docker("image", "inspect", image.config.digest, check=False).returncode != 0
    dockerd.docker("pull", remote)
    assert dockerd.image_id(remote) == image.config.digest


def test_docker_login_push_pull_as_user(
    seeded: Seeded, skopeo: Skopeo, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """A user logs in with docker and pushes to and pulls from their own namespace."""
    image = _image(tmp_path / "image", f"user {tmp_path.name}")
    host = seeded.server.hostport
    try:
        dockerd.login(host, seeded.principals.alice)
        _docker_round_trip(
            dockerd, skopeo, image, f"auth-e2e/{tmp_path.name.lower()}:user", f"{host}/alice/app:v1"
        )
    finally:
        dockerd.logout(host)
        dockerd.docker("rmi", "--force", image.config.digest, check=False)


def test_docker_login_push_pull_as_robot(
    seeded: Seeded, skopeo: Skopeo, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """A robot (C{acme+ci}, its token as password) logs in with docker; it pushes and pulls."""
    image = _image(tmp_path / "image", f"robot {tmp_path.name}")
    host = seeded.server.hostport
    try:
        dockerd.login(host, seeded.principals.robot)
        _docker_round_trip(
            dockerd, skopeo, image, f"auth-e2e/{tmp_path.name.lower()}:robot", f"{host}/{APP}:robot"
        )
    finally:
        dockerd.logout(host)
        dockerd.docker("rmi", "--force", image.config.digest, check=False)


def test_docker_repository_tokens(
    seeded: Seeded, skopeo: Skopeo, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """
    With C{$token} and a write token, docker pushes and pulls the token's
    repository; with a read token it pulls, and its push is refused.
    """
    image = _image(tmp_path / "image", f"token {tmp_path.name}")
    other = _image(tmp_path / "other", f"token other {tmp_path.name}")
    host = seeded.server.hostport
    remote = f"{host}/{APP}:token"
    refused = f"{host}/{APP}:refused"
    try:
        dockerd.login(host, seeded.principals.write_token)
        _docker_round_trip(dockerd, skopeo, image, f"auth-e2e/{tmp_path.name.lower()}:token", remote)
        dockerd.docker("rmi", remote)

        dockerd.login(host, seeded.principals.read_token)
        dockerd.docker("pull", remote)
        assert dockerd.image_id(remote) == image.config.digest
        dockerd.load(skopeo, other, refused)
        pushed = dockerd.docker("push", refused, check=False)
        assert pushed.returncode != 0, pushed.stdout
        assert _refused(pushed.stderr, pushed.stdout), pushed.stderr
    finally:
        dockerd.logout(host)
        for digest in (image.config.digest, other.config.digest):
            dockerd.docker("rmi", "--force", digest, check=False)


def test_anonymous_pull_of_public_repository(
    seeded: Seeded, tester_skopeo: Skopeo, skopeo: Skopeo, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """Without logging in, docker and skopeo (C{--src-no-creds}) pull a public repository."""
    image = _image(tmp_path / "image", f"public {tmp_path.name}")
    host = seeded.server.hostport
    tester_skopeo.copy(image.reference, f"docker://{host}/{PUBLIC}:v1")
    remote = f"{host}/{PUBLIC}:v1"
    try:
        dockerd.docker("pull", remote)
        assert dockerd.image_id(remote) == image.config.digest
    finally:
        dockerd.docker("rmi", "--force", image.config.digest, check=False)
    pulled = tmp_path / "pulled"
    skopeo.copy(f"docker://{remote}", f"oci:{pulled}:v1", src_no_creds=True)
    descriptor, _ = read_layout_manifest(pulled, "v1")
    assert descriptor.digest == image.manifest.digest


def test_anonymous_pull_of_private_repository_refused(
    seeded: Seeded, tester_skopeo: Skopeo, skopeo: Skopeo, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """Without logging in, docker and skopeo cannot pull a private repository that exists."""
    image = _image(tmp_path / "image", f"private {tmp_path.name}")
    host = seeded.server.hostport
    tester_skopeo.copy(image.reference, f"docker://{host}/{PRIVATE}:v1")
    remote = f"{host}/{PRIVATE}:v1"
    try:
        pulled = dockerd.docker("pull", remote, check=False)
        assert pulled.returncode != 0, pulled.stdout
        assert _refused(pulled.stderr, pulled.stdout), pulled.stderr
    finally:
        dockerd.docker("rmi", "--force", image.config.digest, check=False)
    copied = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        "--retry-times=0",
        f"docker://{remote}",
        f"oci:{tmp_path / 'pulled'}:v1",
        check=False,
    )
    assert copied.returncode != 0, copied.stdout
    assert _refused(copied.stderr, copied.stdout), copied.stderr


def test_revoked_permission_stops_next_pull(
    seeded: Seeded, tester_skopeo: Skopeo, dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """
    Revoking a user's role (in the database, while quayd runs) takes effect on
    the next token: the user's next C{docker pull} fails.
    """
    image = _image(tmp_path / "image", f"revoke {tmp_path.name}")
    host = seeded.server.hostport
    tester_skopeo.copy(image.reference, f"docker://{host}/{APP}:revoke")
    remote = f"{host}/{APP}:revoke"
    try:
        dockerd.login(host, seeded.principals.bob)
        dockerd.docker("pull", remote)
        assert dockerd.image_id(remote) == image.config.digest
        dockerd.docker("rmi", remote)

        async def revoke(seeder: IdentitySeeder) -> bool:
            return await seeder.revoke(APP, user=seeded.principals.bob.username)

        assert seeded.server.seed(revoke)
        pulled = dockerd.docker("pull", remote, check=False)
        assert pulled.returncode != 0, pulled.stdout
        assert _refused(pulled.stderr, pulled.stdout), pulled.stderr
    finally:
        dockerd.logout(host)
        dockerd.docker("rmi", "--force", image.config.digest, check=False)


def test_podman_login_pull(seeded: Seeded, tester_skopeo: Skopeo, podman: Podman, tmp_path: Path) -> None:
    """podman logs in (plain HTTP) as a user and pulls from the user's namespace; anonymously it cannot."""
    image = _image(tmp_path / "image", f"podman {tmp_path.name}")
    host = seeded.server.hostport
    remote = f"{host}/alice/pod:v1"
    tester_skopeo.copy(image.reference, f"docker://{remote}")

    refused = podman("pull", "--tls-verify=false", remote, check=False)
    assert refused.returncode != 0, refused.stdout
    assert _refused(refused.stderr, refused.stdout), refused.stderr

    podman.login(host, seeded.principals.alice)
    podman("pull", "--tls-verify=false", remote)
    assert f"sha256:{podman.image_id(remote)}" == image.config.digest
