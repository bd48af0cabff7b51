"""OpenAI Chat Completions request body -> ChatRequest."""

from __future__ import annotations

from typing import Any

from ...aggregate import parse_tool_input
from ...canonical import (ChatRequest, ImagePart, Message, Part, RawPart, TextPart, Thinking,
                          ThinkingPart, Tool, ToolCallPart, ToolChoice, ToolResultPart)
from .._check import (fail, need_dict, need_int, need_list, need_str, opt_bool, opt_dict,
                      opt_number, opt_str, tool_fields, type_name)

__all__ = ["decode_request", "parse_data_url", "REQUEST_FIELDS"]

# The Chat Completions request fields, and a few that OpenAI-compatible servers add: a large
# body with only these is split in one pass (rawjson.py); one with another field is parsed
# whole, with the same result.
REQUEST_FIELDS = ("model", "messages", "tools", "tool_choice", "parallel_tool_calls",
                  "functions", "function_call", "temperature", "top_p", "n", "stream",
                  "stream_options", "stop", "max_tokens", "max_completion_tokens",
                  "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
                  "top_logprobs", "user", "safety_identifier", "prompt_cache_key", "seed",
                  "response_format", "reasoning_effort", "verbosity", "service_tier", "store",
                  "metadata", "modalities", "audio", "prediction", "web_search_options",
                  "top_k", "min_p", "repetition_penalty", "chat_template_kwargs")


def parse_data_url(url: str) -> tuple[str, str] | None:
    """`data:image/png;base64,AAAA` -> ("image/png", "AAAA")."""
    if not url.startswith("data:"):
        return None
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        return None
    return header[5:].split(";")[0] or "image/png", payload


