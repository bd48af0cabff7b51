"""`Reply`: what a fake upstream answers, independent of the wire protocol."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Reply", "fragments", "new_id"]

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A random id in the vendor's style: `call_…`, `toolu_01…`, `msg_01…`, `req_…`."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def fragments(text: str, size: int) -> list[str]:
    """Split `text` into pieces of `size` characters (never splits a code point)."""
    return [text[i : i + size] for i in range(0, len(text), max(1, size))]


@dataclass
class Reply:
    """One scripted model answer; each fake renders it in its own protocol.

    Usage counts follow Anthropic semantics: `input` excludes cache reads and writes
    (OpenAI's `prompt_tokens` is then input + cache_read + cache_creation).
    """

    text: str = ""
    reasoning: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    stop_reason: str | None = None  # Anthropic vocabulary; None = automatic (see `stop`)
    stop_sequence: str | None = None
    usage: dict[str, int] = field(default_factory=dict)  # input/output/cache_read/cache_creation
    chunk_size: int = 4
    delay: float = 0
    status: int = 200
    error: dict[str, Any] | None = None  # whole error body, sent verbatim with `status`
    headers: dict[str, str] = field(default_factory=dict)
    break_after: int | None = None  # stream events sent before the connection is dropped
    stream_error: dict[str, Any] | None = None  # inner error object ({"type","message",...})
    extra_fields: dict[str, Any] = field(default_factory=dict)
    logprobs: Any = None  # OpenAI, a plain answer: its choice's `logprobs`
    raw_sse: bytes | list[bytes] | None = None  # a list is written piece by piece
    hang: bool = False

    @property
    def is_error(self) -> bool:
        return self.error is not None or self.status >= 400

    @property
    def stop(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        if self.stop_sequence is not None:
            return "stop_sequence"
        return "tool_use" if self.tool_calls else "end_turn"

    @property
    def arguments(self) -> list[str]:
        """Tool inputs as JSON text, spaced the way models usually write them."""
        return [json.dumps(args, ensure_ascii=False) for _, args in self.tool_calls]

    @property
    def signature(self) -> str:
        """A deterministic stand-in for Anthropic's opaque thinking signature."""
        digest = hashlib.sha256(self.reasoning.encode()).digest()
        return "EqQBCgIYAh" + base64.b64encode(digest).decode()

    def counts(self) -> dict[str, int]:
        """Usage with defaults filled in; `output` defaults to ~4 chars per token."""
        chars = len(self.text) + len(self.reasoning) + sum(map(len, self.arguments))
        counts = {"input": 11, "output": max(1, chars // 4), "cache_read": 0, "cache_creation": 0}
        counts |= self.usage
        counts.setdefault("reasoning", min(counts["output"], len(self.reasoning) // 4))
        return counts
