"""Retry policy for the time before the first byte reaches the client: which upstream failures
are worth another attempt, how long to wait (exponential backoff with jitter, or the upstream's
`Retry-After`), and the budget that bounds the waiting of one request.

After the first byte nothing is retried: the stream ends with the protocol's error event.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time

from .config import RetryConfig
from .errors import (UpstreamConnectError, UpstreamError, UpstreamProtocolError,
                     UpstreamStatusError, UpstreamTimeout)
from .upstream import Waited

__all__ = ["RETRY_STATUSES", "AUTH_STATUSES", "retryable", "parse_retry_after", "backoff", "Budget",
           "NoUsableKey", "CredentialsRejected"]

RETRY_STATUSES = frozenset((429, 500, 502, 503, 504, 529))
AUTH_STATUSES = frozenset((401, 403))


class NoUsableKey(UpstreamStatusError):
    """Every key of a provider is cooling down (429 with Retry-After) or disabled (502)."""


class CredentialsRejected(UpstreamStatusError):
    """The upstream refused the gateway's own key (its 401/403). Told to the client with a
    neutral message and a 502, so that front-ends such as one-api do not take it for their
    key being wrong and disable the gateway."""


def retryable(err: UpstreamError) -> bool:
    """Connection errors, timeouts, broken answers, 429 and 5xx/529; never a request error."""
    if isinstance(err, (UpstreamTimeout, UpstreamConnectError, UpstreamProtocolError,
                        CredentialsRejected, NoUsableKey)):
        return True
    return err.status in RETRY_STATUSES


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` (or `retry-after-ms`-style seconds) as seconds: a number or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def backoff(policy: RetryConfig, retry: int) -> float:
    """Delay before retry number `retry` (1, 2, ...): half the exponential step fixed, half
    random ("equal jitter"), capped at backoff_max."""
    step = min(policy.backoff_max, policy.backoff_base * 2.0 ** (retry - 1))
    return step / 2 + random.uniform(0, step / 2)


class Budget:
    """The waiting one request may still do, over all its retries and fallbacks."""

    __slots__ = ("left", "waited")

    def __init__(self, max_wait: float, waited: Waited) -> None:
        self.left = max_wait
        self.waited = waited   # counts the retries; the sleeping is upstream time, not overhead

    def allows(self, delay: float) -> bool:
        return delay <= self.left

    async def wait(self, delay: float) -> None:
        self.waited.retries += 1
        if delay > 0:
            self.left -= delay
            self.waited.seconds += delay
            await asyncio.sleep(delay)
