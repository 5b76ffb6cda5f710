"""
Manifest parsing and validation.

L{parse_manifest} turns the exact bytes of a pushed manifest into a
L{ParsedManifest}: its effective media type, its digest, and the descriptors
it references. It supports the four current manifest formats (Docker image
manifest v2 schema 2 and manifest list, OCI image manifest and image index,
including the OCI 1.1 C{artifactType} and C{subject} fields) and rejects
everything else, including Docker schema 1, with L{ManifestInvalid}.

Validation follows the OCI image-spec (descriptor, manifest and index
documents and their JSON schemas), the distribution-spec rules for pushing
manifests, and the Docker image manifest v2.2 specification. Properties that a
format does not define are ignored, as those specifications require of
readers, except the ones that would make a document ambiguous between an
image manifest and an index (CVE-2021-41190).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field

from quayd.errors import DigestInvalid, JSONValue, ManifestInvalid
from quayd.types import Digest

#: Docker image manifest, version 2 schema 2.
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
#: Docker manifest list (a multi-platform image).
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
#: OCI image manifest.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
#: OCI image index.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
#: Docker image manifest, version 2 schema 1 (unsigned); deprecated, rejected.
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
#: Docker image manifest, version 2 schema 1 (signed); deprecated, rejected.
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

#: Manifest media types this registry stores and serves.
SUPPORTED_MEDIA_TYPES: frozenset[str] = frozenset(
    {DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX}
)
#: Media types of manifests that list other manifests rather than blobs.
INDEX_MEDIA_TYPES: frozenset[str] = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
#: Media types of image manifests (a config blob plus layers).
IMAGE_MEDIA_TYPES: frozenset[str] = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
#: Docker schema 1 media types, recognised only to reject them clearly.
SCHEMA1_MEDIA_TYPES: frozenset[str] = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})

#: Docker layer that clients fetch from its C{urls} and never push.
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
#: Prefix of the (deprecated) OCI non-distributable layer media types.
OCI_NONDISTRIBUTABLE_LAYER_PREFIX = "application/vnd.oci.image.layer.nondistributable."
#: Config media type of OCI artifacts that have no config (the C{{}} blob).
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

#: Largest size a descriptor may declare (the specs' int64).
MAX_SIZE = 2**63 - 1

_SCHEMA1_MESSAGE = (
    "Docker schema 1 manifests are not supported (the format is deprecated); "
    "push with a current client or convert the image with 'skopeo copy --format v2s2'"
)
# RFC 6838 section 4.2 restricted names, as in the image-spec's JSON schema.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
# An absolute URI (RFC 3986 characters only); the schema's "format": "uri".
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_MANIFEST_MEDIA_TYPES = SUPPORTED_MEDIA_TYPES | SCHEMA1_MEDIA_TYPES
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


@dataclass(frozen=True, slots=True, kw_only=True)
class Descriptor:
    """
    A content descriptor: a reference from a manifest to a blob or manifest.

    Instances are hashable; C{platform} and C{annotations} take no part in
    the hash (they still take part in equality).

    @ivar media_type: Media type of the referenced content.
    @ivar digest: Digest of the referenced content.
    @ivar size: Size of the referenced content in bytes.
    @ivar artifact_type: The OCI C{artifactType} of the referenced artifact.
    @ivar platform: The validated C{platform} object of an index or manifest
        list entry (C{architecture}, C{os} and whichever of C{os.version},
        C{os.features}, C{variant} and C{features} were given); C{None}
        elsewhere or when absent.
    @ivar urls: Locations the content may also be fetched from.
    @ivar annotations: The descriptor's OCI annotations.
    """

    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    platform: dict[str, JSONValue] | None = field(default=None, hash=False)
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def is_foreign(self) -> bool:
        """
        Whether this is a foreign (Docker) or non-distributable (OCI) layer
        that carries C{urls}, which clients fetch from there and which a
        registry therefore need not hold.
        """
        return bool(self.urls) and (
            self.media_type == DOCKER_FOREIGN_LAYER
            or self.media_type.startswith(OCI_NONDISTRIBUTABLE_LAYER_PREFIX)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedManifest:
    """
    A validated manifest.

    @ivar media_type: The effective media type, one of L{SUPPORTED_MEDIA_TYPES}.
    @ivar digest: The sha256 digest of the exact bytes pushed.
    @ivar size: The length of those bytes.
    @ivar config: The config descriptor of an image manifest; C{None} for an
        index or manifest list.
    @ivar layers: The layers of an image manifest, in order.
    @ivar manifests: The children of an index or manifest list, in order.
    @ivar subject: The OCI C{subject} this manifest refers to, if any.
    @ivar artifact_type: The artifact type the referrers API reports: the
        C{artifactType} field if set, else, for an image manifest, the
        config's media type; C{None} for an index without C{artifactType}.
    @ivar annotations: The manifest's OCI annotations.
    """

    media_type: str
    digest: Digest
    size: int
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def is_index(self) -> bool:
        """Whether this is an OCI index or a Docker manifest list."""
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def required_blobs(self) -> tuple[Digest, ...]:
        """
        Blobs that must exist in the repository before this manifest is
        accepted: the config and the layers, without duplicates and without
        foreign or non-distributable layers that carry C{urls}. The
        C{subject} is not included: the distribution-spec lets a manifest
        refer to a subject that does not exist (yet).
        """
        digests: list[Digest] = []
        if self.config is not None:
            digests.append(self.config.digest)
        digests.extend(layer.digest for layer in self.layers if not layer.is_foreign)
        return tuple(dict.fromkeys(digests))

    @property
    def required_manifests(self) -> tuple[Digest, ...]:
        """
        Manifests that must exist in the repository before this index or
        manifest list is accepted: all of its children, without duplicates.
        """
        return tuple(dict.fromkeys(child.digest for child in self.manifests))


def parse_manifest(content: bytes, content_type: str | None) -> ParsedManifest:
    """
    Parse and validate the exact bytes of a pushed manifest.

    The effective media type is the document's C{mediaType} field; a
    C{Content-Type} naming a different manifest type is an error. Without the
    field, a supported C{Content-Type} decides, and failing that the shape of
    the document (C{manifests} makes an OCI index, C{config} an OCI manifest).

    @param content: The request body, exactly as received.
    @param content_type: The request's C{Content-Type} header, if any;
        parameters such as C{charset} are ignored.
    @return: The parsed manifest; its digest is computed over C{content}.
    @raise ManifestInvalid: If the content is not a valid manifest of a
        supported type, with a message naming the offending field.
    """
    document = _decode(content)
    header_type = _header_media_type(content_type)
    media_type = _effective_media_type(document, header_type)
    digest = Digest.sha256_of(content)
    if media_type in IMAGE_MEDIA_TYPES:
        return _parse_image_manifest(document, media_type, digest, len(content))
    return _parse_index(document, media_type, digest, len(content))


def _decode(content: bytes) -> dict[str, JSONValue]:
    """
    Decode the manifest bytes as a UTF-8 JSON object.

    Duplicate member names are rejected (different parsers would disagree on
    which value counts), as are the non-JSON constants C{NaN} and
    C{Infinity}.

    @raise ManifestInvalid: If the bytes are not such an object.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestInvalid(f"manifest is not valid UTF-8: {e.reason} at byte {e.start}") from None
    try:
        document = json.loads(text, object_pairs_hook=_unique_members, parse_constant=_reject_constant)
    except _DuplicateMember as e:
        raise ManifestInvalid(f"manifest is not valid JSON: duplicate member {e.name[:100]!r}") from None
    except ValueError as e:
        raise ManifestInvalid(f"manifest is not valid JSON: {str(e)[:200]}") from None
    except RecursionError:
        raise ManifestInvalid("manifest is not valid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise ManifestInvalid(f"manifest must be a JSON object, not {_json_type(document)}")
    return document


class _DuplicateMember(ValueError):
    """
    A JSON object repeats a member name.

    @ivar name: The repeated name.
    """

    def __init__(self, name: str) -> None:
        """
        @param name: The repeated member name.
        """
        super().__init__(name)
        self.name = name


def _unique_members(pairs: list[tuple[str, JSONValue]]) -> dict[str, JSONValue]:
    """
    Build a JSON object, refusing repeated member names.

    @raise _DuplicateMember: If a name occurs twice.
    """
    result: dict[str, JSONValue] = {}
    for name, value in pairs:
        if name in result:
            raise _DuplicateMember(name)
        result[name] = value
    return result


def _reject_constant(name: str) -> JSONValue:
    """
    Refuse C{NaN}, C{Infinity} and C{-Infinity}, which Python accepts but JSON
    does not define.

    @raise ValueError: Always.
    """
    raise ValueError(f"{name} is not a JSON value")


def _header_media_type(content_type: str | None) -> str | None:
    """
    Extract the media type of a C{Content-Type} header, lower-cased and without
    parameters; C{None} if the header is absent or empty.
    """
    if content_type is None:
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type or None


def _effective_media_type(document: dict[str, JSONValue], header_type: str | None) -> str:
    """
    Decide which manifest format a document is, rejecting schema 1, unknown
    types, a C{Content-Type} that contradicts the C{mediaType} field, and a
    C{schemaVersion} other than 2.

    @param document: The decoded manifest.
    @param header_type: The normalised C{Content-Type}, if any.
    @return: One of L{SUPPORTED_MEDIA_TYPES}.
    @raise ManifestInvalid: If no supported media type applies.
    """
    field_type = document.get("mediaType")
    if field_type is not None and not isinstance(field_type, str):
        raise ManifestInvalid(f"mediaType: must be a string, not {_json_type(field_type)}")
    schema_version = document.get("schemaVersion")
    if (
        (_is_int(schema_version) and schema_version == 1)
        or field_type in SCHEMA1_MEDIA_TYPES
        or (field_type is None and header_type in SCHEMA1_MEDIA_TYPES)
    ):
        raise ManifestInvalid(_SCHEMA1_MESSAGE)
    if "schemaVersion" not in document:
        raise ManifestInvalid("schemaVersion: required")
    if not _is_int(schema_version) or schema_version != 2:
        raise ManifestInvalid(f"schemaVersion: must be the integer 2, not {_short_json(schema_version)}")

    if field_type is not None:
        if field_type not in SUPPORTED_MEDIA_TYPES:
            raise ManifestInvalid(f"unsupported manifest media type {field_type[:200]!r}")
        if header_type in _MANIFEST_MEDIA_TYPES and header_type != field_type:
            raise ManifestInvalid(
                f"media type in manifest does not match Content-Type: "
                f"mediaType is {field_type!r}, Content-Type is {header_type!r}"
            )
        return field_type
    if header_type is not None and header_type in SUPPORTED_MEDIA_TYPES:
        return header_type
    if "manifests" in document:
        if "config" in document or "layers" in document:
            raise ManifestInvalid(
                "manifest has both manifests and config or layers and no mediaType; "
                "it is ambiguous between an index and an image manifest"
            )
        return OCI_INDEX
    if "config" in document:
        return OCI_MANIFEST
    raise ManifestInvalid(
        "cannot determine the manifest media type: no mediaType field, no manifest "
        "Content-Type, and neither config nor manifests present"
    )


def _parse_image_manifest(
    document: dict[str, JSONValue], media_type: str, digest: Digest, size: int
) -> ParsedManifest:
    """
    Validate a Docker or OCI image manifest.

    @raise ManifestInvalid: If a field is missing or malformed.
    """
    oci = media_type == OCI_MANIFEST
    if "manifests" in document:
        raise ManifestInvalid("manifests: not allowed in an image manifest")
    config = _descriptor(_required(document, "config", ""), "config", oci=oci)
    layers = tuple(
        _descriptor(layer, path, oci=oci)
        for path, layer in _items(_required(document, "layers", ""), "layers")
    )
    subject = artifact_type = None
    annotations: dict[str, str] = {}
    if oci:
        subject = _optional_descriptor(document, "subject")
        artifact_type = _optional_media_type(document, "artifactType", "")
        annotations = _optional_annotations(document, "")
    return ParsedManifest(
        media_type=media_type,
        digest=digest,
        size=size,
        config=config,
        layers=layers,
        subject=subject,
        artifact_type=artifact_type if artifact_type is not None else config.media_type,
        annotations=annotations,
    )


def _parse_index(
    document: dict[str, JSONValue], media_type: str, digest: Digest, size: int
) -> ParsedManifest:
    """
    Validate an OCI image index or a Docker manifest list.

    @raise ManifestInvalid: If a field is missing or malformed.
    """
    oci = media_type == OCI_INDEX
    for name in ("config", "layers"):
        if name in document:
            raise ManifestInvalid(f"{name}: not allowed in an index or manifest list")
    manifests = tuple(
        _descriptor(child, path, oci=oci, platform=True)
        for path, child in _items(_required(document, "manifests", ""), "manifests")
    )
    subject = artifact_type = None
    annotations: dict[str, str] = {}
    if oci:
        subject = _optional_descriptor(document, "subject")
        artifact_type = _optional_media_type(document, "artifactType", "")
        annotations = _optional_annotations(document, "")
    return ParsedManifest(
        media_type=media_type,
        digest=digest,
        size=size,
        manifests=manifests,
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )


def _optional_descriptor(document: dict[str, JSONValue], name: str) -> Descriptor | None:
    """
    Validate the optional OCI descriptor C{name} of C{document}.

    @raise ManifestInvalid: If it is present and malformed.
    """
    value = document.get(name)
    return None if value is None else _descriptor(value, name, oci=True)


def _descriptor(value: JSONValue, path: str, *, oci: bool, platform: bool = False) -> Descriptor:
    """
    Validate a content descriptor.

    Docker descriptors define C{mediaType}, C{size}, C{digest} and C{urls};
    OCI ones add C{annotations}, C{artifactType} and C{data}. Only index and
    manifest list entries have a C{platform}. Other properties are ignored.

    @param value: The decoded descriptor.
    @param path: Its JSON path, for error messages.
    @param oci: Whether the OCI descriptor properties apply.
    @param platform: Whether C{platform} applies.
    @raise ManifestInvalid: If a property is missing or malformed.
    """
    obj = _object(value, path)
    media_type = _media_type(_required(obj, "mediaType", path), _join(path, "mediaType"))
    digest = _digest(_required(obj, "digest", path), _join(path, "digest"))
    size = _size(_required(obj, "size", path), _join(path, "size"))
    urls: tuple[str, ...] = ()
    if obj.get("urls") is not None:
        urls = tuple(_url(url, item_path) for item_path, url in _items(obj["urls"], _join(path, "urls")))
    artifact_type = None
    annotations: dict[str, str] = {}
    if oci:
        artifact_type = _optional_media_type(obj, "artifactType", path)
        annotations = _optional_annotations(obj, path)
        if obj.get("data") is not None:
            _check_data(obj["data"], _join(path, "data"), digest, size)
    platform_value = None
    if platform and obj.get("platform") is not None:
        platform_value = _platform(obj["platform"], _join(path, "platform"))
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        artifact_type=artifact_type,
        platform=platform_value,
        urls=urls,
        annotations=annotations,
    )


