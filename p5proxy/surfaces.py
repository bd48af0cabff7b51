"""The two client-facing protocols, each as one bundle of its codec functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .protocols import anthropic, openai
from .protocols.anthropic.decode import REQUEST_FIELDS as ANTHROPIC_FIELDS
from .protocols.openai.decode import REQUEST_FIELDS as OPENAI_FIELDS
from .rawjson import Splitter

__all__ = ["Surface", "ANTHROPIC", "OPENAI"]


@dataclass(frozen=True, slots=True)
class Surface:
    name: str
    decode: Callable[..., Any]
    renderer: Callable[..., Any]
    render_response: Callable[..., dict[str, Any]]
    error_body: Callable[..., dict[str, Any]]
    error_status: Callable[..., int]
    request_id_header: str
    # large bodies: the request's fields, and where a tool's JSON schema sits (rawjson.py)
    splitter: Splitter


ANTHROPIC = Surface("anthropic", anthropic.decode_request, anthropic.AnthropicStreamRenderer,
                    anthropic.render_response, anthropic.error_body, anthropic.error_status,
                    "request-id", Splitter(ANTHROPIC_FIELDS, ("input_schema",)))
OPENAI = Surface("openai", openai.decode_request, openai.OpenAIStreamRenderer,
                 openai.render_response, openai.error_body, openai.error_status, "x-request-id",
                 Splitter(OPENAI_FIELDS, ("function", "parameters")))
