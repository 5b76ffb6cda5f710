"""
The default blob store: content-addressed files on the local filesystem.

Layout under the root::

    sha256/ab/<hex>     committed blobs (storage key C{sha256/ab/<hex>})
    uploads/<id>        staged upload data

A commit fsyncs the staged file, renames it into place and fsyncs the
directory, so a crash never leaves a partial blob under a committed name.
While an upload streams in, writeback of the staged file is started every
L{WRITEBACK_STEP} bytes, so that the disk works while the body arrives and
the final fsync finds little left to write.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from quayd.blocking import BlockingRunner
from quayd.errors import BlobUnknown, BlobUploadUnknown, DigestInvalid
from quayd.storage.interfaces import IBlobReader, IBlobStore, IBlobWriter
from quayd.types import Digest

_log = Logger()
_UPLOAD_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_KEY = re.compile(r"sha256/[0-9a-f]{2}/[0-9a-f]{64}")
_REHASH_CHUNK = 1 << 20
#: Staged bytes written between two requests to start writeback.
WRITEBACK_STEP = 8 * 1024 * 1024
#: C{SYNC_FILE_RANGE_WRITE} of C{<linux/fs.h>}: start writeback of dirty pages, do not wait.
_SYNC_FILE_RANGE_WRITE = 2

#: Starts asynchronous writeback of C{(fd, offset, length)}.
WritebackStarter = Callable[[int, int, int], None]


def sync_file_range_writeback() -> WritebackStarter | None:
    """
    Linux C{sync_file_range(SYNC_FILE_RANGE_WRITE)} through libc, or C{None} where unavailable.

    The standard library has no binding for it. Without it the kernel starts writing an
    upload back only once dirty pages pass C{vm.dirty_background_ratio} (about 2 GiB on a
    machine with 24 GiB), so a 1 GiB layer is written in full by the fsync after its body.
    """
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int

    def start_writeback(fd: int, offset: int, length: int) -> None:
        if function(fd, offset, length, _SYNC_FILE_RANGE_WRITE) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    return start_writeback


def storage_key_for(digest: Digest) -> str:
    """The filesystem store's key for a sha256 digest."""
    return f"{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@implementer(IBlobReader)
