"""Local token estimate for count_tokens and for message_start when the upstream reports usage
only at the end. No tokenizer ships for every upstream model, so this is a calibrated guess:
about 3.5 characters per token for prose and JSON, a fixed cost per image."""

from __future__ import annotations

import orjson

from .canonical import ChatRequest, ImagePart, Part, RawPart, TextPart, ThinkingPart, ToolCallPart, ToolResultPart
from .rawjson import schema_json

__all__ = ["estimate_input_tokens", "estimate_from_body_size"]

_IMAGE_TOKENS = 1600        # a ~1.1 megapixel image, Anthropic's (w*h)/750 rule
_PER_MESSAGE = 4
_PER_TOOL = 10


def _chars(part: Part) -> int:
    if isinstance(part, TextPart):
        return len(part.text)
    if isinstance(part, ThinkingPart):
        return len(part.text)
    if isinstance(part, ToolCallPart):
        return len(part.name) + len(orjson.dumps(part.input))
    if isinstance(part, ToolResultPart):
        return sum(_chars(p) for p in part.content if not isinstance(p, ImagePart))
    if isinstance(part, RawPart):
        return len(orjson.dumps(part.data)) // 2   # documents: base64 inflates by about 4/3
    return 0


def _images(parts: list[Part]) -> int:
    n = 0
    for part in parts:
        if isinstance(part, ImagePart):
            n += 1
        elif isinstance(part, ToolResultPart):
            n += _images(part.content)
    return n


def _image_chars(parts: list[Part]) -> int:
    n = 0
    for part in parts:
        if isinstance(part, ImagePart):
            n += len(part.data or part.url or "")
        elif isinstance(part, ToolResultPart):
            n += _image_chars(part.content)
    return n


def estimate_from_body_size(req: ChatRequest, body_size: int) -> int:
    """A cheaper estimate for the hot path (message_start of a translated stream): the size of
    the JSON body less inline images, at ~4 characters a token to allow for JSON syntax."""
    images = sum(_images(m.parts) for m in req.messages)
    image_chars = sum(_image_chars(m.parts) for m in req.messages) if images else 0
    return max(1, int((body_size - image_chars) / 4) + _IMAGE_TOKENS * images)


def estimate_input_tokens(req: ChatRequest) -> int:
    chars = sum(len(p.text) for p in req.system)
    tokens = 0
    for tool in req.tools:
        chars += len(tool.name) + len(tool.description or "")
        schema = tool.raw if tool.raw is not None else schema_json(tool.input_schema)
        chars += len(orjson.dumps(schema))
        tokens += _PER_TOOL
    for msg in req.messages:
        chars += sum(_chars(p) for p in msg.parts)
        tokens += _PER_MESSAGE + _IMAGE_TOKENS * _images(msg.parts)
    return max(1, tokens + int(chars / 3.5))
