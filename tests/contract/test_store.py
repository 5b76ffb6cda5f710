"""
The L{MetadataStore} behaviour, run over every database backend.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from quayd.db.store import BlobRecord, ManifestChildUnknown, MetadataStore, UploadRecord
from quayd.errors import Conflict, ManifestBlobUnknown
from quayd.registry.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    ParsedManifest,
    parse_manifest,
)
from quayd.types import Digest, RepositoryName, Tag
from tests.support.manifests import image_manifest, index_manifest

REPO = RepositoryName("library/app")
OTHER = RepositoryName("other/app")
CONFIG = b'{"architecture":"amd64","os":"linux"}'
LAYER = b"layer bytes"


def _key(content: bytes) -> str:
    """A storage key for C{content}, as the filesystem store would name it."""
    digest = Digest.sha256_of(content)
    return f"sha256/{digest.hex[:2]}/{digest.hex}"


async def _commit(store: MetadataStore, repo: RepositoryName, *contents: bytes) -> None:
    """Record C{contents} as committed blobs linked to C{repo}."""
    for content in contents:
        await store.commit_blob(repo, Digest.sha256_of(content), len(content), _key(content))


def _parse(content: bytes) -> ParsedManifest:
    """Parse manifest bytes (their C{mediaType} field decides the type)."""
    return parse_manifest(content, None)


async def _push_image(
    store: MetadataStore, repo: RepositoryName, tag: str | None, config: bytes = CONFIG, layer: bytes = LAYER
) -> bytes:
    """Commit an image's blobs and put its manifest; returns the manifest bytes."""
    await _commit(store, repo, config, layer)
    content = image_manifest(OCI_MANIFEST, config, [layer])
    await store.put_manifest(repo, _parse(content), content, None if tag is None else Tag(tag))
    return content


# Uploads


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_create_upload_and_get(store: MetadataStore, clock: Clock) -> None:
    """A new upload is empty, stamped with the clock, and found only in its repository."""
    clock.advance(100)
    record = await store.create_upload(REPO, "u1")
    expected = UploadRecord(id="u1", repository=REPO, committed_size=0, created_at=100.0, updated_at=100.0)
    assert record == expected
    assert await store.get_upload(REPO, "u1") == expected
    assert await store.get_upload(OTHER, "u1") is None
    assert await store.get_upload(REPO, "missing") is None
    assert await store.repository_exists(REPO)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_create_upload_duplicate_id_conflict(store: MetadataStore) -> None:
    """Upload ids are unique."""
    await store.create_upload(REPO, "dup")
    with pytest.raises(Conflict):
        await store.create_upload(OTHER, "dup")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_advance_upload_compare_and_set(store: MetadataStore, clock: Clock) -> None:
    """Advancing succeeds only from the expected size, and stamps the update time."""
    await store.create_upload(REPO, "u1")
    clock.advance(5)
    assert await store.advance_upload("u1", 0, 10)
    assert not await store.advance_upload("u1", 0, 20)
    clock.advance(5)
    assert await store.advance_upload("u1", 10, 25)
    record = await store.get_upload(REPO, "u1")
    assert record is not None
    assert (record.committed_size, record.created_at, record.updated_at) == (25, 0.0, 10.0)
    assert not await store.advance_upload("missing", 0, 1)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_delete_upload(store: MetadataStore) -> None:
    """Deleting an upload reports whether it existed."""
    await store.create_upload(REPO, "u1")
    assert await store.delete_upload("u1")
    assert not await store.delete_upload("u1")
    assert await store.get_upload(REPO, "u1") is None
    assert not await store.advance_upload("u1", 0, 1)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_stale_uploads(store: MetadataStore, clock: Clock) -> None:
    """Uploads untouched since a time are listed, oldest first; touching one makes it fresh."""
    await store.create_upload(REPO, "old")
    clock.advance(10)
    await store.create_upload(REPO, "older-but-touched")
    clock.advance(10)
    await store.create_upload(OTHER, "middle")
    clock.advance(10)
    await store.create_upload(REPO, "new")
    assert await store.advance_upload("older-but-touched", 0, 5)
    stale = await store.stale_uploads(25.0)
    assert [record.id for record in stale] == ["old", "middle"]
    assert await store.stale_uploads(0.0) == []


