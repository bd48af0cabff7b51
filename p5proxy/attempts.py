"""Getting a request's first batch of events from upstream, before anything reaches the client:
the key pool (rotation, cooldowns, disabled keys), retries with backoff (p5proxy/retry.py) and
the model's fallbacks, each resolved and translated for its own provider. Whatever is left
raises, and the client gets a real HTTP error.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import AsyncGenerator
from typing import Any

from .canonical import ChatRequest, ErrorEvent
from .config import RetryConfig
from .errors import UpstreamError, UpstreamStatusError
from .filters import apply_filters
from .imagefetch import inline_images
from .keypool import PoolKey
from .metrics import count_fallback, count_retry
from .provider import Provider, Route
from .retry import (AUTH_STATUSES, Budget, CredentialsRejected, NoUsableKey, backoff,
                    parse_retry_after, retryable)
from .upstream import Waited

__all__ = ["start_upstream"]

log = logging.getLogger("p5proxy.chat")


async def start_upstream(state: Any, req: ChatRequest, route: Route, waited: Waited
                         ) -> tuple[AsyncGenerator[list[Any], None], list[Any], Route]:
    """Send the request upstream and wait for its first batch of events. Nothing has reached
    the client yet, so failures may still be retried (p5proxy/retry.py): another key, after a
    backoff, then the model's `fallbacks` in order (each resolved and translated for its own
    provider). What is left raises: the client gets a real HTTP error. Returns the stream, its
    first batch and the route that answered; `waited` counts the retries and names the
    fallback that answered."""
    budget = Budget(state.config.retry.max_wait, waited)
    # filters (tool emulation) and image inlining rewrite the request they are given: a copy
    # is taken before the first rewrite (most requests have none), to retry from
    pristine: list[ChatRequest] = []
    names: list[str | None] = [None, *route.model.fallbacks]
    failure: UpstreamError | None = None
    fetched: dict[str, tuple[str, str]] = {}   # images by URL, for providers that need bytes
    for n, name in enumerate(names):
        if name is not None:
            assert failure is not None
            log.warning("model %s failed (%s); trying fallback %s", req.model, failure.message,
                        name)
            _restore(req, pristine)
            route = state.router.resolve(name)
        try:
            batches, first, route = await _attempts(state, req, route, waited, budget,
                                                    model=name or req.model, pristine=pristine,
                                                    fetched=fetched)
        except UpstreamError as err:
            if n == len(names) - 1 or not retryable(err):
                raise
            failure = err
            count_fallback(route.provider.name)
            continue
        waited.fallback = name
        return batches, first, route
    raise AssertionError("unreachable")   # the last name returns or raises


def _restore(req: ChatRequest, pristine: list[ChatRequest]) -> None:
    """Undo what filters (tool emulation) did to the request, before sending it again."""
    if pristine:
        for f in dataclasses.fields(req):
            setattr(req, f.name, getattr(pristine[0], f.name))


async def _attempts(state: Any, req: ChatRequest, route: Route, waited: Waited, budget: Budget,
                    *, model: str, pristine: list[ChatRequest],
                    fetched: dict[str, tuple[str, str]]
                    ) -> tuple[AsyncGenerator[list[Any], None], list[Any], Route]:
    """One model's attempts: rotate keys, retry retryable failures with backoff within the
    provider's `retry` policy and the request's budget. A route with `tools: auto` whose
    upstream rejects native tools is retried once with tool emulation (not counted)."""
    provider = route.provider
    policy: RetryConfig = provider.config.retry or state.config.retry
    pool = provider.pool
    tried: set[str] = set()
    attempt = 0
    while True:
        key = await pool.acquire(tried) if len(pool) else None
        if len(pool) and key is None:
            raise _no_usable_key(provider)
        attempt += 1
        try:
            return await _attempt(state, req, route, waited, key, fetched, pristine)
        except UpstreamError as err:
            fallback = state.router.tools_fallback(model, route, err) if req.tools else None
            if fallback is not None and fallback is not route:
                log.warning("%s rejected native tools (%s); using tool emulation for %s",
                            provider.name, err.message, model)
                route, attempt = fallback, attempt - 1
                _restore(req, pristine)
                continue
            delay = await _after_failure(err, provider, key, tried, policy, attempt)
            if delay is None or not budget.allows(delay):
                raise _final(err, provider) from None
            log.info("upstream %s failed (%s); retry %d in %.2fs", provider.name, err.message,
                     attempt, delay)
            count_retry(provider.name)
            await budget.wait(delay)
            _restore(req, pristine)


async def _attempt(state: Any, req: ChatRequest, route: Route, waited: Waited,
                   key: PoolKey | None, fetched: dict[str, tuple[str, str]],
                   pristine: list[ChatRequest]
                   ) -> tuple[AsyncGenerator[list[Any], None], list[Any], Route]:
    if not pristine and (route.filters or route.provider.image_fetch is not None):
        pristine.append(copy.copy(req))
    if route.provider.image_fetch is not None:   # an upstream that takes image bytes only
        await inline_images(req, state.upstream.images, route.provider.image_fetch, fetched)
    runs = [f.open(req, route) for f in route.filters]
    ureq = route.provider.build_request(req, route)
    if key is not None:
        ureq.headers.update(route.provider.auth_headers(key.key))
    batches = state.upstream.events(route.provider, ureq, route.provider.config.timeouts, waited)
    if runs:
        batches = apply_filters(batches, runs)
    try:
        first: list[Any] = await anext(batches, [])
        if first and isinstance(first[0], ErrorEvent):
            raise first[0].error
    except BaseException:
        await batches.aclose()
        raise
    if key is not None:
        route.provider.pool.succeeded(key)
    return batches, first, route


async def _after_failure(err: UpstreamError, provider: Provider, key: PoolKey | None,
                         tried: set[str], policy: RetryConfig, attempt: int) -> float | None:
    """Record what the failure says about the key; the delay before the next attempt, or None
    when this model should not be tried again."""
    pool = provider.pool
    if key is not None:
        tried.add(key.id)   # the next attempt prefers another key
    if err.status in AUTH_STATUSES and isinstance(err, UpstreamStatusError):
        if key is None:
            return None
        await pool.disable(key, err.status)
        return 0.0 if attempt < policy.attempts and pool.has_other(key, tried) else None
    retry_after = parse_retry_after(err.retry_after)
    if err.status == 429 and key is not None:
        await pool.cool(key, retry_after, base=policy.cooldown_base, cap=policy.cooldown_max)
    if not retryable(err) or attempt >= policy.attempts:
        return None
    if err.status == 429 and key is not None and pool.has_other(key, tried):
        return 0.0   # another key right away
    if err.status == 429 and key is not None:
        retry_after = pool.retry_after()   # every key is cooling: until the first is back
    delay = backoff(policy, attempt)
    if retry_after is not None:
        if retry_after > policy.backoff_max:
            return None   # not worth holding the client: it gets the Retry-After
        delay = max(delay, retry_after)
    return delay


def _final(err: UpstreamError, provider: Provider) -> UpstreamError:
    """What the client is told when a model gives up: never the upstream's 401/403 (that is
    about the gateway's key, not the client's), and the pool's shortest cooldown as
    Retry-After when every key is cooling."""
    if err.status in AUTH_STATUSES and isinstance(err, UpstreamStatusError):
        if len(provider.pool) and provider.pool.retry_after() is not None:
            return _no_usable_key(provider)   # the other keys are cooling: a 429 for now
        return CredentialsRejected(
            f"upstream {provider.name} is not available right now: it refused the gateway's "
            "upstream key (see the gateway's log)", status=502, kind="api_error",
            provider=provider.name)
    if err.status == 429 and len(provider.pool):
        wait = provider.pool.retry_after()
        if wait is not None:
            err.retry_after = str(max(1, math.ceil(wait)))
    return err


def _no_usable_key(provider: Provider) -> UpstreamError:
    pool = provider.pool
    wait = pool.retry_after()
    if wait is None:   # all disabled
        return NoUsableKey(f"upstream {provider.name} is not available: none of its keys is "
                           "usable (see the gateway's log)", status=503, kind="api_error",
                           provider=provider.name)
    return NoUsableKey(f"upstream {provider.name} is rate-limited; retry in {wait:.0f}s",
                       status=429, kind="rate_limit_error", provider=provider.name,
                       retry_after=str(max(1, math.ceil(wait))))
