"""Anthropic Messages API codec: pure functions and small state machines, no I/O."""

from .decode import decode_request
from .encode import encode_request
from .parse import AnthropicStreamParser, parse_error, parse_response
from .render import AnthropicStreamRenderer, error_body, error_status, render_response

__all__ = ["decode_request", "encode_request", "AnthropicStreamParser", "parse_error",
           "parse_response", "AnthropicStreamRenderer", "error_body", "error_status",
           "render_response"]
