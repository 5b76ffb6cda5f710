"""
The L{IBlobStore} contract, run against every blob store implementation.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from quayd.errors import BlobUnknown, BlobUploadUnknown, DigestInvalid
from quayd.storage.interfaces import IBlobReader, IBlobStore, IBlobWriter
from quayd.types import Digest
from tests.contract.conftest import BlobStoreBackend


async def _upload(backend: BlobStoreBackend, upload_id: str, *chunks: bytes) -> str:
    """Stage C{chunks} under C{upload_id} and commit them; returns the storage key."""
    writer = await backend.store.begin_upload(upload_id)
    await writer.write(list(chunks))
    return await writer.commit(Digest.sha256_of(b"".join(chunks)))


async def _read_all(backend: BlobStoreBackend, key: str) -> bytes:
    """The whole content of a committed blob."""
    reader = await backend.store.open(key)
    try:
        return await reader.read(0, reader.size)
    finally:
        reader.close()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_provides_interfaces(blob_backend: BlobStoreBackend) -> None:
    """The store, its writers and its readers provide their interfaces."""
    assert verifyObject(IBlobStore, blob_backend.store)
    writer = await blob_backend.store.begin_upload("verify")
    assert verifyObject(IBlobWriter, writer)
    key = await writer.commit(Digest.sha256_of(b""))
    reader = await blob_backend.store.open(key)
    try:
        assert verifyObject(IBlobReader, reader)
    finally:
        reader.close()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_begin_write_sync_commit(blob_backend: BlobStoreBackend) -> None:
    """Written chunks are counted, hashed, made durable and committed as one blob."""
    writer = await blob_backend.store.begin_upload("u1")
    assert (writer.upload_id, writer.size) == ("u1", 0)
    assert await writer.write([b"hello, ", b"world"]) == 12
    assert await writer.write([b"!"]) == 1
    assert writer.size == 13
    assert await writer.sync() == 13
    assert writer.digest() == Digest.sha256_of(b"hello, world!")
    key = await writer.commit(Digest.sha256_of(b"hello, world!"))
    assert await blob_backend.store.exists(key)
    assert await _read_all(blob_backend, key) == b"hello, world!"
    assert blob_backend.staged_size("u1") is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_commit_empty_blob(blob_backend: BlobStoreBackend) -> None:
    """An upload with no bytes commits the empty blob."""
    key = await _upload(blob_backend, "empty")
    reader = await blob_backend.store.open(key)
    try:
        assert reader.size == 0
        assert await reader.read(0, 10) == b""
    finally:
        reader.close()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_commit_idempotent_when_blob_exists(blob_backend: BlobStoreBackend) -> None:
    """Committing content that is already stored succeeds and names the same blob."""
    first = await _upload(blob_backend, "first", b"same bytes")
    second = await _upload(blob_backend, "second", b"same ", b"bytes")
    reader = await blob_backend.store.open(second)
    try:
        assert await reader.read(0, reader.size) == b"same bytes"
    finally:
        reader.close()
    assert await _read_all(blob_backend, first) == b"same bytes"
    assert blob_backend.staged_size("first") is None
    assert blob_backend.staged_size("second") is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_commit_digest_mismatch_removes_staged_data(blob_backend: BlobStoreBackend) -> None:
    """A mismatching digest raises DigestInvalid; the staged data is gone and no blob appears."""
    writer = await blob_backend.store.begin_upload("bad")
    await writer.write([b"actual content"])
    claimed = Digest.sha256_of(b"claimed content")
    with pytest.raises(DigestInvalid) as info:
        await writer.commit(claimed)
    assert info.value.detail == {"expected": str(claimed), "actual": str(Digest.sha256_of(b"actual content"))}
    assert blob_backend.staged_size("bad") is None
    with pytest.raises(BlobUploadUnknown):
        await blob_backend.store.resume_upload("bad", 0)
    assert not await blob_backend.store.exists(f"sha256/{claimed.hex[:2]}/{claimed.hex}")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_commit_rejects_other_algorithm(blob_backend: BlobStoreBackend) -> None:
    """A sha512 digest never matches the sha256 the store computes."""
    writer = await blob_backend.store.begin_upload("sha512")
    await writer.write([b"x"])
    with pytest.raises(DigestInvalid):
        await writer.commit(Digest("sha512", "0" * 128))


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_resume_rebuilds_hash(blob_backend: BlobStoreBackend) -> None:
    """A resumed upload continues the sha256 over the bytes staged before."""
    writer = await blob_backend.store.begin_upload("resumed")
    await writer.write([b"first part, "])
    await writer.sync()
    await writer.close()
    resumed = await blob_backend.store.resume_upload("resumed", 12)
    assert resumed.size == 12
    assert resumed.digest() == Digest.sha256_of(b"first part, ")
    await resumed.write([b"second part"])
    key = await resumed.commit(Digest.sha256_of(b"first part, second part"))
    assert await _read_all(blob_backend, key) == b"first part, second part"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_resume_rebuilds_hash_over_many_chunks(blob_backend: BlobStoreBackend) -> None:
    """Rebuilding the hash covers staged data larger than one read."""
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB, several rehash reads
    writer = await blob_backend.store.begin_upload("big")
    await writer.write([data])
    await writer.sync()
    await writer.close()
    resumed = await blob_backend.store.resume_upload("big", len(data))
    assert resumed.digest() == Digest.sha256_of(data)
    await resumed.close()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_resume_truncates_past_committed_size(blob_backend: BlobStoreBackend) -> None:
    """Staged bytes past the committed size are discarded on resume."""
    writer = await blob_backend.store.begin_upload("torn")
    await writer.write([b"keep", b"GARBAGE"])
    await writer.close()
    resumed = await blob_backend.store.resume_upload("torn", 4)
    assert resumed.size == 4
    assert blob_backend.staged_size("torn") == 4
    await resumed.write([b"-more"])
    key = await resumed.commit(Digest.sha256_of(b"keep-more"))
    assert await _read_all(blob_backend, key) == b"keep-more"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_resume_at_zero(blob_backend: BlobStoreBackend) -> None:
    """Resuming an upload at size 0 starts from an empty hash."""
    writer = await blob_backend.store.begin_upload("zero")
    await writer.write([b"discarded"])
    await writer.close()
    resumed = await blob_backend.store.resume_upload("zero", 0)
    assert resumed.digest() == Digest.sha256_of(b"")
    await resumed.close()
    assert blob_backend.staged_size("zero") == 0


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_resume_missing_upload_unknown(blob_backend: BlobStoreBackend) -> None:
    """Resuming an upload with no staged data raises BlobUploadUnknown."""
    with pytest.raises(BlobUploadUnknown):
        await blob_backend.store.resume_upload("never-begun", 0)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_resume_short_upload_unknown(blob_backend: BlobStoreBackend) -> None:
    """Resuming past the end of the staged data raises BlobUploadUnknown and keeps the data."""
    writer = await blob_backend.store.begin_upload("short")
    await writer.write([b"abc"])
    await writer.close()
    with pytest.raises(BlobUploadUnknown):
        await blob_backend.store.resume_upload("short", 10)
    assert blob_backend.staged_size("short") == 3


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_read_at_offsets(blob_backend: BlobStoreBackend) -> None:
    """Reads return the requested slice, fewer bytes only at the end, nothing past it."""
    key = await _upload(blob_backend, "read", b"0123456789")
    reader = await blob_backend.store.open(key)
    try:
        assert reader.size == 10
        assert await reader.read(0, 3) == b"012"
        assert await reader.read(3, 4) == b"3456"
        assert await reader.read(7, 100) == b"789"
        assert await reader.read(10, 5) == b""
        assert reader.direct_url() is None or isinstance(reader.direct_url(), str)
    finally:
        reader.close()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_reader_close_is_idempotent(blob_backend: BlobStoreBackend) -> None:
    """Closing a reader twice is harmless."""
    key = await _upload(blob_backend, "close", b"x")
    reader = await blob_backend.store.open(key)
    reader.close()
    reader.close()


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_open_missing_blob_unknown(blob_backend: BlobStoreBackend) -> None:
    """Opening a blob that is not stored raises BlobUnknown."""
    digest = Digest.sha256_of(b"absent")
    key = f"sha256/{digest.hex[:2]}/{digest.hex}"
    assert not await blob_backend.store.exists(key)
    with pytest.raises(BlobUnknown):
        await blob_backend.store.open(key)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_delete(blob_backend: BlobStoreBackend) -> None:
    """A deleted blob is gone; deleting it again is not an error."""
    key = await _upload(blob_backend, "doomed", b"bye")
    assert await blob_backend.store.exists(key)
    await blob_backend.store.delete(key)
    assert not await blob_backend.store.exists(key)
    with pytest.raises(BlobUnknown):
        await blob_backend.store.open(key)
    await blob_backend.store.delete(key)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_delete_upload(blob_backend: BlobStoreBackend) -> None:
    """A deleted upload cannot be resumed; deleting it again is not an error."""
    writer = await blob_backend.store.begin_upload("cancelled")
    await writer.write([b"abc"])
    await writer.close()
    await blob_backend.store.delete_upload("cancelled")
    assert blob_backend.staged_size("cancelled") is None
    with pytest.raises(BlobUploadUnknown):
        await blob_backend.store.resume_upload("cancelled", 0)
    await blob_backend.store.delete_upload("cancelled")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_staged_uploads_lists_staged_data(blob_backend: BlobStoreBackend) -> None:
    """Staged uploads are listed with a modification time; committed and deleted ones are not."""
    before = time.time()
    for upload_id in ("kept", "committed", "deleted"):
        writer = await blob_backend.store.begin_upload(upload_id)
        await writer.write([upload_id.encode()])
        if upload_id == "committed":
            await writer.commit(Digest.sha256_of(b"committed"))
        else:
            await writer.close()
    await blob_backend.store.delete_upload("deleted")
    staged = await blob_backend.store.staged_uploads()
    assert [upload_id for upload_id, _ in staged] == ["kept"]
    assert before - 5 <= staged[0][1] <= time.time() + 5


INVALID_KEYS = ["../etc/passwd", "sha256/../../x", "/etc/passwd", "sha256/ab/" + "0" * 63, "uploads/x", ""]
INVALID_UPLOAD_IDS = ["../x", "a/b", "", "x" * 65, "a.b", "\u00e9"]


@pytest.mark.parametrize("key", INVALID_KEYS)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_refuses_invalid_keys(blob_backend: BlobStoreBackend, key: str) -> None:
    """Storage keys outside the store's own scheme are refused with BlobUnknown."""
    with pytest.raises(BlobUnknown):
        await blob_backend.store.open(key)
    with pytest.raises(BlobUnknown):
        await blob_backend.store.exists(key)
    with pytest.raises(BlobUnknown):
        await blob_backend.store.delete(key)


