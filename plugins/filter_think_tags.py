"""Filter `think_tags`: `<think>…</think>` at the start of the answer becomes a thinking block.

Models served by vLLM, llama.cpp, Ollama and the like often write their reasoning inline as
`<think>…</think>` before the answer. This filter turns it into a real thinking block (closed
with a gateway-minted signature), so Anthropic clients see a `thinking` block and OpenAI clients
`reasoning_content`. Only the first text block is examined, and only its very start (leading
whitespace allowed). The tag may be split across any deltas: the filter holds back only what
could still be the tag; anything else passes on unchanged. Whitespace around the thinking text
and before the answer is dropped; an empty `<think></think>` disappears.

Configuration (all optional):

    plugins:
      think_tags:
        tags: [think, thinking]   # tag names recognised
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from p5proxy import hookimpl
from p5proxy.canonical import (BlockStart, BlockStop, ChatRequest, ErrorEvent, MessageDelta,
                               MessageStop, SignatureDelta, StreamEvent, TextDelta, TextPart,
                               ThinkingDelta, ThinkingPart)
from p5proxy.config import Config
from p5proxy.errors import ConfigError
from p5proxy.filters import Filter, FilterRun
from p5proxy.thinking import mint_signature

__all__ = ["ThinkTags", "ThinkTagsRun", "THINK_INDEX"]

NAME = "think_tags"
THINK_INDEX = 40_000   # the block index of the thinking block this filter creates
DEFAULT_TAGS = ("think", "thinking")

# stages of the first text block
_WAIT, _DETECT, _THINK, _AFTER, _DONE = range(5)


def _held_suffix(buf: str, tag: str) -> int:
    """Length of the longest end of `buf` that is a proper beginning of `tag`."""
    for k in range(min(len(tag) - 1, len(buf)), 0, -1):
        if buf.endswith(tag[:k]):
            return k
    return 0


class ThinkTags(Filter):
    name = NAME

    def __init__(self, tags: Iterable[str] = DEFAULT_TAGS) -> None:
        names = [str(t).strip().strip("<>/") for t in tags]
        if not names or not all(names):
            raise ConfigError([f"plugins.{NAME}.tags: give one or more tag names, e.g. [think]"])
        self.opens = {f"<{n}>": f"</{n}>" for n in names}

    def open(self, req: ChatRequest, route: Any) -> ThinkTagsRun:
        return ThinkTagsRun(self.opens)


class ThinkTagsRun(FilterRun):
    """Per-request state: follows the first text block through detect -> think -> after."""

    def __init__(self, opens: dict[str, str]) -> None:
        self.opens = opens
        self.stage = _WAIT
        self.index = -1                       # the upstream index of the first text block
        self.start: BlockStart | None = None  # its BlockStart, held until text is released
        self.buf = ""                         # text held back
        self.close = ""                       # the closing tag to look for
        self.thought: list[str] = []          # thinking text released so far

    def on_event(self, ev: StreamEvent) -> Iterable[StreamEvent]:
        if self.stage == _WAIT:
            if isinstance(ev, BlockStart) and isinstance(ev.block, TextPart):
                self.stage, self.index, self.start = _DETECT, ev.index, ev
                return ()
            return (ev,)
        if self.stage == _DONE:
            return (ev,)
        if isinstance(ev, TextDelta) and ev.index == self.index:
            self.buf += ev.text
            return self._advance()
        if isinstance(ev, BlockStop) and ev.index == self.index:
            out = self._finish()
            if self.start is None:   # the text block was started: close it
                out.append(ev)
            return out
        if isinstance(ev, (MessageDelta, MessageStop, ErrorEvent)):   # the block never ended
            return [*self._finish(), ev]
        return (ev,)

    def on_end(self) -> Iterable[StreamEvent]:
        return self._finish() if self.stage not in (_WAIT, _DONE) else ()

    # --- stages ----------------------------------------------------------------------------

    def _advance(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self.stage == _DETECT:
            head = self.buf.lstrip()
            if not head:
                return out
            for open_tag, close_tag in self.opens.items():
                if head.startswith(open_tag):
                    self.stage, self.close = _THINK, close_tag
                    self.buf = head[len(open_tag):]
                    break
            else:
                if any(tag.startswith(head) for tag in self.opens):
                    return out   # could still be the tag
                self.stage = _DONE   # plain text: release it unchanged
                return self._text(self.buf)
        if self.stage == _THINK:
            end = self.buf.find(self.close)
            if end < 0:
                keep = _held_suffix(self.buf, self.close)
                body = self.buf[:len(self.buf) - keep].rstrip()
                out += self._think(body)
                self.buf = self.buf[len(body):]
                return out
            out += self._think(self.buf[:end].rstrip())
            out += self._close_thinking()
            self.stage, self.buf = _AFTER, self.buf[end + len(self.close):]
        if self.stage == _AFTER:
            text = self.buf.lstrip()
            self.buf = ""
            if text:
                self.stage = _DONE
                out += self._text(text)
        return out

    def _finish(self) -> list[StreamEvent]:
        """The text block (or the message) ended: release what is held."""
        out: list[StreamEvent] = []
        if self.stage == _DETECT:
            out = self._text(self.buf)
            if self.start is not None:   # nothing at all was written: keep the empty block
                out.append(self.start)
                self.start = None
        elif self.stage == _THINK:   # unterminated: all of it was thinking
            out = [*self._think(self.buf.rstrip()), *self._close_thinking()]
        self.stage, self.buf = _DONE, ""
        return out

    # --- output ----------------------------------------------------------------------------

    def _text(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        out: list[StreamEvent] = []
        if self.start is not None:
            out.append(self.start)
            self.start = None
        out.append(TextDelta(self.index, text))
        return out

    def _think(self, text: str) -> list[StreamEvent]:
        if not self.thought:
            text = text.lstrip()
        if not text:
            return []
        out: list[StreamEvent] = []
        if not self.thought:
            out.append(BlockStart(THINK_INDEX, ThinkingPart("")))
        self.thought.append(text)
        out.append(ThinkingDelta(THINK_INDEX, text))
        return out

    def _close_thinking(self) -> list[StreamEvent]:
        if not self.thought:   # <think></think>: nothing to show
            return []
        return [SignatureDelta(THINK_INDEX, mint_signature("".join(self.thought))),
                BlockStop(THINK_INDEX)]


@hookimpl(trylast=True)
def p5proxy_register_filters(register: Any, config: Config) -> None:
    tags = config.plugin(NAME).get("tags", DEFAULT_TAGS)
    if isinstance(tags, str):
        tags = [tags]
    register(NAME, lambda cfg: ThinkTags(tags))