# Blobs


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_commit_blob_links_to_repository(store: MetadataStore) -> None:
    """A committed blob is visible in its repository, and only there."""
    digest = Digest.sha256_of(LAYER)
    record = await store.commit_blob(REPO, digest, len(LAYER), "key-1")
    assert record == BlobRecord(digest=digest, size=len(LAYER), storage_key="key-1")
    assert await store.stat_blob(REPO, digest) == record
    assert await store.stat_blob(OTHER, digest) is None
    assert await store.find_blob(digest) == record
    assert await store.find_blob(Digest.sha256_of(b"absent")) is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_commit_blob_idempotent(store: MetadataStore) -> None:
    """Committing the same blob to the same repository twice changes nothing."""
    digest = Digest.sha256_of(LAYER)
    first = await store.commit_blob(REPO, digest, len(LAYER), "key-1")
    assert await store.commit_blob(REPO, digest, len(LAYER), "key-1") == first
    assert await store.stat_blob(REPO, digest) == first


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_commit_blob_existing_key_wins(store: MetadataStore) -> None:
    """A blob committed again under another key keeps its first key, and is linked to both repositories."""
    digest = Digest.sha256_of(LAYER)
    first = await store.commit_blob(REPO, digest, len(LAYER), "key-1")
    second = await store.commit_blob(OTHER, digest, len(LAYER), "key-2")
    assert second == first
    assert await store.stat_blob(OTHER, digest) == first
    assert await store.stat_blob(REPO, digest) == first


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_commit_blob_ends_upload(store: MetadataStore) -> None:
    """Committing a blob with its upload id ends that session in the same transaction."""
    await store.create_upload(REPO, "u1")
    await store.create_upload(REPO, "u2")
    await store.commit_blob(REPO, Digest.sha256_of(LAYER), len(LAYER), "key", "u1")
    assert await store.get_upload(REPO, "u1") is None
    assert await store.get_upload(REPO, "u2") is not None


