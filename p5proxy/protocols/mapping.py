"""Protocol-to-protocol tables: usage arithmetic, stop reasons, error types."""

from __future__ import annotations

from typing import Any

from ..canonical import Usage

__all__ = ["usage_from_openai", "usage_to_openai", "usage_from_anthropic", "usage_to_anthropic",
           "stop_from_openai", "stop_to_openai"]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_openai(u: dict[str, Any]) -> Usage:
    """prompt_tokens includes cached tokens; Anthropic's input_tokens does not."""
    details = u.get("prompt_tokens_details") or {}
    cached = _int(details.get("cached_tokens")) or _int(u.get("prompt_cache_hit_tokens"))
    written = _int(details.get("cache_write_tokens"))
    completion = u.get("completion_tokens_details") or {}
    return Usage(input_tokens=max(_int(u.get("prompt_tokens")) - cached - written, 0),
                 output_tokens=_int(u.get("completion_tokens")),
                 cache_read_tokens=cached, cache_creation_tokens=written,
                 reasoning_tokens=_int(completion.get("reasoning_tokens")),
                 extra=u, extra_protocol="openai")


def usage_to_openai(u: Usage) -> dict[str, Any]:
    prompt = u.prompt_tokens
    details: dict[str, Any] = {"cached_tokens": u.cache_read_tokens}
    if u.cache_creation_tokens:
        details["cache_write_tokens"] = u.cache_creation_tokens
    completion: dict[str, Any] = {"reasoning_tokens": u.reasoning_tokens}
    out: dict[str, Any] = {}
    if u.extra and u.extra_protocol == "openai":   # same protocol: keep the upstream's details
        out.update(u.extra)
        details = {**(u.extra.get("prompt_tokens_details") or {}), **details}
        completion = {**(u.extra.get("completion_tokens_details") or {}), **completion}
    out.update({"prompt_tokens": prompt, "completion_tokens": u.output_tokens,
                "total_tokens": prompt + u.output_tokens, "prompt_tokens_details": details,
                "completion_tokens_details": completion})
    return out


def usage_from_anthropic(u: dict[str, Any], into: Usage | None = None) -> Usage:
    """Fields present overwrite (message_delta usage is cumulative); absent ones are kept."""
    usage = into if into is not None else Usage()
    if "input_tokens" in u:
        usage.input_tokens = _int(u["input_tokens"])
    if "output_tokens" in u:
        usage.output_tokens = _int(u["output_tokens"])
    if "cache_read_input_tokens" in u:
        usage.cache_read_tokens = _int(u["cache_read_input_tokens"])
    if "cache_creation_input_tokens" in u:
        usage.cache_creation_tokens = _int(u["cache_creation_input_tokens"])
    details = u.get("output_tokens_details")
    if isinstance(details, dict) and "thinking_tokens" in details:
        usage.reasoning_tokens = _int(details["thinking_tokens"])
    extra = {k: v for k, v in u.items() if k not in _ANTHROPIC_COUNTERS}
    if extra:
        usage.extra = {**(usage.extra or {}), **extra} if usage.extra_protocol == "anthropic" else extra
        usage.extra_protocol = "anthropic"
    return usage


_ANTHROPIC_COUNTERS = frozenset(("input_tokens", "output_tokens", "cache_read_input_tokens",
                                 "cache_creation_input_tokens"))


def usage_to_anthropic(u: Usage) -> dict[str, Any]:
    out = {"input_tokens": u.input_tokens,
           "cache_creation_input_tokens": u.cache_creation_tokens,
           "cache_read_input_tokens": u.cache_read_tokens,
           "output_tokens": u.output_tokens}
    if u.extra and u.extra_protocol == "anthropic":   # same protocol: keep the upstream's details
        return {**out, **u.extra}   # extra holds no counters: see usage_from_anthropic
    return out


_STOP_FROM_OPENAI = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                     "function_call": "tool_use", "content_filter": "refusal"}
_STOP_TO_OPENAI = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
                   "max_tokens": "length", "model_context_window_exceeded": "length",
                   "tool_use": "tool_calls", "refusal": "content_filter"}


def stop_from_openai(finish_reason: str | None) -> str:
    return _STOP_FROM_OPENAI.get(finish_reason or "", "end_turn")


def stop_to_openai(stop_reason: str | None) -> str:
    return _STOP_TO_OPENAI.get(stop_reason or "", "stop")
