"""
Upload sessions and the sink that streams upload bodies into them.

A session is a database row (id, repository, committed size) plus staged bytes
in the blob store. A request that writes to a session takes it exclusively,
streams its body through an L{UploadBodySink} (hashing and appending off the
reactor thread, pausing the socket when the disk lags), then either
checkpoints (fsync, then record the new size) or completes the blob.

Writers with their sha256 state stay in memory between requests; a process
that lacks one (after a restart, or another process) rebuilds it from the
staged bytes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from quayd.auth.policy import Action, Authorizer
from quayd.db.store import BlobRecord, MetadataStore, UploadRecord
from quayd.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    RangeInvalid,
    RegistryError,
    TooLarge,
)
from quayd.storage.interfaces import IBlobStore, IBlobWriter
from quayd.types import ByteRange, Digest, RepositoryName

_log = Logger()

#: Path of an existing upload session (PATCH, PUT, GET, DELETE).
SESSION_PATH = re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<id>[A-Za-z0-9-]{1,64})")
#: Path that starts an upload (POST, optionally monolithic with C{?digest=}).
START_PATH = re.compile(r"/v2/(?P<name>.+)/blobs/uploads/?")

#: Queue more than this and the socket is paused.
HIGH_WATER = 8 * 1024 * 1024
#: Resume the socket below this.
LOW_WATER = 2 * 1024 * 1024
#: Bytes collected before they go to the writer thread as one batch (fewer thread hand-offs).
MIN_BATCH = 1024 * 1024


def range_header(size: int) -> str:
    """The C{Range} header value for C{size} bytes received (C{0-0} when empty, as Distribution)."""
    return f"0-{max(size - 1, 0)}"


def session_location(repo: RepositoryName, upload_id: str) -> str:
    """The relative URL of an upload session."""
    return f"/v2/{repo}/blobs/uploads/{upload_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadLimits:
    """Size limits applied while bytes arrive."""

    max_blob_bytes: int | None = None
    max_chunk_bytes: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenUpload:
    """A session taken exclusively by one request."""

    record: UploadRecord
    writer: IBlobWriter


class UploadService:
    """
    Upload sessions: create, take, checkpoint, complete, cancel, expire.
    """

    def __init__(
        self,
        store: MetadataStore,
        blobs: IBlobStore,
        limits: UploadLimits,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._store = store
        self._blobs = blobs
        self.limits = limits
        self._new_id = new_id
        self._writers: dict[str, IBlobWriter] = {}
        self._busy: set[str] = set()

    async def start(self, repo: RepositoryName) -> UploadRecord:
        """Create a session: staged file first, then the row."""
        upload_id = self._new_id()
        writer = await self._blobs.begin_upload(upload_id)
        try:
            record = await self._store.create_upload(repo, upload_id)
        except BaseException:
            await writer.close()
            await self._blobs.delete_upload(upload_id)
            raise
        self._writers[upload_id] = writer
        _log.debug("upload {upload_id} started in {repository}", upload_id=upload_id, repository=str(repo))
        return record

    async def status(self, repo: RepositoryName, upload_id: str) -> UploadRecord:
        """
        The session's recorded state.

        @raise BlobUploadUnknown: If there is no such session in C{repo}.
        """
        record = await self._store.get_upload(repo, upload_id)
        if record is None:
            raise BlobUploadUnknown(f"upload {upload_id} is not known in {repo}")
        return record

    async def take(self, repo: RepositoryName, upload_id: str) -> OpenUpload:
        """
        Take a session exclusively for one writing request.

        @raise BlobUploadUnknown: If there is no such session.
        @raise BlobUploadInvalid: If another request is writing to it.
        """
        record = await self.status(repo, upload_id)
        if upload_id in self._busy:
            raise BlobUploadInvalid(f"upload {upload_id} is being written by another request")
        self._busy.add(upload_id)
        try:
            writer = self._writers.get(upload_id)
            if writer is None or writer.size != record.committed_size:
                self._writers.pop(upload_id, None)
                if writer is not None:
                    await writer.close()
                writer = await self._blobs.resume_upload(upload_id, record.committed_size)
                self._writers[upload_id] = writer
        except BaseException:
            self._busy.discard(upload_id)
            raise
        return OpenUpload(record=record, writer=writer)

    def release(self, upload_id: str) -> None:
        """Let other requests write to the session again."""
        self._busy.discard(upload_id)

    async def forget_writer(self, upload_id: str) -> None:
        """Drop the in-memory writer (its staged bytes past the recorded size are garbage)."""
        writer = self._writers.pop(upload_id, None)
        if writer is not None:
            await writer.close()

    async def checkpoint(self, upload: OpenUpload) -> UploadRecord:
        """
        Make the bytes written so far durable and record the new size.

        @raise BlobUploadUnknown: If the session vanished meanwhile.
        """
        size = await upload.writer.sync()
        if not await self._store.advance_upload(upload.record.id, upload.record.committed_size, size):
            await self.forget_writer(upload.record.id)
            raise BlobUploadUnknown(f"upload {upload.record.id} was cancelled or expired")
        return await self.status(upload.record.repository, upload.record.id)

    async def complete(self, upload: OpenUpload, digest: Digest) -> BlobRecord:
        """
        Verify the content against C{digest}, commit the blob and end the session.

        @raise DigestInvalid: On mismatch; the session and its data are removed.
        @raise TooLarge: If the blob exceeds the configured maximum.
        """
        upload_id = upload.record.id
        self._writers.pop(upload_id, None)
        if digest.algorithm != "sha256":
            await upload.writer.close()
            await self._discard(upload_id)
            raise DigestInvalid(f"unsupported digest algorithm {digest.algorithm}; use sha256")
        size = upload.writer.size
        if await self._store.get_upload(upload.record.repository, upload_id) is None:
            await upload.writer.close()
            raise BlobUploadUnknown(f"upload {upload_id} was cancelled or expired")
        try:
            key = await upload.writer.commit(digest)
        except DigestInvalid:
            await self._discard(upload_id)
            raise
        record = await self._store.commit_blob(upload.record.repository, digest, size, key, upload_id)
        _log.info(
            "blob {digest} committed to {repository} ({size} bytes)",
            digest=str(digest),
            repository=str(upload.record.repository),
            size=size,
        )
        return record

    async def _discard(self, upload_id: str) -> None:
        await self._store.delete_upload(upload_id)
        await self._blobs.delete_upload(upload_id)

    async def cancel(self, repo: RepositoryName, upload_id: str) -> None:
        """
        Cancel a session and remove its staged data.

        @raise BlobUploadUnknown: If there is no such session.
        """
        await self.status(repo, upload_id)
        if not await self._store.delete_upload(upload_id):
            raise BlobUploadUnknown(f"upload {upload_id} is not known in {repo}")
        if upload_id not in self._busy:
            # A request streaming into it keeps its writer; its checkpoint then
            # finds the session gone and answers BLOB_UPLOAD_UNKNOWN.
            await self.forget_writer(upload_id)
        await self._blobs.delete_upload(upload_id)

    async def abandon(self, upload: OpenUpload) -> None:
        """Remove a session taken by a request that cannot use it (its data is garbage)."""
        upload_id = upload.record.id
        try:
            await self.forget_writer(upload_id)
            await self._discard(upload_id)
        finally:
            self.release(upload_id)

    async def close(self) -> None:
        """Close every in-memory writer (shutdown); staged bytes and sessions stay."""
        for upload_id in list(self._writers):
            await self.forget_writer(upload_id)

    async def expire(self, older_than: float) -> int:
        """
        Remove sessions untouched since C{older_than}, and staged data that
        has no session (left by a crash between staging and recording it).

        @return: How many sessions or orphans were removed.
        """
        count = 0
        staged = [(i, m) for i, m in await self._blobs.staged_uploads() if m < older_than]
        if staged:
            known = await self._store.existing_uploads([i for i, _ in staged])
            for upload_id, _ in staged:
                if upload_id not in known and upload_id not in self._writers:
                    await self._blobs.delete_upload(upload_id)
                    count += 1
        for record in await self._store.stale_uploads(older_than):
            if record.id in self._busy:
                continue
            if await self._store.delete_upload(record.id):
                await self.forget_writer(record.id)
                await self._blobs.delete_upload(record.id)
                count += 1
        return count


class UploadBodySink:
    """
    Streams one request body into a taken upload session.

    Chunks queue on the reactor thread while the writer hashes and appends the
    previous batch in the blocking runner; the socket is paused above
    L{HIGH_WATER} queued bytes and resumed below L{LOW_WATER}. If preparing
    the session fails, or a limit is exceeded, the rest of the body is read
    and discarded and C{result} fails with the error. If the client goes away
    mid-body, the session is kept at its recorded size: the bytes of this
    request were never recorded, and the next request rebuilds from there.

    @ivar result: Fires with the L{OpenUpload} once every byte is written.
    """

    def __init__(
        self,
        uploads: UploadService,
        producer: IPushProducer,
        prepare: Callable[[], Awaitable[OpenUpload]],
        limit: int | None,
        length: int | None = None,
    ) -> None:
        self._uploads = uploads
        self._producer = producer
        self._limit = limit
        self._length = length
        self._queue: list[bytes | memoryview] = []
        self._queued = 0
        self._unsent = 0
        self._received = 0
        self._paused = False
        self._busy = False
        self._finished = False
        self._aborted = False
        self._upload: OpenUpload | None = None
        self._error: Failure | None = None
        self._releasing: Deferred[None] | None = None
        self.result: Deferred[OpenUpload] = Deferred()
        self._pause()
        Deferred.fromCoroutine(self._prepare(prepare))

    async def _prepare(self, prepare: Callable[[], Awaitable[OpenUpload]]) -> None:
        try:
            upload = await prepare()
        except BaseException:
            self._fail(Failure())
            return
        self._upload = upload
        if self._length is not None:
            max_chunk = self._uploads.limits.max_chunk_bytes
            if max_chunk is not None and self._length > max_chunk:
                self._fail(Failure(TooLarge(f"chunk exceeds the maximum size of {max_chunk} bytes")))
                return
            self._check_limit(self._length)
        self._settle()

    # Flow control

    def _pause(self) -> None:
        self._paused = True
        self._producer.pauseProducing()

    def _maybe_resume(self) -> None:
        if self._paused and not self._finished and not self._aborted and self._queued < LOW_WATER:
            self._paused = False
            self._producer.resumeProducing()

    def _settle(self) -> None:
        """Move the state machine on after any event: write, clean up, or deliver."""
        if self._busy:
            return
        if self._aborted or self._error is not None:
            if self._upload is not None:
                self._releasing = Deferred.fromCoroutine(self._release())
            if self._error is not None and self._finished:
                # The error reaches the client only once the session is free
                # again, so an immediate retry can take it.
                if self._releasing is None or self._releasing.called:
                    self._deliver()
                else:
                    self._releasing.addBoth(lambda _: self._deliver())
            elif not self._aborted:
                self._maybe_resume()
            return
        if self._upload is None:
            return
        if self._queue and (self._finished or self._unsent >= MIN_BATCH):
            batch, self._queue = self._queue, []
            self._unsent = 0
            self._busy = True
            self._upload.writer.write(batch).addCallbacks(self._drained, self._write_failed)
            return
        if self._finished:
            self._deliver()
        else:
            self._maybe_resume()

    async def _release(self) -> None:
        """
        Give the session back once its writer is closed (unrecorded bytes are
        garbage; the next request truncates them). Closing first matters: the
        writer may still flush buffered bytes into the staged file.
        """
        upload, self._upload = self._upload, None
        if upload is None:
            return
        upload_id = upload.record.id
        if self._aborted:
            _log.info(
                "upload {upload_id}: client disconnected after {received} bytes; session kept at {size}",
                upload_id=upload_id,
                received=self._received,
                size=upload.record.committed_size,
            )
        try:
            await self._uploads.forget_writer(upload_id)
        except Exception:
            _log.failure("closing the writer of upload {upload_id} failed", upload_id=upload_id)
        finally:
            self._uploads.release(upload_id)

    def _drained(self, written: int) -> None:
        self._busy = False
        self._queued -= written
        self._settle()

    def _write_failed(self, failure: Failure) -> None:
        self._busy = False
        if not self._aborted:
            _log.failure("writing upload data failed", failure)
        self._fail(failure)

    def _fail(self, failure: Failure) -> None:
        if self._error is None:
            self._error = failure
        self._queue = []
        self._queued = 0
        self._unsent = 0
        self._settle()

    def _check_limit(self, incoming: int) -> None:
        if self._limit is None:
            return
        written = self._upload.writer.size if self._upload is not None else 0
        if written + self._queued + incoming > self._limit:
            self._fail(Failure(TooLarge(f"blob exceeds the maximum size of {self._limit} bytes")))

    # The body, from the request

    def write(self, data: bytes | memoryview) -> None:
        """Queue a chunk (bytes, or a read-only view of received bytes) and start writing it."""
        if self._error is not None or self._aborted:
            return
        self._received += len(data)
        max_chunk = self._uploads.limits.max_chunk_bytes
        if max_chunk is not None and self._received > max_chunk:
            self._fail(Failure(TooLarge(f"chunk exceeds the maximum size of {max_chunk} bytes")))
            return
        self._check_limit(len(data))
        if self._error is not None:
            return
        self._queue.append(data)
        self._queued += len(data)
        self._unsent += len(data)
        if self._queued > HIGH_WATER or self._upload is None:
            self._pause()
        self._settle()

    def finish(self) -> None:
        """The body is complete; C{result} fires once it is all written."""
        self._finished = True
        self._settle()

    def _deliver(self) -> None:
        if self.result.called:
            return
        if self._error is not None:
            self.result.errback(self._error)
        elif self._upload is not None:
            self.result.callback(self._upload)

    def abort(self, reason: Failure) -> None:
        """The client went away mid-body: drop the unrecorded bytes, keep the session."""
        self._aborted = True
        self._queue = []
        self._queued = 0
        self._unsent = 0
        if not self.result.called:
            self.result.addErrback(lambda _: None)
            self.result.errback(reason)
        self._settle()


def _query(path: bytes) -> tuple[str, dict[str, list[str]]]:
    raw_path, _, raw_query = path.partition(b"?")
    return raw_path.decode("utf-8", "replace"), parse_qs(raw_query.decode("utf-8", "replace"))


class UploadSinkFactory:
    """
    The site's body sink factory: streams PATCH/PUT on sessions and monolithic POSTs.
    """

    def __init__(self, uploads: UploadService, authorizer: Authorizer) -> None:
        self._uploads = uploads
        self._authorizer = authorizer

    def __call__(
        self,
        method: bytes,
        path: bytes,
        headers: Headers,
        length: int | None,
        producer: IPushProducer,
        client: str = "-",
    ) -> UploadBodySink | None:
        """Return a sink for upload bodies, C{None} for everything else."""
        route, query = _query(path)
        if method in (b"PATCH", b"PUT"):
            match = SESSION_PATH.fullmatch(route)
            if match is None:
                return None
            prepare = self._take(match["name"], match["id"], method, headers, length, client)
        elif method == b"POST" and "digest" in query:
            match = START_PATH.fullmatch(route)
            if match is None:
                return None
            prepare = self._start(match["name"], headers, client)
        else:
            return None
        return self.sink(producer, prepare, length)

    def sink(
        self,
        producer: IPushProducer,
        prepare: Callable[[], Awaitable[OpenUpload]],
        length: int | None = None,
    ) -> UploadBodySink:
        """A sink writing into the session that C{prepare} takes."""
        return UploadBodySink(self._uploads, producer, prepare, self._uploads.limits.max_blob_bytes, length)

    def _take(
        self, name: str, upload_id: str, method: bytes, headers: Headers, length: int | None, client: str
    ) -> Callable[[], Awaitable[OpenUpload]]:
        async def prepare() -> OpenUpload:
            repo = RepositoryName.parse(name)
            await self._authorizer.authorize(headers, repo, frozenset({Action.PULL, Action.PUSH}), client)
            upload = await self._uploads.take(repo, upload_id)
            try:
                check_content_range(upload.record, headers, length)
            except RegistryError:
                self._uploads.release(upload_id)
                raise
            return upload

        return prepare

    def _start(self, name: str, headers: Headers, client: str) -> Callable[[], Awaitable[OpenUpload]]:
        async def prepare() -> OpenUpload:
            repo = RepositoryName.parse(name)
            principal = await self._authorizer.authorize(
                headers, repo, frozenset({Action.PULL, Action.PUSH}), client
            )
            await self._authorizer.claim(principal, repo)
            record = await self._uploads.start(repo)
            return await self._uploads.take(repo, record.id)

        return prepare


def check_content_range(record: UploadRecord, headers: Headers, length: int | None) -> None:
    """
    Check a chunk's C{Content-Range} against the session's recorded size.

    @raise RangeInvalid: 416 with the current C{Range} when the chunk does not
        start where the session ends, or its length disagrees with the range.
    """
    values = headers.getRawHeaders(b"content-range")
    if not values:
        return
    location = session_location(record.repository, record.id)
    current = {"Range": range_header(record.committed_size), "Location": location}
    try:
        chunk = ByteRange.parse_content_range(values[0].decode("latin-1"))
    except RegistryError as e:
        raise RangeInvalid(e.message, headers=current) from None
    assert chunk.last is not None
    if chunk.first != record.committed_size:
        raise RangeInvalid(
            f"chunk starts at {chunk.first} but the upload has {record.committed_size} bytes",
            headers=current,
        )
    if length is not None and length != chunk.last - chunk.first + 1:
        raise RangeInvalid("Content-Range does not match Content-Length", headers=current)
