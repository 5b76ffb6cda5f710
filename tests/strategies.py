"""
Hypothesis strategies for the registry's value types.

Each strategy draws strings that the distribution-spec grammar accepts, so
property tests can check that parsing them succeeds and round-trips.
"""

from __future__ import annotations

import string

from hypothesis import strategies as st

from quayd.types import MAX_NAME_LENGTH

_LOWER_ALNUM = string.ascii_lowercase + string.digits
_TAG_FIRST = string.ascii_letters + string.digits + "_"
_TAG_REST = _TAG_FIRST + ".-"
_HEX = "0123456789abcdef"

#: A run of lower-case letters and digits.
alnum_runs = st.text(alphabet=_LOWER_ALNUM, min_size=1, max_size=12)
#: The separators the grammar allows inside a path component.
separators = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def components(draw: st.DrawFn) -> str:
    """One path component: C{[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*}."""
    text = draw(alnum_runs)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        text += draw(separators) + draw(alnum_runs)
    return text


#: Repository names: one to five components joined by C{/}, within the length limit.
repository_names = (
    st.lists(components(), min_size=1, max_size=5)
    .map("/".join)
    .filter(lambda name: len(name) <= MAX_NAME_LENGTH)
)

#: Tags: C{[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}}.
tags = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_TAG_FIRST),
    st.text(alphabet=_TAG_REST, max_size=127),
)

#: sha256 digests as text, computed over arbitrary hex strings.
sha256_digests = st.text(alphabet=_HEX, min_size=64, max_size=64).map(lambda h: f"sha256:{h}")
#: sha512 digests as text.
sha512_digests = st.text(alphabet=_HEX, min_size=128, max_size=128).map(lambda h: f"sha512:{h}")
#: Digests of either supported algorithm.
digests = st.one_of(sha256_digests, sha512_digests)
#: Manifest references: a tag or a digest.
references = st.one_of(tags, digests)
