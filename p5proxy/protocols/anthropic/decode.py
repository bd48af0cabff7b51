"""Anthropic Messages request body -> ChatRequest."""

from __future__ import annotations

from typing import Any

from ...canonical import (ChatRequest, ImagePart, Message, Part, RawPart, TextPart, Thinking,
                          ThinkingPart, Tool, ToolCallPart, ToolChoice, ToolResultPart)
from .._check import (fail, need_dict, need_int, need_list, need_str, opt_bool, opt_dict,
                      opt_number, opt_str, tool_fields)

__all__ = ["decode_request", "decode_blocks", "REQUEST_FIELDS"]

# The Messages API's request fields: a large body with only these is split in one pass
# (rawjson.py); one with another field is parsed whole, with the same result.
REQUEST_FIELDS = ("model", "messages", "max_tokens", "system", "metadata", "stop_sequences",
                  "stream", "temperature", "top_k", "top_p", "tools", "tool_choice", "thinking",
                  "service_tier", "container", "mcp_servers", "context_management",
                  "output_config", "output_format", "inference_geo")

_ROLES = ("user", "assistant", "system")
_THINKING_TYPES = ("enabled", "disabled", "adaptive")
_FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


def _extras(block: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any] | None:
    for key in block:
        if key not in known:   # rare: build the dict only then
            return {k: v for k, v in block.items() if k not in known}
    return None


def _decode_block(block: Any, path: str) -> Part:
    need_dict(block, path)
    btype = block.get("type")
    if btype == "text":
        return TextPart(need_str(block.get("text"), f"{path}.text", empty_ok=True),
                        _extras(block, ("type", "text")))
    if btype == "image":
        source = need_dict(block.get("source"), f"{path}.source")
        stype = source.get("type")
        if stype == "base64":
            return ImagePart(media_type=need_str(source.get("media_type"), f"{path}.source.media_type"),
                             data=need_str(source.get("data"), f"{path}.source.data"),
                             meta=_extras(block, ("type", "source")))
        if stype == "url":
            return ImagePart(url=need_str(source.get("url"), f"{path}.source.url"),
                             meta=_extras(block, ("type", "source")))
        return RawPart(block, "anthropic")
    if btype == "tool_use":
        tool_input = block.get("input")
        return ToolCallPart(need_str(block.get("id"), f"{path}.id"),
                            need_str(block.get("name"), f"{path}.name"),
                            need_dict(tool_input, f"{path}.input") if tool_input is not None else {},
                            _extras(block, ("type", "id", "name", "input")))
    if btype == "tool_result":
        content = block.get("content")
        if content is None:
            parts: list[Part] = []
        elif isinstance(content, str):
            parts = [TextPart(content)]
        else:
            parts = decode_blocks(need_list(content, f"{path}.content"), f"{path}.content")
        return ToolResultPart(need_str(block.get("tool_use_id"), f"{path}.tool_use_id"), parts,
                              opt_bool(block.get("is_error"), f"{path}.is_error"),
                              _extras(block, ("type", "tool_use_id", "content", "is_error")))
    if btype == "thinking":
        return ThinkingPart(need_str(block.get("thinking"), f"{path}.thinking", empty_ok=True),
                            opt_str(block.get("signature"), f"{path}.signature") or None)
    if btype == "redacted_thinking":
        return ThinkingPart("", redacted=need_str(block.get("data"), f"{path}.data"))
    if not isinstance(btype, str):
        fail(f"{path}.type", "Input should be a valid string")
    if btype == "document":
        need_dict(block.get("source"), f"{path}.source")
    return RawPart(block, "anthropic")   # documents, server tool blocks, search results...


def decode_blocks(blocks: list[Any], path: str) -> list[Part]:
    return [_decode_block(b, f"{path}.{i}") for i, b in enumerate(blocks)]


