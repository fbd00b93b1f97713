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
