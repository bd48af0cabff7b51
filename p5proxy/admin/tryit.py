"""The admin page's "try it": one small chat request through the gateway's own HTTP listener.

Going over HTTP (to the address the admin request arrived on) runs the whole path a client's
request takes: authentication, routing, translation, the request log and the metrics. With
`auth.keys` set, the first client key is used (server-side; the page never shows it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

__all__ = ["TryResult", "try_model", "PROTOCOLS"]

PROTOCOLS = ("openai", "anthropic")
_TIMEOUT = 120.0


@dataclass
class TryResult:
    ok: bool = False
    status: int | None = None
    answer: str = ""
    thinking: str = ""
    request_id: str | None = None
    ttft_ms: float | None = None       # first text (or thinking) delta; streams only
    total_ms: float | None = None
    overhead_ms: str | None = None     # the gateway's X-Gateway-Overhead-Ms header
    usage: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None
    error: str | None = None


def _body(protocol: str, model: str, prompt: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": stream,
                            "messages": [{"role": "user", "content": prompt}]}
    if protocol == "openai" and stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _feed_openai(data: dict[str, Any], result: TryResult) -> bool:
    """One chunk (or the whole answer); True when it carried text."""
    got = False
    for choice in data.get("choices") or []:
        part = choice.get("delta") or choice.get("message") or {}
        text = part.get("content")
        reasoning = part.get("reasoning_content") or part.get("reasoning")
        if isinstance(text, str) and text:
            result.answer += text
            got = True
        if isinstance(reasoning, str) and reasoning:
            result.thinking += reasoning
            got = True
        if choice.get("finish_reason"):
            result.stop_reason = str(choice["finish_reason"])
    if isinstance(data.get("usage"), dict):
        result.usage = data["usage"]
    return got


def _feed_anthropic(data: dict[str, Any], result: TryResult) -> bool:
    kind = data.get("type")
    if kind == "message":   # a whole, non-streamed answer
        for block in data.get("content") or []:
            if block.get("type") == "text":
                result.answer += str(block.get("text", ""))
            elif block.get("type") == "thinking":
                result.thinking += str(block.get("thinking", ""))
        result.stop_reason = data.get("stop_reason")
        result.usage = data.get("usage") or {}
        return True
    if kind == "content_block_delta":
        delta = data.get("delta") or {}
        if delta.get("type") == "text_delta":
            result.answer += str(delta.get("text", ""))
            return True
        if delta.get("type") == "thinking_delta":
            result.thinking += str(delta.get("thinking", ""))
            return True
    elif kind == "message_start":
        result.usage = dict((data.get("message") or {}).get("usage") or {})
    elif kind == "message_delta":
        result.stop_reason = (data.get("delta") or {}).get("stop_reason")
        result.usage.update(data.get("usage") or {})
    elif kind == "error":
        result.error = str((data.get("error") or {}).get("message") or data)
    return False


def _error_text(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:2000].decode("utf-8", "replace")
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return f"{err.get('type') or err.get('code') or 'error'}: {err['message']}"
    return str(data)[:2000]


async def try_model(base_url: str, *, protocol: str, model: str, prompt: str, max_tokens: int,
                    stream: bool, client_key: str | None) -> TryResult:
    path = "/v1/messages" if protocol == "anthropic" else "/v1/chat/completions"
    headers = {"content-type": "application/json"}
    if protocol == "anthropic":
        headers["anthropic-version"] = "2023-06-01"
    if client_key:
        headers["authorization"] = f"Bearer {client_key}"
    feed = _feed_anthropic if protocol == "anthropic" else _feed_openai
    result = TryResult()
    started = time.perf_counter()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_TIMEOUT)) as session:
            async with session.post(base_url + path, headers=headers, data=orjson.dumps(
                    _body(protocol, model, prompt, max_tokens, stream))) as resp:
                result.status = resp.status
                result.request_id = resp.headers.get("x-request-id") or resp.headers.get(
                    "request-id")
                result.overhead_ms = resp.headers.get("X-Gateway-Overhead-Ms")
                if resp.status >= 400:
                    result.error = _error_text(await resp.read())
                elif resp.content_type == "text/event-stream":
                    async for raw in resp.content:
                        line = raw.strip()
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            continue
                        try:
                            data = orjson.loads(payload)
                        except orjson.JSONDecodeError:
                            continue
                        if isinstance(data, dict):
                            if data.get("error") and protocol == "openai":
                                result.error = _error_text(payload)
                            elif feed(data, result) and result.ttft_ms is None:
                                result.ttft_ms = (time.perf_counter() - started) * 1000
                else:
                    data = orjson.loads(await resp.read())
                    if isinstance(data, dict):
                        feed(data, result)
    except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.total_ms = (time.perf_counter() - started) * 1000
    result.ok = result.error is None and result.status is not None and result.status < 400
    return result
