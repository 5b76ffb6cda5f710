"""
Content, an HTTP client and workflow steps for the OCI conformance mirror.

The content has the shapes the distribution-spec conformance suite (v1.1.1,
C{conformance/setup.go} and C{image.go}) pushes: one image config per
workflow, one gzipped tar layer, an image manifest per config whose config
descriptor carries the config inline (C{data}) and an unspecified field, a
manifest without layers, two small random blobs for the upload workflows, and
for the referrers checks the empty JSON blob, two artifact blobs, four
artifacts of two artifact types with a C{subject}, one with a subject that is
never pushed, and an index artifact with a subject. The literal values are
our own; only their shapes and relations follow the suite.

Each workflow step here is a setup the suite's checks depend on; the checks
themselves live in the C{test_*} modules.
"""

from __future__ import annotations

import base64
import enum
import gzip
import hashlib
import io
import json
import random
import string
import tarfile
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import pytest_twisted
import treq
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

#: Decoded JSON (manifests, indexes, error bodies).
JSONValue = Any

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
OCTET_STREAM: Final = "application/octet-stream"

#: The sha256 of C{{}}, which the image-spec fixes for the empty descriptor.
EMPTY_JSON_DIGEST: Final = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

#: Repository the workflows push to (the suite's C{OCI_NAMESPACE}).
NAMESPACE: Final = "conformance/test"
#: Repository blobs are mounted into (the suite's C{OCI_CROSSMOUNT_NAMESPACE}).
CROSSMOUNT_NAMESPACE: Final = "conformance/crossmount"

#: Tag the pull, discovery and management workflows push their image under.
TEST_TAG: Final = "tagtest0"
#: Tag of the manifest without layers in the push workflow.
EMPTY_LAYER_TAG: Final = "emptylayer"
#: Tags the push and discovery workflows push one manifest under.
NUMBERED_TAGS: Final = ("test0", "test1", "test2", "test3")
#: A manifest reference that names nothing; like the suite's, it starts with a
#: dot and so does not match the tag grammar either.
NONEXISTENT_MANIFEST: Final = ".NO_SUCH_MANIFEST"
#: A digest-shaped reference whose hex part is malformed (the error-format check).
MALFORMED_DIGEST: Final = "sha256:definitelywrong"
#: Body sent with the error-format check (not a manifest at all).
INVALID_MANIFEST_CONTENT: Final = b"not a manifest"

#: Artifact types of the referrers checks.
ARTIFACT_TYPE_A: Final = "application/vnd.quayd.conformance.alpha"
ARTIFACT_TYPE_B: Final = "application/vnd.quayd.conformance.beta"
ARTIFACT_TYPE_INDEX: Final = "application/vnd.quayd.conformance.bundle"
#: The one annotation every referrer (but the dangling one) carries.
ANNOTATION_KEY: Final = "org.quayd.conformance.test"
#: The C{OCI-Filters-Applied} value for an C{artifactType} filter.
ARTIFACT_TYPE_FILTER: Final = "artifactType"

#: Error codes the distribution-spec defines.
ERROR_CODES: Final = frozenset(
    {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "MANIFEST_UNVERIFIED",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "TAG_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
    }
)

#: Seconds any one request (or reading its body) may take.
REQUEST_TIMEOUT: Final = 15.0

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, None]])


def async_test(f: F) -> F:
    """
    L{pytest_twisted.ensureDeferred}, typed (the plugin ships no hints): run
    an async test in the reactor.

    @param f: The test coroutine function.
    """
    marked: F = pytest_twisted.ensureDeferred(f)
    return marked


#: Configs and manifests the workflows use (the suite makes more and uses the first five).
_WORKFLOW_SLOTS: Final = 5
_UNSPECIFIED: Final = b"unspecified field, value irrelevant"


class DeleteOrder(enum.Enum):
    """
    The order in which the suite's teardowns delete content
    (C{OCI_DELETE_MANIFEST_BEFORE_BLOBS}, true by default).
    """

    MANIFESTS_FIRST = "manifests-first"
    BLOBS_FIRST = "blobs-first"


