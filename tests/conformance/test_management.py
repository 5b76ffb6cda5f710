"""
The Content Management workflow of the OCI conformance suite (v1.1.1,
C{04_management_test.go}): deleting a tag, a manifest and blobs.

One test per check, in the suite's order; each test replays the setup and
the deletions before it. The suite also passes registries that disallow
deletion (400 C{UNSUPPORTED} or 405, and a 200 for the "deleted" manifest);
quayd runs here with deletion enabled, so each check is held to the branch
where the deletion happens.
"""

from __future__ import annotations

from tests.conformance.suite import (
    OCI_MANIFEST,
    TEST_TAG,
    RegistryClient,
    Response,
    SuiteContent,
    async_test,
    delete,
    expect_success,
    list_tags,
    management_setup,
    push_blob,
    push_manifest,
    tags_of,
)


async def _delete_tag_and_manifest(registry: RegistryClient, content: SuiteContent) -> int:
    """
    Set up, delete the tag, then the manifest by digest, each answered 202.

    @return: The tag count the setup saw.
    """
    count = await management_setup(registry, content)
    untagged = await delete(registry, "manifests", TEST_TAG)
    assert untagged.status == 202, str(untagged)
    deleted = await delete(registry, "manifests", content.manifests[3].digest)
    assert deleted.status == 202, str(deleted)
    return count


async def _delete_blobs(registry: RegistryClient, content: SuiteContent) -> list[Response]:
    """Delete the config blob, then the layer blob."""
    return [
        await delete(registry, "blobs", content.configs[3].digest),
        await delete(registry, "blobs", content.layer.digest),
    ]


# Setup


@async_test
async def test_management_setup_pushes_config_blob(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Management/Setup "Populate registry with test config blob" (config 3): 2xx."""
    expect_success(await push_blob(registry, content.configs[3]))


@async_test
async def test_management_setup_pushes_layer(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Management/Setup "Populate registry with test layer": 2xx."""
    expect_success(await push_blob(registry, content.configs[3]))
    expect_success(await push_blob(registry, content.layer))


@async_test
async def test_management_setup_pushes_tag(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Management/Setup "Populate registry with test tag" (manifest 3): 2xx."""
    expect_success(await push_blob(registry, content.configs[3]))
    expect_success(await push_blob(registry, content.layer))
    expect_success(await push_manifest(registry, TEST_TAG, content.manifests[3]))


@async_test
async def test_management_setup_counts_tags(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Management/Setup "Check how many tags there are before anything gets deleted": 200."""
    expect_success(await push_blob(registry, content.configs[3]))
    expect_success(await push_blob(registry, content.layer))
    expect_success(await push_manifest(registry, TEST_TAG, content.manifests[3]))
    response = await list_tags(registry)
    assert response.status == 200, str(response)
    assert tags_of(response) == [TEST_TAG], str(response)


# Manifest delete


@async_test
async def test_management_delete_tag_is_202(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Management/Manifest delete "DELETE request to manifest tag should return 202" (not 400/405)."""
    await management_setup(registry, content)
    response = await delete(registry, "manifests", TEST_TAG)
    assert response.status == 202, str(response)


@async_test
async def test_management_delete_manifest_by_digest_is_202(
    registry: RegistryClient, content: SuiteContent
) -> None:
    """Content Management/Manifest delete "DELETE request to manifest (digest) should yield 202 response"."""
    await management_setup(registry, content)
    expect_success(await delete(registry, "manifests", TEST_TAG))
    response = await delete(registry, "manifests", content.manifests[3].digest)
    assert response.status == 202, str(response)


@async_test
async def test_management_get_deleted_manifest_is_404(
    registry: RegistryClient, content: SuiteContent
) -> None:
    """Content Management/Manifest delete "GET request to deleted manifest URL should yield 404 response"."""
    await _delete_tag_and_manifest(registry, content)
    response = await registry.request(
        "GET",
        f"/v2/{registry.name}/manifests/{content.manifests[3].digest}",
        headers={"Accept": OCI_MANIFEST},
    )
    assert response.status == 404, str(response)


@async_test
async def test_management_tag_list_reflects_deletion(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Management/Manifest delete "GET request to tags list should reflect manifest deletion"."""
    count = await _delete_tag_and_manifest(registry, content)
    response = await list_tags(registry)
    assert response.status == 200, str(response)
    assert len(tags_of(response)) < count, str(response)


# Blob delete


@async_test
async def test_management_delete_blobs_is_202(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Management/Blob delete "DELETE request to blob URL should yield 202 response" (both blobs)."""
    await _delete_tag_and_manifest(registry, content)
    for response in await _delete_blobs(registry, content):
        assert response.status == 202, str(response)


@async_test
async def test_management_get_deleted_blob_is_404(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Management/Blob delete "GET request to deleted blob URL should yield 404 response"."""
    await _delete_tag_and_manifest(registry, content)
    for deleted in await _delete_blobs(registry, content):
        expect_success(deleted)
    response = await registry.request("GET", f"/v2/{registry.name}/blobs/{content.configs[3].digest}")
    assert response.status == 404, str(response)
