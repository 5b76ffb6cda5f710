"""
Tests for L{quayd.http.site.ChunkedBodyDecoder}: it must decode exactly what
Twisted's own chunked decoder decodes, reject exactly what it rejects (at the
same read), and hand on the bytes after the body, however the stream is split
into reads.
"""

from __future__ import annotations

import itertools
import random

import pytest
from twisted.web.http import _ChunkedTransferDecoder, _MalformedChunkedDataError

from quayd.http.site import MAX_TRAILER_BYTES, ChunkedBodyDecoder

#: What a decoder did with a stream: ("ok", body, bytes after it or None) or
#: ("malformed" / "finished", index of the read that raised, body so far).
Outcome = tuple[str, object, object]


_Decoder = type[ChunkedBodyDecoder] | type[_ChunkedTransferDecoder]


def _decode(decoder_type: _Decoder, reads: list[bytes]) -> Outcome:
    """Feed C{reads} to a decoder of C{decoder_type}; stop after the body's end."""
    body = bytearray()
    after: list[bytes] = []
    decoder = decoder_type(body.extend, after.append)
    for index, read in enumerate(reads):
        try:
            decoder.dataReceived(read)
        except _MalformedChunkedDataError:
            return ("malformed", index, bytes(body))
        if after:
            return ("ok", bytes(body), after[0])
    return ("ok", bytes(body), None)


def _splits(stream: bytes, rng: random.Random) -> list[list[bytes]]:
    """The stream in one read, byte by byte, and cut at a few random places."""
    splits = [[stream], [stream[i : i + 1] for i in range(len(stream))] if len(stream) < 3000 else [stream]]
    for _ in range(4):
        count = min(len(stream) - 1, rng.randint(1, 6))
        cuts = sorted(rng.sample(range(1, len(stream)), count)) if len(stream) > 1 else []
        bounds = [0, *cuts, len(stream)]
        splits.append([stream[a:b] for a, b in itertools.pairwise(bounds) if b > a])
    return splits


_VALID = [
    b"0\r\n\r\n",
    b"3\r\nabc\r\n0\r\n\r\n",
    b"3;ext=1;other\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n",
    b'3;name="quoted value"\r\nabc\r\n0;last\r\n\r\n',
    b"00003\r\nabc\r\n000\r\n\r\n",
    b"f\r\n" + b"q" * 15 + b"\r\n0\r\nTrailer: one\r\nOther: two\r\n\r\n",
    b"3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
    b"3\r\n\r\n\r\r\n0\r\n\r\n",
    b"1" + b";" * (1024 - 2) + b"\r\nz\r\n0\r\n\r\n",
    b"3\r\nabc\r\n0\r\nX: " + b"y" * (MAX_TRAILER_BYTES - 5) + b"\r\n\r\n",
]

_MALFORMED = [
    b"\r\nabc\r\n0\r\n\r\n",
    b"zz\r\nabc\r\n0\r\n\r\n",
    b"0x3\r\nabc\r\n0\r\n\r\n",
    b"-3\r\nabc\r\n0\r\n\r\n",
    b" 3\r\nabc\r\n0\r\n\r\n",
    b"3\r\nabcd\r\n0\r\n\r\n",
    b"3\r\nabc\n0\r\n\r\n",
    b"3;a\\b\r\nabc\r\n0\r\n\r\n",
    b"3;a\x7fb\r\nabc\r\n0\r\n\r\n",
    b"1" + b";" * (1024 - 1) + b"\r\nz\r\n0\r\n\r\n",
    b"1" + b";" * 5000,
    b"3\r\nabc\r\n0\r\nX: " + b"y" * (MAX_TRAILER_BYTES - 4) + b"\r\n\r\n",
    b"3\r\nabc\r\n0\r\n" + b"X: y\r\n" * (MAX_TRAILER_BYTES // 6 + 1) + b"\r\n",
    b"3\r\nabc\r\n0\r\n" + b"y" * (MAX_TRAILER_BYTES + 10),
]


@pytest.mark.parametrize("stream", _VALID + _MALFORMED)
def test_chunked_body_decoder_matches_twisted(stream: bytes) -> None:
    """Body, rejection point and trailing bytes equal Twisted's decoder's, for every split into reads."""
    rng = random.Random(stream)
    for reads in _splits(stream, rng):
        assert _decode(ChunkedBodyDecoder, reads) == _decode(_ChunkedTransferDecoder, reads)


def test_chunked_body_decoder_fixed_cases() -> None:
    """The valid streams decode to their body; the malformed ones raise."""
    assert _decode(ChunkedBodyDecoder, [_VALID[2]]) == ("ok", b"abc0123456789", b"")
    assert _decode(ChunkedBodyDecoder, [_VALID[6]]) == ("ok", b"abc", b"GET /next HTTP/1.1\r\n\r\n")
    for stream in _MALFORMED:
        assert _decode(ChunkedBodyDecoder, [stream])[0] == "malformed"


def test_chunked_body_decoder_matches_twisted_on_random_streams() -> None:
    """Mutated and random streams, randomly split: the same outcome as Twisted's decoder."""
    rng = random.Random(20261127)
    pieces = [b"0", b"1", b"a", b"F", b"10", b"\r\n", b"\r", b"\n", b";", b"x=y", b" ", b"\x7f", b"\\"]
    for _ in range(3000):
        stream = bytearray(rng.choice(_VALID))
        for _ in range(rng.randint(0, 3)):
            position = rng.randrange(len(stream) + 1)
            operation = rng.random()
            if operation < 0.3:
                del stream[position : position + rng.randint(1, 3)]
            elif operation < 0.7:
                stream[position:position] = rng.choice(pieces)
            elif position < len(stream):
                stream[position] = rng.getrandbits(8)
        if rng.random() < 0.1:
            stream = bytearray(b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 30))))
        if not stream:
            continue
        for reads in _splits(bytes(stream), rng)[2:]:
            expected = _decode(_ChunkedTransferDecoder, reads)
            assert _decode(ChunkedBodyDecoder, reads) == expected, bytes(stream)


def test_chunked_body_decoder_hands_on_views_without_copying() -> None:
    """Body pieces are read-only views into the received bytes, not copies."""
    received: list[memoryview] = []
    decoder = ChunkedBodyDecoder(received.append, lambda rest: None)
    data = b"5\r\nhello\r\n6\r\n world\r\n"
    decoder.dataReceived(data)
    assert [bytes(view) for view in received] == [b"hello", b" world"]
    assert all(view.readonly and view.obj is data for view in received)


def test_chunked_body_decoder_refuses_data_after_the_end() -> None:
    """Once the body has ended, more data is a programming error, as in Twisted."""
    decoder = ChunkedBodyDecoder(lambda view: None, lambda rest: None)
    decoder.dataReceived(b"0\r\n\r\n")
    with pytest.raises(RuntimeError):
        decoder.dataReceived(b"x")
