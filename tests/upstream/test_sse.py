"""SSE framing and decoding: what the gateway emits reads back as the payloads it was given."""

from __future__ import annotations

import pytest

from router.upstream.sse import EventTooLargeError, SSEDecoder, frame, frames


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


def test_an_event_read_in_many_pieces_is_held_up_to_the_cap_and_then_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    assert decoder.feed(b'data: {"a":"') == []
    for _ in range(9):
        assert decoder.feed(b"x" * 100) == []
    with pytest.raises(EventTooLargeError):
        decoder.feed(b"x" * 100)


def test_a_line_that_never_ends_is_refused_at_the_cap() -> None:
    decoder = SSEDecoder(max_event_bytes=64 * 1024)
    with pytest.raises(EventTooLargeError):
        for _ in range(1000):
            decoder.feed(b"y" * 1024)


def test_an_oversized_event_that_arrives_whole_is_refused_and_one_at_the_cap_is_not() -> None:
    with pytest.raises(EventTooLargeError):
        SSEDecoder(max_event_bytes=100).feed(frame(b"z" * 200) + frame(b"{}"))
    at_cap = frame(b"z" * 94)  # b"data: " + 94 bytes = 100 bytes of event
    assert SSEDecoder(max_event_bytes=100).feed(at_cap + at_cap) == [b"z" * 94] * 2


def test_events_split_at_every_point_around_a_crlf_blank_line_decode_once() -> None:
    wire = b'data: {"a":1}\r\n\r\ndata: {"b":2}\r\n\r\n'
    for cut in range(len(wire) + 1):
        for second in range(cut, len(wire) + 1):
            decoder = SSEDecoder(max_event_bytes=64)
            parts = (wire[:cut], wire[cut:second], wire[second:])
            assert [d for part in parts for d in decoder.feed(part)] + decoder.flush() == [b'{"a":1}', b'{"b":2}']


def test_events_before_an_oversized_one_in_the_same_read_are_returned_and_the_next_read_raises() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    assert decoder.feed(frame(b"first") + b"data: " + b"x" * 200) == [b"first"]
    with pytest.raises(EventTooLargeError):
        decoder.feed(b"more")
    ended = SSEDecoder(max_event_bytes=100)
    assert ended.feed(frame(b"first") + b"data: " + b"x" * 200) == [b"first"]
    with pytest.raises(EventTooLargeError):
        ended.flush()  # the upstream closed: the oversized tail is not an event either
