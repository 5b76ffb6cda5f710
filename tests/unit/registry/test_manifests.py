"""
Tests for L{quayd.registry.manifests}.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quayd.errors import JSONValue, ManifestInvalid
from quayd.registry.manifests import (
    DOCKER_FOREIGN_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    INDEX_MEDIA_TYPES,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    SUPPORTED_MEDIA_TYPES,
    Descriptor,
    ParsedManifest,
    parse_manifest,
)
from quayd.types import Digest

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SBOM_TYPE = "application/spdx+json"
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def digest_of(name: str) -> str:
    """
    Make a realistic sha256 digest string for a named piece of content.

    @param name: Anything; distinct names give distinct digests.
    """
    return str(Digest.sha256_of(name.encode()))


def encode(document: JSONValue) -> bytes:
    """
    Serialise a manifest the way clients do (indented JSON).

    @param document: The manifest as Python data.
    """
    return json.dumps(document, indent=3).encode()


def docker_manifest() -> dict[str, JSONValue]:
    """Build a Docker v2 schema 2 image manifest with a config and three layers."""
    return {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": 7023, "digest": digest_of("config")},
        "layers": [
            {"mediaType": DOCKER_LAYER, "size": 32654, "digest": digest_of("layer0")},
            {"mediaType": DOCKER_LAYER, "size": 16724, "digest": digest_of("layer1")},
            {"mediaType": DOCKER_LAYER, "size": 73109, "digest": digest_of("layer2")},
        ],
    }


def docker_manifest_list() -> dict[str, JSONValue]:
    """Build a Docker manifest list for linux/amd64 and linux/arm64/v8."""
    return {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "size": 7143,
                "digest": digest_of("amd64"),
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": DOCKER_MANIFEST,
                "size": 7682,
                "digest": digest_of("arm64"),
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            },
        ],
    }


def oci_manifest() -> dict[str, JSONValue]:
    """Build an OCI image manifest with two layers and annotations."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": 1470, "digest": digest_of("oci-config")},
        "layers": [
            {"mediaType": OCI_LAYER, "size": 3370706, "digest": digest_of("oci-layer0")},
            {"mediaType": OCI_LAYER, "size": 581, "digest": digest_of("oci-layer1")},
        ],
        "annotations": {"org.opencontainers.image.created": "2024-05-01T10:00:00Z"},
    }


def oci_artifact() -> dict[str, JSONValue]:
    """Build an OCI 1.1 artifact (an SBOM) with the empty config and a subject."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM_TYPE,
        "config": {"mediaType": OCI_EMPTY, "size": 2, "digest": EMPTY_DIGEST, "data": "e30="},
        "layers": [{"mediaType": SBOM_TYPE, "size": 8120, "digest": digest_of("sbom")}],
        "subject": {"mediaType": OCI_MANIFEST, "size": 1023, "digest": digest_of("image")},
        "annotations": {"org.opencontainers.image.created": "2024-05-01T10:00:00Z"},
    }


def oci_index() -> dict[str, JSONValue]:
    """Build an OCI image index with two platform manifests and a subject."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "size": 1023,
                "digest": digest_of("oci-amd64"),
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": OCI_MANIFEST,
                "size": 1187,
                "digest": digest_of("oci-windows"),
                "platform": {
                    "architecture": "amd64",
                    "os": "windows",
                    "os.version": "10.0.20348.2402",
                    "os.features": ["win32k"],
                },
                "annotations": {"com.example.note": "server core"},
            },
        ],
        "subject": {"mediaType": OCI_INDEX, "size": 512, "digest": digest_of("parent")},
        "annotations": {"org.opencontainers.image.ref.name": "1.0"},
    }


def invalid(document: JSONValue, content_type: str | None = None) -> str:
    """
    Parse a manifest that must be rejected.

    @param document: The manifest as Python data.
    @param content_type: The C{Content-Type} to push it with.
    @return: The L{ManifestInvalid} message.
    """
    with pytest.raises(ManifestInvalid) as info:
        parse_manifest(encode(document), content_type)
    return info.value.message


def test_media_type_constants_sets() -> None:
    """The supported set holds the four current formats; the index set its two list formats."""
    assert {DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX} == SUPPORTED_MEDIA_TYPES
    assert {DOCKER_MANIFEST_LIST, OCI_INDEX} == INDEX_MEDIA_TYPES


