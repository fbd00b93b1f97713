"""Server-sent events: split an upstream byte stream into ``data`` payloads. Knows no provider.

Follows the WHATWG event-stream rules the gateway meets in practice: ``\\n``, ``\\r\\n`` or ``\\r``
line ends, comment lines (``: keep-alive``), ``event:``/``id:``/``retry:`` fields (dropped: the
gateway re-frames every event as ``data: <json>``), and multi-line ``data`` joined with ``\\n``.
"""

from __future__ import annotations

DONE = b"[DONE]"
#: The largest event a decoder holds by default (a chat chunk is rarely above a few KB).
DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024


class EventTooLargeError(ValueError):
    """An event, or a line that never ends, grew past the decoder's ``max_event_bytes``."""


class SSEDecoder:
    """Incremental decoder: ``feed`` bytes as they arrive, get back complete events' data.

    An unfinished event is kept as the list of reads it came in, joined once when its blank line
    arrives, so an event read in n pieces costs O(its size), not O(n * size). Past
    ``max_event_bytes`` of one event, ``feed`` raises ``EventTooLargeError``: an upstream sending an
    endless line or a huge event cannot grow the gateway's memory without bound.
    """

    __slots__ = ("_cr", "_max_event_bytes", "_pending", "_pending_bytes")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max_event_bytes = max_event_bytes
        self._pending: list[bytes] = []  # the reads of the unfinished event, line ends normalised to "\n"
        self._pending_bytes = 0
        self._cr = False  # the last read ended with "\r", which may be the first half of a "\r\n"

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._cr:
            chunk, self._cr = b"\r" + chunk, False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk, self._cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pending = self._pending
        if pending:
            if b"\n\n" not in chunk and not (chunk[:1] == b"\n" and pending[-1].endswith(b"\n")):
                if chunk:
                    pending.append(chunk)
                    self._pending_bytes += len(chunk)
                self._check_pending()
                return []
            pending.append(chunk)
            buffer = b"".join(pending)
            self._pending, self._pending_bytes = [], 0
        else:
            buffer = chunk
        *blocks, rest = buffer.split(b"\n\n")
        if len(buffer) > self._max_event_bytes and any(len(block) > self._max_event_bytes for block in blocks):
            raise EventTooLargeError(f"an SSE event exceeds {self._max_event_bytes} bytes")
        if rest:
            self._pending, self._pending_bytes = [rest], len(rest)
        newlines = buffer.count(b"\n")
        if newlines == 2 * len(blocks):
            # No newline but the separators: every event is one line, nearly always `data: <json>`.
            found = [block[6:] if block[:6] == b"data: " else _data_of(block) for block in blocks]
            found = found if None not in found else [data for data in found if data is not None]
        elif newlines == 3 * len(blocks):
            # Every event is two lines, nearly always `event: <type>` then `data: <json>` (Anthropic's framing).
            found = [
                parts[2] if parts[1] and block[:6] == b"event:" else _data_of(block)
                for block in blocks
                if (parts := block.partition(b"\ndata: "))
            ]
            found = found if None not in found else [data for data in found if data is not None]
        else:
            found = [data for block in blocks if (data := _data_of(block)) is not None]
        if not found and rest:
            self._check_pending()  # else the events that came first are returned; the next feed raises
        return found

    def flush(self) -> list[bytes]:
        """Data of a final event the upstream did not terminate with a blank line."""
        self._check_pending()
        buffer = b"".join(self._pending)
        self._pending, self._pending_bytes, self._cr = [], 0, False
        data = _data_of(buffer.strip(b"\n"))
        return [] if data is None else [data]

    def _check_pending(self) -> None:
        if self._pending_bytes > self._max_event_bytes:
            raise EventTooLargeError(f"an SSE event exceeds {self._max_event_bytes} bytes without ending")


def _data_of(block: bytes) -> bytes | None:
    if block.startswith(b"data:") and b"\n" not in block:
        # The common case: one `data:` line per event.
        return block[6:] if block[5:6] == b" " else block[5:]
    if block.startswith(b"event:"):
        # Anthropic's (and the Responses API's) case: an `event:` line, then one `data:` line.
        data = block.find(b"\ndata:") + 1
        if data and block.find(b"\n", data) < 0:
            return block[data + 6 :] if block[data + 5 : data + 6] == b" " else block[data + 5 :]
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
