"""
Protocol errors, one class per distribution-spec error code.

Errors are raised where a condition is detected and rendered in exactly one
place, L{quayd.http.errors.render_error}.
"""

from __future__ import annotations

from typing import Any, ClassVar

JSONValue = Any


class RegistryError(Exception):
    """
    An error answered to a registry client as the spec's JSON error body.

    @ivar detail: Optional JSON detail placed in the error entry.
    @ivar headers: Extra response headers (for example C{Range} on 416).
    """

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "unknown error"

    def __init__(
        self,
        message: str | None = None,
        detail: JSONValue = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message if message is not None else self.default_message
        self.detail = detail
        self.headers = dict(headers or {})
        super().__init__(self.message)


class BlobUnknown(RegistryError):
    """A blob is not known to the repository."""

    code = "BLOB_UNKNOWN"
    status = 404
    default_message = "blob unknown to registry"


class BlobUploadInvalid(RegistryError):
    """An upload request is malformed or out of order."""

    code = "BLOB_UPLOAD_INVALID"
    status = 400
    default_message = "blob upload invalid"


class BlobUploadUnknown(RegistryError):
    """The upload session does not exist (or expired)."""

    code = "BLOB_UPLOAD_UNKNOWN"
    status = 404
    default_message = "blob upload unknown to registry"


class DigestInvalid(RegistryError):
    """A digest is malformed or does not match the content."""

    code = "DIGEST_INVALID"
    status = 400
    default_message = "provided digest did not match uploaded content"


class ManifestBlobUnknown(RegistryError):
    """A manifest references a blob that the repository does not hold."""

    code = "MANIFEST_BLOB_UNKNOWN"
    status = 400
    default_message = "manifest references a manifest or blob unknown to registry"


class ManifestInvalid(RegistryError):
    """A manifest failed validation."""

    code = "MANIFEST_INVALID"
    status = 400
    default_message = "manifest invalid"


class ManifestUnknown(RegistryError):
    """No manifest is known under that reference."""

    code = "MANIFEST_UNKNOWN"
    status = 404
    default_message = "manifest unknown to registry"


class NameInvalid(RegistryError):
    """A repository name does not follow the spec's grammar."""

    code = "NAME_INVALID"
    status = 400
    default_message = "invalid repository name"


class NameUnknown(RegistryError):
    """The repository is not known to the registry."""

    code = "NAME_UNKNOWN"
    status = 404
    default_message = "repository name not known to registry"


class SizeInvalid(RegistryError):
    """Content length does not match, or exceeds a configured limit."""

    code = "SIZE_INVALID"
    status = 400
    default_message = "provided length did not match content length"


class TooLarge(SizeInvalid):
    """Content exceeds a configured size limit (413 with the spec's SIZE_INVALID code)."""

    status = 413
    default_message = "content exceeds the configured size limit"


class RangeInvalid(RegistryError):
    """A requested or supplied byte range cannot be satisfied."""

    code = "RANGE_INVALID"
    status = 416
    default_message = "invalid content range"


class Unauthorized(RegistryError):
    """Authentication is required."""

    code = "UNAUTHORIZED"
    status = 401
    default_message = "authentication required"


class Denied(RegistryError):
    """The principal is known but may not perform the action."""

    code = "DENIED"
    status = 403
    default_message = "requested access to the resource is denied"


class Unsupported(RegistryError):
    """The operation is not supported (or disabled by configuration)."""

    code = "UNSUPPORTED"
    status = 405
    default_message = "the operation is unsupported"


class TagInvalid(RegistryError):
    """A tag does not follow the spec's grammar."""

    code = "TAG_INVALID"
    status = 400
    default_message = "manifest tag did not match URI"


class TooManyRequests(RegistryError):
    """The client is being throttled."""

    code = "TOOMANYREQUESTS"
    status = 429
    default_message = "too many requests"


class Unavailable(RegistryError):
    """A backing service (database, storage) is unreachable for now."""

    code = "UNAVAILABLE"
    status = 503
    default_message = "service unavailable, retry later"


class Conflict(Exception):
    """A database integrity constraint was violated (both backends map to this)."""


class ManifestReferenced(RegistryError):
    """A manifest cannot be deleted while an index in the repository lists it."""

    code = "DENIED"
    status = 409
    default_message = "manifest is referenced by an index; delete the index first"