@pytest.mark.parametrize("upload_id", INVALID_UPLOAD_IDS)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_refuses_invalid_upload_ids(blob_backend: BlobStoreBackend, upload_id: str) -> None:
    """Upload ids that could escape the staging area are refused with BlobUploadUnknown."""
    with pytest.raises(BlobUploadUnknown):
        await blob_backend.store.begin_upload(upload_id)
    with pytest.raises(BlobUploadUnknown):
        await blob_backend.store.resume_upload(upload_id, 0)
    with pytest.raises(BlobUploadUnknown):
        await blob_backend.store.delete_upload(upload_id)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_blob_store_invalid_keys_fail_the_deferred(blob_backend: BlobStoreBackend) -> None:
    """Invalid keys and ids fail the returned Deferred; no method raises synchronously."""
    store = blob_backend.store
    calls: list[tuple[str, Callable[[], Awaitable[object]], type[Exception]]] = [
        ("open", lambda: store.open("../x"), BlobUnknown),
        ("begin_upload", lambda: store.begin_upload("../x"), BlobUploadUnknown),
        ("exists", lambda: store.exists("../x"), BlobUnknown),
        ("delete", lambda: store.delete("../x"), BlobUnknown),
        ("delete_upload", lambda: store.delete_upload("../x"), BlobUploadUnknown),
    ]
    raised: list[str] = []
    for name, call, error in calls:
        try:
            d = call()
        except error:
            raised.append(name)
            continue
        with pytest.raises(error):
            await d
    assert raised == []
