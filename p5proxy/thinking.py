"""Signatures for thinking blocks that came from non-Anthropic reasoning (reasoning_content).

Anthropic clients expect a `signature_delta` to close every thinking block. For reasoning from
other upstreams the gateway mints one with a recognisable prefix, so that when the client sends
the block back it can be mapped to `reasoning_content` again, and stripped before it reaches a
real Anthropic upstream (which would reject a signature it did not issue).
"""

from __future__ import annotations

import hashlib

__all__ = ["mint_signature", "is_minted_signature", "MINTED_PREFIX"]

MINTED_PREFIX = "p5proxy."


def mint_signature(text: str) -> str:
    return MINTED_PREFIX + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def is_minted_signature(signature: str | None) -> bool:
    return bool(signature) and signature.startswith(MINTED_PREFIX)  # type: ignore[union-attr]
