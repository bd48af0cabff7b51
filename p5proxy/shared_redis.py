"""The optional Redis that several gateway instances share (cache tier, leases, cooldowns,
limits), behind a circuit breaker.

Redis is never allowed to fail a request: every operation has a short deadline, and a failure
opens the circuit for a while (1 s, doubling up to 30 s), during which callers get their
default at once and fall back to what they can do alone. The first call after that tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from .masking import mask_text

__all__ = ["SharedRedis"]

log = logging.getLogger("p5proxy.redis")
T = TypeVar("T")

_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 30.0


class SharedRedis:
    def __init__(self, url: str, *, prefix: str = "p5proxy:", op_timeout: float = 0.25) -> None:
        self.url = url
        self.prefix = prefix
        self.op_timeout = op_timeout
        # socket timeouts are a second line behind the asyncio deadline in call()
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=max(op_timeout * 4, 1.0), socket_connect_timeout=op_timeout * 4,
            retry_on_timeout=False, health_check_interval=10)
        self._open_until = 0.0
        self._backoff = _FIRST_BACKOFF
        self.failures = 0          # operations that failed or were skipped while open
        self.trips = 0             # times the circuit opened
        self.last_error: str | None = None

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def up(self) -> bool:
        """False while the circuit is open (Redis recently failed)."""
        return time.monotonic() >= self._open_until

    async def call(self, op: Callable[[aioredis.Redis], Awaitable[T]], default: T, *,
                   timeout: float | None = None) -> T:
        """Run one operation; `default` when Redis is down, slow or the circuit is open."""
        if not self.up:
            self.failures += 1
            return default
        try:
            async with asyncio.timeout(timeout or self.op_timeout):
                result = await op(self.client)
        except asyncio.CancelledError:
            raise
        except Exception as exc:   # connection, timeout, OOM, READONLY...: all mean "not now"
            self.failed(exc)
            return default
        self.succeeded()
        return result

    def failed(self, exc: BaseException) -> None:
        """Open the circuit (also for callers that talk to `client` directly, e.g. pub/sub)."""
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        if self.up:
            self.trips += 1
            log.warning("Redis at %s failed (%s); working without it for %.0f s",
                        mask_text(self.url), self.last_error, self._backoff)
            self._open_until = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF)

    def succeeded(self) -> None:
        if self._backoff != _FIRST_BACKOFF:
            log.info("Redis at %s is back", mask_text(self.url))
        self._backoff = _FIRST_BACKOFF

    def describe(self) -> dict[str, Any]:
        return {"url": mask_text(self.url), "up": self.up, "failures": self.failures,
                "circuit_trips": self.trips, "last_error": self.last_error}

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception:   # closing a connection to a dead server: nothing left to do
            pass