class FilesystemBlobReader:
    """A committed blob file, read with C{pread} in small chunks."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd: int | None = fd
        self.size = size

    def read(self, offset: int, length: int) -> Deferred[bytes]:
        """Read a chunk (a small C{pread} of a local file, allowed on the reactor)."""
        if self._fd is None:
            raise ValueError("reader is closed")
        return succeed(os.pread(self._fd, length, offset))

    def direct_url(self) -> str | None:
        """Local files are always served by quayd itself."""
        return None

    def fileno(self) -> int | None:
        """The open file's descriptor; C{None} once closed."""
        return self._fd

    def close(self) -> None:
        """Close the file descriptor once."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@implementer(IBlobWriter)
class FilesystemBlobWriter:
    """Appends to a staged file and hashes as it goes, in the blocking runner."""

    def __init__(
        self, store: FilesystemBlobStore, upload_id: str, handle: BinaryIO, hasher: hashlib._Hash, size: int
    ) -> None:
        self.upload_id = upload_id
        self.size = size
        self._store = store
        self._handle = handle
        self._hasher = hasher
        self._writeback_from = size

    def _hash(self, chunks: Sequence[bytes | memoryview]) -> None:
        for chunk in chunks:
            self._hasher.update(chunk)

    def _append(self, chunks: Sequence[bytes | memoryview]) -> int:
        written = 0
        for chunk in chunks:
            self._handle.write(chunk)
            written += len(chunk)
        end = self.size + written
        start_writeback = self._store._start_writeback
        if start_writeback is not None and end - self._writeback_from >= WRITEBACK_STEP:
            self._handle.flush()
            start_writeback(self._handle.fileno(), self._writeback_from, end - self._writeback_from)
            self._writeback_from = end
        return written

    def write(self, chunks: Sequence[bytes | memoryview]) -> Deferred[int]:
        """
        Hash and append C{chunks} in the blocking runner, the two at once on
        two of its threads (both release the GIL for large buffers). The caller
        waits for one write to finish before the next, which keeps the hash in order.
        """

        hashed = self._store._run(self._hash, chunks)
        appended = self._store._run(self._append, chunks)

        async def both() -> int:
            try:
                written = await appended
            except BaseException:
                await hashed.addErrback(lambda _: None)  # both threads are done before this fails
                raise
            await hashed
            self.size += written
            return written

        return Deferred.fromCoroutine(both())

    def _sync(self) -> int:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        return self.size

    def sync(self) -> Deferred[int]:
        """Flush and fsync the staged file."""
        return self._store._run(self._sync)

    def digest(self) -> Digest:
        """The sha256 of what has been written."""
        return Digest("sha256", self._hasher.hexdigest())

    def commit(self, expected: Digest) -> Deferred[str]:
        """Verify, fsync and rename the staged file into the content-addressed tree."""
        return self._store._run(self._commit, expected)

    def _commit(self, expected: Digest) -> str:
        actual = self.digest()
        staged = self._store._upload_path(self.upload_id)
        if expected != actual:
            self._handle.close()
            staged.unlink(missing_ok=True)
            raise DigestInvalid(
                f"digest {expected} does not match uploaded content ({actual})",
                detail={"expected": str(expected), "actual": str(actual)},
            )
        key = storage_key_for(actual)
        target = self._store._blob_path(key)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        if target.exists():
            staged.unlink(missing_ok=True)
            return key
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        _fsync_directory(target.parent)
        return key

    def close(self) -> Deferred[None]:
        """Close the staged file, keeping its bytes."""
        return self._store._run(self._handle.close)


@implementer(IBlobStore)
class FilesystemBlobStore:
    """
    Content-addressed blobs under C{root}.
    """

    def __init__(
        self, root: Path, run_blocking: BlockingRunner, start_writeback: WritebackStarter | None = None
    ) -> None:
        """
        @param start_writeback: Starts writeback of staged bytes as they arrive
            (L{sync_file_range_writeback}); C{None} leaves it to the kernel and the final fsync.
        """
        self._root = root
        self._run = run_blocking
        self._start_writeback = start_writeback
        (root / "uploads").mkdir(parents=True, exist_ok=True)
        (root / "sha256").mkdir(parents=True, exist_ok=True)

    def _blob_path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise BlobUnknown(f"invalid storage key {key!r}")
        return self._root / key

    def _upload_path(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise BlobUploadUnknown("invalid upload id")
        return self._root / "uploads" / upload_id

    def open(self, storage_key: str) -> Deferred[IBlobReader]:
        """Open a committed blob file."""

        def open_() -> IBlobReader:
            try:
                fd = os.open(self._blob_path(storage_key), os.O_RDONLY)
            except FileNotFoundError:
                raise BlobUnknown(f"blob data missing for {storage_key}") from None
            return FilesystemBlobReader(fd, os.fstat(fd).st_size)

        return self._run(open_)

    def exists(self, storage_key: str) -> Deferred[bool]:
        """Whether the blob file exists."""
        return self._run(lambda: self._blob_path(storage_key).is_file())

    def begin_upload(self, upload_id: str) -> Deferred[IBlobWriter]:
        """Create an empty staged file."""

        def begin() -> IBlobWriter:
            handle = open(self._upload_path(upload_id), "xb")  # noqa: SIM115 - owned by the writer
            return FilesystemBlobWriter(self, upload_id, handle, hashlib.sha256(), 0)

        return self._run(begin)

    def resume_upload(self, upload_id: str, committed_size: int) -> Deferred[IBlobWriter]:
        """Reopen a staged file, truncate past C{committed_size}, rebuild the hash."""

        def resume() -> IBlobWriter:
            path = self._upload_path(upload_id)
            try:
                handle = open(path, "r+b")  # noqa: SIM115 - owned by the writer
            except FileNotFoundError:
                raise BlobUploadUnknown(f"staged data of upload {upload_id} is missing") from None
            try:
                if os.fstat(handle.fileno()).st_size < committed_size:
                    raise BlobUploadUnknown(f"staged data of upload {upload_id} is incomplete")
                hasher = hashlib.sha256()
                remaining = committed_size
                while remaining:
                    chunk = handle.read(min(_REHASH_CHUNK, remaining))
                    if not chunk:
                        raise BlobUploadUnknown(f"staged data of upload {upload_id} is incomplete")
                    hasher.update(chunk)
                    remaining -= len(chunk)
                handle.truncate(committed_size)
                handle.seek(committed_size)
            except BaseException:
                handle.close()
                raise
            return FilesystemBlobWriter(self, upload_id, handle, hasher, committed_size)

        return self._run(resume)

    def staged_uploads(self) -> Deferred[list[tuple[str, float]]]:
        """List staged files with their modification times."""

        def scan() -> list[tuple[str, float]]:
            found = []
            with os.scandir(self._root / "uploads") as entries:
                for entry in entries:
                    if _UPLOAD_ID.fullmatch(entry.name):
                        try:
                            found.append((entry.name, entry.stat().st_mtime))
                        except FileNotFoundError:
                            continue
            return found

        return self._run(scan)

    def delete_upload(self, upload_id: str) -> Deferred[None]:
        """Remove a staged file."""
        return self._run(lambda: self._upload_path(upload_id).unlink(missing_ok=True))

    def delete(self, storage_key: str) -> Deferred[None]:
        """Remove a committed blob file."""
        return self._run(lambda: self._blob_path(storage_key).unlink(missing_ok=True))
