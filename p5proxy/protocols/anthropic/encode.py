"""ChatRequest -> Anthropic Messages request body (for Anthropic upstreams)."""

from __future__ import annotations

import logging
from typing import Any

from ...canonical import (ChatRequest, ImagePart, Message, Part, RawPart, TextPart, ThinkingPart,
                          ToolCallPart, ToolResultPart)
from ...ids import anthropic_safe_id
from ...rawjson import schema_json
from ...thinking import is_minted_signature
from .._check import fail

__all__ = ["encode_request", "encode_parts", "EFFORT_BUDGETS"]

log = logging.getLogger(__name__)

# OpenAI reasoning_effort -> Anthropic budget_tokens (documented in the README).
EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32000,
                  "max": 32000}


def _encode_part(part: Part) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        if not part.text:
            return None   # Anthropic rejects empty text blocks
        block: dict[str, Any] = {"type": "text", "text": part.text}
    elif isinstance(part, ImagePart):
        source = ({"type": "base64", "media_type": part.media_type or "image/png", "data": part.data}
                  if part.data is not None else {"type": "url", "url": part.url})
        block = {"type": "image", "source": source}
    elif isinstance(part, ToolCallPart):
        block = {"type": "tool_use", "id": anthropic_safe_id(part.id), "name": part.name,
                 "input": part.input}
    elif isinstance(part, ToolResultPart):
        block = {"type": "tool_result", "tool_use_id": anthropic_safe_id(part.tool_call_id),
                 "content": encode_parts(part.content)}
        if part.is_error:
            block["is_error"] = True
    elif isinstance(part, ThinkingPart):
        if part.redacted is not None:
            return {"type": "redacted_thinking", "data": part.redacted}
        # Only signatures Anthropic issued verify; gateway-minted or missing ones are dropped.
        if not part.signature or is_minted_signature(part.signature):
            return None
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    elif isinstance(part, RawPart):
        if part.protocol == "anthropic":
            return part.data
        return _degrade_openai_part(part.data)
    else:  # pragma: no cover - exhaustive
        return None
    if part.meta:
        block.update(part.meta)
    return block


def _degrade_openai_part(data: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI-only parts: a PDF file becomes a document; audio has no Claude equivalent."""
    file = data.get("file") if data.get("type") == "file" else None
    if isinstance(file, dict) and str(file.get("file_data", "")).startswith("data:"):
        header, _, payload = file["file_data"].partition(",")
        media_type = header[5:].split(";")[0] or "application/pdf"
        return {"type": "document", "source": {"type": "base64", "media_type": media_type,
                                                "data": payload}}
    log.info("dropping %s part: no Anthropic equivalent", data.get("type"))
    return None


def encode_parts(parts: list[Part]) -> list[dict[str, Any]]:
    return [b for b in map(_encode_part, parts) if b is not None]


def _merge_turns(messages: list[Message]) -> list[dict[str, Any]]:
    """Consecutive same-role messages become one (all results of a parallel batch must share
    one user message), with tool_result blocks first as the API requires."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        blocks = encode_parts(msg.parts)
        if not blocks:
            continue
        if out and out[-1]["role"] == msg.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": msg.role, "content": blocks})
    for turn in out:
        content = turn["content"]
        if turn["role"] == "user" and any(b.get("type") == "tool_result" for b in content):
            content.sort(key=lambda b: b.get("type") != "tool_result")   # stable: order kept
    return out


def _tool_choice(req: ChatRequest) -> dict[str, Any] | None:
    tc = req.tool_choice
    if tc is None or not req.tools:
        return None
    choice: dict[str, Any] = {"type": tc.type}
    if tc.type == "tool":
        choice["name"] = tc.name
    if tc.disable_parallel and tc.type != "none":
        choice["disable_parallel_tool_use"] = True
    return choice


def _thinking(req: ChatRequest, body: dict[str, Any]) -> None:
    th = req.thinking
    if th is None or th.type == "disabled":
        return
    if th.type in ("enabled",) and th.budget_tokens is None:
        budget = EFFORT_BUDGETS.get(th.effort or "medium", 4096)
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        # the budget counts toward max_tokens and must stay below it
        body["max_tokens"] = max(body["max_tokens"], budget + 1024)
    elif th.type == "enabled":
        body["thinking"] = {"type": "enabled", "budget_tokens": th.budget_tokens}
    else:
        body["thinking"] = {"type": th.type}
        if th.effort:
            body.setdefault("output_config", {})["effort"] = th.effort
    body.pop("temperature", None)   # sampling is not allowed together with thinking
    body.pop("top_k", None)
    choice = body.get("tool_choice")
    if choice and choice["type"] in ("any", "tool"):
        # forced tool use is rejected together with thinking: let the model choose
        body["tool_choice"] = {**choice, "type": "auto"}
        body["tool_choice"].pop("name", None)


def encode_request(req: ChatRequest, *, model: str, max_tokens: int,
                   stream: bool) -> dict[str, Any]:
    if req.raw.get("n") not in (None, 1):
        fail("n", "only n=1 is supported by this model's provider")
    # Mid-conversation system messages are hoisted into `system` (as Anthropic's own OpenAI
    # compatibility layer does): not every Anthropic-compatible endpoint takes role "system".
    system = list(req.system)
    turns = []
    for msg in req.messages:
        if msg.role == "system":
            system.extend(p for p in msg.parts if isinstance(p, TextPart))
        else:
            turns.append(msg)
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens,
                            "messages": _merge_turns(turns)}
    if system:
        body["system"] = encode_parts(system)   # type: ignore[arg-type]
    if req.tools:
        body["tools"] = [t.raw if t.raw is not None else
                         {"name": t.name, **({"description": t.description} if t.description else {}),
                          "input_schema": schema_json(t.input_schema), **(t.meta or {})}
                         for t in req.tools]
        choice = _tool_choice(req)
        if choice:
            body["tool_choice"] = choice
    if req.stop:
        body["stop_sequences"] = [s for s in req.stop if s.strip()]
    if req.temperature is not None:
        body["temperature"] = min(max(req.temperature, 0.0), 1.0)   # Anthropic's range is 0-1
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None:
        body["top_k"] = req.top_k
    if req.user:
        body["metadata"] = {"user_id": req.user[:256]}
    if req.response_format and req.response_format.get("type") == "json_schema":
        body["output_config"] = {"format": {"type": "json_schema",
                                            "schema": req.response_format.get("schema") or {}}}
    _thinking(req, body)
    if stream:
        body["stream"] = True
    return body
