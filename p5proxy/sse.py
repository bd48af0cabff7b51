"""Incremental, tolerant Server-Sent Events decoder (WHATWG rules plus the upstream quirks we
accept on purpose; see shared PROTOCOLS.md §6).

Bytes go in as they arrive from the network, (event, data) pairs come out. Lines may end in
CRLF, LF or CR, also split across chunks; multi-byte characters may be split; a BOM is skipped;
comments are dropped; the pending event is flushed at end of stream.
"""

from __future__ import annotations

import codecs

__all__ = ["SSEDecoder", "SSEMessage"]

SSEMessage = tuple[str, str]  # (event name or "", data)


class SSEDecoder:
    __slots__ = ("_decoder", "_buf", "_event", "_data", "_started", "_pending_cr")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._event = ""
        self._data: list[str] = []
        self._started = False
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]   # the LF of a CRLF split across two chunks
        self._pending_cr = text.endswith("\r")
        buf = self._buf + text
        if "\r" in buf:
            buf = buf.replace("\r\n", "\n").replace("\r", "\n")
        # Split into events first, not lines: a network read usually holds whole events, and
        # the common event is one `data: ` line. That case costs one tuple here instead of two
        # `_line` calls (data, blank) with partition/dispatch each (~25% of the per-chunk
        # decode+parse+render time in bench/micro_stream.py). Anything else takes the
        # line-by-line path, so the tolerance rules stay in one place.
        parts = buf.split("\n\n")
        lines = parts.pop().split("\n")   # the unfinished event: whole lines, then a partial one
        self._buf = lines.pop()
        out: list[SSEMessage] = []
        for part in parts:
            if not self._data and part.startswith("data: ") and "\n" not in part:
                out.append((self._event, part[6:]))
                self._event = ""
                continue
            for line in part.split("\n"):
                self._line(line, out)
            self._dispatch(out)   # the blank line that ended the part
        for line in lines:
            self._line(line, out)
        return out

    def close(self) -> list[SSEMessage]:
        """End of stream: flush a last line and an event whose blank line never came."""
        out: list[SSEMessage] = []
        tail = self._buf + self._decoder.decode(b"", final=True)
        self._buf = ""
        if tail:
            self._line(tail, out)
        self._dispatch(out)
        return out

    def _line(self, line: str, out: list[SSEMessage]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line[0] == ":":
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            # Tolerance: a new `data: {` after a complete JSON value means the blank line
            # between two events was lost (seen with some tool-calling upstreams).
            if self._data and value[:1] in "{[" and _looks_complete(self._data[-1]):
                self._dispatch(out)
            self._data.append(value)
        elif name == "event":
            if self._data:   # an event line after data without a blank line: a new event
                self._dispatch(out)
            self._event = value
        # id / retry / unknown fields are ignored: we never reconnect upstream streams

    def _dispatch(self, out: list[SSEMessage]) -> None:
        if self._data:
            out.append((self._event, "\n".join(self._data)))
        self._event = ""
        self._data = []


def _looks_complete(data: str) -> bool:
    stripped = data.rstrip()
    return stripped.startswith("{") and stripped.endswith("}") or stripped == "[DONE]"