@dataclass(frozen=True, slots=True)
class Blob:
    """
    Content addressed by its sha256 digest: a blob or a manifest's exact bytes.

    @ivar content: The bytes.
    """

    content: bytes

    @property
    def digest(self) -> str:
        """The C{sha256:<hex>} digest of the content."""
        return "sha256:" + hashlib.sha256(self.content).hexdigest()

    @property
    def size(self) -> int:
        """The length of the content."""
        return len(self.content)

    @property
    def length(self) -> str:
        """The length as a C{Content-Length} value."""
        return str(len(self.content))


@dataclass(frozen=True, slots=True)
class ChunkedBlob:
    """
    A blob cut in two chunks the way the suite does it (the first one byte
    longer than half), with their C{Content-Range} values.

    @ivar blob: The whole blob.
    """

    blob: Blob

    @property
    def split(self) -> int:
        """Where the second chunk starts."""
        return self.blob.size // 2 + 1

    @property
    def first(self) -> bytes:
        """The first chunk."""
        return self.blob.content[: self.split]

    @property
    def second(self) -> bytes:
        """The second chunk."""
        return self.blob.content[self.split :]

    @property
    def first_range(self) -> str:
        """C{Content-Range} (and expected C{Range}) of the first chunk."""
        return f"0-{self.split - 1}"

    @property
    def second_range(self) -> str:
        """C{Content-Range} of the second chunk."""
        return f"{self.split}-{self.blob.size - 1}"


def random_blob(size: int, seed: int) -> Blob:
    """
    A reproducible blob of pseudo-random bytes.

    @param size: Its length.
    @param seed: Seed of the generator; equal seeds give equal blobs.
    """
    return Blob(random.Random(seed).randbytes(size))


def chunked_blob(size: int, seed: int = 2) -> ChunkedBlob:
    """
    The chunked-upload blob of C{size} bytes (the suite rebuilds it larger when
    the registry announces an C{OCI-Chunk-Min-Length}).

    @param size: Length of the whole blob.
    @param seed: Seed of its bytes.
    """
    return ChunkedBlob(random_blob(size, seed))


def encode(document: JSONValue) -> bytes:
    """
    Serialise a document as the suite's Go client does (tab-indented JSON).

    @param document: Manifest, index or config as Python data.
    """
    return json.dumps(document, indent="\t").encode()


def descriptor(
    media_type: str,
    target: Blob,
    *,
    inline: bool = False,
    unspecified: bytes | None = None,
) -> dict[str, JSONValue]:
    """
    A descriptor of C{target}, field by field as the suite marshals one: the
    unspecified field is always present (C{null} when empty).

    @param media_type: The descriptor's C{mediaType}.
    @param target: The content described.
    @param inline: Whether to embed the content as C{data}.
    @param unspecified: Bytes for the unspecified field, if any.
    """
    document: dict[str, JSONValue] = {"mediaType": media_type, "digest": target.digest, "size": target.size}
    if inline:
        document["data"] = base64.b64encode(target.content).decode()
    document["newUnspecifiedField"] = base64.b64encode(unspecified).decode() if unspecified else None
    return document


def _config(rng: random.Random) -> Blob:
    """An image config with a random author, so every workflow's digest differs."""
    author = "".join(rng.choice(string.ascii_letters + string.digits + "-") for _ in range(16))
    return Blob(
        encode(
            {
                "author": author,
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
            }
        )
    )


def _layer() -> Blob:
    """A small gzipped tarball holding one text file, byte-for-byte reproducible."""
    text = b"whoever reads this found the conformance layer\n"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        member = tarfile.TarInfo("test.txt")
        member.size = len(text)
        member.mtime = 0
        archive.addfile(member, io.BytesIO(text))
    return Blob(gzip.compress(raw.getvalue(), mtime=0))


