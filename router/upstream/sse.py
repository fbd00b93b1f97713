"""Server-sent events: split an upstream byte stream into ``data`` payloads. Knows no provider.

Follows the WHATWG event-stream rules the gateway meets in practice: ``\\n``, ``\\r\\n`` or ``\\r``
line ends, comment lines (``: keep-alive``), ``event:``/``id:``/``retry:`` fields (dropped: the
gateway re-frames every event as ``data: <json>``), and multi-line ``data`` joined with ``\\n``.
"""

from __future__ import annotations

DONE = b"[DONE]"


class SSEDecoder:
    """Incremental decoder: ``feed`` bytes as they arrive, get back complete events' data."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):
                # A "\r\n" may be split across reads: keep the "\r" until the next chunk.
                self._buffer = buffer
                return []
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, self._buffer = buffer.split(b"\n\n")
        if buffer.count(b"\n") == 2 * len(blocks):
            # No newline but the separators: every event is one line, nearly always `data: <json>`.
            found = [block[6:] if block[:6] == b"data: " else _data_of(block) for block in blocks]
            return found if None not in found else [data for data in found if data is not None]
        return [data for block in blocks if (data := _data_of(block)) is not None]

    def flush(self) -> list[bytes]:
        """Data of a final event the upstream did not terminate with a blank line."""
        buffer, self._buffer = self._buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n"), b""
        data = _data_of(buffer.strip(b"\n"))
        return [] if data is None else [data]


def _data_of(block: bytes) -> bytes | None:
    if block.startswith(b"data:") and b"\n" not in block:
        # The common case: one `data:` line per event.
        return block[6:] if block[5:6] == b" " else block[5:]
    parts = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            parts.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line == b"data":
            parts.append(b"")
    return b"\n".join(parts) if parts else None


def frame(payload: bytes) -> bytes:
    """One SSE event as the gateway emits it."""
    return b"data: " + payload + b"\n\n"


def frames(payloads: list[bytes]) -> bytes:
    """Several SSE events in one buffer (empty for none): ``frame`` of each, joined."""
    return b"data: " + b"\n\ndata: ".join(payloads) + b"\n\n" if payloads else b""


DONE_FRAME = frame(DONE)
