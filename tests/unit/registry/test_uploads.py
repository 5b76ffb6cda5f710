"""
Tests for L{quayd.registry.uploads}: upload sessions and the body sink.

Everything is real (SQLite and the filesystem store in C{tmp_path}) except
the transport, which is a recording L{IPushProducer}, and the blocking
runner, which runs work in the test's thread when the test says so.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

from quayd.auth.policy import OpenAccess
from quayd.db.sqlite import SQLiteDatabase
from quayd.db.store import MetadataStore
from quayd.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    NameInvalid,
    RangeInvalid,
    RegistryError,
    TooLarge,
)
from quayd.registry.uploads import (
    HIGH_WATER,
    LOW_WATER,
    MIN_BATCH,
    OpenUpload,
    UploadBodySink,
    UploadLimits,
    UploadService,
    UploadSinkFactory,
    check_content_range,
    range_header,
    session_location,
)
from quayd.storage.filesystem import FilesystemBlobStore
from quayd.types import Digest, RepositoryName
from tests.support.blocking import SteppingRunner
from tests.support.databases import open_sqlite
from tests.support.twisted import assert_no_result, failure_result_of, success_result_of

REPO = RepositoryName("library/app")
MIB = 1024 * 1024


@implementer(IPushProducer)
class RecordingProducer:
    """
    Stands in for the TCP transport the sink pauses and resumes.

    @ivar events: C{"pause"}, C{"resume"} and C{"stop"}, in the order called.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.paused = False

    def pauseProducing(self) -> None:
        """Record a pause."""
        self.events.append("pause")
        self.paused = True

    def resumeProducing(self) -> None:
        """Record a resume."""
        self.events.append("resume")
        self.paused = False

    def stopProducing(self) -> None:
        """Record a stop."""
        self.events.append("stop")


@dataclass(kw_only=True)
class Uploads:
    """
    The parts upload sessions are made of, sharing one database and one blob root.

    @ivar service: An upload service without limits.
    """

    database: SQLiteDatabase
    store: MetadataStore
    blobs: FilesystemBlobStore
    runner: SteppingRunner
    clock: Clock
    root: Path
    service: UploadService = field(init=False)
    ids: list[str] = field(default_factory=list)
    services: list[UploadService] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.service = self.new_service()

    def _new_id(self) -> str:
        """Predictable upload ids, unique across the services."""
        self.ids.append(f"upload-{len(self.ids)}")
        return self.ids[-1]

    def new_service(self, limits: UploadLimits | None = None) -> UploadService:
        """Another upload service (as in another process, or with other limits) over the same stores."""
        service = UploadService(self.store, self.blobs, limits or UploadLimits(), new_id=self._new_id)
        self.services.append(service)
        return service

    async def close(self) -> None:
        """Close every writer the services still hold."""
        self.runner.held = False
        self.runner.step()
        for service in self.services:
            await service.close()

    def staged(self, upload_id: str) -> bytes | None:
        """The staged bytes of an upload, or C{None} if there are none."""
        path = self.root / "uploads" / upload_id
        return path.read_bytes() if path.exists() else None


@pytest_twisted.async_yield_fixture  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def uploads(tmp_path: Path) -> AsyncIterator[Uploads]:
    """Upload sessions over SQLite and the filesystem store in C{tmp_path}."""
    database = await open_sqlite(tmp_path / "quayd.sqlite")
    clock = Clock()
    runner = SteppingRunner()
    root = tmp_path / "blobs"
    harness = Uploads(
        database=database,
        store=MetadataStore(database, clock),
        blobs=FilesystemBlobStore(root, runner),
        runner=runner,
        clock=clock,
        root=root,
    )
    try:
        yield harness
    finally:
        try:
            await harness.close()
        finally:
            await database.close()


def _sink(
    service: UploadService, upload: OpenUpload, limit: int | None = None
) -> tuple[UploadBodySink, RecordingProducer]:
    """A sink streaming into an upload that is already taken."""

    async def prepared() -> OpenUpload:
        return upload

    producer = RecordingProducer()
    return UploadBodySink(service, producer, prepared, limit), producer


