"""Filter `strip`: remove boilerplate an upstream adds at the start or the end of its answers.

Some upstreams (wrapped chat front-ends, certain fine-tunes) open every answer with a greeting
or a heading and close it with a recommendation. `start` patterns are matched, in order and
each at most once, at the start of the answer's first text block; `end` patterns, in order and
each at most once, against the end of every text block. Patterns are Python regular
expressions (`(?i)` for case-insensitive); a match is removed.

Streams keep a bounded look-ahead of `lookahead` characters (default 256): a start pattern is
tried once that many characters (or the whole block, if shorter) have arrived, and then the
text flows on; for end patterns the last `lookahead` characters of a block are held until the
block ends. A match must therefore fit within the look-ahead. The result never depends on how
the upstream split its text into deltas. A block that is stripped to nothing is dropped.

    plugins:
      strip:
        lookahead: 256
        start: ['(?i)(sure|certainly|of course)[!,.][ \\t]*\\n*', '#+ [^\\n]*\\n+']
        end: ['\\s*(?i:let me know if)[^\\n]*\\s*']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from p5proxy import hookimpl
from p5proxy.canonical import (BlockStart, BlockStop, ChatRequest, ErrorEvent, MessageDelta,
                               MessageStop, StreamEvent, TextDelta, TextPart)
from p5proxy.config import Config
from p5proxy.errors import ConfigError
from p5proxy.filters import Filter, FilterRun

__all__ = ["Strip", "StripRun", "strip_text", "DEFAULT_LOOKAHEAD"]

NAME = "strip"
DEFAULT_LOOKAHEAD = 256


def _compile(patterns: Any, key: str) -> list[re.Pattern[str]]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    out, problems = [], []
    for i, p in enumerate(patterns):
        try:
            out.append(re.compile(str(p)))
        except re.error as exc:
            problems.append(f"plugins.{NAME}.{key}[{i}]: invalid regular expression {p!r}: {exc}")
    if problems:
        raise ConfigError(problems)
    return out


def strip_start(text: str, patterns: Sequence[re.Pattern[str]], lookahead: int) -> str:
    for pat in patterns:
        m = pat.match(text[:lookahead])
        if m:
            text = text[m.end():]
    return text


def strip_end(tail: str, patterns: Sequence[re.Pattern[str]]) -> str:
    """Remove, for each pattern in turn, its leftmost match that reaches the end of `tail`."""
    for pat in patterns:
        for pos in range(len(tail) + 1):
            if pat.fullmatch(tail, pos):
                tail = tail[:pos]
                break
    return tail


def strip_text(text: str, *, start: Sequence[re.Pattern[str]], end: Sequence[re.Pattern[str]],
               lookahead: int, first: bool = True) -> str:
    """What the filter makes of one whole text block (`first`: the answer's first)."""
    if first:
        text = strip_start(text, start, lookahead)
    if not end:
        return text
    cut = max(0, len(text) - lookahead)
    return text[:cut] + strip_end(text[cut:], end)


class Strip(Filter):
    name = NAME

    def __init__(self, *, start: Any = None, end: Any = None,
                 lookahead: Any = DEFAULT_LOOKAHEAD) -> None:
        self.start = _compile(start, "start")
        self.end = _compile(end, "end")
        if not isinstance(lookahead, int) or isinstance(lookahead, bool) or lookahead < 1:
            raise ConfigError([f"plugins.{NAME}.lookahead: a positive number of characters, "
                               f"got {lookahead!r}"])
        self.lookahead = lookahead

    def open(self, req: ChatRequest, route: Any) -> StripRun:
        return StripRun(self)


class StripRun(FilterRun):
    """Per-request state for the text block being streamed (one is open at a time)."""

    def __init__(self, conf: Strip) -> None:
        self.conf = conf
        self.first = True       # no text block seen yet: start patterns still apply
        self.index: int | None = None   # the open text block, when we follow one
        self.start: BlockStart | None = None   # its BlockStart, held until text is released
        self.pending: list[re.Pattern[str]] = []   # start patterns still to try
        self.head = ""          # text held for the start patterns
        self.tail = ""          # text held for the end patterns
        self.stripped = False   # whether anything was removed from this block

    def on_event(self, ev: StreamEvent) -> Iterable[StreamEvent]:
        if self.index is None:
            if isinstance(ev, BlockStart) and isinstance(ev.block, TextPart):
                self._open(ev)
                return ()
            return (ev,)
        if isinstance(ev, TextDelta) and ev.index == self.index:
            return self._feed(ev.text)
        if isinstance(ev, BlockStop) and ev.index == self.index:
            out = self._finish()
            if self.start is None:   # the block was started (or kept): close it
                out.append(ev)
            self.start = None
            return out
        if isinstance(ev, (MessageDelta, MessageStop, ErrorEvent)):   # the block never ended
            out = self._finish()
            self.start = None
            return [*out, ev]
        return (ev,)

    def on_end(self) -> Iterable[StreamEvent]:
        return self._finish() if self.index is not None else ()

    def _open(self, ev: BlockStart) -> None:
        self.index, self.start, self.stripped = ev.index, ev, False
        self.pending = list(self.conf.start) if self.first else []
        self.first = False
        self.head = self.tail = ""

    def _feed(self, text: str) -> list[StreamEvent]:
        if self.pending:
            self.head += text
            text = self._try_start(ended=False)
        if not text:
            return []
        if not self.conf.end:
            return self._release(text)
        self.tail += text
        cut = len(self.tail) - self.conf.lookahead
        if cut <= 0:
            return []
        text, self.tail = self.tail[:cut], self.tail[cut:]
        return self._release(text)

    def _try_start(self, *, ended: bool) -> str:
        """Try the start patterns whose look-ahead is full; return the text they let through."""
        look = self.conf.lookahead
        while self.pending and (ended or len(self.head) >= look):
            m = self.pending.pop(0).match(self.head[:look])
            if m and m.end():
                self.head, self.stripped = self.head[m.end():], True
        if self.pending:
            return ""
        text, self.head = self.head, ""
        return text

    def _finish(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self.pending:
            text = self._try_start(ended=True)
            if self.conf.end:
                self.tail += text
            else:
                out += self._release(text)
        if self.tail:
            tail = strip_end(self.tail, self.conf.end)
            self.stripped = self.stripped or len(tail) < len(self.tail)
            self.tail = ""
            out += self._release(tail)
        if self.start is not None and not self.stripped:   # an empty block stays as it was
            out.insert(0, self.start)
            self.start = None
        self.index = None
        return out

    def _release(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        assert self.index is not None
        out: list[StreamEvent] = []
        if self.start is not None:
            out.append(self.start)
            self.start = None
        out.append(TextDelta(self.index, text))
        return out


@hookimpl(trylast=True)
def p5proxy_register_filters(register: Any, config: Config) -> None:
    conf = config.plugin(NAME)
    register(NAME, lambda cfg: Strip(start=conf.get("start"), end=conf.get("end"),
                                     lookahead=conf.get("lookahead", DEFAULT_LOOKAHEAD)))