def test_parse_docker_manifest() -> None:
    """A Docker v2 manifest yields its config and three layers, all required blobs."""
    content = encode(docker_manifest())
    parsed = parse_manifest(content, DOCKER_MANIFEST)
    assert parsed.media_type == DOCKER_MANIFEST
    assert parsed.digest == Digest.sha256_of(content)
    assert parsed.size == len(content)
    assert parsed.config == Descriptor(
        media_type=DOCKER_CONFIG, digest=Digest.parse(digest_of("config")), size=7023
    )
    assert [layer.size for layer in parsed.layers] == [32654, 16724, 73109]
    assert not parsed.is_index
    assert parsed.required_blobs == tuple(
        Digest.parse(digest_of(name)) for name in ("config", "layer0", "layer1", "layer2")
    )
    assert parsed.required_manifests == ()
    assert parsed.manifests == ()
    assert parsed.subject is None
    assert parsed.artifact_type == DOCKER_CONFIG
    assert parsed.annotations == {}


def test_parse_docker_manifest_list() -> None:
    """A Docker manifest list yields its two platform children as required manifests."""
    parsed = parse_manifest(encode(docker_manifest_list()), DOCKER_MANIFEST_LIST)
    assert parsed.media_type == DOCKER_MANIFEST_LIST
    assert parsed.is_index
    assert parsed.config is None
    assert parsed.required_blobs == ()
    assert parsed.required_manifests == (Digest.parse(digest_of("amd64")), Digest.parse(digest_of("arm64")))
    assert [child.platform for child in parsed.manifests] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    assert parsed.artifact_type is None


def test_parse_oci_manifest() -> None:
    """An OCI image manifest yields its layers and annotations; its artifact type is the config's."""
    parsed = parse_manifest(encode(oci_manifest()), OCI_MANIFEST)
    assert parsed.media_type == OCI_MANIFEST
    assert len(parsed.layers) == 2
    assert parsed.annotations == {"org.opencontainers.image.created": "2024-05-01T10:00:00Z"}
    assert parsed.artifact_type == OCI_CONFIG
    assert parsed.subject is None


def test_parse_oci_artifact_with_subject() -> None:
    """An OCI 1.1 artifact keeps its artifactType and subject; the subject is not a required blob."""
    parsed = parse_manifest(encode(oci_artifact()), OCI_MANIFEST)
    assert parsed.artifact_type == SBOM_TYPE
    assert parsed.subject == Descriptor(
        media_type=OCI_MANIFEST, digest=Digest.parse(digest_of("image")), size=1023
    )
    assert parsed.config is not None
    assert parsed.config.media_type == OCI_EMPTY
    assert parsed.required_blobs == (Digest.parse(EMPTY_DIGEST), Digest.parse(digest_of("sbom")))


def test_parse_oci_artifact_without_artifact_type_uses_config_media_type() -> None:
    """Without artifactType, an artifact's type is its config media type (the referrers rule)."""
    document = oci_artifact()
    del document["artifactType"]
    document["config"] = {"mediaType": SIGNATURE_TYPE, "size": 233, "digest": digest_of("sig-config")}
    parsed = parse_manifest(encode(document), OCI_MANIFEST)
    assert parsed.artifact_type == SIGNATURE_TYPE


def test_parse_oci_artifact_without_layers() -> None:
    """An OCI artifact may have an empty layers array."""
    document = oci_artifact()
    document["layers"] = []
    parsed = parse_manifest(encode(document), OCI_MANIFEST)
    assert parsed.layers == ()
    assert parsed.required_blobs == (Digest.parse(EMPTY_DIGEST),)


def test_parse_oci_index_with_subject() -> None:
    """An OCI index yields children with platforms and annotations, a subject and annotations."""
    parsed = parse_manifest(encode(oci_index()), OCI_INDEX)
    assert parsed.is_index
    assert parsed.subject is not None
    assert parsed.subject.digest == Digest.parse(digest_of("parent"))
    assert parsed.required_manifests == (
        Digest.parse(digest_of("oci-amd64")),
        Digest.parse(digest_of("oci-windows")),
    )
    windows = parsed.manifests[1]
    assert windows.platform == {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.20348.2402",
        "os.features": ["win32k"],
    }
    assert windows.annotations == {"com.example.note": "server core"}
    assert parsed.annotations == {"org.opencontainers.image.ref.name": "1.0"}
    assert parsed.artifact_type is None