def _platform(value: JSONValue, path: str) -> dict[str, JSONValue]:
    """
    Validate a C{platform} object: C{architecture} and C{os} strings are
    required; C{os.version} and C{variant} are strings and C{os.features} and
    C{features} lists of strings when present.

    @return: The validated properties; unknown ones are dropped.
    @raise ManifestInvalid: If a property is missing or malformed.
    """
    obj = _object(value, path)
    result: dict[str, JSONValue] = {
        name: _string(_required(obj, name, path), _join(path, name)) for name in ("architecture", "os")
    }
    for name in ("os.version", "variant"):
        if obj.get(name) is not None:
            result[name] = _string(obj[name], _join(path, name))
    for name in ("os.features", "features"):
        if obj.get(name) is not None:
            items = _items(obj[name], _join(path, name))
            result[name] = [_string(item, item_path) for item_path, item in items]
    return result


def _check_data(value: JSONValue, path: str, digest: Digest, size: int) -> None:
    """
    Validate a descriptor's embedded C{data}: base64 (RFC 4648) whose decoded
    bytes match the descriptor's size and digest.

    @raise ManifestInvalid: If it does not.
    """
    text = _string(value, path)
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ManifestInvalid(f"{path}: must be base64 encoded") from None
    if len(data) != size:
        raise ManifestInvalid(f"{path}: decodes to {len(data)} bytes, but size is {size}")
    if _HASHES[digest.algorithm](data).hexdigest() != digest.hex:
        raise ManifestInvalid(f"{path}: does not match digest {digest}")


