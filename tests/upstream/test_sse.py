"""SSE framing and decoding: what the gateway emits reads back as the payloads it was given."""

from __future__ import annotations

import pytest

from router.upstream.sse import SSEDecoder, frame, frames


@pytest.mark.parametrize("payloads", [[], [b"{}"], [b'{"a":1}', b'{"b":2}', b"[DONE]"]])
def test_frames_is_frame_of_each_joined(payloads: list[bytes]) -> None:
    assert frames(payloads) == b"".join(frame(p) for p in payloads)


def test_frames_decode_back_to_their_payloads_whatever_the_split() -> None:
    payloads = [b'{"choices":[{"delta":{"content":"a\\n\\nb"}}]}', b'{"usage":{}}', b"[DONE]"]
    wire = frames(payloads)
    for cut in range(len(wire) + 1):
        decoder = SSEDecoder()
        assert decoder.feed(wire[:cut]) + decoder.feed(wire[cut:]) + decoder.flush() == payloads


WIRE_SHAPES = (
    b": keep-alive\n\n"
    b'data: {"a":1}\n\n'
    b'data:{"b":2}\n\n'
    b"event: message\nid: 7\ndata: {\"c\":\ndata: 3}\n\n"
    b"retry: 100\n\n"
    b"data\n\n"
    b'data: {"d":4}\n\n'
    b"data: [DONE]\n\n"
)
DECODED = [b'{"a":1}', b'{"b":2}', b'{"c":\n3}', b"", b'{"d":4}', b"[DONE]"]


@pytest.mark.parametrize(
    "wire",
    [
        WIRE_SHAPES,
        WIRE_SHAPES.replace(b"\n", b"\r\n"),
        b": ping\n\n" + b'data: {"a":1}\n\n' + b"data: [DONE]\n\n",  # one-line events and a comment
    ],
)
def test_decoder_reads_every_event_shape_in_one_read_or_byte_by_byte(wire: bytes) -> None:
    expected = DECODED if wire.startswith(b": keep") else [b'{"a":1}', b"[DONE]"]
    assert SSEDecoder().feed(wire) == expected
    decoder = SSEDecoder()
    assert [data for i in range(len(wire)) for data in decoder.feed(wire[i : i + 1])] + decoder.flush() == expected
