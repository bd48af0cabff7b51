"""A provider's upstream keys: rotation over the keys that are not cooling down or disabled.

A 429 cools its key's group (the key alone unless `api_keys` names a `group`) for the upstream's
`Retry-After`, else for a doubling backoff; an upstream 401/403 disables the key until the
gateway reloads, logged once with the key masked. State lives in memory; with Redis configured
(`attach_shared`) cooldowns and disabled keys are also written there under a hash of the key,
and every instance reads them back at most every `SYNC_SECS`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .metrics import count_cooldown

__all__ = ["KeyPool", "PoolKey", "SharedState", "mask", "key_id", "SYNC_SECS", "DISABLED_TTL"]

log = logging.getLogger("p5proxy.keys")

SYNC_SECS = 0.5        # how stale an instance's view of the shared state may be
DISABLED_TTL = 3600    # a disabled key is remembered in Redis this long (locally: until reload)


def key_id(key: str) -> str:
    """A stable, non-secret id for a key (what Redis and logs see)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def mask(key: str) -> str:
    """`sk-…wxyz`: enough to tell keys apart, never enough to use one."""
    if len(key) >= 16:
        return f"{key[:3]}…{key[-4:]}"
    return "…" + key[-2:] if len(key) >= 8 else "****"


class SharedState(Protocol):
    """What the pool needs of p5proxy.shared_redis.SharedRedis (never raises)."""

    def key(self, *parts: str) -> str: ...

    async def call(self, op: Any, default: Any) -> Any: ...


@dataclass(slots=True)
class PoolKey:
    key: str
    group: str          # cooldowns apply to the whole group
    id: str             # key_id(key)
    disabled: bool = False
    logged: bool = False


class KeyPool:
    def __init__(self, provider: str, keys: Sequence[str], groups: Sequence[str] = ()) -> None:
        self.provider = provider
        self.keys: list[PoolKey] = []
        for i, key in enumerate(keys):
            kid = key_id(key)
            group = groups[i] if i < len(groups) and groups[i] else ""
            self.keys.append(PoolKey(key, f"group:{group}" if group else f"key:{kid}", kid))
        self._cool_until: dict[str, float] = {}   # group -> wall-clock end of its cooldown
        self._strikes: dict[str, int] = {}        # group -> 429s in a row (for the backoff)
        self._next = 0
        self._shared: SharedState | None = None
        self._synced = 0.0

    def attach_shared(self, shared: SharedState | None) -> None:
        self._shared = shared

    def __len__(self) -> int:
        return len(self.keys)

    # --- choosing ------------------------------------------------------------------------

    async def acquire(self, avoid: set[str] | None = None) -> PoolKey | None:
        """The next usable key in turn, preferring one not in `avoid` (ids tried already by
        this request). None when every key is cooling or disabled."""
        await self._sync()
        now = time.time()
        usable = [k for k in self.keys if not k.disabled
                  and self._cool_until.get(k.group, 0.0) <= now]
        if not usable:
            return None
        if avoid:
            usable = [k for k in usable if k.id not in avoid] or usable
        n = len(self.keys)
        for step in range(n):   # round robin over the pool's order
            candidate = self.keys[(self._next + step) % n]
            if candidate in usable:
                self._next = (self._next + step + 1) % n
                return candidate
        return usable[0]

    def has_other(self, current: PoolKey | None, avoid: set[str]) -> bool:
        """Is there a usable key besides `current` and the ones already tried?"""
        now = time.time()
        return any(k is not current and k.id not in avoid and not k.disabled
                   and self._cool_until.get(k.group, 0.0) <= now for k in self.keys)

    def retry_after(self) -> float | None:
        """Seconds until the first cooling key is usable again; None if none will be (all
        disabled) or none is cooling."""
        now = time.time()
        waits = [self._cool_until.get(k.group, 0.0) - now for k in self.keys if not k.disabled]
        waits = [w for w in waits if w > 0]
        return min(waits) if waits else None

    def all_disabled(self) -> bool:
        return bool(self.keys) and all(k.disabled for k in self.keys)

    # --- outcomes ------------------------------------------------------------------------

    async def cool(self, key: PoolKey, seconds: float | None, *, base: float,
                   cap: float) -> float:
        """A 429: cool the key's group for `seconds` (the upstream's Retry-After) or a doubling
        backoff from `base` up to `cap`. Returns the cooldown used."""
        strikes = self._strikes.get(key.group, 0) + 1
        self._strikes[key.group] = strikes
        if seconds is None:
            seconds = min(cap, base * 2.0 ** (strikes - 1))
        until = time.time() + seconds
        if until > self._cool_until.get(key.group, 0.0):
            self._cool_until[key.group] = until
        count_cooldown(self.provider)
        log.info("upstream %s: key %s rate-limited, cooling %s for %.1fs", self.provider,
                 mask(key.key), key.group.split(":", 1)[0], seconds)
        if self._shared is not None:
            shared, name = self._shared, self._shared.key("keypool", self.provider, key.group)
            ms = max(1, math.ceil(seconds * 1000))
            await shared.call(lambda r: r.set(name, repr(until), px=ms), None)
        return seconds

    def succeeded(self, key: PoolKey) -> None:
        if self._strikes:
            self._strikes.pop(key.group, None)

    async def disable(self, key: PoolKey, status: int) -> None:
        """An upstream 401/403: never use this key again until the gateway reloads."""
        key.disabled = True
        if not key.logged:
            key.logged = True
            log.error("upstream %s rejected key %s with HTTP %s: disabled until the gateway "
                      "reloads its configuration", self.provider, mask(key.key), status)
        if self._shared is not None:
            shared, name = self._shared, self._shared.key("keypool", self.provider, "off", key.id)
            await shared.call(lambda r: r.set(name, str(status), ex=DISABLED_TTL), None)

    # --- shared state --------------------------------------------------------------------

    async def _sync(self) -> None:
        """Read the other instances' cooldowns and disabled keys, at most every SYNC_SECS."""
        shared = self._shared
        if shared is None or not self.keys:
            return
        now = time.monotonic()
        if now - self._synced < SYNC_SECS:
            return
        self._synced = now
        groups = sorted({k.group for k in self.keys})
        names = [shared.key("keypool", self.provider, g) for g in groups]
        names += [shared.key("keypool", self.provider, "off", k.id) for k in self.keys]
        values = await shared.call(lambda r: r.mget(names), None)
        if not values:
            return
        for group, value in zip(groups, values[:len(groups)], strict=True):
            until = _float(value)
            if until is not None and until > self._cool_until.get(group, 0.0):
                self._cool_until[group] = until
        for key, value in zip(self.keys, values[len(groups):], strict=True):
            if value is not None and not key.disabled:
                key.disabled = True
                if not key.logged:
                    key.logged = True
                    log.error("upstream %s: key %s was disabled by another instance",
                              self.provider, mask(key.key))

    # --- /health -------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        for k in self.keys:
            until = self._cool_until.get(k.group, 0.0)
            entry: dict[str, Any] = {"key": mask(k.key), "disabled": k.disabled}
            if not k.group.startswith("key:"):
                entry["group"] = k.group[6:]
            if until > now:
                entry["cooling_until"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
                entry["cooling_secs"] = round(until - now, 1)
            out.append(entry)
        return out


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError):
        return None
