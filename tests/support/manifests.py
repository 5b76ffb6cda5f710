"""
Building manifest documents for tests: the exact bytes a client would push.
"""

from __future__ import annotations

import json

from quayd.errors import JSONValue
from quayd.registry.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from quayd.types import Digest

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_SCHEMA1_DOCUMENT: JSONValue = {
    "schemaVersion": 1,
    "name": "library/app",
    "tag": "latest",
    "architecture": "amd64",
    "fsLayers": [],
    "history": [],
}

_CONFIG_TYPES = {DOCKER_MANIFEST: DOCKER_CONFIG, OCI_MANIFEST: OCI_CONFIG}
_LAYER_TYPES = {DOCKER_MANIFEST: DOCKER_LAYER, OCI_MANIFEST: OCI_LAYER}
_IMAGE_FOR_INDEX = {DOCKER_MANIFEST_LIST: DOCKER_MANIFEST, OCI_INDEX: OCI_MANIFEST}


def descriptor(media_type: str, content: bytes) -> dict[str, JSONValue]:
    """A descriptor of C{content}."""
    return {"mediaType": media_type, "digest": str(Digest.sha256_of(content)), "size": len(content)}


def encode(document: JSONValue) -> bytes:
    """Serialise a document the way clients do (indented, so the bytes are not canonical)."""
    return json.dumps(document, indent=3).encode()


def image_manifest(
    media_type: str,
    config: bytes,
    layers: list[bytes],
    *,
    subject: bytes | None = None,
    subject_media_type: str = OCI_MANIFEST,
    artifact_type: str | None = None,
) -> bytes:
    """
    An image manifest (Docker v2 schema 2 or OCI) over a config blob and layer blobs.

    @param subject: The exact bytes of a manifest this one refers to (OCI only).
    """
    document: dict[str, JSONValue] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(_CONFIG_TYPES[media_type], config),
        "layers": [descriptor(_LAYER_TYPES[media_type], layer) for layer in layers],
    }
    if subject is not None:
        document["subject"] = descriptor(subject_media_type, subject)
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    return encode(document)


def index_manifest(media_type: str, children: list[bytes]) -> bytes:
    """An OCI index or Docker manifest list over child image manifests (by their exact bytes)."""
    child_type = _IMAGE_FOR_INDEX[media_type]
    entries = []
    for number, child in enumerate(children):
        entry = descriptor(child_type, child)
        entry["platform"] = {"architecture": f"arch{number}", "os": "linux"}
        entries.append(entry)
    return encode({"schemaVersion": 2, "mediaType": media_type, "manifests": entries})
