"""The one internal representation both protocols decode into and every provider encodes from.

Requests are a `ChatRequest` of `Message`s made of typed parts. Responses are a sequence of
`StreamEvent`s shaped after Anthropic's stream (it is the richer of the two: indexed blocks,
one open at a time); a non-streaming upstream answer is parsed into the same events, and a
non-streaming client answer is their aggregation (`aggregate.py`).

Everything here is plain data: no I/O, no aiohttp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from .rawjson import RawJSON

__all__ = [
    "TextPart", "ImagePart", "ToolCallPart", "ToolResultPart", "ThinkingPart", "RawPart", "Part",
    "Message", "Tool", "ToolChoice", "Thinking", "ChatRequest", "Usage",
    "StreamEvent", "MessageStart", "BlockStart", "TextDelta", "ThinkingDelta", "SignatureDelta",
    "ToolInputDelta", "RawDelta", "BlockStop", "MessageDelta", "MessageStop", "ErrorEvent",
    "Heartbeat", "HEARTBEAT", "StopReason",
]

Meta = dict[str, Any] | None  # opaque vendor data that must survive a round trip (e.g. cache_control)


# --- message parts ---------------------------------------------------------------------------

@dataclass(slots=True)
class TextPart:
    text: str
    meta: Meta = None


@dataclass(slots=True)
class ImagePart:
    """An image given inline (`data`, base64 without the data: prefix) or by `url`."""
    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    meta: Meta = None


@dataclass(slots=True)
class ToolCallPart:
    id: str
    name: str
    input: dict[str, Any]
    meta: Meta = None


@dataclass(slots=True)
class ToolResultPart:
    tool_call_id: str
    content: list[Part]
    is_error: bool = False
    meta: Meta = None


@dataclass(slots=True)
class ThinkingPart:
    """Reasoning text. `signature` is Anthropic's (or gateway-minted); `redacted` holds the opaque
    payload of a redacted_thinking block, in which case `text` is empty."""
    text: str
    signature: str | None = None
    redacted: str | None = None
    meta: Meta = None


@dataclass(slots=True)
class RawPart:
    """A block only its own protocol understands (documents, server-tool blocks...): kept whole
    for an upstream of that protocol, dropped or degraded for the other."""
    data: dict[str, Any]
    protocol: str


Part = Union[TextPart, ImagePart, ToolCallPart, ToolResultPart, ThinkingPart, RawPart]

Role = Literal["system", "user", "assistant"]


@dataclass(slots=True)
class Message:
    role: str
    parts: list[Part]


# --- request ---------------------------------------------------------------------------------

@dataclass(slots=True)
class Tool:
    name: str
    description: str | None
    input_schema: dict[str, Any] | RawJSON   # RawJSON: kept as JSON bytes (rawjson.py)
    meta: Meta = None              # cache_control, strict, ... (Anthropic-side extras)
    raw: dict[str, Any] | None = None  # server tools (typed, e.g. web_search_20250305): kept whole


@dataclass(slots=True)
class ToolChoice:
    type: str                       # auto | any | tool | none
    name: str | None = None
    disable_parallel: bool = False


@dataclass(slots=True)
class Thinking:
    type: str                       # enabled | adaptive | disabled
    budget_tokens: int | None = None
    effort: str | None = None       # low | medium | high | xhigh | max (OpenAI reasoning_effort)


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    ingress: str                    # "anthropic" | "openai": the protocol the client spoke
    raw: dict[str, Any]             # the client's body as decoded, for same-protocol passthrough
    system: list[TextPart] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False     # OpenAI stream_options.include_usage
    thinking: Thinking | None = None
    response_format: dict[str, Any] | None = None  # {"type": "json_schema", "schema", "name"?} | {"type": "json_object"}
    user: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # protocol headers to forward (anthropic-beta...)
    rewritten: bool = False   # a filter changed the request: `raw` no longer describes it


# --- usage -----------------------------------------------------------------------------------

@dataclass(slots=True)
class Usage:
    """Anthropic convention: `input_tokens` excludes cache reads and writes."""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    # The upstream's own usage fields (service_tier, cache_creation breakdown, audio tokens...),
    # rendered again only for clients of the same protocol.
    extra: dict[str, Any] | None = None
    extra_protocol: str | None = None

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_creation_tokens


StopReason = str  # end_turn | max_tokens | stop_sequence | tool_use | pause_turn | refusal | ...


# --- stream events ---------------------------------------------------------------------------

class StreamEvent:
    __slots__ = ()


@dataclass(slots=True)
class MessageStart(StreamEvent):
    id: str | None = None
    model: str | None = None
    usage: Usage | None = None
    extra: dict[str, Any] | None = None   # unknown top-level fields of the upstream message
    body: dict[str, Any] | None = None    # a one-shot (non-streamed) answer's whole upstream body


@dataclass(slots=True)
class BlockStart(StreamEvent):
    """Opens block `index`. `block` is a TextPart, ThinkingPart, ToolCallPart (input {}) or a
    RawPart holding a native content block (server tool use, redacted thinking...)."""
    index: int
    block: Part


@dataclass(slots=True)
class TextDelta(StreamEvent):
    index: int
    text: str
    # An OpenAI upstream's `logprobs` for this text (the chunk's choice), relayed to OpenAI
    # clients; None for every other upstream and when the client did not ask for them.
    logprobs: Any = None
    # The text is an OpenAI refusal (`delta.refusal`, structured outputs): OpenAI clients get
    # it as such, Anthropic clients as text.
    refusal: bool = False


@dataclass(slots=True)
class ThinkingDelta(StreamEvent):
    index: int
    text: str


@dataclass(slots=True)
class SignatureDelta(StreamEvent):
    index: int
    signature: str


@dataclass(slots=True)
class ToolInputDelta(StreamEvent):
    index: int
    partial_json: str


@dataclass(slots=True)
class RawDelta(StreamEvent):
    """A native delta we do not translate (e.g. citations_delta); kept for same-protocol clients."""
    index: int
    delta: dict[str, Any]
    protocol: str


@dataclass(slots=True)
class BlockStop(StreamEvent):
    index: int


@dataclass(slots=True)
class MessageDelta(StreamEvent):
    stop_reason: str | None
    stop_sequence: str | None = None
    usage: Usage | None = None
    extra: dict[str, Any] | None = None


@dataclass(slots=True)
class MessageStop(StreamEvent):
    pass


@dataclass(slots=True)
class ErrorEvent(StreamEvent):
    """The upstream failed; `error` is a p5proxy.errors.UpstreamError."""
    error: Exception


class Heartbeat(StreamEvent):
    """The upstream has been silent for a while: renderers send a keep-alive."""
    __slots__ = ()


HEARTBEAT = Heartbeat()