async def _held_sink(uploads: Uploads) -> tuple[UploadBodySink, RecordingProducer, OpenUpload]:
    """A new session, taken, with a sink streaming into it; the blocking runner holds its work."""
    upload = await uploads.service.take(REPO, (await uploads.service.start(REPO)).id)
    uploads.runner.held = True
    sink, producer = _sink(uploads.service, upload)
    return sink, producer, upload


async def _stream(service: UploadService, upload_id: str, *chunks: bytes | memoryview) -> OpenUpload:
    """Take a session, stream C{chunks} into it, record them, and release it."""
    upload = await service.take(REPO, upload_id)
    sink, _ = _sink(service, upload)
    for chunk in chunks:
        sink.write(chunk)
    sink.finish()
    result = success_result_of(sink.result)
    try:
        await service.checkpoint(result)
    finally:
        service.release(upload_id)
    return result


# The sink


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_writes_chunks(uploads: Uploads) -> None:
    """Chunks are appended in order; the result fires with the session once all are written."""
    service = uploads.service
    record = await service.start(REPO)
    upload = await service.take(REPO, record.id)
    sink, producer = _sink(service, upload)
    assert producer.events == ["pause", "resume"]
    for chunk in (b"hello", b", ", b"world"):
        sink.write(chunk)
    assert_no_result(sink.result)
    sink.finish()
    assert success_result_of(sink.result) is upload
    assert upload.writer.size == 12
    checkpointed = await service.checkpoint(upload)
    service.release(record.id)
    assert checkpointed.committed_size == 12
    assert uploads.staged(record.id) == b"hello, world"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_result_waits_for_writes(uploads: Uploads) -> None:
    """The result fires only after the last batch is written, not when the body ends."""
    sink, _, _ = await _held_sink(uploads)
    sink.write(b"a" * MIN_BATCH)
    sink.write(b"def")
    sink.finish()
    assert_no_result(sink.result)
    uploads.runner.step()
    assert_no_result(sink.result)
    uploads.runner.step()
    assert success_result_of(sink.result).writer.size == MIN_BATCH + 3


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_batches_small_chunks(uploads: Uploads) -> None:
    """Chunks smaller than MIN_BATCH wait for more (or the body's end) before going to the writer."""
    sink, _, upload = await _held_sink(uploads)
    sink.write(b"abc")
    sink.write(b"def")
    assert upload.writer.size == 0
    sink.finish()
    uploads.runner.step()
    assert success_result_of(sink.result).writer.size == 6


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_backpressure(uploads: Uploads) -> None:
    """The transport is paused above HIGH_WATER queued bytes and resumed only below LOW_WATER."""
    sink, producer, _ = await _held_sink(uploads)
    assert producer.events == ["pause", "resume"]

    first = b"a" * (HIGH_WATER - 2 * MIB)
    second = b"b" * (3 * MIB)
    sink.write(first)
    assert not producer.paused
    sink.write(second)
    assert producer.paused
    assert producer.events[-1] == "pause"

    # The first batch lands; what is still queued is between the marks: stay paused.
    uploads.runner.step()
    assert len(second) > LOW_WATER
    assert producer.paused
    # The second batch lands; nothing is queued: resume.
    uploads.runner.step()
    assert not producer.paused
    assert producer.events[-1] == "resume"

    sink.finish()
    assert success_result_of(sink.result).writer.size == len(first) + len(second)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_pauses_until_prepared(uploads: Uploads) -> None:
    """The transport stays paused while the session is being prepared; early chunks are kept."""
    service = uploads.service
    record = await service.start(REPO)
    upload = await service.take(REPO, record.id)
    gate: Deferred[OpenUpload] = Deferred()

    async def prepare() -> OpenUpload:
        return await gate

    producer = RecordingProducer()
    sink = UploadBodySink(service, producer, prepare, None)
    assert producer.events == ["pause"]
    sink.write(b"early")
    assert producer.paused
    gate.callback(upload)
    assert not producer.paused
    sink.write(b" late")
    sink.finish()
    assert success_result_of(sink.result).writer.size == 10
    assert upload.writer.digest() == Digest.sha256_of(b"early late")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_abort_keeps_recorded_size(uploads: Uploads) -> None:
    """A client gone mid-body leaves the session at its recorded size, resumable from there."""
    service = uploads.service
    record = await service.start(REPO)
    await _stream(service, record.id, b"abc")
    upload = await service.take(REPO, record.id)
    sink, _ = _sink(service, upload)
    sink.write(b"unrecorded")
    sink.abort(Failure(ConnectionLost()))
    assert (await service.status(REPO, record.id)).committed_size == 3

    resumed = await service.take(REPO, record.id)
    assert resumed.writer.size == 3
    assert uploads.staged(record.id) == b"abc"
    await resumed.writer.write([b"XYZ"])
    blob = await service.complete(resumed, Digest.sha256_of(b"abcXYZ"))
    service.release(record.id)
    assert blob.size == 6


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_abort_during_write_releases_after_it(uploads: Uploads) -> None:
    """An abort while a batch is being written releases the session once that write ends."""
    service = uploads.service
    sink, _, upload = await _held_sink(uploads)
    record = upload.record
    sink.write(b"in flight")
    sink.abort(Failure(ConnectionLost()))
    with pytest.raises(BlobUploadInvalid):
        await service.take(REPO, record.id)
    while uploads.runner.pending:
        uploads.runner.step()
    uploads.runner.held = False
    resumed = await service.take(REPO, record.id)
    assert resumed.writer.size == 0


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_abort_before_prepared_releases(uploads: Uploads) -> None:
    """An abort that comes before the session is taken releases it once it is."""
    service = uploads.service
    record = await service.start(REPO)
    upload = await service.take(REPO, record.id)
    gate: Deferred[OpenUpload] = Deferred()

    async def prepare() -> OpenUpload:
        return await gate

    sink = UploadBodySink(service, RecordingProducer(), prepare, None)
    sink.write(b"lost")
    sink.abort(Failure(ConnectionLost()))
    gate.callback(upload)
    resumed = await service.take(REPO, record.id)
    assert resumed.writer.size == 0


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_prepare_failure_fails_result_after_finish(uploads: Uploads) -> None:
    """If the session cannot be taken, the body is read and dropped and the result fails at the end."""

    async def prepare() -> OpenUpload:
        raise BlobUploadUnknown("no such upload")

    producer = RecordingProducer()
    sink = UploadBodySink(uploads.service, producer, prepare, None)
    assert producer.events == ["pause", "resume"]
    sink.write(b"discarded")
    assert_no_result(sink.result)
    sink.finish()
    failure = failure_result_of(sink.result, BlobUploadUnknown)
    assert failure.getErrorMessage() == "no such upload"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_max_blob_bytes_too_large(uploads: Uploads) -> None:
    """Bytes beyond the blob limit fail the result with TooLarge (413) and leave the session as recorded."""
    service = uploads.new_service(UploadLimits(max_blob_bytes=10))
    record = await service.start(REPO)
    upload = await service.take(REPO, record.id)
    sink, producer = _sink(service, upload, limit=10)
    sink.write(b"123456")
    sink.write(b"789012")
    assert not producer.paused
    sink.write(b"more")
    sink.finish()
    error = failure_result_of(sink.result, TooLarge).value
    assert isinstance(error, TooLarge)
    assert (error.status, error.code) == (413, "SIZE_INVALID")
    resumed = await service.take(REPO, record.id)
    assert resumed.writer.size == 0


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_max_blob_bytes_counts_recorded_bytes(uploads: Uploads) -> None:
    """The blob limit applies to the whole blob, including chunks recorded earlier."""
    service = uploads.new_service(UploadLimits(max_blob_bytes=10))
    record = await service.start(REPO)
    await _stream(service, record.id, b"12345678")
    upload = await service.take(REPO, record.id)
    sink, _ = _sink(service, upload, limit=10)
    sink.write(b"9AB")
    sink.finish()
    failure_result_of(sink.result, TooLarge)
    assert (await service.status(REPO, record.id)).committed_size == 8


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_max_chunk_bytes_too_large(uploads: Uploads) -> None:
    """A request body larger than the chunk limit fails with TooLarge."""
    service = uploads.new_service(UploadLimits(max_chunk_bytes=4))
    record = await service.start(REPO)
    upload = await service.take(REPO, record.id)
    sink, _ = _sink(service, upload)
    sink.write(b"1234")
    sink.write(b"5")
    sink.finish()
    failure_result_of(sink.result, TooLarge)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_failure_before_prepared_releases_session(uploads: Uploads) -> None:
    """A limit exceeded while the session is still being taken does not leave it taken."""
    service = uploads.new_service(UploadLimits(max_blob_bytes=4))
    record = await service.start(REPO)
    gate: Deferred[OpenUpload] = Deferred()

    async def prepare() -> OpenUpload:
        return await gate

    sink = UploadBodySink(service, RecordingProducer(), prepare, 4)
    sink.write(b"too large")
    sink.finish()
    failure_result_of(sink.result, TooLarge)
    gate.callback(await service.take(REPO, record.id))
    resumed = await service.take(REPO, record.id)
    assert resumed.writer.size == 0


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_failed_request_neither_blocks_nor_corrupts_the_next(uploads: Uploads) -> None:
    """The next request on a session is not refused once the error is out, and its data stays intact."""
    service = uploads.new_service(UploadLimits(max_blob_bytes=150))
    record = await service.start(REPO)
    upload = await service.take(REPO, record.id)
    sink, _ = _sink(service, upload, limit=150)
    sink.write(b"A" * 100)  # written, and still in the writer's buffer
    uploads.runner.held = True
    sink.write(b"A" * 100)  # over the limit: the request fails; closing its writer waits in the runner
    sink.finish()
    # New blocking work runs at once again; the close the sink queued stays queued.
    uploads.runner.held = False
    try:
        second = await service.take(REPO, record.id)
    except BlobUploadInvalid:
        # Still taken: then the error must not have been answered yet.
        assert_no_result(sink.result)
        uploads.runner.step()
        failure_result_of(sink.result, TooLarge)
        second = await service.take(REPO, record.id)
    else:
        failure_result_of(sink.result, TooLarge)
    await second.writer.write([b"B" * 50])
    blob = await service.complete(second, Digest.sha256_of(b"B" * 50))
    service.release(record.id)
    uploads.runner.step()  # whatever of the failed request is still queued runs now
    reader = await uploads.blobs.open(blob.storage_key)
    try:
        assert await reader.read(0, 1000) == b"B" * 50
    finally:
        reader.close()


