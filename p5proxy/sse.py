"""Incremental, tolerant Server-Sent Events decoder (WHATWG rules plus the upstream quirks we
accept on purpose; see shared PROTOCOLS.md §6).

Bytes go in as they arrive from the network, (event, data) pairs come out. Lines may end in
CRLF, LF or CR, also split across chunks; multi-byte characters may be split; a BOM is skipped;
comments (`: keep-alive`) are dropped; the pending event is flushed at end of stream. Lines have
no length limit (aiohttp's readline() stops at 64 KiB; whole tool arguments exceed that).

Quirks accepted beyond the spec (§6.2):
- a lost blank line between two JSON events (`data: {..}` straight after a complete `data: {..}`);
- two events glued on one line (`data: {.."ch` + `data: {..}`): the truncated head is dropped,
  the data resyncs at the embedded `data:`, and the loss is logged;
- with `repair=True` (provider option `sse_repair: true`): corrupted `data` field names such as
  `ddata:`, `ata:` or `dat:` are read as `data:`, with a warning.
Keep-alives (`data: {}`, empty data, `event: ping`) come out as events; the stream parsers skip
them, and they stop at the first `[DONE]`.
"""

from __future__ import annotations

import codecs
import logging
import re

import orjson

__all__ = ["SSEDecoder", "SSEMessage"]

log = logging.getLogger(__name__)

SSEMessage = tuple[str, str]  # (event name or "", data)

# A short field name that can only be a damaged `data`: `ddata`, `ata`, `dat`, `dta`...
_DATA_LIKE = re.compile(r"d*a?t?a?")
_EMBEDDED = re.compile(r"data: ?")


class SSEDecoder:
    __slots__ = ("_decoder", "_buf", "_long", "_event", "_data", "_started", "_pending_cr",
                 "_repair", "_repaired")

    def __init__(self, repair: bool = False) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._long: list[str] = []   # pieces of a line still without its end (long lines)
        self._event = ""
        self._data: list[str] = []
        self._started = False
        self._pending_cr = False
        self._repair = repair
        self._repaired = 0

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
        if "\n" not in text and "\r" not in text:
            # The middle of a long line (a 1 MB tool argument arrives in many reads): collect
            # the pieces and join once when its end arrives, instead of re-joining and
            # re-splitting the whole buffer on every read (quadratic).
            self._pending_cr = False
            self._long.append(text)
            return []
        self._pending_cr = text.endswith("\r")
        if self._long:
            self._buf += "".join(self._long)
            self._long = []
        buf = self._buf + text
        if "\r" in buf:
            buf = buf.replace("\r\n", "\n").replace("\r", "\n")
        # Split into events first, not lines: a network read usually holds whole events, and
        # the common event is one `data: ` line. That case costs one tuple here instead of two
        # `_line` calls (data, blank) with partition/dispatch each (~25% of the per-chunk
        # decode+parse+render time in bench/micro_stream.py). Anything else takes the
        # line-by-line path, so the tolerance rules stay in one place. The fast path keeps one
        # check of its own: a substring search for an embedded `data:` (glued events), which
        # costs far less than the slow path and is rarely true.
        parts = buf.split("\n\n")
        lines = parts.pop().split("\n")   # the unfinished event: whole lines, then a partial one
        self._buf = lines.pop()
        out: list[SSEMessage] = []
        for part in parts:
            if not self._data and part.startswith("data: ") and "\n" not in part:
                value = part[6:]
                if "data:" in value:
                    value = _resync(value)
                out.append((self._event, value))
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
        tail = self._buf + "".join(self._long) + self._decoder.decode(b"", final=True)
        self._buf = ""
        self._long = []
        if tail:
            self._line(tail, out)
        self._dispatch(out)
        if self._repaired:
            log.warning("repaired %d corrupted SSE data field name(s) in this stream",
                        self._repaired)
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
        if name != "data" and name != "event" and self._repair and sep \
                and 3 <= len(name) <= 6 and _DATA_LIKE.fullmatch(name):
            if not self._repaired:
                log.warning("SSE field %r read as 'data' (sse_repair)", name)
            self._repaired += 1
            name = "data"
        if name == "data":
            if "data:" in value:
                value = _resync(value)
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


def _is_json(text: str) -> bool:
    if text == "[DONE]":
        return True
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _resync(value: str) -> str:
    """`value` holds `data:` somewhere inside. Valid JSON (text that merely mentions `data:`)
    stays as it is; otherwise two events were glued without a newline (`{.."ch` +
    `data: {..}`): keep what follows the first embedded `data:` that starts a valid payload."""
    if value[:1] not in "{[" or _is_json(value):
        return value
    for match in _EMBEDDED.finditer(value):
        rest = value[match.end():].rstrip()
        if rest[:1] in ("{", "[") and _is_json(rest):
            log.warning("glued SSE events: dropped a truncated event of %d characters: %r",
                        match.start(), value[:80])
            return rest
    return value