def _image_manifest(config: Blob, layers: list[Blob], *, media_type_field: bool = True) -> Blob:
    """An image manifest whose config descriptor embeds the config and an unspecified field."""
    document: dict[str, JSONValue] = {"schemaVersion": 2}
    if media_type_field:
        document["mediaType"] = OCI_MANIFEST
    document["config"] = descriptor(OCI_CONFIG, config, inline=True, unspecified=_UNSPECIFIED)
    document["layers"] = [descriptor(OCI_LAYER_GZIP, layer) for layer in layers]
    return Blob(encode(document))


def _artifact(
    *,
    artifact_type: str | None,
    config: dict[str, JSONValue],
    layers: list[dict[str, JSONValue]],
    subject: Blob,
    annotation: str | None,
) -> Blob:
    """An image manifest used as an artifact with a C{subject}."""
    document: dict[str, JSONValue] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    document["config"] = config
    document["layers"] = layers
    document["subject"] = descriptor(OCI_MANIFEST, subject)
    if annotation is not None:
        document["annotations"] = {ANNOTATION_KEY: annotation}
    return Blob(encode(document))


@dataclass(frozen=True, slots=True, kw_only=True)
class SuiteContent:
    """
    Everything the workflows push, built once per test.

    @ivar configs: One image config per workflow slot (0 pull, 1 push,
        2 discovery, 3 management, 4 referrers subject).
    @ivar layer: The one layer every image manifest uses.
    @ivar manifests: The image manifest of each config.
    @ivar empty_layer_manifest: An image manifest of C{configs[1]} with no
        layers and no C{mediaType} field.
    @ivar blob_a: The streamed and cross-mounted blob.
    @ivar chunked: The blob uploaded in two chunks.
    @ivar empty_json: The C{{}} blob.
    @ivar ref_blob_a: Blob of artifact type A.
    @ivar ref_blob_b: Blob of artifact type B.
    @ivar refs_a_config: Artifact A whose config media type is its type.
    @ivar refs_b_config: Artifact B whose config media type is its type.
    @ivar refs_a_layer: Artifact A with C{artifactType} and the empty config.
    @ivar refs_b_layer: Artifact B with C{artifactType} and the empty config.
    @ivar refs_c_layer: Artifact B whose subject (C{manifests[3]}) is not
        pushed in the discovery workflow; it has no annotations.
    @ivar refs_index: An index artifact listing the two A artifacts.
    @ivar annotations: The annotation value of each referrer, by digest.
    @ivar dummy_digest: A digest of content no workflow pushes.
    """

    configs: tuple[Blob, ...]
    layer: Blob
    manifests: tuple[Blob, ...]
    empty_layer_manifest: Blob
    blob_a: Blob
    chunked: ChunkedBlob
    empty_json: Blob
    ref_blob_a: Blob
    ref_blob_b: Blob
    refs_a_config: Blob
    refs_b_config: Blob
    refs_a_layer: Blob
    refs_b_layer: Blob
    refs_c_layer: Blob
    refs_index: Blob
    annotations: Mapping[str, str] = field(default_factory=dict)
    dummy_digest: str


