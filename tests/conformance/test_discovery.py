"""
The Content Discovery workflow of the OCI conformance suite (v1.1.1,
C{03_discovery_test.go}): tag listing with C{n} and C{last}, and the referrers
API with and without an C{artifactType} filter.

One test per check, in the suite's order; each test replays the setup its
check depends on. quayd implements referrers filtering, so the filter check
is held to the filtered branch (the suite would only warn without it). The
teardown runs in both of the suite's deletion orders.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.conformance.suite import (
    ANNOTATION_KEY,
    ARTIFACT_TYPE_A,
    ARTIFACT_TYPE_FILTER,
    EMPTY_JSON_DIGEST,
    NUMBERED_TAGS,
    OCI_INDEX,
    TEST_TAG,
    DeleteOrder,
    JSONValue,
    RegistryClient,
    Response,
    SuiteContent,
    async_test,
    delete,
    discovery_setup,
    expect_success,
    list_tags,
    push_blob,
    push_manifest,
    references_setup,
    tags_of,
)

ORDERS = [
    pytest.param(DeleteOrder.MANIFESTS_FIRST, id="manifests-first"),
    pytest.param(DeleteOrder.BLOBS_FIRST, id="blobs-first"),
]
BLOB_ORDERS = [
    pytest.param(DeleteOrder.MANIFESTS_FIRST, id="manifests-first"),
    pytest.param(DeleteOrder.BLOBS_FIRST, id="blobs-first"),
]

#: One teardown step: sends its deletions and returns their answers.
Step = Callable[[RegistryClient, SuiteContent, DeleteOrder], Awaitable[list[Response]]]


async def _referrers(registry: RegistryClient, digest: str, artifact_type: str | None = None) -> Response:
    """GET the referrers of C{digest}, optionally filtered by artifact type."""
    params = {"artifactType": artifact_type} if artifact_type is not None else None
    return await registry.request("GET", f"/v2/{registry.name}/referrers/{digest}", params=params)


def _index(response: Response) -> list[JSONValue]:
    """Check a referrers answer is a 200 image index and return its C{manifests}."""
    assert response.status == 200, str(response)
    assert response.header("Content-Type") == OCI_INDEX, str(response)
    document = response.json()
    manifests = document.get("manifests")
    assert isinstance(manifests, list), str(response)
    return manifests


def _check_annotations(content: SuiteContent, manifests: list[JSONValue]) -> None:
    """Each referrer carries exactly the one annotation of the artifact it describes."""
    for entry in manifests:
        annotations = entry.get("annotations", {})
        assert len(annotations) == 1, entry
        assert annotations[ANNOTATION_KEY] == content.annotations[entry["digest"]], entry


async def _delete_manifests_and_tags(
    registry: RegistryClient, content: SuiteContent, order: DeleteOrder
) -> list[Response]:
    """The "Delete created manifest & associated tags" step: every manifest, and the tag, by reference."""
    references = [
        content.refs_index.digest,
        content.manifests[2].digest,
        content.manifests[4].digest,
        content.refs_a_config.digest,
        content.refs_a_layer.digest,
        TEST_TAG,
        content.refs_b_config.digest,
        content.refs_b_layer.digest,
        content.refs_c_layer.digest,
    ]
    return [await delete(registry, "manifests", reference) for reference in references]


async def _delete_config_blob(
    registry: RegistryClient, content: SuiteContent, order: DeleteOrder
) -> list[Response]:
    """The "Delete config blob created in tests" step (config 2)."""
    return [await delete(registry, "blobs", content.configs[2].digest)]


async def _delete_layer_blob(
    registry: RegistryClient, content: SuiteContent, order: DeleteOrder
) -> list[Response]:
    """The "Delete layer blob created in setup" step."""
    return [await delete(registry, "blobs", content.layer.digest)]


async def _references_teardown(
    registry: RegistryClient, content: SuiteContent, order: DeleteOrder
) -> list[Response]:
    """The "References teardown" step: the referrers content, manifests and blobs in the given order."""
    manifests = [
        content.refs_index.digest,
        content.refs_a_config.digest,
        content.refs_a_layer.digest,
        content.manifests[4].digest,
        content.refs_b_config.digest,
        content.refs_b_layer.digest,
    ]
    blobs = [content.configs[4].digest, content.ref_blob_a.digest, content.ref_blob_b.digest]
    blobs.append(content.empty_json.digest)
    deletions = [("manifests", m) for m in manifests] + [("blobs", b) for b in blobs]
    if order is DeleteOrder.BLOBS_FIRST:
        deletions = [("blobs", b) for b in blobs] + [("manifests", m) for m in manifests]
    return [await delete(registry, kind, reference) for kind, reference in deletions]


def _teardown(order: DeleteOrder) -> list[Step]:
    """The teardown's steps in the order the suite registers them."""
    if order is DeleteOrder.MANIFESTS_FIRST:
        return [_delete_manifests_and_tags, _delete_config_blob, _delete_layer_blob, _references_teardown]
    return [_delete_config_blob, _delete_layer_blob, _delete_manifests_and_tags, _references_teardown]


