"""
Tests for L{quayd.types}: the value types parsed once at the edge.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quayd.errors import BlobUploadInvalid, DigestInvalid, NameInvalid, RangeInvalid, TagInvalid
from quayd.types import MAX_NAME_LENGTH, ByteRange, Digest, Reference, RepositoryName, Tag
from tests.strategies import digests, references, repository_names, sha256_digests, tags

HEX64 = "0123456789abcdef" * 4
HEX128 = HEX64 * 2
EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# RepositoryName


@pytest.mark.parametrize(
    "text",
    [
        "a",
        "library/ubuntu",
        "a/b/c/d",
        "foo.bar_baz__qux-quux---x",
        "0/9",
        "a" * MAX_NAME_LENGTH,
        "/".join(["ab"] * 85),
    ],
)
def test_repository_name_parse_accepts_valid(text: str) -> None:
    """Names following the grammar parse and keep their exact text."""
    name = RepositoryName.parse(text)
    assert name.value == text
    assert str(name) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "../x",
        "x/..",
        "x/../y",
        "./x",
        "..",
        "Upper",
        "library/Ubuntu",
        "a//b",
        "/a",
        "a/",
        "a" * (MAX_NAME_LENGTH + 1),
        "_a",
        "a_",
        "a-",
        "a.-b",
        "a___b",
        "a b",
        "a\n",
        "\u00e4",
        "a:b",
        "a%2fb",
    ],
)
def test_repository_name_parse_rejects_invalid(text: str) -> None:
    """Path traversal, upper case, empty components and over-long names raise NameInvalid."""
    with pytest.raises(NameInvalid):
        RepositoryName.parse(text)


def test_repository_name_namespace_is_first_component() -> None:
    """The namespace is the first path component."""
    assert RepositoryName.parse("org/team/app").namespace == "org"
    assert RepositoryName.parse("single").namespace == "single"


def test_repository_name_invalid_error_is_400_name_invalid() -> None:
    """The error carries the spec's NAME_INVALID code and status 400."""
    with pytest.raises(NameInvalid) as info:
        RepositoryName.parse("Bad")
    assert (info.value.code, info.value.status) == ("NAME_INVALID", 400)


# Tag


@pytest.mark.parametrize("text", ["latest", "v1.0.0", "_x", "1", "A" * 128, "a-b_c.D"])
def test_tag_parse_accepts_valid(text: str) -> None:
    """Tags following the grammar parse and keep their exact text."""
    assert str(Tag.parse(text)) == text


@pytest.mark.parametrize("text", ["", ".x", "-x", "A" * 129, "a:b", "a/b", "a b", "a\n", "\u00e9"])
def test_tag_parse_rejects_invalid(text: str) -> None:
    """Tags that break the grammar, including 129 characters, raise TagInvalid."""
    with pytest.raises(TagInvalid):
        Tag.parse(text)


# Digest


@pytest.mark.parametrize(
    ("text", "algorithm", "hex_"),
    [(f"sha256:{HEX64}", "sha256", HEX64), (f"sha512:{HEX128}", "sha512", HEX128)],
)
def test_digest_parse_accepts_supported(text: str, algorithm: str, hex_: str) -> None:
    """sha256 and sha512 digests parse into algorithm and hex."""
    digest = Digest.parse(text)
    assert (digest.algorithm, digest.hex) == (algorithm, hex_)
    assert str(digest) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256",
        "sha256:",
        f"sha256:{HEX64[:63]}",
        f"sha256:{HEX64}0",
        f"sha256:{HEX64.upper()}",
        f"sha256:{'g' * 64}",
        f"sha512:{HEX64}",
        f"sha512:{HEX128[:127]}",
        f"md5:{HEX64[:32]}",
        f"sha1:{HEX64[:40]}",
        f"SHA256:{HEX64}",
        f" sha256:{HEX64}",
        f"sha256:{HEX64}\n",
        f"sha256::{HEX64}",
        HEX64,
    ],
)
def test_digest_parse_rejects_invalid(text: str) -> None:
    """Digests of the wrong length, case or algorithm raise DigestInvalid."""
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


def test_digest_sha256_of_hashes_content() -> None:
    """C{sha256_of} digests the given bytes."""
    assert str(Digest.sha256_of(b"")) == EMPTY_SHA256


def test_digest_equality_is_by_value() -> None:
    """Two parses of the same text are equal and hash alike."""
    assert Digest.parse(EMPTY_SHA256) == Digest.sha256_of(b"")
    assert len({Digest.parse(EMPTY_SHA256), Digest.sha256_of(b"")}) == 1


