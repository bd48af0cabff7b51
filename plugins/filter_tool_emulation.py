"""Filter `tool_emulation`: native tool use for upstreams that only produce text.

Request side: the tool definitions and `tool_choice` become system-prompt instructions to answer
with `<function_calls><invoke name=…><parameter name=…>…</parameter></invoke></function_calls>`,
earlier calls and results in the history are rewritten as that XML, and `</function_calls>` is
added as a stop sequence. Response side: the text stream goes through the incremental extractor
(`p5proxy.toolxml`); each `<invoke>` becomes a tool-call block with its input streamed as JSON
fragments, and the stop reason becomes `tool_use`.

Routes get the filter with `tools: emulate` (provider or model), or after the upstream rejected
native tools under `tools: auto`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from p5proxy import hookimpl
from p5proxy.canonical import (BlockStart, BlockStop, ChatRequest, ErrorEvent, MessageDelta,
                               StreamEvent, TextDelta, TextPart, ToolCallPart, ToolInputDelta)
from p5proxy.config import Config
from p5proxy.filters import Filter, FilterRun
from p5proxy.ids import tool_use_id
from p5proxy.rawjson import schema_dict
from p5proxy.toolprompt import render_instructions, rewrite_history
from p5proxy.toolxml import CLOSE, CallArgs, CallEnd, CallStart, Output, Text, ToolCallExtractor

__all__ = ["ToolEmulation", "ToolEmulationRun"]

log = logging.getLogger("p5proxy.tool_emulation")

_FIRST_INDEX = 10_000   # our blocks' indexes; renderers renumber them in start order
_OPENAI_STOP_LIMIT = 4


class ToolEmulationRun(FilterRun):
    """One response: upstream text blocks go through the extractor; other blocks pass."""

    def __init__(self, extractor: ToolCallExtractor) -> None:
        self.x = extractor
        self._texts: set[int] = set()     # upstream text block indexes
        self._next = _FIRST_INDEX
        self._open: int | None = None     # our open block
        self._open_is_text = False
        self._ended = False

    def on_event(self, ev: StreamEvent) -> Iterable[StreamEvent]:
        if isinstance(ev, TextDelta):
            if ev.index in self._texts:
                return self._render(self.x.feed(ev.text))
            return (ev,)
        if isinstance(ev, BlockStart):
            if isinstance(ev.block, TextPart):
                self._texts.add(ev.index)
                return ()
            return [*self._close_block(), ev]
        if isinstance(ev, BlockStop):
            return () if ev.index in self._texts else (ev,)
        if isinstance(ev, MessageDelta):
            return [*self._finish(), self._stop_reason(ev)]
        if isinstance(ev, ErrorEvent) and not self._ended:   # no call from a failed stream
            self._ended = True
            return [*self._render(self.x.release_text()), *self._close_block(), ev]
        return (ev,)

    def on_end(self) -> Iterable[StreamEvent]:
        return [] if self._ended else self._finish()

    def _finish(self) -> list[StreamEvent]:
        if self._ended:
            return []
        self._ended = True
        return [*self._render(self.x.close()), *self._close_block()]

    def _stop_reason(self, ev: MessageDelta) -> MessageDelta:
        reason, sequence = ev.stop_reason, ev.stop_sequence
        if sequence == CLOSE:
            reason, sequence = "end_turn", None
        if self.x.calls and not (self.x.recovered and reason == "max_tokens"):
            reason, sequence = "tool_use", None
        return MessageDelta(reason, sequence, ev.usage, ev.extra)

    def _close_block(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        index, self._open = self._open, None
        return [BlockStop(index)]

    def _start(self, block: Any) -> list[StreamEvent]:
        out = self._close_block()
        self._open, self._open_is_text = self._next, isinstance(block, TextPart)
        self._next += 1
        out.append(BlockStart(self._open, block))
        return out

    def _render(self, outputs: list[Output]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for item in outputs:
            if isinstance(item, Text):
                if not item.text:
                    continue
                if self._open is None or not self._open_is_text:
                    out += self._start(TextPart(""))
                assert self._open is not None
                out.append(TextDelta(self._open, item.text))
            elif isinstance(item, CallStart):
                out += self._start(ToolCallPart(tool_use_id(), item.name, {}))
            elif isinstance(item, CallArgs) and self._open is not None:
                out.append(ToolInputDelta(self._open, item.partial_json))
            elif isinstance(item, CallEnd):
                out += self._close_block()
        return out


class ToolEmulation(Filter):
    name = "tool_emulation"

    def __init__(self, config: Config | None = None) -> None:
        self.config = config

    def open(self, req: ChatRequest, route: Any) -> FilterRun:
        tools = [t for t in req.tools if t.raw is None]   # server tools cannot be emulated
        history_has_tools = any(isinstance(p, ToolCallPart) for m in req.messages for p in m.parts)
        if not tools and not history_has_tools:
            return FilterRun()
        choice = req.tool_choice
        req.messages = rewrite_history(req.messages)
        if tools:
            req.system = [*req.system, TextPart(render_instructions(tools, choice))]
        req.tools, req.tool_choice = [], None
        req.rewritten = True
        if not tools or (choice is not None and choice.type == "none"):
            return FilterRun()
        stops = [CLOSE, *(s for s in req.stop if s != CLOSE)]
        if getattr(route.provider, "protocol", None) == "openai" and \
                len(stops) > _OPENAI_STOP_LIMIT:
            log.warning("dropping stop sequences %s: OpenAI-compatible upstreams take %d",
                        stops[_OPENAI_STOP_LIMIT:], _OPENAI_STOP_LIMIT)
            stops = stops[:_OPENAI_STOP_LIMIT]
        req.stop = stops
        parallel = not (choice is not None and choice.disable_parallel)
        schemas = {t.name: schema_dict(t.input_schema) or {} for t in tools}
        return ToolEmulationRun(ToolCallExtractor(schemas, parallel=parallel))


@hookimpl(trylast=True)
def p5proxy_register_filters(register: Any, config: Config) -> None:
    register("tool_emulation", ToolEmulation)
