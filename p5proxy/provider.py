"""What a provider plugin implements, and the request it hands to the upstream client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .canonical import ChatRequest, StreamEvent
from .config import Config, ModelConfig, ProviderConfig
from .errors import UpstreamError
from .imagefetch import parse_settings
from .keypool import KeyPool
from .proxies import choose_proxy
from .sse import SSEDecoder, SSEMessage

__all__ = ["Provider", "UpstreamRequest", "StreamParser", "StreamDecoder", "Route"]


@dataclass(slots=True)
class UpstreamRequest:
    url: str
    body: bytes
    headers: dict[str, str]
    stream: bool
    method: str = "POST"


class StreamDecoder(Protocol):
    def feed(self, chunk: bytes) -> list[SSEMessage]: ...

    def close(self) -> list[SSEMessage]: ...


class StreamParser(Protocol):
    done: bool

    def feed(self, event: str, data: str) -> list[StreamEvent]: ...

    def close(self) -> list[StreamEvent]: ...


@dataclass(slots=True)
class Route:
    provider: Provider
    upstream_model: str
    model: ModelConfig
    filters: list[Any] = field(default_factory=list)

    def clamp_max_tokens(self, requested: int | None, default: int | None) -> int | None:
        """The client's value, else the model's default; never above the model's output cap."""
        value = requested if requested is not None else (self.model.max_tokens or default)
        cap = self.model.max_output_tokens or self.provider.max_output_tokens
        if value is not None and cap:
            value = min(value, cap)
        return value


class Provider:
    """Base class for providers. Subclasses set `protocol` ("openai" or "anthropic": which
    client protocol can be passed through unchanged) and implement the four methods.

    `build_request` and `parse_response` are pure; `stream_parser` returns a fresh incremental
    parser per request; `map_error` turns a non-2xx upstream answer into an UpstreamError.
    The gateway picks the upstream key from `pool` (rotation, cooldowns) and adds
    `auth_headers(key)` to the built request: `build_request` sends no key itself.
    """

    protocol: str = ""
    default_tools: str = "native"   # `tools:` when the configuration says nothing

    def __init__(self, config: ProviderConfig, settings: Config) -> None:
        self.config = config
        self.settings = settings
        self.name = config.name
        self.max_output_tokens: int | None = config.options.get("max_output_tokens")
        self.pool = KeyPool(config.name, config.api_keys, config.key_groups)
        self.proxy = choose_proxy(config.base_url, provider_proxy=config.proxy,
                                  upstream_proxy=settings.upstream_proxy)
        # off by default: the gateway fetches no URL from a request unless told to
        self.image_fetch = parse_settings(config.options.get("fetch_images"),
                                          f"providers.{config.name}.fetch_images")

    def auth_headers(self, key: str) -> dict[str, str]:
        """The headers that carry an upstream key (OpenAI-style by default)."""
        return {"Authorization": f"Bearer {key}"}

    def build_request(self, req: ChatRequest, route: Route) -> UpstreamRequest:
        raise NotImplementedError

    def stream_parser(self) -> StreamParser:
        raise NotImplementedError

    def stream_decoder(self) -> StreamDecoder:
        """How the upstream frames a stream: SSE by default (provider option
        `sse_repair: true` also reads corrupted `data` field names); NDJSON upstreams return an
        NDJSONDecoder. Either yields (event, data) pairs for `stream_parser`."""
        return SSEDecoder(repair=bool(self.config.options.get("sse_repair")))

    def parse_response(self, body: dict[str, Any]) -> list[StreamEvent]:
        raise NotImplementedError

    def map_error(self, status: int, body: Any, headers: Any) -> UpstreamError:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """For /health: the configuration without secrets."""
        return {"type": self.config.type, "base_url": self.config.base_url,
                **self.describe_access()}

    def describe_access(self) -> dict[str, Any]:
        """Keys (masked, cooling, disabled) and the outbound proxy (no credentials)."""
        return {"keys": self.pool.describe(), "proxy": self.proxy.describe()}