# Reference


def test_reference_parse_tag() -> None:
    """A reference without a colon is a tag."""
    reference = Reference.parse("latest")
    assert reference == Reference(tag=Tag("latest"))
    assert str(reference) == "latest"


def test_reference_parse_digest() -> None:
    """A reference with a colon is a digest."""
    reference = Reference.parse(EMPTY_SHA256)
    assert reference == Reference(digest=Digest.sha256_of(b""))
    assert str(reference) == EMPTY_SHA256


@pytest.mark.parametrize(
    ("text", "error"),
    [("sha256:abc", DigestInvalid), ("latest:1", DigestInvalid), ("-x", TagInvalid), ("", TagInvalid)],
)
def test_reference_parse_rejects_invalid(text: str, error: type[Exception]) -> None:
    """A malformed digest raises DigestInvalid, a malformed tag TagInvalid."""
    with pytest.raises(error):
        Reference.parse(text)


# ByteRange


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=5-5", ByteRange(5, 5)),
        ("bytes=10-", ByteRange(10, None)),
        ("bytes=-10", ByteRange(-10, None)),
        (" bytes = 1 - 2 ", ByteRange(1, 2)),
    ],
)
def test_byte_range_parse_request_range_accepts(header: str, expected: ByteRange) -> None:
    """Single ranges, open-ended ranges and suffix ranges parse."""
    assert ByteRange.parse_request_range(header) == expected


@pytest.mark.parametrize(
    "header", ["", "bytes=", "bytes=-", "bytes=5-2", "bytes=0-1,3-4", "items=0-1", "bytes=a-b", "0-1"]
)
def test_byte_range_parse_request_range_rejects(header: str) -> None:
    """Malformed, reversed and multiple ranges raise RangeInvalid."""
    with pytest.raises(RangeInvalid):
        ByteRange.parse_request_range(header)


def test_byte_range_zero_length_suffix_is_unsatisfiable() -> None:
    """C{bytes=-0} (a suffix of zero bytes) is unsatisfiable (RFC 9110 section 14.1.1)."""
    try:
        byte_range = ByteRange.parse_request_range("bytes=-0")
    except RangeInvalid:
        return
    assert byte_range.resolve(10) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0-99", ByteRange(0, 99)),
        ("bytes 0-99/100", ByteRange(0, 99)),
        ("bytes 100-199/*", ByteRange(100, 199)),
        ("bytes=3-3", ByteRange(3, 3)),
    ],
)
def test_byte_range_parse_content_range_accepts(header: str, expected: ByteRange) -> None:
    """The spellings of an upload chunk's Content-Range that clients send parse."""
    assert ByteRange.parse_content_range(header) == expected


@pytest.mark.parametrize("header", ["", "0-", "-5", "a-b", "0-1,2-3", "bytes 0-1/x"])
def test_byte_range_parse_content_range_rejects_malformed(header: str) -> None:
    """A malformed Content-Range raises BlobUploadInvalid."""
    with pytest.raises(BlobUploadInvalid):
        ByteRange.parse_content_range(header)


def test_byte_range_parse_content_range_rejects_reversed() -> None:
    """A Content-Range that ends before it starts raises RangeInvalid."""
    with pytest.raises(RangeInvalid):
        ByteRange.parse_content_range("9-3")


@pytest.mark.parametrize(
    ("byte_range", "size", "expected"),
    [
        (ByteRange(0, None), 10, (0, 10)),
        (ByteRange(0, 4), 10, (0, 5)),
        (ByteRange(9, 9), 10, (9, 1)),
        (ByteRange(5, 100), 10, (5, 5)),
        (ByteRange(10, None), 10, None),
        (ByteRange(10, 20), 10, None),
        (ByteRange(-3, None), 10, (7, 3)),
        (ByteRange(-10, None), 10, (0, 10)),
        (ByteRange(-20, None), 10, (0, 10)),
        (ByteRange(0, None), 0, None),
        (ByteRange(-3, None), 0, None),
    ],
)
def test_byte_range_resolve(byte_range: ByteRange, size: int, expected: tuple[int, int] | None) -> None:
    """Ranges clamp to the entity; ranges past its end, or on an empty entity, are unsatisfiable."""
    assert byte_range.resolve(size) == expected


# Properties