def _optional_annotations(obj: dict[str, JSONValue], path: str) -> dict[str, str]:
    """
    Validate the optional C{annotations} of C{obj}: an object of strings.

    @param path: The JSON path of C{obj}.
    @raise ManifestInvalid: If it is present and malformed.
    """
    value = obj.get("annotations")
    if value is None:
        return {}
    annotations_path = _join(path, "annotations")
    return {
        _string(key, annotations_path): _string(item, f"{annotations_path}[{key[:100]!r}]")
        for key, item in _object(value, annotations_path).items()
    }


def _optional_media_type(obj: dict[str, JSONValue], name: str, path: str) -> str | None:
    """
    Validate the optional media type property C{name} of C{obj}.

    @param path: The JSON path of C{obj}.
    @raise ManifestInvalid: If it is present and malformed.
    """
    value = obj.get(name)
    return None if value is None else _media_type(value, _join(path, name))


def _required(obj: dict[str, JSONValue], name: str, path: str) -> JSONValue:
    """
    Get the required property C{name} of C{obj}.

    @param path: The JSON path of C{obj}.
    @raise ManifestInvalid: If it is absent or null.
    """
    value = obj.get(name)
    if value is None:
        raise ManifestInvalid(f"{_join(path, name)}: required")
    return value


def _object(value: JSONValue, path: str) -> dict[str, JSONValue]:
    """
    Check that C{value} is a JSON object.

    @raise ManifestInvalid: If it is not.
    """
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{path}: must be an object, not {_json_type(value)}")
    return value