@pytest.mark.parametrize(
    "finish",
    [
        pytest.param("patch", id="patch"),
        pytest.param("put", id="put"),
    ],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_cancel_during_stream_ends_in_registry_error(uploads: Uploads, finish: str) -> None:
    """A request streaming into a session cancelled meanwhile ends in a registry error, not a crash."""
    service = uploads.service
    record = await service.start(REPO)
    upload = await service.take(REPO, record.id)
    sink, _ = _sink(service, upload)
    sink.write(b"first")
    try:
        await service.cancel(REPO, record.id)
    except BlobUploadInvalid:
        service.release(record.id)
        return  # refusing to cancel a session in use is fine too
    sink.write(b"second")
    sink.finish()
    try:
        taken = await sink.result
        if finish == "patch":
            await service.checkpoint(taken)
        else:
            await service.complete(taken, Digest.sha256_of(b"firstsecond"))
    except RegistryError:
        pass
    else:
        pytest.fail("the request on the cancelled session succeeded")
    finally:
        service.release(record.id)
    assert uploads.staged(record.id) is None
    assert await uploads.store.find_blob(Digest.sha256_of(b"firstsecond")) is None


# Content-Range and the sink factory


def _factory(service: UploadService) -> UploadSinkFactory:
    """The sink factory the site would use, with open access."""
    return UploadSinkFactory(service, OpenAccess())


def _headers(**values: str) -> Headers:
    """Request headers; C{Content_Range=...} becomes C{Content-Range}."""
    return Headers({name.replace("_", "-").encode(): [value.encode()] for name, value in values.items()})


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_factory_content_range_matches(uploads: Uploads) -> None:
    """A chunk whose Content-Range starts at the recorded size is accepted."""
    service = uploads.service
    record = await service.start(REPO)
    await _stream(service, record.id, b"abc")
    path = f"/v2/{REPO}/blobs/uploads/{record.id}".encode()
    sink = _factory(service)(b"PATCH", path, _headers(Content_Range="3-5"), 3, RecordingProducer())
    assert sink is not None
    sink.write(b"def")
    sink.finish()
    upload = await sink.result
    assert upload.writer.digest() == Digest.sha256_of(b"abcdef")
    service.release(record.id)


@pytest.mark.parametrize(
    ("content_range", "length"),
    [("5-9", 5), ("0-2", 3), ("3-5", 10), ("bogus", 3), ("9-3", None)],
    ids=["gap", "overlap", "length-mismatch", "malformed", "reversed"],
)
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_factory_content_range_mismatch(
    uploads: Uploads, content_range: str, length: int | None
) -> None:
    """A chunk that does not continue the session fails with 416 and the current Range, and is released."""
    service = uploads.service
    record = await service.start(REPO)
    await _stream(service, record.id, b"abc")
    path = f"/v2/{REPO}/blobs/uploads/{record.id}".encode()
    sink = _factory(service)(
        b"PATCH", path, _headers(Content_Range=content_range), length, RecordingProducer()
    )
    assert sink is not None
    sink.write(b"x" * (length or 1))
    sink.finish()
    with pytest.raises(RangeInvalid) as info:
        await sink.result
    assert info.value.status == 416
    assert info.value.headers == {"Range": "0-2", "Location": session_location(REPO, record.id)}
    assert (await service.take(REPO, record.id)).writer.size == 3


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_factory_unknown_session(uploads: Uploads) -> None:
    """A chunk for a session that does not exist fails with BlobUploadUnknown."""
    sink = _factory(uploads.service)(
        b"PATCH", f"/v2/{REPO}/blobs/uploads/nope".encode(), Headers(), None, RecordingProducer()
    )
    assert sink is not None
    sink.finish()
    with pytest.raises(BlobUploadUnknown):
        await sink.result


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_factory_invalid_name(uploads: Uploads) -> None:
    """A chunk addressed to an invalid repository name fails with NameInvalid."""
    sink = _factory(uploads.service)(
        b"PUT", b"/v2/Bad/blobs/uploads/some-id?digest=x", Headers(), 0, RecordingProducer()
    )
    assert sink is not None
    sink.finish()
    with pytest.raises(NameInvalid):
        await sink.result


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_factory_monolithic_post_starts_session(uploads: Uploads) -> None:
    """A POST with C{?digest=} streams into a new session."""
    service = uploads.service
    sink = _factory(service)(
        b"POST", f"/v2/{REPO}/blobs/uploads/?digest=sha256:x".encode(), Headers(), 4, RecordingProducer()
    )
    assert sink is not None
    sink.write(b"data")
    sink.finish()
    upload = await sink.result
    blob = await service.complete(upload, Digest.sha256_of(b"data"))
    service.release(upload.record.id)
    assert blob.size == 4
    assert uploads.staged(upload.record.id) is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        (b"GET", b"/v2/library/app/blobs/uploads/u1"),
        (b"DELETE", b"/v2/library/app/blobs/uploads/u1"),
        (b"POST", b"/v2/library/app/blobs/uploads/"),
        (b"POST", b"/v2/library/app/blobs/uploads/?mount=sha256:x&from=a"),
        (b"PUT", b"/v2/library/app/manifests/latest"),
        (b"PATCH", b"/v2/library/app/blobs/uploads/"),
        (b"PATCH", b"/v2/library/app/blobs/uploads/a/b"),
    ],
)
def test_upload_sink_factory_ignores_other_requests(method: bytes, path: bytes) -> None:
    """Only PATCH/PUT on a session and POST with C{?digest=} are streamed."""
    factory = UploadSinkFactory(None, OpenAccess())  # type: ignore[arg-type]  # never reached for these requests
    assert factory(method, path, Headers(), 0, RecordingProducer()) is None