def _text_of(content: Any, path: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(need_list(content, path)):
        need_dict(part, f"{path}.{i}")
        if part.get("type") in ("text", "input_text", "output_text"):
            texts.append(need_str(part.get("text"), f"{path}.{i}.text", empty_ok=True))
        elif part.get("type") == "refusal":
            texts.append(str(part.get("refusal") or ""))
    return "".join(texts)


def _user_parts(content: Any, path: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    if content is None:
        return []
    parts: list[Part] = []
    for i, part in enumerate(need_list(content, path)):
        need_dict(part, f"{path}.{i}")
        ptype = part.get("type")
        if ptype == "text":
            parts.append(TextPart(need_str(part.get("text"), f"{path}.{i}.text", empty_ok=True)))
        elif ptype == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            url = need_str(url, f"{path}.{i}.image_url.url")
            inline = parse_data_url(url)
            parts.append(ImagePart(media_type=inline[0], data=inline[1]) if inline
                         else ImagePart(url=url))
        elif isinstance(ptype, str):
            parts.append(RawPart(part, "openai"))   # input_audio, file...
        else:
            fail(f"{path}.{i}.type", "Input should be a valid string")
    return parts


def _assistant_parts(msg: dict[str, Any], path: str) -> list[Part]:
    parts: list[Part] = []
    reasoning = msg.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        parts.append(ThinkingPart(reasoning))
    text = _text_of(msg.get("content"), f"{path}.content")
    if text:
        parts.append(TextPart(text))
    calls = msg.get("tool_calls")
    if calls is not None:
        for j, call in enumerate(need_list(calls, f"{path}.tool_calls")):
            need_dict(call, f"{path}.tool_calls.{j}")
            fn = need_dict(call.get("function"), f"{path}.tool_calls.{j}.function")
            args = fn.get("arguments")
            if args is not None and not isinstance(args, (str, dict)):
                fail(f"{path}.tool_calls.{j}.function.arguments",
                     f"Input should be a valid string, got {type_name(args)}")
            parts.append(ToolCallPart(need_str(call.get("id"), f"{path}.tool_calls.{j}.id"),
                                      need_str(fn.get("name"), f"{path}.tool_calls.{j}.function.name"),
                                      args if isinstance(args, dict) else parse_tool_input(args or "")))
    legacy = msg.get("function_call")
    if isinstance(legacy, dict) and legacy.get("name"):
        args = legacy.get("arguments")
        parts.append(ToolCallPart(str(legacy["name"]), str(legacy["name"]),
                                  parse_tool_input(args if isinstance(args, str) else "")))
    return parts


def _messages(raw: Any) -> tuple[list[TextPart], list[Message]]:
    system: list[TextPart] = []
    messages: list[Message] = []
    for i, msg in enumerate(need_list(raw, "messages")):
        path = f"messages.{i}"
        need_dict(msg, path)
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _text_of(msg.get("content"), f"{path}.content")
            if not messages:
                system.append(TextPart(text))       # leading: the system prompt
            else:
                messages.append(Message("system", [TextPart(text)]))
        elif role == "user":
            messages.append(Message("user", _user_parts(msg.get("content"), f"{path}.content")))
        elif role == "assistant":
            messages.append(Message("assistant", _assistant_parts(msg, path)))
        elif role in ("tool", "function"):
            call_id = msg.get("tool_call_id") if role == "tool" else msg.get("name")
            content = msg.get("content")
            result_parts: list[Part] = (
                _user_parts(content, f"{path}.content") if isinstance(content, list)
                else [TextPart(_text_of(content, f"{path}.content"))])
            part = ToolResultPart(need_str(call_id, f"{path}.tool_call_id"), result_parts)
            # consecutive results of one parallel batch share one user turn
            if messages and messages[-1].role == "user" and \
                    all(isinstance(p, ToolResultPart) for p in messages[-1].parts):
                messages[-1].parts.append(part)
            else:
                messages.append(Message("user", [part]))
        else:
            fail(f"{path}.role", f"must be one of system, developer, user, assistant, tool; got {role!r}")
    return system, messages


def _tools(raw: Any) -> list[Tool]:
    tools = []
    for i, tool in enumerate(need_list(raw, "tools")):
        if not isinstance(tool, dict):
            need_dict(tool, f"tools.{i}")
        if tool.get("type", "function") != "function":
            continue   # custom / built-in tools have no Anthropic equivalent; kept in raw
        fn = tool.get("function")
        if not isinstance(fn, dict):
            need_dict(fn, f"tools.{i}.function")
        name, description, params = tool_fields(fn, i, ".function", "parameters")
        meta = {"strict": fn["strict"]} if fn.get("strict") is not None else None
        tools.append(Tool(name, description, params, meta))
    return tools


def _tool_choice(raw: Any, parallel: Any) -> ToolChoice | None:
    disable_parallel = parallel is False
    if raw is None:
        return ToolChoice("auto", None, True) if disable_parallel else None
    if isinstance(raw, str):
        mapped = {"auto": "auto", "required": "any", "none": "none"}.get(raw)
        if mapped is None:
            fail("tool_choice", f"must be one of none, auto, required or a function; got {raw!r}")
        return ToolChoice(mapped, None, disable_parallel)
    need_dict(raw, "tool_choice")
    if raw.get("type") == "function":
        fn = need_dict(raw.get("function"), "tool_choice.function")
        return ToolChoice("tool", need_str(fn.get("name"), "tool_choice.function.name"),
                          disable_parallel)
    return ToolChoice("auto", None, disable_parallel)   # allowed_tools etc.: let the model pick


def _response_format(raw: Any) -> dict[str, Any] | None:
    if opt_dict(raw, "response_format") is None:
        return None
    rtype = need_str(raw.get("type"), "response_format.type")
    if rtype == "json_schema":
        spec = need_dict(raw.get("json_schema"), "response_format.json_schema")
        schema = opt_dict(spec.get("schema"), "response_format.json_schema.schema")
        return {"type": "json_schema", "schema": schema or {}, "name": spec.get("name")}
    if raw.get("type") == "json_object":
        return {"type": "json_object"}
    return None


def decode_request(body: Any, headers: Any = None) -> ChatRequest:
    if not isinstance(body, dict):
        fail("body", "the request body must be a JSON object")
    model = need_str(body.get("model"), "model")
    system, messages = _messages(body.get("messages"))
    if not messages and not system:
        fail("messages", "must contain at least one message")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is not None:
        max_tokens = need_int(max_tokens, "max_completion_tokens", minimum=1)
    if body.get("max_tokens") is not None:
        legacy = need_int(body["max_tokens"], "max_tokens", minimum=1)
        max_tokens = legacy if max_tokens is None else max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    effort = opt_str(body.get("reasoning_effort"), "reasoning_effort")
    stream_options = opt_dict(body.get("stream_options"), "stream_options")
    if stream_options is not None:
        opt_bool(stream_options.get("include_usage"), "stream_options.include_usage")
    if not _SAMPLING.isdisjoint(body):   # most requests send none of them
        _check_sampling(body)
    temperature, top_p = body.get("temperature"), body.get("top_p")
    return ChatRequest(
        model=model, messages=messages, ingress="openai", raw=body, system=system,
        tools=_tools(body["tools"]) if body.get("tools") is not None else [],
        tool_choice=_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls")),
        max_tokens=max_tokens,
        temperature=opt_number(temperature, "temperature", minimum=0, maximum=2),
        top_p=opt_number(top_p, "top_p", minimum=0, maximum=1),
        stop=[need_str(s, f"stop.{i}") for i, s in enumerate(need_list(stop, "stop"))]
        if stop is not None else [],
        stream=opt_bool(body.get("stream"), "stream"),
        include_usage=isinstance(stream_options, dict) and stream_options.get("include_usage") is True,
        thinking=(Thinking("disabled") if effort == "none" else Thinking("enabled", effort=effort))
        if effort is not None else None,
        response_format=_response_format(body.get("response_format")),
        user=opt_str(body.get("safety_identifier"), "safety_identifier")
        or opt_str(body.get("user"), "user") or None,
    )


_SAMPLING = frozenset(("n", "seed", "presence_penalty", "frequency_penalty", "logprobs",
                       "top_logprobs", "parallel_tool_calls", "metadata", "logit_bias"))


def _check_sampling(body: dict[str, Any]) -> None:
    """Fields passed on as they are to OpenAI-style upstreams (and dropped for others): their
    types are checked here, so that a bad one is a 400 naming it, whatever the upstream."""
    if body.get("n") is not None and need_int(body["n"], "n", minimum=1) > 1 \
            and body.get("stream") is True:   # (one canonical stream carries one choice)
        fail("n", "only one choice can be streamed through this gateway; "
                  "ask for several with stream: false")
    if body.get("seed") is not None:
        need_int(body["seed"], "seed", minimum=-(2 ** 63), maximum=2 ** 63 - 1)
    for name in ("presence_penalty", "frequency_penalty"):
        opt_number(body.get(name), name, minimum=-2, maximum=2)
    opt_bool(body.get("logprobs"), "logprobs")
    if body.get("top_logprobs") is not None:
        need_int(body["top_logprobs"], "top_logprobs")
    opt_bool(body.get("parallel_tool_calls"), "parallel_tool_calls")
    opt_dict(body.get("metadata"), "metadata")
    opt_dict(body.get("logit_bias"), "logit_bias")