def _items(value: JSONValue, path: str) -> list[tuple[str, JSONValue]]:
    """
    Check that C{value} is a JSON array.

    @return: Each element with its JSON path.
    @raise ManifestInvalid: If it is not an array.
    """
    if not isinstance(value, list):
        raise ManifestInvalid(f"{path}: must be an array, not {_json_type(value)}")
    return [(f"{path}[{index}]", item) for index, item in enumerate(value)]


def _string(value: JSONValue, path: str) -> str:
    """
    Check that C{value} is a string that can be encoded as UTF-8 (JSON
    escapes can produce lone surrogates, which cannot).

    @raise ManifestInvalid: If it is not.
    """
    if not isinstance(value, str):
        raise ManifestInvalid(f"{path}: must be a string, not {_json_type(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestInvalid(f"{path}: contains an unpaired surrogate") from None
    return value


def _media_type(value: JSONValue, path: str) -> str:
    """
    Check that C{value} is a media type following RFC 6838 (no parameters).

    @raise ManifestInvalid: If it is not.
    """
    text = _string(value, path)
    if not _MEDIA_TYPE.fullmatch(text):
        raise ManifestInvalid(f"{path}: invalid media type {text[:200]!r}")
    return text


def _digest(value: JSONValue, path: str) -> Digest:
    """
    Parse a descriptor's digest.

    @raise ManifestInvalid: If it is not a supported, well-formed digest.
    """
    text = _string(value, path)
    try:
        return Digest.parse(text)
    except DigestInvalid as e:
        raise ManifestInvalid(f"{path}: {e.message}") from None


def _size(value: JSONValue, path: str) -> int:
    """
    Check that C{value} is a size: an integer from 0 to 2**63 - 1.

    @raise ManifestInvalid: If it is not.
    """
    if not _is_int(value):
        raise ManifestInvalid(f"{path}: must be an integer, not {_json_type(value)}")
    if not 0 <= value <= MAX_SIZE:
        raise ManifestInvalid(f"{path}: must be between 0 and {MAX_SIZE}, not {_short_json(value)}")
    return int(value)


def _url(value: JSONValue, path: str) -> str:
    """
    Check that C{value} is an absolute URI (RFC 3986).

    @raise ManifestInvalid: If it is not.
    """
    text = _string(value, path)
    if not _URL.fullmatch(text):
        raise ManifestInvalid(f"{path}: invalid URL {text[:200]!r}")
    return text


def _is_int(value: JSONValue) -> bool:
    """Whether C{value} is a JSON integer (a Python C{int} that is not a C{bool})."""
    return isinstance(value, int) and not isinstance(value, bool)


def _join(path: str, name: str) -> str:
    """Append the property C{name} to the JSON path C{path} (which may be empty)."""
    return f"{path}.{name}" if path else name


def _json_type(value: JSONValue) -> str:
    """Name the JSON type of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _short_json(value: JSONValue) -> str:
    """Render a decoded value for an error message, truncated."""
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)[:100]
    return _json_type(value)