def test_parse_oci_index_artifact_type() -> None:
    """An OCI index's artifactType becomes its artifact type."""
    document = oci_index()
    document["artifactType"] = SBOM_TYPE
    assert parse_manifest(encode(document), OCI_INDEX).artifact_type == SBOM_TYPE


def test_parse_content_type_parameters_ignored() -> None:
    """Parameters and letter case of the Content-Type do not matter."""
    parsed = parse_manifest(
        encode(oci_manifest()), "Application/VND.oci.image.manifest.v1+json; charset=utf-8"
    )
    assert parsed.media_type == OCI_MANIFEST


def test_parse_content_type_mismatch() -> None:
    """A manifest Content-Type that contradicts the mediaType field is rejected."""
    message = invalid(oci_manifest(), DOCKER_MANIFEST)
    assert "media type in manifest does not match Content-Type" in message


def test_parse_content_type_mismatch_between_index_and_manifest() -> None:
    """Pushing an index as an image manifest is rejected, not reinterpreted."""
    assert "does not match Content-Type" in invalid(oci_index(), OCI_MANIFEST)


@pytest.mark.parametrize("content_type", [None, "", "application/json", "application/octet-stream"])
def test_parse_generic_content_type_ignored(content_type: str | None) -> None:
    """A missing or non-manifest Content-Type defers to the mediaType field."""
    assert parse_manifest(encode(docker_manifest()), content_type).media_type == DOCKER_MANIFEST


@pytest.mark.parametrize("content_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_parse_missing_media_type_uses_content_type(content_type: str) -> None:
    """Without a mediaType field, a supported Content-Type decides (Docker ones leniently)."""
    document = oci_manifest()
    del document["mediaType"]
    assert parse_manifest(encode(document), content_type).media_type == content_type


@pytest.mark.parametrize(
    ("document", "expected"),
    [(oci_manifest(), OCI_MANIFEST), (oci_index(), OCI_INDEX)],
)
def test_parse_missing_media_type_inferred(document: dict[str, JSONValue], expected: str) -> None:
    """Without a mediaType field or manifest Content-Type, the document's shape decides."""
    del document["mediaType"]
    assert parse_manifest(encode(document), "application/json").media_type == expected


def test_parse_missing_media_type_ambiguous() -> None:
    """A document with both manifests and layers and no mediaType is rejected as ambiguous."""
    document = oci_manifest()
    del document["mediaType"]
    document["manifests"] = []
    assert "ambiguous" in invalid(document)


def test_parse_missing_media_type_undecidable() -> None:
    """A document with no mediaType, no manifest Content-Type and no config or manifests is rejected."""
    assert "cannot determine" in invalid({"schemaVersion": 2, "layers": []})


def test_parse_image_manifest_with_manifests_rejected() -> None:
    """An image manifest that also carries manifests is rejected (CVE-2021-41190)."""
    document = oci_manifest()
    document["manifests"] = []
    assert invalid(document).startswith("manifests:")


@pytest.mark.parametrize("name", ["config", "layers"])
def test_parse_index_with_image_fields_rejected(name: str) -> None:
    """An index that also carries config or layers is rejected (CVE-2021-41190)."""
    document = oci_index()
    document[name] = oci_manifest()[name]
    assert invalid(document).startswith(f"{name}:")


@pytest.mark.parametrize(
    ("document", "content_type"),
    [
        ({"schemaVersion": 1, "name": "library/busybox", "tag": "latest", "fsLayers": []}, None),
        ({"schemaVersion": 1, "name": "library/busybox", "tag": "latest"}, DOCKER_SCHEMA1_SIGNED),
        ({"schemaVersion": 2, "config": {}}, DOCKER_SCHEMA1),
        ({"schemaVersion": 1, "mediaType": DOCKER_SCHEMA1}, None),
    ],
)
def test_parse_schema1_rejected(document: dict[str, JSONValue], content_type: str | None) -> None:
    """Schema 1 manifests are rejected with advice to use a current client or skopeo."""
    message = invalid(document, content_type)
    assert "schema 1 manifests are not supported" in message
    assert "skopeo" in message


def test_parse_unknown_media_type_named() -> None:
    """An unknown mediaType is rejected, naming it."""
    document = oci_manifest()
    document["mediaType"] = "application/vnd.example.manifest.v9+json"
    assert "'application/vnd.example.manifest.v9+json'" in invalid(document)


def test_parse_media_type_not_string() -> None:
    """A non-string mediaType field is rejected."""
    document = oci_manifest()
    document["mediaType"] = 7
    assert invalid(document).startswith("mediaType:")


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"{'schemaVersion': 2}", b'{"a": NaN}', b"\xff\xfe{}", b'{"a": 1} x', b"[" * 100_000],
)
def test_parse_malformed_json(content: bytes) -> None:
    """Content that is not UTF-8 JSON is rejected with a clear message."""
    with pytest.raises(ManifestInvalid, match="manifest is not valid"):
        parse_manifest(content, OCI_MANIFEST)