def build_content(seed: int = 1) -> SuiteContent:
    """
    Build the conformance content.

    @param seed: Seed of the random parts (config authors and the upload blobs).
    """
    rng = random.Random(seed)
    configs = tuple(_config(rng) for _ in range(_WORKFLOW_SLOTS))
    layer = _layer()
    manifests = tuple(_image_manifest(config, [layer]) for config in configs)
    empty_json = Blob(b"{}")
    empty = descriptor(OCI_EMPTY, empty_json)
    ref_blob_a = Blob(b"alpha artifact payload, spread on a bagel")
    ref_blob_b = Blob(b"beta artifact payload, spread on a croissant")
    subject = manifests[4]

    refs_a_config = _artifact(
        artifact_type=None,
        config=descriptor(ARTIFACT_TYPE_A, ref_blob_a),
        layers=[empty],
        subject=subject,
        annotation="config artifact a",
    )
    refs_b_config = _artifact(
        artifact_type=None,
        config=descriptor(ARTIFACT_TYPE_B, ref_blob_b),
        layers=[empty],
        subject=subject,
        annotation="config artifact b",
    )
    refs_a_layer = _artifact(
        artifact_type=ARTIFACT_TYPE_A,
        config=empty,
        layers=[descriptor(ARTIFACT_TYPE_A, ref_blob_a)],
        subject=subject,
        annotation="layer artifact a",
    )
    refs_b_layer = _artifact(
        artifact_type=ARTIFACT_TYPE_B,
        config=empty,
        layers=[descriptor(ARTIFACT_TYPE_B, ref_blob_b)],
        subject=subject,
        annotation="layer artifact b",
    )
    refs_c_layer = _artifact(
        artifact_type=ARTIFACT_TYPE_B,
        config=empty,
        layers=[descriptor(ARTIFACT_TYPE_B, ref_blob_b)],
        subject=manifests[3],
        annotation=None,
    )
    index_document: dict[str, JSONValue] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": ARTIFACT_TYPE_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, refs_a_config), descriptor(OCI_MANIFEST, refs_a_layer)],
        "subject": descriptor(OCI_MANIFEST, subject),
        "annotations": {ANNOTATION_KEY: "index artifact"},
    }
    refs_index = Blob(encode(index_document))

    annotations: dict[str, str] = {}
    for artifact in (refs_a_config, refs_b_config, refs_a_layer, refs_b_layer, refs_index):
        annotations[artifact.digest] = json.loads(artifact.content)["annotations"][ANNOTATION_KEY]

    return SuiteContent(
        configs=configs,
        layer=layer,
        manifests=manifests,
        empty_layer_manifest=_image_manifest(configs[1], [], media_type_field=False),
        blob_a=random_blob(42, seed + 1),
        chunked=chunked_blob(42, seed + 2),
        empty_json=empty_json,
        ref_blob_a=ref_blob_a,
        ref_blob_b=ref_blob_b,
        refs_a_config=refs_a_config,
        refs_b_config=refs_b_config,
        refs_a_layer=refs_a_layer,
        refs_b_layer=refs_b_layer,
        refs_c_layer=refs_c_layer,
        refs_index=refs_index,
        annotations=annotations,
        dummy_digest=Blob(b"content that no workflow ever pushes").digest,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """
    A registry response, read to the end.

    @ivar method: The request method.
    @ivar path: The request path (without the query).
    @ivar status: The status code.
    @ivar headers: The response headers.
    @ivar body: The response body.
    """

    method: str
    path: str
    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str:
        """The first value of header C{name}, or C{""} when absent (like Go's C{Header.Get})."""
        values = self.headers.getRawHeaders(name)
        return values[0] if values else ""

    def json(self) -> JSONValue:
        """The body decoded as JSON."""
        return json.loads(self.body)

    def location(self) -> str:
        """The C{Location} as path plus query, whether it was sent absolute or relative."""
        parts = urlsplit(self.header("Location"))
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def error_codes(self) -> list[str]:
        """The C{code} of each entry of an error body (empty when it has none)."""
        try:
            document = self.json()
        except ValueError:
            return []
        errors = document.get("errors") if isinstance(document, dict) else None
        if not isinstance(errors, list):
            return []
        return [str(entry.get("code")) for entry in errors if isinstance(entry, dict)]

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status} {self.body[:300]!r}"


