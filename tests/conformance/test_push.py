"""
The Push workflow of the OCI conformance suite (v1.1.1, C{02_push_test.go}).

One test per check, in the suite's order; each test first replays the
requests of the suite's earlier steps its check depends on. Where the suite
accepts either branch of an optional feature (a 202 instead of a 201 for a
monolithic POST or a mount, a warning for a manifest without layers), quayd
implements the feature and is held to the supported branch.

The cross-mount checks run against a registry with automatic mount discovery
on and off (the suite's C{OCI_AUTOMATIC_CROSSMOUNT}); the teardown's
deletions run in both of the suite's orders (C{OCI_DELETE_MANIFEST_BEFORE_BLOBS}).
"""

from __future__ import annotations

import pytest

from tests.conformance.suite import (
    EMPTY_LAYER_TAG,
    NONEXISTENT_MANIFEST,
    NUMBERED_TAGS,
    OCI_MANIFEST,
    OCTET_STREAM,
    Blob,
    ChunkedBlob,
    DeleteOrder,
    RegistryClient,
    Response,
    SuiteContent,
    async_test,
    chunked_blob,
    delete,
    expect_success,
    push_blob,
    push_manifest,
    push_workflow_content,
)

#: Why quayd fails the check that reads a manifest under the suite's bogus reference.
AUTO_MOUNT = [pytest.param(True, id="auto-mount"), pytest.param(False, id="no-auto-mount")]
ORDERS = [
    pytest.param(DeleteOrder.MANIFESTS_FIRST, id="manifests-first"),
    pytest.param(DeleteOrder.BLOBS_FIRST, id="blobs-first"),
]
BLOB_ORDERS = [
    pytest.param(DeleteOrder.MANIFESTS_FIRST, id="manifests-first"),
    pytest.param(DeleteOrder.BLOBS_FIRST, id="blobs-first"),
]


async def _get_blob(registry: RegistryClient, digest: str) -> Response:
    """GET a blob of the workflow's repository."""
    return await registry.request("GET", f"/v2/{registry.name}/blobs/{digest}")


async def _start_upload(registry: RegistryClient, name: str | None = None) -> Response:
    """POST to open an upload session; its C{Location} must be set."""
    started = await registry.request("POST", f"/v2/{name or registry.name}/blobs/uploads/")
    assert started.header("Location"), str(started)
    return started


async def _streamed_patch(registry: RegistryClient, blob: Blob) -> Response:
    """Blob Upload Streamed, first step: open a session and PATCH the whole blob into it."""
    started = await _start_upload(registry)
    return await registry.request(
        "PATCH", started.location(), headers={"Content-Type": OCTET_STREAM}, body=blob.content
    )


async def _streamed_push(registry: RegistryClient, blob: Blob) -> Response:
    """Blob Upload Streamed, both steps: PATCH the blob, then PUT with its digest and no body."""
    patched = await _streamed_patch(registry, blob)
    assert patched.status == 202, str(patched)
    return await registry.request(
        "PUT",
        patched.location(),
        params={"digest": blob.digest},
        headers={"Content-Type": OCTET_STREAM, "Content-Length": blob.length},
    )


async def _monolithic_post(registry: RegistryClient, blob: Blob) -> Response:
    """A single POST carrying the blob and its digest."""
    return await registry.request(
        "POST",
        f"/v2/{registry.name}/blobs/uploads/",
        params={"digest": blob.digest},
        headers={"Content-Type": OCTET_STREAM, "Content-Length": blob.length},
        body=blob.content,
    )


async def _open_chunked_session(
    registry: RegistryClient, content: SuiteContent
) -> tuple[Response, ChunkedBlob]:
    """
    Open a session for a chunked upload with an empty POST; when the registry
    announces an C{OCI-Chunk-Min-Length} above the first chunk, rebuild the
    blob so each chunk is that long, as the suite does.
    """
    started = await _start_upload(registry)
    chunked = content.chunked
    minimum = started.header("OCI-Chunk-Min-Length")
    if minimum and int(minimum) > len(chunked.first):
        chunked = chunked_blob(int(minimum) * 2 - 2)
    return started, chunked


