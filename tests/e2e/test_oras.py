"""
OCI 1.1 artifacts and the referrers API, with the oras-py SDK as the client.

oras-py pushes a small image, then two artifacts whose manifests name that
image as their C{subject}:

  - a signature, with C{oras push}: oras-py sets C{subject} and annotations
    but has no C{artifactType} parameter, so the artifact's type is its
    config's media type (the pre-1.1 ORAS convention, which the referrers API
    reports in place of a missing C{artifactType});
  - an SBOM in the OCI 1.1 artifact form (C{artifactType} field, the empty
    C{{}} config), pushed with oras-py's C{upload_blob} and
    C{upload_manifest} since C{push} cannot write that field.

C{GET /v2/<name>/referrers/<digest>} (plain HTTP with the superuser's Basic
credentials: oras-py has no referrers call) must then list both with their
types, and C{?artifactType=} must filter them and say so in
C{OCI-Filters-Applied}.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.clients import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    JSONValue,
    Layer,
    QuaydProcess,
    build_oci_layout,
    http_request,
    sha256_file,
)
from tests.support.oras_client import OrasRegistry, PushedManifest, require_oras

pytestmark = pytest.mark.e2e

REPOSITORY = "oras/app"
SBOM_TYPE = "application/vnd.example.sbom.v1"
SIGNATURE_TYPE = "application/vnd.example.signature.v1"
#: Media type of the empty C{{}} config of OCI 1.1 artifacts.
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
NONE_TYPE = "application/vnd.example.none.v1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Pushed:
    """
    What the oras client pushed into L{REPOSITORY}.

    @ivar image: The subject image manifest.
    @ivar sbom: The SBOM artifact (explicit C{artifactType}).
    @ivar signature: The signature artifact (typed by its config).
    @ivar sbom_annotations: The SBOM manifest's annotations.
    @ivar signature_annotations: The signature manifest's annotations.
    @ivar sbom_file: The SBOM's content, as pushed.
    """

    image: Descriptor
    sbom: Descriptor
    signature: Descriptor
    sbom_annotations: dict[str, str]
    signature_annotations: dict[str, str]
    sbom_file: Path


@pytest.fixture
def oras_installed() -> None:
    """
    Nothing, once oras-py is known to be importable (see L{require_oras}).
    """
    require_oras()


@pytest.fixture
def oras_registry(
    oras_installed: None, quayd_server: QuaydProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> OrasRegistry:
    """
    An oras-py client logged in to the quayd as its superuser, with C{HOME}
    in C{tmp_path} so that the host's Docker config is left alone.
    """
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    registry = OrasRegistry(quayd_server.hostport, home / ".docker" / "config.json")
    registry.login(quayd_server.superuser)
    return registry


def _file_descriptor(path: Path, media_type: str) -> Descriptor:
    """
    @param path: A local file.
    @param media_type: Its media type.
    @return: Its descriptor.
    """
    return Descriptor(media_type=media_type, digest=sha256_file(path), size=path.stat().st_size)


def _fetch_manifest(server: QuaydProcess, digest: str) -> tuple[Descriptor, JSONValue]:
    """
    Read a manifest back with plain HTTP and check that it is served under its digest.

    @param server: The quayd.
    @param digest: The manifest's digest in L{REPOSITORY}.
    @return: Its descriptor (from the bytes served) and its decoded JSON.
    """
    headers = {**server.auth_headers, "Accept": OCI_MANIFEST}
    result = http_request("GET", f"{server.url}/v2/{REPOSITORY}/manifests/{digest}", headers=headers)
    assert result.status == 200, result.body
    assert "sha256:" + hashlib.sha256(result.body).hexdigest() == digest
    assert result.headers["Docker-Content-Digest"] == digest
    return Descriptor(media_type=OCI_MANIFEST, digest=digest, size=len(result.body)), json.loads(result.body)


def _pushed_digest(pushed: PushedManifest, subject: Descriptor | None) -> str:
    """
    Check the registry's answer to a manifest C{PUT}.

    @param pushed: The answer.
    @param subject: The subject the manifest names, if any: quayd must
        confirm it in C{OCI-Subject}.
    @return: The manifest's digest.
    """
    assert pushed.status == 201, pushed.body
    assert pushed.digest is not None
    assert pushed.subject == (subject.digest if subject is not None else None)
    return pushed.digest


def _push_all(registry: OrasRegistry, server: QuaydProcess, work: Path) -> Pushed:
    """
    Push the subject image, the signature and the SBOM with oras-py.

    @param registry: The logged-in oras client.
    @param server: The quayd, to read the manifests back.
    @param work: Scratch directory for the files pushed.
    @return: What was pushed.
    """
    source = build_oci_layout(
        work / "image",
        [b"oras subject base\n", Layer(files={"srv/app.txt": f"oras subject {work.name}\n".encode()})],
        tag="v1",
    )
    image_push = registry.push(
        f"{REPOSITORY}:v1",
        [(source.blob_path(layer.digest), layer.media_type) for layer in source.layers],
        config=(source.blob_path(source.config.digest), OCI_CONFIG),
    )
    image, image_json = _fetch_manifest(server, _pushed_digest(image_push, None))
    assert image_json["config"] == source.config.to_json()
    assert "subject" not in image_json

    signature_file = work / "signature.json"
    signature_file.write_text(json.dumps({"signed": image.digest, "by": "quayd e2e"}))
    signature_config = work / "signature-config.json"
    signature_config.write_text(json.dumps({"scheme": "example"}))
    signature_annotations = {CREATED: "2024-01-01T00:00:00Z", "org.example.kind": "sig"}
    signature_push = registry.push(
        f"{REPOSITORY}:signature",
        [(signature_file, "application/vnd.example.signature.v1+json")],
        config=(signature_config, SIGNATURE_TYPE),
        subject=image,
        annotations=signature_annotations,
    )
    signature, signature_json = _fetch_manifest(server, _pushed_digest(signature_push, image))
    assert signature_json["subject"] == image.to_json()
    assert signature_json["config"]["mediaType"] == SIGNATURE_TYPE
    assert "artifactType" not in signature_json

    sbom_file = work / "sbom.spdx.json"
    sbom_file.write_text(json.dumps({"spdxVersion": "SPDX-2.3", "name": f"quayd e2e {work.name}"}))
    empty_config = work / "empty.json"
    empty_config.write_bytes(b"{}")
    sbom_annotations = {CREATED: "2024-01-02T00:00:00Z", "org.example.kind": "sbom"}
    sbom_manifest: dict[str, JSONValue] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM_TYPE,
        "config": _file_descriptor(empty_config, OCI_EMPTY).to_json(),
        "layers": [
            {
                **_file_descriptor(sbom_file, "application/spdx+json").to_json(),
                "annotations": {TITLE: sbom_file.name},
            }
        ],
        "subject": image.to_json(),
        "annotations": sbom_annotations,
    }
    sbom_push = registry.push_manifest(f"{REPOSITORY}:sbom", sbom_manifest, [empty_config, sbom_file])
    sbom, sbom_json = _fetch_manifest(server, _pushed_digest(sbom_push, image))
    assert sbom_json == sbom_manifest

    return Pushed(
        image=image,
        sbom=sbom,
        signature=signature,
        sbom_annotations=sbom_annotations,
        signature_annotations=signature_annotations,
        sbom_file=sbom_file,
    )


def _referrers(
    server: QuaydProcess, digest: str, artifact_type: str | None = None
) -> tuple[list[JSONValue], str | None]:
    """
    C{GET /v2/<name>/referrers/<digest>}, optionally filtered, and check the index around the list.

    @param server: The quayd.
    @param digest: The subject's digest.
    @param artifact_type: The C{artifactType} query parameter, if any.
    @return: The descriptors listed, and the C{OCI-Filters-Applied} header.
    """
    url = f"{server.url}/v2/{REPOSITORY}/referrers/{digest}"
    if artifact_type is not None:
        url += f"?artifactType={quote(artifact_type, safe='')}"
    result = http_request("GET", url, headers=server.auth_headers)
    assert result.status == 200, result.body
    assert result.headers.get_content_type() == OCI_INDEX
    index = json.loads(result.body)
    assert (index["schemaVersion"], index["mediaType"]) == (2, OCI_INDEX)
    manifests: list[JSONValue] = index["manifests"]
    return manifests, result.headers.get("OCI-Filters-Applied")


def _referrer(
    descriptor: Descriptor, artifact_type: str, annotations: dict[str, str]
) -> dict[str, JSONValue]:
    """
    @param descriptor: A referring manifest's descriptor.
    @param artifact_type: The type the referrers API must report for it.
    @param annotations: Its manifest's annotations, which the API must copy.
    @return: The entry expected in the referrers list.
    """
    return {**descriptor.to_json(), "artifactType": artifact_type, "annotations": annotations}


def _by_digest(descriptors: list[JSONValue]) -> list[JSONValue]:
    """
    @param descriptors: Descriptors in any order (the referrers API does not promise one).
    @return: The same, ordered by digest.
    """
    return sorted(descriptors, key=lambda entry: str(entry["digest"]))


@pytest.fixture
def pushed(oras_registry: OrasRegistry, quayd_server: QuaydProcess, tmp_path: Path) -> Pushed:
    """
    The image and its two artifacts, pushed with oras-py.
    """
    work = tmp_path / "work"
    work.mkdir()
    return _push_all(oras_registry, quayd_server, work)


def test_oras_artifacts_with_subject_listed_by_referrers(
    oras_registry: OrasRegistry, pushed: Pushed, quayd_server: QuaydProcess, tmp_path: Path
) -> None:
    """Artifacts oras-py pushes with a subject are listed with their artifactType as referrers."""
    listed, filters = _referrers(quayd_server, pushed.image.digest)

    assert filters is None
    expected = [
        _referrer(pushed.sbom, SBOM_TYPE, pushed.sbom_annotations),
        _referrer(pushed.signature, SIGNATURE_TYPE, pushed.signature_annotations),
    ]
    assert _by_digest(listed) == _by_digest(expected)
    assert _referrers(quayd_server, pushed.sbom.digest) == ([], None)
    pulled = oras_registry.pull(f"{REPOSITORY}@{pushed.sbom.digest}", tmp_path / "pulled")
    assert [path.name for path in pulled] == [pushed.sbom_file.name]
    assert pulled[0].read_bytes() == pushed.sbom_file.read_bytes()


def test_oras_referrers_filtered_by_artifact_type(pushed: Pushed, quayd_server: QuaydProcess) -> None:
    """C{?artifactType=} keeps only the matching referrers, or none, and says so in OCI-Filters-Applied."""
    sbom = _referrer(pushed.sbom, SBOM_TYPE, pushed.sbom_annotations)
    signature = _referrer(pushed.signature, SIGNATURE_TYPE, pushed.signature_annotations)

    assert _referrers(quayd_server, pushed.image.digest, SBOM_TYPE) == ([sbom], "artifactType")
    assert _referrers(quayd_server, pushed.image.digest, SIGNATURE_TYPE) == ([signature], "artifactType")
    assert _referrers(quayd_server, pushed.image.digest, NONE_TYPE) == ([], "artifactType")