def _content(content: Any, path: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    return decode_blocks(need_list(content, path), path)


def _system(value: Any) -> list[TextPart]:
    if value is None:
        return []
    if isinstance(value, str):
        return [TextPart(value)] if value else []
    out = []
    for i, block in enumerate(need_list(value, "system")):
        need_dict(block, f"system.{i}")
        if block.get("type") != "text":
            fail(f"system.{i}.type", "system blocks must be of type text")
        out.append(TextPart(need_str(block.get("text"), f"system.{i}.text", empty_ok=True),
                            _extras(block, ("type", "text"))))
    return out


def _tools(value: Any) -> list[Tool]:
    tools = []
    for i, tool in enumerate(need_list(value, "tools")):
        if not isinstance(tool, dict):
            need_dict(tool, f"tools.{i}")
        ttype = tool.get("type")
        if ttype not in (None, "custom"):   # server / Anthropic-defined tool (web_search_...)
            tools.append(Tool(str(tool.get("name") or ttype), None, {}, raw=tool))
            continue
        name, description, schema = tool_fields(tool, i, "", "input_schema")
        tools.append(Tool(name, description, schema,
                          _extras(tool, ("type", "name", "description", "input_schema"))))
    return tools


def _tool_choice(value: Any) -> ToolChoice | None:
    if value is None:
        return None
    need_dict(value, "tool_choice")
    ctype = value.get("type")
    if ctype not in ("auto", "any", "tool", "none"):
        fail("tool_choice.type", f"must be one of auto, any, tool, none; got {ctype!r}")
    name = need_str(value.get("name"), "tool_choice.name") if ctype == "tool" else None
    return ToolChoice(ctype, name, opt_bool(value.get("disable_parallel_tool_use"),
                                            "tool_choice.disable_parallel_tool_use"))


def _thinking(value: Any, output_config: Any) -> Thinking | None:
    effort = opt_str(output_config.get("effort"), "output_config.effort") \
        if isinstance(output_config, dict) else None
    if value is None:
        return Thinking("adaptive", effort=effort) if effort else None
    need_dict(value, "thinking")
    ttype = need_str(value.get("type"), "thinking.type")
    if ttype not in _THINKING_TYPES:
        fail("thinking.type", f"must be one of {', '.join(_THINKING_TYPES)}; got {ttype!r}")
    budget = value.get("budget_tokens")
    if budget is not None:
        budget = need_int(budget, "thinking.budget_tokens")
    return Thinking(ttype, budget, effort)


def _response_format(output_config: Any) -> dict[str, Any] | None:
    if opt_dict(output_config, "output_config") is None:
        return None
    fmt = opt_dict(output_config.get("format"), "output_config.format")
    if fmt is None:
        return None
    schema = opt_dict(fmt.get("schema"), "output_config.format.schema")
    if fmt.get("type") == "json_schema":
        return {"type": "json_schema", "schema": schema or {}, "name": fmt.get("name")}
    return None


def _user_id(metadata: Any) -> str | None:
    if opt_dict(metadata, "metadata") is None:
        return None
    return opt_str(metadata.get("user_id"), "metadata.user_id")


def decode_request(body: Any, headers: Any = None, *, count_only: bool = False) -> ChatRequest:
    """Validate types lightly and build the canonical request; raises InvalidRequest naming
    the field. `count_only` is for count_tokens, whose body has no max_tokens."""
    if not isinstance(body, dict):
        fail("body", "the request body must be a JSON object")
    model = need_str(body.get("model"), "model")
    max_tokens = None
    if not count_only or body.get("max_tokens") is not None:
        if "max_tokens" not in body:
            fail("max_tokens", "Field required")
        max_tokens = need_int(body["max_tokens"], "max_tokens", minimum=1)
    messages = []
    for i, msg in enumerate(need_list(body.get("messages"), "messages")):
        need_dict(msg, f"messages.{i}")
        role = msg.get("role")
        if role not in _ROLES:
            fail(f"messages.{i}.role", f"must be one of user, assistant, system; got {role!r}")
        messages.append(Message(role, _content(msg.get("content"), f"messages.{i}.content")))
    stop = body.get("stop_sequences")
    temperature, top_p, top_k = body.get("temperature"), body.get("top_p"), body.get("top_k")
    req = ChatRequest(
        model=model, messages=messages, ingress="anthropic", raw=body,
        system=_system(body.get("system")),
        tools=_tools(body["tools"]) if body.get("tools") is not None else [],
        tool_choice=_tool_choice(body.get("tool_choice")),
        max_tokens=max_tokens,
        temperature=opt_number(temperature, "temperature", minimum=0, maximum=2),
        top_p=opt_number(top_p, "top_p", minimum=0, maximum=1),
        top_k=need_int(top_k, "top_k") if top_k is not None else None,
        stop=[need_str(s, f"stop_sequences.{i}") for i, s in
              enumerate(need_list(stop, "stop_sequences"))] if stop is not None else [],
        stream=opt_bool(body.get("stream"), "stream"),
        thinking=_thinking(body.get("thinking"), body.get("output_config")),
        response_format=_response_format(body.get("output_config")),
        user=_user_id(body.get("metadata")),
    )
    if headers is not None:
        req.headers = {h: headers[h] for h in _FORWARDED_HEADERS if h in headers}
    return req
