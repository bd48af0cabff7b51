"""Provider `openai`: any OpenAI-compatible Chat Completions upstream (OpenAI, DeepSeek, Ollama,
vLLM, llama.cpp, one-api/new-api...).

Options (under the provider, or per model): `max_tokens_field` (max_tokens |
max_completion_tokens; default max_tokens, which every compatible server knows),
`reasoning_effort` (auto: translate Anthropic thinking; or a fixed value; default: not sent),
`send_top_k` (vLLM and llama.cpp accept it), `max_output_tokens` (clamp).
"""

from __future__ import annotations

from typing import Any

import orjson

from p5proxy import hookimpl
from p5proxy.canonical import ChatRequest, StreamEvent, Thinking
from p5proxy.config import Config, ProviderConfig
from p5proxy.errors import UpstreamError
from p5proxy.protocols import openai as codec
from p5proxy.provider import Provider, Route, StreamParser, UpstreamRequest
from p5proxy.rawjson import json_default

__all__ = ["OpenAIProvider"]

_EFFORT_BY_BUDGET = ((4096, "low"), (16384, "medium"))


def _effort(thinking: Thinking | None, setting: Any) -> str | None:
    """Anthropic thinking -> reasoning_effort, only when the route asks for it: models without
    reasoning reject the parameter."""
    if not setting or thinking is None or thinking.type == "disabled":
        return None
    if setting != "auto":
        return str(setting)
    if thinking.effort:
        return {"max": "high", "xhigh": "high"}.get(thinking.effort, thinking.effort)
    budget = thinking.budget_tokens or 8192
    return next((name for limit, name in _EFFORT_BY_BUDGET if budget < limit), "high")


class OpenAIProvider(Provider):
    protocol = "openai"

    def __init__(self, config: ProviderConfig, settings: Config) -> None:
        super().__init__(config, settings)
        self.url = config.base_url + "/chat/completions"
        self.extra_headers = dict(config.headers)

    def _option(self, route: Route, key: str, default: Any = None) -> Any:
        return route.model.options.get(key, self.config.options.get(key, default))

    def build_request(self, req: ChatRequest, route: Route) -> UpstreamRequest:
        field = self._option(route, "max_tokens_field", "max_tokens")
        if req.ingress == "openai" and not req.rewritten:
            body = dict(req.raw)   # same protocol: pass through, unknown fields included
            body["model"] = route.upstream_model
            requested = body.get("max_completion_tokens", body.get("max_tokens"))
            limit = route.clamp_max_tokens(requested if isinstance(requested, int) else None, None)
            if limit is not None:
                body["max_completion_tokens" if "max_completion_tokens" in body else field] = limit
            if req.stream:   # usage is always wanted (logs, clients that asked)
                body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        else:
            body = codec.encode_request(
                req, model=route.upstream_model,
                max_tokens=route.clamp_max_tokens(req.max_tokens, None), stream=req.stream,
                max_tokens_field=field,
                reasoning_effort=_effort(req.thinking, self._option(route, "reasoning_effort")),
                send_top_k=bool(self._option(route, "send_top_k", False)))
        headers = {"Content-Type": "application/json", **self.extra_headers}
        # json_default: large requests keep their tool schemas as JSON bytes (rawjson.py)
        return UpstreamRequest(self.url, orjson.dumps(body, default=json_default), headers,
                               req.stream)

    def stream_parser(self) -> StreamParser:
        return codec.OpenAIStreamParser(self.name)

    def parse_response(self, body: dict[str, Any]) -> list[StreamEvent]:
        return codec.parse_response(body, self.name)

    def map_error(self, status: int, body: Any, headers: Any) -> UpstreamError:
        return codec.parse_error(status, body, provider=self.name,
                                 retry_after=headers.get("retry-after"))


@hookimpl(trylast=True)
def p5proxy_register_providers(register: Any, config: Config) -> None:
    register("openai", OpenAIProvider)
