"""A final message as a stream of events again: how a cached answer is replayed.

A streaming client of a cache hit gets a real stream, block by block with the text in small
deltas, not one lump; ids are fresh (MessageStart.id is None, so renderers mint new ones).
"""

from __future__ import annotations

import orjson

from .aggregate import FinalMessage
from .canonical import (BlockStart, BlockStop, MessageDelta, MessageStart, MessageStop, Part,
                        SignatureDelta, StreamEvent, TextDelta, TextPart, ThinkingDelta,
                        ThinkingPart, ToolCallPart, ToolInputDelta, Usage)

__all__ = ["replay_events"]

CHUNK = 48   # characters per replayed text delta: about what upstreams send


def _chunks(text: str) -> list[str]:
    return [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]


def _block_events(i: int, part: Part) -> list[StreamEvent]:
    if isinstance(part, TextPart):
        return [BlockStart(i, TextPart("", part.meta)),
                *(TextDelta(i, c) for c in _chunks(part.text) if c), BlockStop(i)]
    if isinstance(part, ThinkingPart):
        events: list[StreamEvent] = [BlockStart(i, ThinkingPart("", None, part.redacted))]
        events += [ThinkingDelta(i, c) for c in _chunks(part.text) if c]
        if part.signature:
            events.append(SignatureDelta(i, part.signature))
        return [*events, BlockStop(i)]
    if isinstance(part, ToolCallPart):
        raw = (part.meta or {}).get("input_json") or orjson.dumps(part.input).decode()
        return [BlockStart(i, ToolCallPart(part.id, part.name, {})),
                *(ToolInputDelta(i, c) for c in _chunks(raw)), BlockStop(i)]
    return [BlockStart(i, part), BlockStop(i)]


def replay_events(final: FinalMessage) -> list[list[StreamEvent]]:
    """Batches of events, one block per batch, so that a stream is written in several pieces."""
    u = final.usage
    start_usage = Usage(u.input_tokens, 0, u.cache_read_tokens, u.cache_creation_tokens, 0,
                        u.extra, u.extra_protocol)
    batches: list[list[StreamEvent]] = [[MessageStart(None, final.model, start_usage,
                                                      dict(final.extra) or None)]]
    batches += [_block_events(i, part) for i, part in enumerate(final.blocks)]
    batches.append([MessageDelta(final.stop_reason, final.stop_sequence, u), MessageStop()])
    return batches