def test_check_content_range_without_header() -> None:
    """Without Content-Range any chunk appends."""
    from quayd.db.store import UploadRecord

    record = UploadRecord(id="u", repository=REPO, committed_size=5, created_at=0.0, updated_at=0.0)
    check_content_range(record, Headers(), 100)


def test_range_header_reports_inclusive_end() -> None:
    """The Range header names the last byte received, and 0-0 when there is none."""
    assert range_header(0) == "0-0"
    assert range_header(1) == "0-0"
    assert range_header(10) == "0-9"


# The service


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_take_refuses_second_take(uploads: Uploads) -> None:
    """A session taken by one request cannot be taken by another until released."""
    service = uploads.service
    record = await service.start(REPO)
    await service.take(REPO, record.id)
    with pytest.raises(BlobUploadInvalid):
        await service.take(REPO, record.id)
    service.release(record.id)
    await service.take(REPO, record.id)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_take_unknown_or_other_repository(uploads: Uploads) -> None:
    """Taking a session that does not exist, or belongs to another repository, raises BlobUploadUnknown."""
    service = uploads.service
    record = await service.start(REPO)
    with pytest.raises(BlobUploadUnknown):
        await service.take(REPO, "missing")
    with pytest.raises(BlobUploadUnknown):
        await service.take(RepositoryName("other/app"), record.id)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_take_on_another_process_rebuilds_writer(uploads: Uploads) -> None:
    """A service without the session's writer (another process) rebuilds it from the staged bytes."""
    record = await uploads.service.start(REPO)
    await _stream(uploads.service, record.id, b"part one, ")
    other = uploads.new_service()
    upload = await other.take(REPO, record.id)
    assert upload.writer.size == 10
    await upload.writer.write([b"part two"])
    blob = await other.complete(upload, Digest.sha256_of(b"part one, part two"))
    other.release(record.id)
    assert blob.digest == Digest.sha256_of(b"part one, part two")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_complete_records_blob_and_ends_session(uploads: Uploads) -> None:
    """Completing commits the blob, links it to the repository and ends the session."""
    service = uploads.service
    record = await service.start(REPO)
    await _stream(service, record.id, b"content")
    upload = await service.take(REPO, record.id)
    blob = await service.complete(upload, Digest.sha256_of(b"content"))
    service.release(record.id)
    assert await uploads.store.stat_blob(REPO, blob.digest) == blob
    assert uploads.staged(record.id) is None
    with pytest.raises(BlobUploadUnknown):
        await service.status(REPO, record.id)


