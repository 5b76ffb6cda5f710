"""
The blob storage seam.

Blobs are content addressed and immutable. Uploads are staged under their
session id and committed atomically; a committed blob is named by the storage
key that C{commit} returns and the database records.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from quayd.types import Digest


class IBlobReader(Interface):
    """An open committed blob."""

    size = Attribute("The blob's length in bytes (int).")

    def read(offset: int, length: int) -> Deferred[bytes]:
        """Read up to C{length} bytes at C{offset}; fewer only at the end."""

    def direct_url() -> str | None:
        """A URL the client may fetch the blob from directly, or C{None}."""

    def fileno() -> int | None:
        """The descriptor of a local file holding the blob (for C{sendfile}), or C{None}."""

    def close() -> None:
        """Release the underlying file or connection."""


class IBlobWriter(Interface):
    """A staged upload being appended to, hashing as it goes."""

    upload_id = Attribute("The upload session id (str).")
    size = Attribute("Bytes written and hashed so far (int).")

    def write(chunks: Sequence[bytes | memoryview]) -> Deferred[int]:
        """
        Append and hash C{chunks} off the reactor thread; fires with the bytes written.

        The caller waits for one write to fire before making the next, and
        does not change the chunks until then.
        """

    def sync() -> Deferred[int]:
        """Make the staged bytes durable; fires with their length."""

    def digest() -> Digest:
        """The sha256 digest of everything written so far."""

    def commit(expected: Digest) -> Deferred[str]:
        """
        Verify the content against C{expected} and commit it as a blob.

        Fires with the storage key. Idempotent when the blob already exists.
        Fails with L{quayd.errors.DigestInvalid} on mismatch, after which the
        staged data is gone.
        """

    def close() -> Deferred[None]:
        """Close the staged file (the staged bytes stay)."""


class IBlobStore(Interface):
    """Where blob bytes live."""

    def open(storage_key: str) -> Deferred[IBlobReader]:
        """
        Open a committed blob; fails with L{quayd.errors.BlobUnknown} if it is absent.
        """

    def exists(storage_key: str) -> Deferred[bool]:
        """Whether a committed blob is present under C{storage_key}."""

    def begin_upload(upload_id: str) -> Deferred[IBlobWriter]:
        """Create an empty staged upload."""

    def resume_upload(upload_id: str, committed_size: int) -> Deferred[IBlobWriter]:
        """
        Reopen a staged upload whose first C{committed_size} bytes are durable.

        Bytes past that are discarded; the hash state is rebuilt from the
        staged bytes. Fails with L{quayd.errors.BlobUploadUnknown} if the
        staged data is missing or shorter.
        """

    def staged_uploads() -> Deferred[list[tuple[str, float]]]:
        """Every staged upload as C{(upload_id, last modified POSIX time)}."""

    def delete_upload(upload_id: str) -> Deferred[None]:
        """Remove a staged upload (no error if absent)."""

    def delete(storage_key: str) -> Deferred[None]:
        """Remove a committed blob (no error if absent)."""