class RegistryClient:
    """
    A minimal distribution API client: one request, its whole response, with a timeout.

    @ivar name: The repository the workflows push to.
    @ivar crossmount_name: The repository blobs are mounted into.
    """

    def __init__(
        self,
        *,
        base_url: str,
        pool: HTTPConnectionPool,
        clock: IReactorTime,
        name: str = NAMESPACE,
        crossmount_name: str = CROSSMOUNT_NAMESPACE,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        """
        @param base_url: C{http://host:port} of the registry.
        @param pool: Connection pool every request goes through.
        @param clock: Clock for the request timeouts.
        @param name: See L{name}.
        @param crossmount_name: See L{crossmount_name}.
        @param timeout: Seconds allowed for a request and for reading its body.
        """
        self._base_url = base_url
        self._pool = pool
        self._clock = clock
        self._timeout = timeout
        self.name = name
        self.crossmount_name = crossmount_name

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        """
        Send one request and read its whole response.

        @param method: HTTP method.
        @param path: Absolute path, optionally with a query (as from C{Location}).
        @param params: Query parameters added to those already in C{path}.
        @param headers: Request headers. A C{Content-Length} given here is
            dropped: as with the suite's Go client, the length sent is the
            body's.
        @param body: Request body; POST, PUT and PATCH without one send an
            empty body with C{Content-Length: 0}, as the suite's client does.
        """
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        request_headers = Headers()
        for header, value in (headers or {}).items():
            if header.lower() != "content-length":
                request_headers.addRawHeader(header, value)
        sent = treq.request(
            method,
            self._base_url + path,
            data=body,
            params=dict(params or {}),
            headers=request_headers,
            pool=self._pool,
            allow_redirects=False,
        )
        sent.addTimeout(self._timeout, self._clock)
        response = await sent
        reading = treq.content(response)
        reading.addTimeout(self._timeout, self._clock)
        content = await reading
        return Response(
            method=method,
            path=urlsplit(path).path,
            status=response.code,
            headers=response.headers,
            body=content,
        )


def expect_success(response: Response) -> None:
    """
    Assert a 2xx answer, as every suite setup step does.

    @param response: The answer.
    """
    assert 200 <= response.status < 300, str(response)


async def push_blob(client: RegistryClient, blob: Blob, name: str | None = None) -> Response:
    """
    Push a blob with a POST then a PUT carrying the whole body, as each suite
    setup does; the POST must open a session.

    @param client: The client.
    @param blob: The blob.
    @param name: The repository (the client's default when C{None}).
    @return: The answer to the PUT.
    """
    repository = name or client.name
    started = await client.request("POST", f"/v2/{repository}/blobs/uploads/")
    assert started.status == 202, str(started)
    return await client.request(
        "PUT",
        started.location(),
        params={"digest": blob.digest},
        headers={"Content-Type": OCTET_STREAM, "Content-Length": blob.length},
        body=blob.content,
    )


async def push_manifest(
    client: RegistryClient, reference: str, manifest: Blob, media_type: str = OCI_MANIFEST
) -> Response:
    """
    Push a manifest under a tag or its digest.

    @param client: The client.
    @param reference: Tag or digest.
    @param manifest: The manifest bytes.
    @param media_type: Its C{Content-Type}.
    """
    return await client.request(
        "PUT",
        f"/v2/{client.name}/manifests/{reference}",
        headers={"Content-Type": media_type},
        body=manifest.content,
    )


async def delete(client: RegistryClient, kind: str, reference: str) -> Response:
    """
    Send a DELETE for a manifest or blob of the client's repository.

    @param client: The client.
    @param kind: C{"manifests"} or C{"blobs"}.
    @param reference: Tag or digest.
    """
    return await client.request("DELETE", f"/v2/{client.name}/{kind}/{reference}")


async def delete_in_order(
    client: RegistryClient, steps: list[tuple[str, str]], target: tuple[str, str]
) -> Response:
    """
    Run a teardown up to one of its deletions: the earlier deletions are sent
    (their answers are checked by their own tests), then the target's answer
    is returned.

    @param client: The client.
    @param steps: The teardown's deletions, as C{(kind, reference)}, in order.
    @param target: The deletion whose answer is wanted; one of C{steps}.
    """
    for step in steps[: steps.index(target)]:
        await delete(client, *step)
    return await delete(client, *target)


async def list_tags(client: RegistryClient, params: Mapping[str, str] | None = None) -> Response:
    """
    List the tags of the client's repository.

    @param client: The client.
    @param params: C{n} and C{last}, if any.
    """
    return await client.request("GET", f"/v2/{client.name}/tags/list", params=params)


def tags_of(response: Response) -> list[str]:
    """The C{tags} of a tag list answer (empty if the body is not one)."""
    try:
        document = response.json()
    except ValueError:
        return []
    tags = document.get("tags") if isinstance(document, dict) else None
    return [tag for tag in tags if isinstance(tag, str)] if isinstance(tags, list) else []


async def pull_setup(client: RegistryClient, content: SuiteContent) -> None:
    """
    The pull workflow's setup: configs 0 and 1, the layer, manifest 0 under
    L{TEST_TAG} and manifest 1 by digest, every step answered 2xx.

    @param client: The client.
    @param content: The content.
    """
    for blob in (content.configs[0], content.configs[1], content.layer):
        expect_success(await push_blob(client, blob))
    expect_success(await push_manifest(client, TEST_TAG, content.manifests[0]))
    expect_success(await push_manifest(client, content.manifests[1].digest, content.manifests[1]))


async def push_workflow_content(client: RegistryClient, content: SuiteContent) -> None:
    """
    What the push workflow has uploaded by the time it pushes manifests:
    config 1 and the layer.

    @param client: The client.
    @param content: The content.
    """
    for blob in (content.configs[1], content.layer):
        expect_success(await push_blob(client, blob))


async def references_setup(client: RegistryClient, content: SuiteContent) -> list[tuple[Response, str]]:
    """
    The discovery workflow's referrers setup, in the suite's order: artifacts
    A pushed before their subject (manifest 4), artifacts B after it, and
    artifact C whose subject (manifest 3) is never pushed.

    @param client: The client.
    @param content: The content.
    @return: Each manifest answer with the C{OCI-Subject} it must carry;
        blob answers are asserted 2xx here.
    """
    subject = content.manifests[4].digest
    answers: list[tuple[Response, str]] = []
    expect_success(await push_blob(client, content.empty_json))
    expect_success(await push_blob(client, content.ref_blob_a))
    for artifact in (content.refs_a_config, content.refs_a_layer):
        answers.append((await push_manifest(client, artifact.digest, artifact), subject))
    answers.append(
        (await push_manifest(client, content.refs_index.digest, content.refs_index, OCI_INDEX), subject)
    )
    expect_success(await push_blob(client, content.configs[4]))
    expect_success(await push_blob(client, content.layer))
    expect_success(await push_manifest(client, TEST_TAG, content.manifests[4]))
    expect_success(await push_blob(client, content.ref_blob_b))
    for artifact in (content.refs_b_config, content.refs_b_layer):
        answers.append((await push_manifest(client, artifact.digest, artifact), subject))
    answers.append(
        (
            await push_manifest(client, content.refs_c_layer.digest, content.refs_c_layer),
            content.manifests[3].digest,
        )
    )
    return answers


async def discovery_setup(client: RegistryClient, content: SuiteContent) -> None:
    """
    The whole discovery setup: config 2, the layer, manifest 2 under the
    four numbered tags, then the referrers content; every step answered 2xx.

    @param client: The client.
    @param content: The content.
    """
    expect_success(await push_blob(client, content.configs[2]))
    expect_success(await push_blob(client, content.layer))
    for tag in NUMBERED_TAGS:
        expect_success(await push_manifest(client, tag, content.manifests[2]))
    for answer, _ in await references_setup(client, content):
        expect_success(answer)


async def management_setup(client: RegistryClient, content: SuiteContent) -> int:
    """
    The management workflow's setup: config 3, the layer, manifest 3 under
    L{TEST_TAG}; every step answered 2xx.

    @param client: The client.
    @param content: The content.
    @return: How many tags the repository has afterwards.
    """
    expect_success(await push_blob(client, content.configs[3]))
    expect_success(await push_blob(client, content.layer))
    expect_success(await push_manifest(client, TEST_TAG, content.manifests[3]))
    listed = await list_tags(client)
    assert listed.status == 200, str(listed)
    return len(tags_of(listed))