def test_parse_duplicate_member_rejected() -> None:
    """A repeated member name is rejected rather than resolved silently."""
    content = b'{"schemaVersion": 2, "mediaType": "%s", "mediaType": "%s"}' % (
        OCI_MANIFEST.encode(),
        OCI_INDEX.encode(),
    )
    with pytest.raises(ManifestInvalid, match="duplicate member 'mediaType'"):
        parse_manifest(content, None)


@pytest.mark.parametrize("content", [b"[]", b"2", b'"manifest"', b"null", b"true"])
def test_parse_non_object(content: bytes) -> None:
    """JSON that is not an object is rejected."""
    with pytest.raises(ManifestInvalid, match="must be a JSON object"):
        parse_manifest(content, OCI_MANIFEST)


@pytest.mark.parametrize("version", [None, "2", 2.0, True, 3, 0, -1])
def test_parse_schema_version_must_be_two(version: JSONValue) -> None:
    """schemaVersion must be present and the integer 2 (not a bool, float or string)."""
    document = oci_manifest()
    if version is None:
        del document["schemaVersion"]
    else:
        document["schemaVersion"] = version
    assert invalid(document).startswith("schemaVersion:")


def test_parse_bad_layer_digest() -> None:
    """A malformed layer digest is rejected, naming its JSON path."""
    document = docker_manifest()
    document["layers"][2]["digest"] = "sha256:abc"
    assert invalid(document).startswith("layers[2].digest:")


def test_parse_unsupported_digest_algorithm() -> None:
    """A digest with an unsupported algorithm is rejected, naming its JSON path."""
    document = oci_manifest()
    document["config"]["digest"] = "md5:d41d8cd98f00b204e9800998ecf8427e"
    assert invalid(document).startswith("config.digest:")


@pytest.mark.parametrize("size", [-1, True, 1.5, "12", None, 2**63])
def test_parse_bad_size(size: JSONValue) -> None:
    """A size that is not an integer from 0 to 2**63 - 1 is rejected, naming its JSON path."""
    document = docker_manifest()
    document["layers"][0]["size"] = size
    assert invalid(document).startswith("layers[0].size:")


def test_parse_missing_config() -> None:
    """An image manifest without config is rejected."""
    document = docker_manifest()
    del document["config"]
    assert invalid(document) == "config: required"


@pytest.mark.parametrize(("make", "name"), [(docker_manifest, "layers"), (oci_index, "manifests")])
def test_parse_missing_list(make: Callable[[], dict[str, JSONValue]], name: str) -> None:
    """An image manifest without layers or an index without manifests is rejected."""
    document = make()
    del document[name]
    assert invalid(document) == f"{name}: required"


def test_parse_layers_not_array() -> None:
    """A layers value that is not an array is rejected."""
    document = oci_manifest()
    document["layers"] = {"0": document["layers"][0]}
    assert invalid(document).startswith("layers: must be an array")


def test_parse_descriptor_not_object() -> None:
    """A descriptor that is not an object is rejected, naming its JSON path."""
    document = oci_index()
    document["manifests"].append(digest_of("loose"))
    assert invalid(document).startswith("manifests[2]: must be an object")


@pytest.mark.parametrize("media_type", ["", "layer", "application/vnd.oci.image.layer.v1.tar; x=1", 5])
def test_parse_descriptor_bad_media_type(media_type: JSONValue) -> None:
    """A descriptor media type must be an RFC 6838 name."""
    document = oci_manifest()
    document["layers"][1]["mediaType"] = media_type
    assert invalid(document).startswith("layers[1].mediaType:")


def test_parse_descriptor_missing_media_type() -> None:
    """A descriptor without a mediaType is rejected."""
    document = oci_manifest()
    del document["config"]["mediaType"]
    assert invalid(document) == "config.mediaType: required"


def test_parse_bad_artifact_type() -> None:
    """A manifest artifactType must be a media type."""
    document = oci_artifact()
    document["artifactType"] = ["sbom"]
    assert invalid(document).startswith("artifactType:")