async def _teardown_until(
    registry: RegistryClient, content: SuiteContent, order: DeleteOrder, target: Step
) -> list[Response]:
    """Set up the workflow, run the teardown steps before C{target} unchecked, then C{target}."""
    await discovery_setup(registry, content)
    steps = _teardown(order)
    for step in steps[: steps.index(target)]:
        await step(registry, content, order)
    return await target(registry, content, order)


# Setup


@async_test
async def test_discovery_setup_pushes_config_blob(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Discovery/Setup "Populate registry with test blob" (config 2): 2xx."""
    expect_success(await push_blob(registry, content.configs[2]))


@async_test
async def test_discovery_setup_pushes_layer(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Discovery/Setup "Populate registry with test layer": 2xx."""
    expect_success(await push_blob(registry, content.configs[2]))
    expect_success(await push_blob(registry, content.layer))


@async_test
async def test_discovery_setup_pushes_tags(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Discovery/Setup "Populate registry with test tags": four tags of manifest 2, each 2xx."""
    expect_success(await push_blob(registry, content.configs[2]))
    expect_success(await push_blob(registry, content.layer))
    for tag in NUMBERED_TAGS:
        expect_success(await push_manifest(registry, tag, content.manifests[2]))
    assert tags_of(await list_tags(registry)) == list(NUMBERED_TAGS)


@pytest.mark.skip(reason="runs only when OCI_TAG_LIST pre-seeds tags; this mirror always pushes its own")
def test_discovery_setup_takes_tags_from_environment() -> None:
    """Content Discovery/Setup "Populate registry with test tags (no push)": a no-op unless pre-seeded."""


@async_test
async def test_discovery_references_setup(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Discovery/Setup "References setup": artifacts with a subject are 2xx and answer OCI-Subject."""
    assert content.empty_json.digest == EMPTY_JSON_DIGEST
    expect_success(await push_blob(registry, content.configs[2]))
    expect_success(await push_blob(registry, content.layer))
    for tag in NUMBERED_TAGS:
        expect_success(await push_manifest(registry, tag, content.manifests[2]))
    for response, subject in await references_setup(registry, content):
        expect_success(response)
        assert response.header("OCI-Subject") == subject, str(response)


# Test content discovery endpoints (listing tags)


@async_test
async def test_discovery_list_tags_is_200(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Discovery/Listing tags "GET request to list tags should yield 200 response"."""
    await discovery_setup(registry, content)
    response = await list_tags(registry)
    assert response.status == 200, str(response)
    assert tags_of(response) == sorted([TEST_TAG, *NUMBERED_TAGS]), str(response)


@async_test
async def test_discovery_list_tags_honours_n(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Discovery/Listing tags "GET number of tags should be limitable by `n` query parameter"."""
    await discovery_setup(registry, content)
    count = len(tags_of(await list_tags(registry)))
    response = await list_tags(registry, {"n": str(count // 2)})
    assert response.status == 200, str(response)
    assert len(tags_of(response)) == count // 2, str(response)


@async_test
async def test_discovery_list_tags_honours_last(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Discovery/Listing tags "GET start of tag is set by `last` query parameter": the next page."""
    await discovery_setup(registry, content)
    count = len(tags_of(await list_tags(registry)))
    n = count // 2
    first = tags_of(await list_tags(registry, {"n": str(n)}))
    assert len(first) <= n and first[n - 1] in first
    response = await list_tags(registry, {"n": str(n), "last": first[n - 1]})
    assert response.status == 200, str(response)
    page = tags_of(response)
    assert len(page) <= n, str(response)
    assert all(tag > first[n - 1] for tag in page), str(response)


# Test content discovery endpoints (listing references)


@async_test
async def test_discovery_referrers_of_unknown_digest_is_empty(
    registry: RegistryClient, content: SuiteContent
) -> None:
    """Content Discovery/Referrers "GET request to nonexistent blob should result in empty 200 response"."""
    await discovery_setup(registry, content)
    assert _index(await _referrers(registry, content.dummy_digest)) == []


@async_test
async def test_discovery_referrers_lists_artifacts(registry: RegistryClient, content: SuiteContent) -> None:
    """Content Discovery/Referrers "GET request to existing blob should yield 200": five, annotated."""
    await discovery_setup(registry, content)
    manifests = _index(await _referrers(registry, content.manifests[4].digest))
    assert len(manifests) == 5, manifests
    assert manifests[0]["digest"] != manifests[1]["digest"]
    assert {entry["digest"] for entry in manifests} == set(content.annotations)
    _check_annotations(content, manifests)


@async_test
async def test_discovery_referrers_filter_by_artifact_type(
    registry: RegistryClient, content: SuiteContent
) -> None:
    """Content Discovery/Referrers "GET request to existing blob with filter should yield 200" (filtered)."""
    await discovery_setup(registry, content)
    response = await _referrers(registry, content.manifests[4].digest, ARTIFACT_TYPE_A)
    manifests = _index(response)
    assert response.header("OCI-Filters-Applied") == ARTIFACT_TYPE_FILTER, str(response)
    assert len(manifests) == 2, manifests
    assert {entry["digest"] for entry in manifests} == {
        content.refs_a_config.digest,
        content.refs_a_layer.digest,
    }
    _check_annotations(content, manifests)


@async_test
async def test_discovery_referrers_of_missing_manifest(
    registry: RegistryClient, content: SuiteContent
) -> None:
    """Content Discovery/Referrers "GET request to missing manifest should yield 200": the one referrer."""
    await discovery_setup(registry, content)
    manifests = _index(await _referrers(registry, content.manifests[3].digest))
    assert len(manifests) == 1, manifests
    assert manifests[0]["digest"] == content.refs_c_layer.digest


# Teardown


@pytest.mark.parametrize("order", ORDERS)
@async_test
async def test_discovery_teardown_deletes_manifests_and_tags(
    registry: RegistryClient, content: SuiteContent, order: DeleteOrder
) -> None:
    """Content Discovery/Teardown "Delete created manifest & associated tags": each 2xx, 404 or 405."""
    for response in await _teardown_until(registry, content, order, _delete_manifests_and_tags):
        assert 200 <= response.status < 300 or response.status in (404, 405), str(response)


@pytest.mark.parametrize("order", BLOB_ORDERS)
@async_test
async def test_discovery_teardown_deletes_config_blob(
    registry: RegistryClient, content: SuiteContent, order: DeleteOrder
) -> None:
    """Content Discovery/Teardown "Delete config blob created in tests": 2xx or 405."""
    for response in await _teardown_until(registry, content, order, _delete_config_blob):
        assert 200 <= response.status < 300 or response.status == 405, str(response)


@pytest.mark.parametrize("order", BLOB_ORDERS)
@async_test
async def test_discovery_teardown_deletes_layer_blob(
    registry: RegistryClient, content: SuiteContent, order: DeleteOrder
) -> None:
    """Content Discovery/Teardown "Delete layer blob created in setup": 2xx or 405."""
    for response in await _teardown_until(registry, content, order, _delete_layer_blob):
        assert 200 <= response.status < 300 or response.status == 405, str(response)


@pytest.mark.parametrize("order", ORDERS)
@async_test
async def test_discovery_references_teardown(
    registry: RegistryClient, content: SuiteContent, order: DeleteOrder
) -> None:
    """Content Discovery/Teardown "References teardown": each deletion 2xx, 404 or 405."""
    for response in await _teardown_until(registry, content, order, _references_teardown):
        assert 200 <= response.status < 300 or response.status in (404, 405), str(response)