@pytest.mark.parametrize("digest", [Digest.sha256_of(b"other"), Digest("sha512", "0" * 128)])
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_complete_digest_mismatch_drops_session(uploads: Uploads, digest: Digest) -> None:
    """A wrong (or non-sha256) digest raises DigestInvalid and removes the session and its data."""
    service = uploads.service
    record = await service.start(REPO)
    await _stream(service, record.id, b"content")
    upload = await service.take(REPO, record.id)
    with pytest.raises(DigestInvalid):
        await service.complete(upload, digest)
    service.release(record.id)
    assert uploads.staged(record.id) is None
    with pytest.raises(BlobUploadUnknown):
        await service.status(REPO, record.id)
    assert await uploads.store.find_blob(digest) is None


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_checkpoint_after_cancel_unknown(uploads: Uploads) -> None:
    """Recording bytes for a session cancelled meanwhile raises BlobUploadUnknown."""
    service = uploads.service
    record = await service.start(REPO)
    upload = await service.take(REPO, record.id)
    await upload.writer.write([b"abc"])
    assert await uploads.store.delete_upload(record.id)
    with pytest.raises(BlobUploadUnknown):
        await service.checkpoint(upload)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_cancel_removes_session_and_data(uploads: Uploads) -> None:
    """Cancelling removes the row and the staged bytes; cancelling again raises BlobUploadUnknown."""
    service = uploads.service
    record = await service.start(REPO)
    await _stream(service, record.id, b"abc")
    await service.cancel(REPO, record.id)
    assert uploads.staged(record.id) is None
    with pytest.raises(BlobUploadUnknown):
        await service.cancel(REPO, record.id)
    with pytest.raises(BlobUploadUnknown):
        await service.take(REPO, record.id)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_expire_removes_stale_sessions(uploads: Uploads) -> None:
    """Sessions untouched since the cut-off are removed with their staged data; fresh and busy ones stay."""
    service = uploads.service
    stale = await service.start(REPO)
    await _stream(service, stale.id, b"old bytes")
    busy = await service.start(REPO)
    await service.take(REPO, busy.id)
    uploads.clock.advance(100)
    fresh = await service.start(REPO)

    assert await service.expire(50.0) == 1
    assert uploads.staged(stale.id) is None
    with pytest.raises(BlobUploadUnknown):
        await service.status(REPO, stale.id)
    assert uploads.staged(fresh.id) == b""
    assert (await service.status(REPO, fresh.id)).id == fresh.id
    assert (await service.status(REPO, busy.id)).id == busy.id

    service.release(busy.id)
    assert await service.expire(50.0) == 1
    assert uploads.staged(busy.id) is None
    assert await service.expire(50.0) == 0


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_expire_removes_old_orphaned_staged_data(uploads: Uploads) -> None:
    """Staged data without a session row is removed once it is older than the cut-off."""
    for name, mtime in (("orphan-old", 10.0), ("orphan-new", 1000.0)):
        writer = await uploads.blobs.begin_upload(name)
        await writer.write([b"left by a crash"])
        await writer.close()
        os.utime(uploads.root / "uploads" / name, (mtime, mtime))
    uploads.clock.advance(1000)
    session = await uploads.service.start(REPO)

    assert await uploads.service.expire(500.0) == 1
    assert uploads.staged("orphan-old") is None
    assert uploads.staged("orphan-new") == b"left by a crash"
    assert (await uploads.service.status(REPO, session.id)).id == session.id


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_declared_length_over_limit(uploads: Uploads) -> None:
    """A Content-Length beyond the blob limit fails with TooLarge before any byte is written."""
    service = uploads.new_service(UploadLimits(max_blob_bytes=10))
    record = await service.start(REPO)
    upload = await service.take(REPO, record.id)

    async def prepared() -> OpenUpload:
        return upload

    sink = UploadBodySink(service, RecordingProducer(), prepared, 10, 11)
    sink.write(b"1")
    sink.finish()
    failure_result_of(sink.result, TooLarge)
    assert uploads.staged(record.id) == b""
    assert (await service.take(REPO, record.id)).writer.size == 0


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_declared_length_over_chunk_limit(uploads: Uploads) -> None:
    """A Content-Length beyond the chunk limit fails with TooLarge."""
    service = uploads.new_service(UploadLimits(max_chunk_bytes=4))
    record = await service.start(REPO)
    upload = await service.take(REPO, record.id)

    async def prepared() -> OpenUpload:
        return upload

    sink = UploadBodySink(service, RecordingProducer(), prepared, None, 5)
    sink.finish()
    failure_result_of(sink.result, TooLarge)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_accepts_views(uploads: Uploads) -> None:
    """Chunks may be memoryviews of received bytes (the chunked decoder's); they are staged exactly."""
    record = await uploads.service.start(REPO)
    received = b"5\r\nhello\r\n"
    upload = await _stream(uploads.service, record.id, memoryview(received)[3:8], b" ", memoryview(b"world"))
    assert upload.writer.size == 11
    assert uploads.staged(record.id) == b"hello world"
    assert upload.writer.digest() == Digest.sha256_of(b"hello world")


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_upload_sink_hands_over_one_batch_at_a_time(uploads: Uploads) -> None:
    """While a batch is being written, further chunks wait in the sink and go over as the next batch."""
    sink, _, upload = await _held_sink(uploads)
    sink.write(b"a" * MIN_BATCH)
    sink.write(b"b" * MIN_BATCH)
    sink.write(b"c")
    assert uploads.runner.pending == 2  # hash and append of the first batch only
    uploads.runner.step()
    assert uploads.runner.pending == 2  # then the second batch, both chunks at once
    sink.finish()
    while uploads.runner.pending:
        uploads.runner.step()
    assert success_result_of(sink.result).writer.size == 2 * MIN_BATCH + 1
    assert upload.writer.digest() == Digest.sha256_of(b"a" * MIN_BATCH + b"b" * MIN_BATCH + b"c")
