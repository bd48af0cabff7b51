"""ChatRequest -> OpenAI Chat Completions request body (for OpenAI-compatible upstreams)."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from ...canonical import (ChatRequest, ImagePart, Message, Part, RawPart, TextPart, ThinkingPart,
                          ToolCallPart, ToolResultPart)
from ...rawjson import without_meta_schema
from ...thinking import is_minted_signature

__all__ = ["encode_request", "system_text"]

log = logging.getLogger(__name__)

_BILLING_HEADER = "x-anthropic-billing-header:"


def system_text(parts: list[TextPart]) -> str:
    """Join system blocks; drop Claude Code's per-conversation billing line, which would change
    the prompt prefix every conversation and defeat the upstream's prefix cache."""
    return "\n".join(p.text for p in parts if p.text and not p.text.startswith(_BILLING_HEADER))


def _image(part: ImagePart) -> dict[str, Any]:
    url = f"data:{part.media_type or 'image/png'};base64,{part.data}" if part.data is not None \
        else part.url
    return {"type": "image_url", "image_url": {"url": url}}


def _raw_anthropic(data: dict[str, Any]) -> dict[str, Any] | None:
    """Anthropic-only blocks: documents degrade to text or a file part; the rest is dropped."""
    if data.get("type") == "document":
        source = data.get("source") or {}
        if source.get("type") == "text":
            return {"type": "text", "text": str(source.get("data", ""))}
        if source.get("type") == "base64":
            return {"type": "file", "file": {
                "file_data": f"data:{source.get('media_type')};base64,{source.get('data')}",
                "filename": data.get("title") or "document.pdf"}}
    log.info("dropping %s block: no OpenAI equivalent", data.get("type"))
    return None


def _content_parts(parts: list[Part]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                out.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            out.append(_image(part))
        elif isinstance(part, RawPart):
            block = part.data if part.protocol == "openai" else _raw_anthropic(part.data)
            if block is not None:
                out.append(block)
    return out


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A plain string when there is only text: the form every compatible server accepts."""
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _tool_result(part: ToolResultPart, images: list[dict[str, Any]]) -> dict[str, Any]:
    texts = []
    for inner in part.content:
        if isinstance(inner, TextPart):
            texts.append(inner.text)
        elif isinstance(inner, ImagePart):
            images.append(_image(inner))   # tool messages take text only: image follows as user
            texts.append("[image attached below]")
    text = "\n".join(texts)
    if part.is_error:
        text = f"[tool error] {text}"
    return {"role": "tool", "tool_call_id": part.tool_call_id, "content": text}


def _user(msg: Message, out: list[dict[str, Any]]) -> None:
    images: list[dict[str, Any]] = []
    rest: list[Part] = []
    for part in msg.parts:
        if isinstance(part, ToolResultPart):
            out.append(_tool_result(part, images))
        else:
            rest.append(part)
    parts = images + _content_parts(rest)
    if parts:
        out.append({"role": "user", "content": _content(parts)})


def _assistant(msg: Message) -> dict[str, Any] | None:
    texts, reasoning, calls = [], [], []
    for part in msg.parts:
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ThinkingPart) and part.text and \
                (part.signature is None or is_minted_signature(part.signature)):
            # reasoning that came from an OpenAI-format upstream goes back as reasoning_content
            # (DeepSeek requires it); Claude's own signed thinking means nothing to others
            reasoning.append(part.text)
        elif isinstance(part, ToolCallPart):
            calls.append({"id": part.id, "type": "function",
                          "function": {"name": part.name,
                                       "arguments": orjson.dumps(part.input).decode()}})
    if not texts and not calls and not reasoning:
        return None
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        out["tool_calls"] = calls
    if reasoning:   # DeepSeek-style thinking mode wants its reasoning passed back
        out["reasoning_content"] = "".join(reasoning)
    return out


def _messages(req: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = system_text(req.system)
    if system:
        out.append({"role": "system", "content": system})
    for msg in req.messages:
        if msg.role == "user":
            _user(msg, out)
        elif msg.role == "assistant":
            encoded = _assistant(msg)
            if encoded:
                out.append(encoded)
        else:
            text = system_text([p for p in msg.parts if isinstance(p, TextPart)])
            if text:
                out.append({"role": "system", "content": text})
    return out


def _tool_choice(req: ChatRequest) -> Any:
    tc = req.tool_choice
    if tc is None:
        return None
    if tc.type == "tool":
        return {"type": "function", "function": {"name": tc.name}}
    return {"auto": "auto", "any": "required", "none": "none"}.get(tc.type, "auto")


def encode_request(req: ChatRequest, *, model: str, max_tokens: int | None, stream: bool,
                   max_tokens_field: str = "max_tokens", reasoning_effort: str | None = None,
                   send_top_k: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": _messages(req)}
    tools = [t for t in req.tools if t.raw is None]   # server tools only run at Anthropic
    if tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, **({"description": t.description} if t.description else {}),
            "parameters": without_meta_schema(t.input_schema)}} for t in tools]
        choice = _tool_choice(req)
        if choice is not None:
            body["tool_choice"] = choice
        if req.tool_choice is not None and req.tool_choice.disable_parallel:
            body["parallel_tool_calls"] = False
    if max_tokens is not None:
        body[max_tokens_field] = max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None and send_top_k:
        body["top_k"] = req.top_k
    if req.stop:
        body["stop"] = req.stop[:4]
    if reasoning_effort:
        body["reasoning_effort"] = reasoning_effort
    fmt = req.response_format
    if fmt is not None:
        body["response_format"] = fmt if fmt["type"] == "json_object" else {
            "type": "json_schema",
            "json_schema": {"name": fmt.get("name") or "response", "schema": fmt.get("schema") or {}}}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}   # usage is needed even if not asked
    return body
