"""OpenAI Chat Completions codec: pure functions and small state machines, no I/O."""

from .decode import decode_request
from .encode import encode_request
from .parse import OpenAIStreamParser, parse_error, parse_response
from .render import OpenAIStreamRenderer, error_body, error_status, render_response

__all__ = ["decode_request", "encode_request", "OpenAIStreamParser", "parse_error",
           "parse_response", "OpenAIStreamRenderer", "error_body", "error_status",
           "render_response"]
