"""Incremental decoder for newline-delimited JSON streams (Ollama's native API and others).

Same interface as SSEDecoder: `feed(bytes)` and `close()` return (event, data) pairs, here
always ("", one JSON line), so the providers' stream parsers take either framing. Lines may end
in LF or CRLF and be split at any byte (inside a UTF-8 character too); blank lines are skipped;
a last line without its newline is flushed at end of stream; a BOM is skipped.
"""

from __future__ import annotations

import codecs

from .sse import SSEMessage

__all__ = ["NDJSONDecoder"]


class NDJSONDecoder:
    __slots__ = ("_decoder", "_pieces", "_started")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pieces: list[str] = []   # the current line so far (joined once it ends)
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if "\n" not in text:
            self._pieces.append(text)
            return []
        if self._pieces:
            self._pieces.append(text)
            text = "".join(self._pieces)
        lines = text.split("\n")
        last = lines.pop()
        self._pieces = [last] if last else []
        return [("", line) for line in map(str.strip, lines) if line]

    def close(self) -> list[SSEMessage]:
        tail = ("".join(self._pieces) + self._decoder.decode(b"", final=True)).strip()
        self._pieces = []
        return [("", tail)] if tail else []
