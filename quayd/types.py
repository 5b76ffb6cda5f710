"""
Value types parsed once at the edge.

Every domain string that arrives from a client (repository names, tags,
digests, references, byte ranges) is parsed here into a frozen value; deeper
code never re-parses or re-validates them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from quayd.errors import BlobUploadInvalid, DigestInvalid, NameInvalid, RangeInvalid, TagInvalid

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}

#: Longest repository name accepted (the limit Docker and Distribution apply).
MAX_NAME_LENGTH = 255


@dataclass(frozen=True, slots=True)
class RepositoryName:
    """
    A repository name following the distribution-spec grammar (C{a/b/c}).
    """

    value: str

    @classmethod
    def parse(cls, text: str) -> RepositoryName:
        """
        Parse and validate a repository name.

        @raise NameInvalid: If C{text} does not follow the grammar.
        """
        if len(text) > MAX_NAME_LENGTH or not _NAME.fullmatch(text):
            raise NameInvalid(f"invalid repository name {text[:300]!r}")
        return cls(text)

    @property
    def namespace(self) -> str:
        """The first path component (the owning user or organization)."""
        return self.value.split("/", 1)[0]

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Tag:
    """A tag following C{[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}}."""

    value: str

    @classmethod
    def parse(cls, text: str) -> Tag:
        """
        Parse and validate a tag.

        @raise TagInvalid: If C{text} does not follow the grammar.
        """
        if not _TAG.fullmatch(text):
            raise TagInvalid(f"invalid tag {text[:200]!r}")
        return cls(text)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Digest:
    """
    A content digest (C{sha256:<64 hex>} or C{sha512:<128 hex>}).
    """

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """
        Parse and validate a digest.

        @raise DigestInvalid: If C{text} is malformed or uses an unsupported
            algorithm.
        """
        if not _DIGEST.fullmatch(text):
            raise DigestInvalid(f"invalid digest {text[:200]!r}")
        algorithm, _, hex_ = text.partition(":")
        pattern = _HEX.get(algorithm)
        if pattern is None:
            raise DigestInvalid(f"unsupported digest algorithm {algorithm!r}")
        if not pattern.fullmatch(hex_):
            raise DigestInvalid(f"invalid {algorithm} digest {text[:200]!r}")
        return cls(algorithm, hex_)

    @classmethod
    def sha256_of(cls, data: bytes) -> Digest:
        """Compute the sha256 digest of C{data}."""
        import hashlib

        return cls("sha256", hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


@dataclass(frozen=True, slots=True)
class Reference:
    """A manifest reference: either a tag or a digest."""

    tag: Tag | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """
        Parse a reference; it is a digest when it contains a colon.

        @raise DigestInvalid: For a malformed digest.
        @raise TagInvalid: For a malformed tag.
        """
        if ":" in text:
            return cls(digest=Digest.parse(text))
        return cls(tag=Tag.parse(text))

    def __str__(self) -> str:
        return str(self.digest if self.digest is not None else self.tag)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """
    An inclusive byte range C{first}-C{last}; C{last} is C{None} for an
    open-ended range (C{bytes=10-}).
    """

    first: int
    last: int | None

    @classmethod
    def parse_request_range(cls, header: str) -> ByteRange:
        """
        Parse an HTTP C{Range: bytes=a-b} request header (a single range).

        Suffix ranges (C{bytes=-n}) are returned with a negative C{first}.

        @raise RangeInvalid: If the header is malformed or names several ranges.
        """
        match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
        if match is None or (not match[1] and not match[2]):
            raise RangeInvalid(f"unsupported range {header[:100]!r}")
        if not match[1]:
            suffix = int(match[2])
            if suffix == 0:
                raise RangeInvalid("a zero-length suffix range is unsatisfiable")
            return cls(-suffix, None)
        first = int(match[1])
        last = int(match[2]) if match[2] else None
        if last is not None and last < first:
            raise RangeInvalid(f"unsupported range {header[:100]!r}")
        return cls(first, last)

    @classmethod
    def parse_content_range(cls, header: str) -> ByteRange:
        """
        Parse an upload chunk's C{Content-Range}: C{a-b}, also accepting the
        C{bytes a-b/*} and C{bytes=a-b} spellings clients send.

        @raise BlobUploadInvalid: If the header is malformed.
        """
        match = re.fullmatch(r"\s*(?:bytes[ =])?\s*(\d+)\s*-\s*(\d+)\s*(?:/\s*(?:\d+|\*))?\s*", header)
        if match is None:
            raise BlobUploadInvalid(f"invalid Content-Range {header[:100]!r}")
        first, last = int(match[1]), int(match[2])
        if last < first:
            raise RangeInvalid(f"invalid Content-Range {header[:100]!r}")
        return cls(first, last)

    def resolve(self, size: int) -> tuple[int, int] | None:
        """
        Clamp this request range to an entity of C{size} bytes.

        @return: C{(offset, length)}, or C{None} if it is unsatisfiable.
        """
        if self.first < 0:
            length = min(-self.first, size)
            return (size - length, length) if length > 0 else None
        if self.first >= size:
            return None
        last = size - 1 if self.last is None else min(self.last, size - 1)
        return (self.first, last - self.first + 1)