async def _patch_chunk(registry: RegistryClient, location: str, chunk: bytes, content_range: str) -> Response:
    """PATCH one chunk with its C{Content-Range}."""
    return await registry.request(
        "PATCH",
        location,
        headers={
            "Content-Type": OCTET_STREAM,
            "Content-Length": str(len(chunk)),
            "Content-Range": content_range,
        },
        body=chunk,
    )


async def _chunked_until_status(
    registry: RegistryClient, content: SuiteContent
) -> tuple[Response, ChunkedBlob]:
    """
    The chunked steps up to the status request: first chunk (202), the same
    chunk retried (416), then GET on the session.

    @return: The answer to the GET, and the blob being uploaded.
    """
    started, chunked = await _open_chunked_session(registry, content)
    first = await _patch_chunk(registry, started.location(), chunked.first, chunked.first_range)
    assert first.status == 202, str(first)
    retried = await _patch_chunk(registry, started.location(), chunked.first, chunked.first_range)
    assert retried.status == 416, str(retried)
    return await registry.request("GET", started.location()), chunked


async def _mount(registry: RegistryClient, digest: str, source: str | None) -> Response:
    """POST a mount of C{digest} into the cross-mount repository, from C{source} if given."""
    params = {"mount": digest}
    if source is not None:
        params["from"] = source
    return await registry.request("POST", f"/v2/{registry.crossmount_name}/blobs/uploads/", params=params)


async def _mount_from_namespace(registry: RegistryClient, content: SuiteContent) -> Response:
    """Push blob A (streamed) into the workflow's repository, then mount it from there."""
    expect_success(await _streamed_push(registry, content.blob_a))
    return await _mount(registry, content.blob_a.digest, registry.name)


# Blob Upload Streamed