# Manifests and tags


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_put_manifest_and_get_by_tag_and_digest(store: MetadataStore) -> None:
    """A stored manifest is found by tag and by digest with its exact bytes."""
    content = await _push_image(store, REPO, "latest")
    digest = Digest.sha256_of(content)
    by_tag = await store.get_manifest_by_tag(REPO, Tag("latest"))
    by_digest = await store.get_manifest_by_digest(REPO, digest)
    assert by_tag == by_digest
    assert by_tag is not None
    assert (by_tag.digest, by_tag.media_type, by_tag.content, by_tag.size) == (
        digest,
        OCI_MANIFEST,
        content,
        len(content),
    )
    assert by_tag.subject is None
    assert await store.get_manifest_by_digest(OTHER, digest) is None
    assert await store.get_manifest_by_tag(REPO, Tag("other")) is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_put_manifest_without_tag(store: MetadataStore) -> None:
    """A manifest put by digest is stored without any tag."""
    content = await _push_image(store, REPO, None)
    assert await store.get_manifest_by_digest(REPO, Digest.sha256_of(content)) is not None
    assert await store.list_tags(REPO) == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_put_manifest_records_subject_and_artifact_type(store: MetadataStore) -> None:
    """The OCI subject and artifact type are recorded with the manifest."""
    subject = await _push_image(store, REPO, "latest")
    content = image_manifest(
        OCI_MANIFEST, CONFIG, [LAYER], subject=subject, artifact_type="application/x.sig"
    )
    await store.put_manifest(REPO, _parse(content), content, None)
    record = await store.get_manifest_by_digest(REPO, Digest.sha256_of(content))
    assert record is not None
    assert record.subject == Digest.sha256_of(subject)
    assert record.artifact_type == "application/x.sig"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_put_manifest_missing_blob(store: MetadataStore) -> None:
    """A manifest whose layer is not linked to the repository is refused, and nothing is stored."""
    await _commit(store, REPO, CONFIG)
    await _commit(store, OTHER, LAYER)
    content = image_manifest(DOCKER_MANIFEST, CONFIG, [LAYER])
    with pytest.raises(ManifestBlobUnknown) as info:
        await store.put_manifest(REPO, _parse(content), content, Tag("latest"))
    assert info.value.detail == {"digest": str(Digest.sha256_of(LAYER))}
    assert await store.get_manifest_by_digest(REPO, Digest.sha256_of(content)) is None
    assert await store.list_tags(REPO) == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_put_manifest_missing_blob_creates_no_repository(store: MetadataStore) -> None:
    """A refused manifest does not leave a new repository behind."""
    content = image_manifest(OCI_MANIFEST, CONFIG, [LAYER])
    with pytest.raises(ManifestBlobUnknown):
        await store.put_manifest(RepositoryName("fresh"), _parse(content), content, Tag("latest"))
    assert not await store.repository_exists(RepositoryName("fresh"))


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_MANIFEST_LIST])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_put_index_missing_child(store: MetadataStore, media_type: str) -> None:
    """An index whose child manifest is not in the repository raises ManifestChildUnknown (400)."""
    present = await _push_image(store, REPO, None)
    absent = image_manifest(OCI_MANIFEST, CONFIG, [b"another layer"])
    content = index_manifest(media_type, [present, absent])
    with pytest.raises(ManifestChildUnknown) as info:
        await store.put_manifest(REPO, _parse(content), content, Tag("multi"))
    assert (info.value.code, info.value.status) == ("MANIFEST_UNKNOWN", 400)
    assert info.value.detail == {"digest": str(Digest.sha256_of(absent))}
    assert await store.get_manifest_by_tag(REPO, Tag("multi")) is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_put_index_with_children(store: MetadataStore) -> None:
    """An index whose children are all in the repository is stored."""
    first = await _push_image(store, REPO, None)
    second = await _push_image(store, REPO, None, layer=b"arm layer")
    content = index_manifest(OCI_INDEX, [first, second])
    await store.put_manifest(REPO, _parse(content), content, Tag("multi"))
    record = await store.get_manifest_by_tag(REPO, Tag("multi"))
    assert record is not None
    assert (record.media_type, record.content) == (OCI_INDEX, content)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_put_index_child_in_other_repository(store: MetadataStore) -> None:
    """A child manifest stored only in another repository does not count."""
    child = await _push_image(store, OTHER, None)
    content = index_manifest(OCI_INDEX, [child])
    with pytest.raises(ManifestChildUnknown):
        await store.put_manifest(REPO, _parse(content), content, None)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_tag_moves(store: MetadataStore, clock: Clock) -> None:
    """Putting another manifest under a tag moves the tag; the old manifest stays by digest."""
    old = await _push_image(store, REPO, "latest")
    clock.advance(1)
    new = await _push_image(store, REPO, "latest", layer=b"new layer")
    record = await store.get_manifest_by_tag(REPO, Tag("latest"))
    assert record is not None
    assert record.content == new
    assert await store.get_manifest_by_digest(REPO, Digest.sha256_of(old)) is not None
    assert await store.list_tags(REPO) == ["latest"]


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_same_manifest_twice(store: MetadataStore) -> None:
    """Putting the same manifest again succeeds and can add another tag."""
    content = await _push_image(store, REPO, "v1")
    await store.put_manifest(REPO, _parse(content), content, Tag("v1"))
    await store.put_manifest(REPO, _parse(content), content, Tag("stable"))
    assert await store.list_tags(REPO) == ["stable", "v1"]
    for tag in ("v1", "stable"):
        record = await store.get_manifest_by_tag(REPO, Tag(tag))
        assert record is not None
        assert record.content == content


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_same_manifest_in_two_repositories(store: MetadataStore) -> None:
    """One manifest digest can live in two repositories independently."""
    content = await _push_image(store, REPO, "latest")
    await _push_image(store, OTHER, "latest")
    for repo in (REPO, OTHER):
        record = await store.get_manifest_by_tag(repo, Tag("latest"))
        assert record is not None
        assert record.content == content


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_list_tags_lexical_order(store: MetadataStore) -> None:
    """Tags are listed in lexical (code point) order, whatever the insertion order."""
    content = await _push_image(store, REPO, None)
    names = ["b", "a", "C", "10", "9", "_x", "a.1", "a-1", "B"]
    for name in names:
        await store.put_manifest(REPO, _parse(content), content, Tag(name))
    assert await store.list_tags(REPO) == sorted(names)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_list_tags_last_and_n(store: MetadataStore) -> None:
    """C{last} starts after a tag (present or not) and C{n} limits the count."""
    content = await _push_image(store, REPO, None)
    for name in ["a", "b", "c", "d", "e"]:
        await store.put_manifest(REPO, _parse(content), content, Tag(name))
    assert await store.list_tags(REPO, n=2) == ["a", "b"]
    assert await store.list_tags(REPO, last="b", n=2) == ["c", "d"]
    assert await store.list_tags(REPO, last="d", n=2) == ["e"]
    assert await store.list_tags(REPO, last="e") == []
    assert await store.list_tags(REPO, last="bb") == ["c", "d", "e"]
    assert await store.list_tags(REPO, n=0) == []
    assert await store.list_tags(OTHER) == []


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_store_repository_exists(store: MetadataStore) -> None:
    """A repository exists once something was stored in it."""
    assert not await store.repository_exists(REPO)
    await _commit(store, REPO, LAYER)
    assert await store.repository_exists(REPO)
    assert not await store.repository_exists(OTHER)
