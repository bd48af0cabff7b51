"""What the core asks of a response cache plugin (hook `p5proxy_response_cache`).

The core computes the key (cachekey.py), runs the upstream call as a shared Flight
(flight.py) and decides what may be stored; the plugin keeps entries (memory, Redis...) and,
when several instances share state, tells the core whether another instance is already asking
the same question, and relays a leader's events to them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .aggregate import FinalMessage
from .canonical import StreamEvent
from .flight import Flight

__all__ = ["ResponseCache", "CacheStats", "Batch", "LeaderLost"]

Batch = list[StreamEvent]


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    stores: int = 0
    oversize_skips: int = 0     # results larger than max_entry_bytes: served, not kept
    inflight_joins: int = 0     # requests that joined an identical one already under way
    remote_joins: int = 0       # ... under way on another instance
    takeovers: int = 0          # a remote leader vanished and this instance asked instead


class ResponseCache:
    """Base class: a cache that keeps nothing and coordinates with no one."""

    def __init__(self) -> None:
        self.stats = CacheStats()

    async def get(self, key: str) -> tuple[FinalMessage, str] | None:
        """A stored answer and where it came from ("memory", "redis"), or None."""
        return None

    def put(self, key: str, final: FinalMessage, ttl: float) -> None:
        """Keep a complete, successful answer for `ttl` seconds (may store in the background)."""

    async def follow(self, key: str) -> AsyncIterator[Batch] | None:
        """None: this instance asks upstream (it holds the lease, or there is no coordination).
        Otherwise the batches of another instance's answer to the same request, live; the
        iterator raises `LeaderLost` if that instance stops before its first batch."""
        return None

    def lead(self, key: str, flight: Flight) -> None:
        """This instance asks upstream for `key`: publish the flight's batches to followers
        elsewhere and release the lease when it ends."""

    def describe(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        pass


class LeaderLost(Exception):
    """The instance answering a shared request stopped before sending anything."""
