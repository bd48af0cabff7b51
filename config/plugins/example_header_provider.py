"""Example single-file plugin for `plugins_dir`: provider type `openai-affinity`.

An OpenAI-compatible upstream behind a router that pins a session to one backend by a request
header (vLLM production-stack's session routing, sticky load balancers), so that every turn
of a conversation lands where its prompt prefix is already cached. The header value is a hash
of the system prompt and the first message, which stay the same for a whole conversation.

    plugins_dir: /etc/p5proxy/plugins          # holds this file
    providers:
      vllm:
        type: openai-affinity
        base_url: http://vllm-router:8000/v1
        session_header: x-user-id               # optional, default x-session-id
    models:
      claude-sonnet-4-5: {provider: vllm, model: qwen3-coder}

Everything else (options, streaming, errors) is the bundled `openai` provider's.
"""

from __future__ import annotations

import hashlib
from typing import Any

from p5proxy import hookimpl
from p5proxy.canonical import ChatRequest, TextPart
from p5proxy.config import Config, ProviderConfig
from p5proxy.provider import Route, UpstreamRequest
from p5proxy_plugins.provider_openai import OpenAIProvider

DEFAULT_HEADER = "x-session-id"


def conversation_key(req: ChatRequest) -> str:
    """Stable for every turn of one conversation: system prompt plus first message."""
    digest = hashlib.sha256()
    for part in req.system:
        digest.update(part.text.encode())
    if req.messages:
        for part in req.messages[0].parts:
            if isinstance(part, TextPart):
                digest.update(b"\0" + part.text.encode())
    return digest.hexdigest()[:32]


class AffinityProvider(OpenAIProvider):
    def __init__(self, config: ProviderConfig, settings: Config) -> None:
        super().__init__(config, settings)
        self.session_header = str(config.options.get("session_header", DEFAULT_HEADER))

    def build_request(self, req: ChatRequest, route: Route) -> UpstreamRequest:
        ureq = super().build_request(req, route)
        ureq.headers[self.session_header] = conversation_key(req)
        return ureq


@hookimpl
def p5proxy_register_providers(register: Any, config: Config) -> None:
    register("openai-affinity", AffinityProvider)