@async_test
async def test_push_streamed_patch_is_202(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Streamed "PATCH request with blob in body should yield 202 response"."""
    patched = await _streamed_patch(registry, content.blob_a)
    assert patched.status == 202, str(patched)


@async_test
async def test_push_streamed_put_with_digest_is_201(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Streamed "PUT request to session URL with digest should yield 201 response"."""
    response = await _streamed_push(registry, content.blob_a)
    assert response.status == 201, str(response)
    assert response.header("Location"), str(response)


# Blob Upload Monolithic


@async_test
async def test_push_monolithic_get_absent_blob_is_404(
    registry: RegistryClient, content: SuiteContent
) -> None:
    """Push/Monolithic "GET nonexistent blob should result in 404 response"."""
    response = await _get_blob(registry, content.dummy_digest)
    assert response.status == 404, str(response)


@async_test
async def test_push_monolithic_post_with_digest_is_201(
    registry: RegistryClient, content: SuiteContent
) -> None:
    """Push/Monolithic "POST request with digest and blob should yield a 201 or 202" (held to 201)."""
    response = await _monolithic_post(registry, content.configs[1])
    assert response.header("Location"), str(response)
    assert response.status == 201, str(response)


@async_test
async def test_push_monolithic_get_after_post(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Monolithic "GET request to blob URL from prior request should yield 200 or 404"."""
    posted = await _monolithic_post(registry, content.configs[1])
    response = await _get_blob(registry, content.configs[1].digest)
    assert response.status == (404 if posted.status == 202 else 200), str(response)


@async_test
async def test_push_monolithic_post_opens_session(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Monolithic "POST request should yield a session ID" (202)."""
    expect_success(await _monolithic_post(registry, content.configs[1]))
    response = await registry.request("POST", f"/v2/{registry.name}/blobs/uploads/")
    assert response.status == 202, str(response)


@async_test
async def test_push_monolithic_put_is_201(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Monolithic "PUT upload of a blob should yield a 201 Response" (the blob already exists)."""
    expect_success(await _monolithic_post(registry, content.configs[1]))
    response = await push_blob(registry, content.configs[1])
    assert response.header("Location"), str(response)
    assert response.status == 201, str(response)


@async_test
async def test_push_monolithic_get_blob_is_200(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Monolithic "GET request to existing blob should yield 200 response"."""
    expect_success(await _monolithic_post(registry, content.configs[1]))
    expect_success(await push_blob(registry, content.configs[1]))
    response = await _get_blob(registry, content.configs[1].digest)
    assert response.status == 200, str(response)
    assert response.body == content.configs[1].content


@async_test
async def test_push_monolithic_put_layer_is_201(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Monolithic "PUT upload of a layer blob should yield a 201 Response"."""
    response = await push_blob(registry, content.layer)
    assert response.header("Location"), str(response)
    assert response.status == 201, str(response)


@async_test
async def test_push_monolithic_get_layer_is_200(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Monolithic "GET request to existing layer should yield 200 response"."""
    expect_success(await push_blob(registry, content.layer))
    response = await _get_blob(registry, content.layer.digest)
    assert response.status == 200, str(response)
    assert response.body == content.layer.content


# Blob Upload Chunked


@async_test
async def test_push_chunked_out_of_order_patch_is_416(
    registry: RegistryClient, content: SuiteContent
) -> None:
    """Push/Chunked "Out-of-order blob upload should return 416" (second chunk sent first)."""
    started, chunked = await _open_chunked_session(registry, content)
    response = await _patch_chunk(registry, started.location(), chunked.second, chunked.second_range)
    assert response.status == 416, str(response)


@async_test
async def test_push_chunked_first_chunk_is_202(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Chunked "PATCH request with first chunk should return 202", Range covering it."""
    started, chunked = await _open_chunked_session(registry, content)
    response = await _patch_chunk(registry, started.location(), chunked.first, chunked.first_range)
    assert response.status == 202, str(response)
    assert response.header("Range") == chunked.first_range, str(response)


@async_test
async def test_push_chunked_retried_chunk_is_416(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Chunked "Retry previous blob chunk should return 416"."""
    started, chunked = await _open_chunked_session(registry, content)
    first = await _patch_chunk(registry, started.location(), chunked.first, chunked.first_range)
    assert first.status == 202, str(first)
    response = await _patch_chunk(registry, started.location(), chunked.first, chunked.first_range)
    assert response.status == 416, str(response)


@async_test
async def test_push_chunked_status_is_204(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Chunked "Get on stale blob upload should return 204 with a range and location"."""
    response, chunked = await _chunked_until_status(registry, content)
    assert response.status == 204, str(response)
    assert response.header("Location"), str(response)
    assert response.header("Range") == chunked.first_range, str(response)


@async_test
async def test_push_chunked_second_chunk_is_202(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Chunked "PATCH request with second chunk should return 202", with a Location."""
    status, chunked = await _chunked_until_status(registry, content)
    response = await _patch_chunk(registry, status.location(), chunked.second, chunked.second_range)
    assert response.status == 202, str(response)
    assert response.header("Location"), str(response)
    assert response.header("Range") == f"0-{chunked.blob.size - 1}", str(response)


@async_test
async def test_push_chunked_put_with_digest_is_201(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Chunked "PUT request with digest should return 201" (empty body closes the upload)."""
    status, chunked = await _chunked_until_status(registry, content)
    second = await _patch_chunk(registry, status.location(), chunked.second, chunked.second_range)
    assert second.status == 202, str(second)
    response = await registry.request(
        "PUT",
        second.location(),
        params={"digest": chunked.blob.digest},
        headers={"Content-Type": OCTET_STREAM, "Content-Length": "0"},
    )
    assert response.status == 201, str(response)
    assert response.header("Location"), str(response)


# Cross-Repository Blob Mount


@pytest.mark.parametrize("auto_mount", AUTO_MOUNT)
@async_test
async def test_push_mount_without_from_opens_session(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Cross-mount "Cross-mounting of a blob without the from argument should yield session id"."""
    response = await _mount(registry, content.dummy_digest, None)
    assert response.status == 202, str(response)
    assert response.header("Location"), str(response)


@pytest.mark.parametrize("auto_mount", AUTO_MOUNT)
@async_test
async def test_push_mount_from_other_repository_is_201(
    registry: RegistryClient, content: SuiteContent
) -> None:
    """Push/Cross-mount "POST request to mount another repository's blob should return 201 or 202" (201)."""
    response = await _mount_from_namespace(registry, content)
    assert response.status == 201, str(response)


@pytest.mark.parametrize("auto_mount", AUTO_MOUNT)
@async_test
async def test_push_mounted_blob_is_readable(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Cross-mount "GET request to test digest within cross-mount namespace should return 200"."""
    mounted = await _mount_from_namespace(registry, content)
    assert mounted.status == 201, str(mounted)
    assert mounted.location() == f"/v2/{registry.crossmount_name}/blobs/{content.blob_a.digest}"
    response = await registry.request("GET", mounted.location())
    assert response.status == 200, str(response)
    assert response.body == content.blob_a.content


@pytest.mark.parametrize("auto_mount", AUTO_MOUNT)
@async_test
async def test_push_mount_of_absent_blob_opens_session(
    registry: RegistryClient, content: SuiteContent
) -> None:
    """Push/Cross-mount "Cross-mounting of nonexistent blob should yield session id" (in the target)."""
    expect_success(await _streamed_push(registry, content.blob_a))
    response = await _mount(registry, content.dummy_digest, registry.name)
    assert response.status == 202, str(response)
    assert response.location().startswith(f"/v2/{registry.crossmount_name}/blobs/uploads/"), str(response)


@pytest.mark.parametrize("auto_mount", [pytest.param(True, id="auto-mount")])
@async_test
async def test_push_mount_without_from_discovers_blob(
    registry: RegistryClient, content: SuiteContent
) -> None:
    """Push/Cross-mount "Cross-mounting without from, and automatic content discovery enabled ... 201"."""
    mounted = await _mount_from_namespace(registry, content)
    assert mounted.status == 201, str(mounted)
    response = await _mount(registry, content.blob_a.digest, None)
    assert response.status == 201, str(response)


@pytest.mark.parametrize("auto_mount", [pytest.param(False, id="no-auto-mount")])
@async_test
async def test_push_mount_without_from_without_discovery_is_202(
    registry: RegistryClient, content: SuiteContent
) -> None:
    """Push/Cross-mount "Cross-mounting without from, and automatic content discovery disabled ... 202"."""
    mounted = await _mount_from_namespace(registry, content)
    assert mounted.status == 201, str(mounted)
    response = await _mount(registry, content.blob_a.digest, None)
    assert response.status == 202, str(response)


# Manifest Upload


@async_test
async def test_push_get_absent_manifest_is_404(registry: RegistryClient) -> None:
    """Push/Manifest Upload "GET nonexistent manifest should return 404"."""
    response = await registry.request("GET", f"/v2/{registry.name}/manifests/{NONEXISTENT_MANIFEST}")
    assert response.status == 404, str(response)


@async_test
async def test_push_manifest_under_tags_is_201(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Manifest Upload "PUT should accept a manifest upload" (one manifest under four tags)."""
    await push_workflow_content(registry, content)
    for tag in NUMBERED_TAGS:
        response = await push_manifest(registry, tag, content.manifests[1])
        assert response.header("Location"), str(response)
        assert response.status == 201, str(response)


@async_test
async def test_push_manifest_without_layers_is_201(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Manifest Upload "Registry should accept a manifest upload with no layers" (201, no warning)."""
    await push_workflow_content(registry, content)
    response = await push_manifest(registry, EMPTY_LAYER_TAG, content.empty_layer_manifest)
    assert response.status == 201, str(response)
    assert response.header("Location"), str(response)


@async_test
async def test_push_get_manifest_by_digest_is_200(registry: RegistryClient, content: SuiteContent) -> None:
    """Push/Manifest Upload "GET request to manifest URL (digest) should yield 200 response"."""
    await push_workflow_content(registry, content)
    for tag in NUMBERED_TAGS:
        expect_success(await push_manifest(registry, tag, content.manifests[1]))
    response = await registry.request(
        "GET",
        f"/v2/{registry.name}/manifests/{content.manifests[1].digest}",
        headers={"Accept": OCI_MANIFEST},
    )
    assert response.status == 200, str(response)
    assert response.body == content.manifests[1].content


# Teardown


async def _push_teardown_state(registry: RegistryClient, content: SuiteContent) -> None:
    """What the push workflow leaves for its teardown: config 1, the layer and both manifests."""
    await push_workflow_content(registry, content)
    for tag in NUMBERED_TAGS:
        expect_success(await push_manifest(registry, tag, content.manifests[1]))
    expect_success(await push_manifest(registry, EMPTY_LAYER_TAG, content.empty_layer_manifest))


async def _delete_blobs(registry: RegistryClient, content: SuiteContent, until: str | None = None) -> None:
    """Send the teardown's blob deletions (config 1, then the layer) before C{until}, unchecked."""
    for digest in (content.configs[1].digest, content.layer.digest):
        if digest == until:
            return
        await delete(registry, "blobs", digest)


async def _delete_manifests(registry: RegistryClient, content: SuiteContent) -> list[Response]:
    """The teardown's manifest deletions: manifest 1, then the one without layers."""
    return [
        await delete(registry, "manifests", content.manifests[1].digest),
        await delete(registry, "manifests", content.empty_layer_manifest.digest),
    ]


@pytest.mark.parametrize("order", ORDERS)
@async_test
async def test_push_teardown_deletes_manifests(
    registry: RegistryClient, content: SuiteContent, order: DeleteOrder
) -> None:
    """Push/Teardown "Delete manifest created in tests" (and the one without layers): 2xx or 405."""
    await _push_teardown_state(registry, content)
    if order is DeleteOrder.BLOBS_FIRST:
        await _delete_blobs(registry, content)
    for response in await _delete_manifests(registry, content):
        assert 200 <= response.status < 300 or response.status == 405, str(response)


@pytest.mark.parametrize("order", BLOB_ORDERS)
@async_test
async def test_push_teardown_deletes_config_blob(
    registry: RegistryClient, content: SuiteContent, order: DeleteOrder
) -> None:
    """Push/Teardown "Delete config blob created in tests": 2xx, 404 or 405."""
    await _push_teardown_state(registry, content)
    if order is DeleteOrder.MANIFESTS_FIRST:
        await _delete_manifests(registry, content)
    response = await delete(registry, "blobs", content.configs[1].digest)
    assert 200 <= response.status < 300 or response.status in (404, 405), str(response)


@pytest.mark.parametrize("order", BLOB_ORDERS)
@async_test
async def test_push_teardown_deletes_layer_blob(
    registry: RegistryClient, content: SuiteContent, order: DeleteOrder
) -> None:
    """Push/Teardown "Delete layer blob created in setup": 2xx, 404 or 405."""
    await _push_teardown_state(registry, content)
    if order is DeleteOrder.MANIFESTS_FIRST:
        await _delete_manifests(registry, content)
    await _delete_blobs(registry, content, until=content.layer.digest)
    response = await delete(registry, "blobs", content.layer.digest)
    assert 200 <= response.status < 300 or response.status in (404, 405), str(response)
