"""Ids that look native to each protocol, unique under concurrency (random, not counters)."""

from __future__ import annotations

import base64
import os
import random
import re
import time

__all__ = ["message_id", "completion_id", "tool_use_id", "tool_call_id", "request_id",
           "anthropic_safe_id"]

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


_TO_ALNUM = bytes.maketrans(b"+/", b"xZ")   # base64 without its two symbols; ids, not keys


_POOL_BYTES = 768   # 1024 characters: one refill serves ~40 ids
_pool = ""
_pos = 0


def _base62(n_chars: int) -> str:
    """Random [0-9A-Za-z] characters: base64 of random bytes with + and / mapped to letters,
    made a thousand at a time. `random` (reseeded after fork, as is this pool) rather than
    os.urandom: ids need uniqueness, not secrecy, and a system call per id shows up under load."""
    global _pool, _pos
    if _pos + n_chars > len(_pool):
        raw = random.getrandbits(8 * _POOL_BYTES).to_bytes(_POOL_BYTES, "big")
        _pool, _pos = base64.b64encode(raw).translate(_TO_ALNUM).decode(), 0
    start = _pos
    _pos = start + n_chars
    return _pool[start:_pos]


def _forget_pool() -> None:
    global _pool, _pos
    _pool, _pos = "", 0


os.register_at_fork(after_in_child=_forget_pool)   # workers must not share the parent's pool


def message_id() -> str:
    return "msg_01" + _base62(22)


def completion_id() -> str:
    return "chatcmpl-" + _base62(29)


def tool_use_id() -> str:
    return "toolu_01" + _base62(22)


def tool_call_id() -> str:
    return "call_" + _base62(24)


_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"   # in ASCII order
_PAIRS = [a + b for a in _DIGITS for b in _DIGITS]   # 0..3843 as two digits
_PAIR = 62 * 62


def _digits62(n: int, n_chars: int) -> str:
    """`n` as `n_chars` base-62 digits (leading zeros; higher digits are dropped)."""
    out = []
    for _ in range(n_chars):
        n, digit = divmod(n, 62)
        out.append(_DIGITS[digit])
    return "".join(reversed(out))


_high = -1        # the time in milliseconds // _PAIR, whose digits are _high_text
_high_text = ""


def _time62(n_chars: int) -> str:
    """The current time in milliseconds as `n_chars` (3 or more) base-62 digits that sort as
    the time does (7 digits last until the year 2080). The last two digits come from a table;
    the others change every 3.8 s and are kept: a new millisecond costs a lookup, not seven
    divisions (most requests start in a millisecond of their own)."""
    global _high, _high_text
    high, low = divmod(time.time_ns() // 1_000_000, _PAIR)
    if high != _high or len(_high_text) != n_chars - 2:
        _high, _high_text = high, _digits62(high, n_chars - 2)
    return _high_text + _PAIRS[low]


def request_id() -> str:
    """Time first, then random: ids of one instance sort by arrival, so the request log's
    index on them grows at its end instead of touching a random page per row."""
    return "req_01" + _time62(7) + _base62(15)


def anthropic_safe_id(value: str) -> str:
    """Anthropic accepts tool ids matching ^[a-zA-Z0-9_-]+$; upstreams such as Kimi use
    `functions.Bash:0`. The rewrite is deterministic, so a tool_use and its tool_result agree."""
    if not value:
        return tool_use_id()
    return _UNSAFE.sub("_", value)