def test_parse_bad_subject() -> None:
    """A malformed subject is rejected, naming its JSON path."""
    document = oci_artifact()
    document["subject"]["size"] = -5
    assert invalid(document).startswith("subject.size:")


@pytest.mark.parametrize("annotations", [["a"], {"a": 1}, {"a": None}, {"a": "\ud800"}])
def test_parse_bad_annotations(annotations: JSONValue) -> None:
    """Annotations must be an object of (encodable) strings."""
    document = oci_manifest()
    document["annotations"] = annotations
    assert invalid(document).startswith("annotations")


def test_parse_bad_descriptor_annotations() -> None:
    """A descriptor's annotations are validated, naming their JSON path."""
    document = oci_index()
    document["manifests"][0]["annotations"] = {"com.example.count": 3}
    assert invalid(document).startswith("manifests[0].annotations['com.example.count']:")


@pytest.mark.parametrize(
    ("platform", "path"),
    [
        ({"os": "linux"}, "manifests[1].platform.architecture"),
        ({"architecture": "amd64", "os": 1}, "manifests[1].platform.os"),
        ({"architecture": "amd64", "os": "linux", "variant": ["v8"]}, "manifests[1].platform.variant"),
        (
            {"architecture": "amd64", "os": "windows", "os.features": "win32k"},
            "manifests[1].platform.os.features",
        ),
        ("linux/amd64", "manifests[1].platform"),
    ],
)
def test_parse_bad_platform(platform: JSONValue, path: str) -> None:
    """An index entry's platform needs architecture and os strings; optional fields are typed."""
    document = docker_manifest_list()
    document["manifests"][1]["platform"] = platform
    assert invalid(document).startswith(f"{path}:")


def test_parse_platform_ignored_on_layers() -> None:
    """A platform on a layer is an unknown property and is ignored."""
    document = oci_manifest()
    document["layers"][0]["platform"] = "anything"
    parsed = parse_manifest(encode(document), None)
    assert parsed.layers[0].platform is None


def test_parse_unknown_properties_ignored() -> None:
    """Properties a format does not define are ignored, as the specs require of readers."""
    document = docker_manifest()
    document["layers"][0]["annotations"] = 42
    document["subject"] = "not a descriptor"
    document["x-extra"] = {"nested": [1, 2]}
    parsed = parse_manifest(encode(document), DOCKER_MANIFEST)
    assert parsed.layers[0].annotations == {}
    assert parsed.subject is None


def test_parse_descriptor_data_checked() -> None:
    """Embedded data must be base64 matching the descriptor's size and digest."""
    document = oci_artifact()
    document["config"]["data"] = base64.b64encode(b"[]").decode()
    assert invalid(document) == f"config.data: does not match digest {EMPTY_DIGEST}"
    document["config"]["data"] = base64.b64encode(b"{ }").decode()
    assert invalid(document) == "config.data: decodes to 3 bytes, but size is 2"
    document["config"]["data"] = "e30"
    assert invalid(document) == "config.data: must be base64 encoded"


def test_parse_foreign_layer_not_required() -> None:
    """Foreign and non-distributable layers with urls are not required blobs; without urls they are."""
    document = docker_manifest()
    document["layers"][0] = {
        "mediaType": DOCKER_FOREIGN_LAYER,
        "size": 1654110084,
        "digest": digest_of("windows-base"),
        "urls": ["https://mcr.microsoft.com/v2/windows/servercore/blobs/" + digest_of("windows-base")],
    }
    document["layers"][1] = {
        "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "size": 1000,
        "digest": digest_of("restricted"),
        "urls": ["https://example.com/restricted.tar.gz"],
    }
    document["layers"][2] = {"mediaType": DOCKER_FOREIGN_LAYER, "size": 10, "digest": digest_of("nourl")}
    parsed = parse_manifest(encode(document), DOCKER_MANIFEST)
    assert parsed.layers[0].urls == (
        "https://mcr.microsoft.com/v2/windows/servercore/blobs/" + digest_of("windows-base"),
    )
    assert parsed.required_blobs == (Digest.parse(digest_of("config")), Digest.parse(digest_of("nourl")))


def test_parse_regular_layer_with_urls_required() -> None:
    """An ordinary layer that happens to carry urls is still a required blob."""
    document = oci_manifest()
    document["layers"][0]["urls"] = ["https://example.com/layer.tar.gz"]
    parsed = parse_manifest(encode(document), OCI_MANIFEST)
    assert Digest.parse(digest_of("oci-layer0")) in parsed.required_blobs


