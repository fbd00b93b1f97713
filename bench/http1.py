"""Incremental parsing of HTTP/1.1 responses, for a load generator that must stay cheap.

Handles ``Content-Length`` and ``Transfer-Encoding: chunked`` bodies, and bodies delimited by the
connection closing. One parser reads one response at a time; bytes arriving after a complete
response are a protocol error, since the load generator never pipelines.
"""

from __future__ import annotations

import re

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)

_HEAD, _LENGTH, _SIZE, _DATA, _TRAILER, _UNTIL_CLOSE, _DONE = range(7)


class ProtocolError(Exception):
    """The bytes received are not a valid HTTP/1.1 response."""


class ResponseParser:
    """Feed it bytes with ``feed``; it says when the response is complete.

    After completion: ``status``, ``keep_alive`` and ``body`` (the de-chunked body). ``body_started``
    turns true as soon as the first body byte is decoded (the load generator's time to first byte).
    """

    __slots__ = ("_buf", "_parts", "_remaining", "_state", "body_started", "keep_alive", "status")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = _HEAD
        self._remaining = 0
        self._parts: list[bytes | bytearray] = []
        self.status = 0
        self.keep_alive = True
        self.body_started = False

    @property
    def body(self) -> bytes:
        return b"".join(self._parts)

    def feed(self, data: bytes) -> bool:
        """Consume ``data``; return True once the whole response has been read."""
        if self._state == _DONE:
            raise ProtocolError(f"{len(data)} unexpected bytes after a complete response")
        self._buf += data
        pos = self._advance()
        if pos:
            del self._buf[:pos]
        if self._state == _DONE and self._buf:
            raise ProtocolError(f"{len(self._buf)} unexpected bytes after a complete response")
        return self._state == _DONE

    def feed_eof(self) -> bool:
        """The connection closed; return True if that legitimately ended the response."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
        return self._state == _DONE

    def _advance(self) -> int:
        buf = self._buf
        pos = 0
        while True:
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return pos
                self._head(bytes(buf[: end + 2]))
                pos = end + 4
            elif state == _LENGTH:
                take = min(self._remaining, len(buf) - pos)
                if take:
                    self._body(bytes(buf[pos : pos + take]))
                    pos += take
                    self._remaining -= take
                if self._remaining:
                    return pos
                self._state = _DONE
            elif state == _SIZE:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    return pos
                size = _chunk_size(buf[pos:end])
                pos = end + 2
                self._remaining = size
                self._state = _DATA if size else _TRAILER
            elif state == _DATA:
                end = pos + self._remaining
                if len(buf) < end + 2:
                    return pos
                if buf[end : end + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                self._parts.append(buf[pos:end])
                self.body_started = True
                pos = end + 2
                self._state = _SIZE
            elif state == _TRAILER:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    return pos
                self._state = _DONE if end == pos else _TRAILER
                pos = end + 2
            elif state == _UNTIL_CLOSE:
                if len(buf) > pos:
                    self._body(bytes(buf[pos:]))
                return len(buf)
            else:
                return pos

    def _head(self, head: bytes) -> None:
        line = head[: head.find(b"\r\n")]
        version, _, rest = line.partition(b" ")
        if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
            raise ProtocolError(f"bad status line {line[:60]!r}")
        self.status = int(rest[:3])
        self.keep_alive = version == b"HTTP/1.1" and _CLOSE.search(head) is None
        if _CHUNKED.search(head):
            self._state = _SIZE
        elif (match := _CONTENT_LENGTH.search(head)) is not None:
            self._remaining = int(match.group(1))
            self._state = _LENGTH
        elif self.status in (204, 304):
            self._state = _DONE
        else:
            self.keep_alive = False
            self._state = _UNTIL_CLOSE

    def _body(self, part: bytes | bytearray) -> None:
        self._parts.append(part)
        self.body_started = True


def _chunk_size(line: bytearray) -> int:
    try:
        size = int(line.split(b";", 1)[0] if b";" in line else line, 16)  # ";" starts a chunk extension
    except ValueError:
        size = -1
    if size < 0:
        raise ProtocolError(f"bad chunk size line {bytes(line[:40])!r}")
    return size