@given(repository_names)
def test_repository_name_valid_round_trips(text: str) -> None:
    """Every name the grammar generates parses back to itself."""
    assert str(RepositoryName.parse(text)) == text


@given(tags)
def test_tag_valid_round_trips(text: str) -> None:
    """Every tag the grammar generates parses back to itself."""
    assert str(Tag.parse(text)) == text


@given(digests)
def test_digest_valid_round_trips(text: str) -> None:
    """Every well-formed sha256 or sha512 digest parses back to itself."""
    assert str(Digest.parse(text)) == text


@given(references)
def test_reference_valid_round_trips(text: str) -> None:
    """Every tag or digest reference parses back to itself."""
    assert str(Reference.parse(text)) == text


@given(st.text())
def test_repository_name_arbitrary_text_raises_only_name_invalid(text: str) -> None:
    """Arbitrary text either parses or raises NameInvalid, never anything else."""
    with contextlib.suppress(NameInvalid):
        RepositoryName.parse(text)


@given(st.text(alphabet="ab./_-", max_size=24))
def test_repository_name_accepted_never_traverses(text: str) -> None:
    """No accepted name has an empty, C{.} or C{..} path component."""
    try:
        name = RepositoryName.parse(text)
    except NameInvalid:
        return
    assert all(part not in ("", ".", "..") for part in name.value.split("/"))


@given(st.text())
def test_tag_arbitrary_text_raises_only_tag_invalid(text: str) -> None:
    """Arbitrary text either parses as a tag or raises TagInvalid."""
    with contextlib.suppress(TagInvalid):
        Tag.parse(text)


@given(st.one_of(st.text(), st.builds(lambda a, b: f"{a}:{b}", st.text(), st.text())))
def test_digest_arbitrary_text_raises_only_digest_invalid(text: str) -> None:
    """Arbitrary text either parses as a digest or raises DigestInvalid."""
    with contextlib.suppress(DigestInvalid):
        Digest.parse(text)


@given(st.text())
def test_reference_arbitrary_text_raises_only_spec_errors(text: str) -> None:
    """Arbitrary text either parses as a reference or raises TagInvalid or DigestInvalid."""
    with contextlib.suppress(TagInvalid, DigestInvalid):
        Reference.parse(text)


@given(st.one_of(st.text(), st.from_regex(r"bytes=\d{0,3}-\d{0,3}", fullmatch=True)))
def test_byte_range_arbitrary_request_range_raises_only_range_invalid(text: str) -> None:
    """Arbitrary Range headers either parse or raise RangeInvalid."""
    with contextlib.suppress(RangeInvalid):
        ByteRange.parse_request_range(text)


@given(st.one_of(st.text(), st.from_regex(r"(bytes[ =])?\d{0,3}-\d{0,3}(/\*)?", fullmatch=True)))
def test_byte_range_arbitrary_content_range_raises_only_spec_errors(text: str) -> None:
    """Arbitrary Content-Range headers either parse or raise BlobUploadInvalid or RangeInvalid."""
    with contextlib.suppress(BlobUploadInvalid, RangeInvalid):
        ByteRange.parse_content_range(text)


@given(
    st.integers(min_value=0, max_value=1000),
    st.one_of(st.none(), st.integers(min_value=0, max_value=1000)),
    st.integers(min_value=0, max_value=1000),
)
def test_byte_range_resolve_stays_within_entity(first: int, extent: int | None, size: int) -> None:
    """A resolved range is non-empty and lies within the entity; unsatisfiable ones start past it."""
    last = None if extent is None else first + extent
    resolved = ByteRange(first, last).resolve(size)
    if resolved is None:
        assert first >= size
    else:
        offset, length = resolved
        assert offset == first
        assert length > 0
        assert offset + length <= size


@given(st.integers(min_value=1, max_value=1000), st.integers(min_value=0, max_value=1000))
def test_byte_range_suffix_resolves_to_tail(suffix: int, size: int) -> None:
    """A suffix range selects the last C{min(n, size)} bytes, or nothing of an empty entity."""
    resolved = ByteRange.parse_request_range(f"bytes=-{suffix}").resolve(size)
    if size == 0:
        assert resolved is None
    else:
        assert resolved == (size - min(suffix, size), min(suffix, size))


@given(sha256_digests)
def test_digest_reference_is_never_a_tag(text: str) -> None:
    """A digest reference is parsed as a digest, never as a tag."""
    reference = Reference.parse(text)
    assert reference.tag is None
    assert str(reference.digest) == text
