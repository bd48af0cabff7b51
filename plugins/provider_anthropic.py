"""Provider `anthropic`: the Anthropic Messages API or an Anthropic-compatible endpoint.

`base_url` is the host (https://api.anthropic.com); a trailing /v1 is accepted too.
Anthropic clients' `anthropic-version` and `anthropic-beta` headers are forwarded unchanged.
"""

from __future__ import annotations

from typing import Any

import orjson

from p5proxy import hookimpl
from p5proxy.canonical import ChatRequest, StreamEvent
from p5proxy.config import Config, ProviderConfig
from p5proxy.errors import UpstreamError
from p5proxy.protocols import anthropic as codec
from p5proxy.provider import Provider, Route, StreamParser, UpstreamRequest
from p5proxy.rawjson import json_default
from p5proxy.thinking import is_minted_signature

__all__ = ["AnthropicProvider"]

DEFAULT_VERSION = "2023-06-01"


def _strip_minted_thinking(messages: list[Any]) -> list[Any]:
    """Thinking that the gateway minted for another upstream's reasoning would fail Anthropic's
    signature check: drop those blocks (prior-turn thinking may be omitted)."""
    out = []
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list) and any(
                isinstance(b, dict) and b.get("type") == "thinking"
                and is_minted_signature(b.get("signature")) for b in content):
            msg = {**msg, "content": [b for b in content if not (
                isinstance(b, dict) and b.get("type") == "thinking"
                and is_minted_signature(b.get("signature")))]}
        out.append(msg)
    return out


class AnthropicProvider(Provider):
    protocol = "anthropic"

    def __init__(self, config: ProviderConfig, settings: Config) -> None:
        super().__init__(config, settings)
        base = config.base_url[:-3] if config.base_url.endswith("/v1") else config.base_url
        self.url = base + "/v1/messages"
        self.extra_headers = dict(config.headers)

    def build_request(self, req: ChatRequest, route: Route) -> UpstreamRequest:
        if req.ingress == "anthropic" and not req.rewritten:
            body = dict(req.raw)   # same protocol: pass through, unknown fields included
            body["model"] = route.upstream_model
            body["max_tokens"] = route.clamp_max_tokens(req.max_tokens, None)
            if isinstance(body.get("messages"), list):
                body["messages"] = _strip_minted_thinking(body["messages"])
            headers = {"anthropic-version": DEFAULT_VERSION, **req.headers}
            if headers["anthropic-version"] >= "2026-10-21":
                for key in ("temperature", "top_p", "top_k"):   # removed in that version: 400
                    body.pop(key, None)
        else:
            max_tokens = route.clamp_max_tokens(req.max_tokens, self.settings.default_max_tokens)
            body = codec.encode_request(req, model=route.upstream_model,
                                        max_tokens=max_tokens or self.settings.default_max_tokens,
                                        stream=req.stream)
            # 2023-06-01 still accepts temperature/top_p, which OpenAI clients send
            headers = {"anthropic-version": DEFAULT_VERSION}
        headers["Content-Type"] = "application/json"
        headers.update(self.extra_headers)
        # json_default: large requests keep their tool schemas as JSON bytes (rawjson.py)
        return UpstreamRequest(self.url, orjson.dumps(body, default=json_default), headers,
                               req.stream)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def stream_parser(self) -> StreamParser:
        return codec.AnthropicStreamParser(self.name)

    def parse_response(self, body: dict[str, Any]) -> list[StreamEvent]:
        return codec.parse_response(body, self.name)

    def map_error(self, status: int, body: Any, headers: Any) -> UpstreamError:
        return codec.parse_error(status, body, provider=self.name,
                                 retry_after=headers.get("retry-after"))


@hookimpl(trylast=True)
def p5proxy_register_providers(register: Any, config: Config) -> None:
    register("anthropic", AnthropicProvider)