@pytest.mark.parametrize("urls", ["https://example.com/x", [7], ["not a url"], ["/relative/path"]])
def test_parse_bad_urls(urls: JSONValue) -> None:
    """urls must be an array of absolute URIs."""
    document = docker_manifest()
    document["layers"][0]["urls"] = urls
    assert invalid(document).startswith("layers[0].urls")


def test_parse_required_deduplicated() -> None:
    """A layer listed twice is one required blob; a child listed twice is one required manifest."""
    document = docker_manifest()
    document["layers"].append(document["layers"][0])
    assert len(parse_manifest(encode(document), None).required_blobs) == 4
    index = oci_index()
    index["manifests"].append(index["manifests"][0])
    assert len(parse_manifest(encode(index), None).required_manifests) == 2


def test_parse_digest_covers_exact_bytes() -> None:
    """Two serialisations of the same manifest have different digests: the bytes are digested as given."""
    compact = json.dumps(oci_manifest(), separators=(",", ":")).encode()
    pretty = encode(oci_manifest())
    assert parse_manifest(compact, None).digest == Digest.sha256_of(compact)
    assert parse_manifest(compact, None).digest != parse_manifest(pretty, None).digest


def test_descriptor_hashable() -> None:
    """Descriptors and parsed manifests can be hashed despite their dict fields."""
    parsed = parse_manifest(encode(oci_index()), None)
    assert len(set(parsed.manifests)) == 2
    assert isinstance(hash(parsed), int)
    assert isinstance(parsed, ParsedManifest)


JSON_VALUES: st.SearchStrategy[JSONValue] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
CONTENT_TYPES = (
    st.none()
    | st.sampled_from(
        [
            *sorted(SUPPORTED_MEDIA_TYPES),
            DOCKER_SCHEMA1,
            DOCKER_SCHEMA1_SIGNED,
            "application/json; charset=utf-8",
        ]
    )
    | st.text(max_size=30)
)
TEMPLATES = [docker_manifest, docker_manifest_list, oci_manifest, oci_artifact, oci_index]


def paths(value: JSONValue, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """
    List the paths to every value nested in a decoded JSON document.

    @param value: The document.
    @param prefix: The path of C{value} itself.
    """
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(paths(item, (*prefix, index)))
    return found


@st.composite
def mutated_manifests(draw: st.DrawFn) -> JSONValue:
    """
    Draw a valid manifest with one nested value replaced by arbitrary JSON or removed.

    @param draw: Hypothesis's draw function.
    """
    document: JSONValue = copy.deepcopy(draw(st.sampled_from(TEMPLATES))())
    path = draw(st.sampled_from(paths(document)[1:]))
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    if draw(st.booleans()):
        parent[path[-1]] = draw(JSON_VALUES)
    else:
        del parent[path[-1]]
    return document


def parses_or_rejects(content: bytes, content_type: str | None) -> None:
    """
    Check that parsing either succeeds consistently or raises L{ManifestInvalid}.

    @param content: The manifest bytes.
    @param content_type: The C{Content-Type} header.
    """
    try:
        parsed = parse_manifest(content, content_type)
    except ManifestInvalid as e:
        assert e.message
    else:
        assert parsed.media_type in SUPPORTED_MEDIA_TYPES
        assert parsed.digest == Digest.sha256_of(content)
        assert (parsed.config is None) == parsed.is_index


@given(st.binary(max_size=200), CONTENT_TYPES)
def test_parse_arbitrary_bytes_only_manifest_invalid(content: bytes, content_type: str | None) -> None:
    """Arbitrary bytes either parse or raise L{ManifestInvalid}, never anything else."""
    parses_or_rejects(content, content_type)


@given(JSON_VALUES, CONTENT_TYPES)
def test_parse_arbitrary_json_only_manifest_invalid(document: JSONValue, content_type: str | None) -> None:
    """Arbitrary JSON documents either parse or raise L{ManifestInvalid}."""
    parses_or_rejects(json.dumps(document).encode(), content_type)


@given(mutated_manifests(), CONTENT_TYPES)
def test_parse_mutated_manifest_only_manifest_invalid(document: JSONValue, content_type: str | None) -> None:
    """Valid manifests with one value replaced or removed either parse or raise L{ManifestInvalid}."""
    parses_or_rejects(json.dumps(document).encode(), content_type)
