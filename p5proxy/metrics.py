"""Prometheus metrics: one registry per process, exposed at GET /metrics.

Labels are bounded: `model` is the configured entry that served the request (an exact name or
a glob pattern such as `claude-haiku-*`; `other` when nothing matched), `provider` a configured
provider name, `status` an HTTP status class (`2xx`, `4xx`, `5xx`...), `protocol` the ingress
protocol (`anthropic`, `openai`). No per-request labels.

Other parts of the gateway count with the small functions below, e.g. `count_retry(provider)`.
With `--workers N` the workers share one registry through prometheus-client's multiprocess mode
(`p5proxy serve` points PROMETHEUS_MULTIPROC_DIR at a private directory before the workers
start, unless the operator set one).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import hmac
import math
import os
from typing import TYPE_CHECKING, Any

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)

if TYPE_CHECKING:
    from .record import RequestRecord

__all__ = ["REGISTRY", "observe", "flush", "keys", "authorized", "count_retry", "count_fallback", "count_cooldown",
           "count_reqlog_dropped", "count_reqlog_error", "stream_opened", "stream_closed",
           "render", "CONTENT_TYPE_LATEST", "CACHE_STATUSES"]

REGISTRY = CollectorRegistry(auto_describe=True)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
CACHE_STATUSES = frozenset(("hit", "miss", "bypass", "disabled"))
_STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")

REQUESTS = Counter("p5proxy_requests", "API requests by ingress protocol, model entry, "
                   "provider and status class", ("protocol", "model", "provider", "status"),
                   registry=REGISTRY)
ERRORS = Counter("p5proxy_errors", "Failed requests and streams that ended with an error event, "
                 "by provider and error type", ("provider", "type"), registry=REGISTRY)
LATENCY = Histogram("p5proxy_request_duration_seconds", "Whole request time (streams: until "
                    "the last byte)", ("protocol", "model", "provider"),
                    buckets=_LATENCY_BUCKETS, registry=REGISTRY)
TTFT = Histogram("p5proxy_time_to_first_token_seconds", "Streams: request start to the first "
                 "body byte written to the client", ("protocol", "model", "provider"),
                 buckets=_TTFT_BUCKETS, registry=REGISTRY)
OVERHEAD = Histogram("p5proxy_gateway_overhead_seconds", "The gateway's own time (wall time "
                     "minus upstream waits; streams: up to the first byte)", ("protocol",),
                     buckets=_OVERHEAD_BUCKETS, registry=REGISTRY)
TOKENS = Counter("p5proxy_tokens", "Tokens by direction: input (not from the upstream's prompt "
                 "cache), output, cached (read from it)", ("model", "provider", "type"),
                 registry=REGISTRY)
CACHE = Counter("p5proxy_cache_requests", "Response cache lookups by result",
                ("cache_status",), registry=REGISTRY)
RETRIES = Counter("p5proxy_upstream_retries", "Upstream attempts retried", ("provider",),
                  registry=REGISTRY)
FALLBACKS = Counter("p5proxy_fallbacks", "Requests served by a fallback after their first "
                    "provider failed (label: the provider that failed)", ("provider",),
                    registry=REGISTRY)
COOLDOWNS = Counter("p5proxy_key_cooldowns", "Upstream API keys put into cooldown",
                    ("provider",), registry=REGISTRY)
OPEN_STREAMS = Gauge("p5proxy_open_streams", "Streaming responses being written",
                     registry=REGISTRY, multiprocess_mode="livesum")
REQLOG_DROPPED = Counter("p5proxy_request_log_dropped", "Request log rows dropped (queue "
                         "full while the database was slow or down)", registry=REGISTRY)
REQLOG_ERRORS = Counter("p5proxy_request_log_errors", "Request log database failures",
                        registry=REGISTRY)


def status_class(status: int) -> str:
    return _STATUS_CLASSES[status // 100] if 0 <= status < 600 else "other"


_children: dict[tuple[Any, ...], Any] = {}   # labelled series by label values: labels() is slow


def _child(metric: Any, *values: str) -> Any:
    key = (id(metric), *values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


# Finished requests wait here and are counted together (`flush`): on the hot path a request
# costs one list append instead of half a dozen locked increments and histogram bucket
# searches; the open-streams gauge is set at the flush too. The exposition flushes first, so a
# scrape of this process is always current; with --workers the other workers' counts reach the
# shared files within FLUSH_SECS.
FLUSH_SECS = 1.0
_pending: list[RequestRecord] = []
_flush_timer: asyncio.TimerHandle | None = None
_flush_loop: asyncio.AbstractEventLoop | None = None


_open_streams = 0        # streams being written now; the gauge follows at each flush
_open_streams_shown = 0  # what the gauge says


def observe(rec: RequestRecord) -> None:
    """Count one finished API request (at the next flush, within FLUSH_SECS)."""
    _pending.append(rec)
    _flush_soon()


def _flush_soon() -> None:
    global _flush_timer, _flush_loop
    if _flush_timer is None or _flush_loop is None or _flush_loop.is_closed():
        try:
            _flush_loop = asyncio.get_running_loop()
        except RuntimeError:   # no event loop (a script, a test): count now
            flush()
            return
        _flush_timer = _flush_loop.call_later(FLUSH_SECS, flush)


def flush() -> None:
    """Count every request observed since the last flush."""
    global _flush_timer, _open_streams_shown
    if _flush_timer is not None:
        if _flush_loop is not None and not _flush_loop.is_closed():
            _flush_timer.cancel()
        _flush_timer = None
    if _open_streams != _open_streams_shown:
        OPEN_STREAMS.set(_open_streams)   # (livesum: this process's share, under --workers)
        _open_streams_shown = _open_streams
    if not _pending:
        return
    records = _pending[:]
    del _pending[:]
    counts: dict[tuple[Any, ...], float] = {}
    seconds: dict[tuple[Any, ...], list[float]] = {}
    key: tuple[Any, ...]
    for rec in records:
        protocol = rec.protocol
        model = rec.model_label or "other"
        provider = rec.provider or "none"
        key = (REQUESTS, protocol, model, provider, status_class(rec.status))
        counts[key] = counts.get(key, 0) + 1
        if rec.error_type is not None:
            key = (ERRORS, provider, rec.error_type)
            counts[key] = counts.get(key, 0) + 1
        if rec.latency_ms is not None:
            seconds.setdefault((LATENCY, protocol, model, provider), []).append(rec.latency_ms / 1000)
        if rec.ttft_ms is not None:
            seconds.setdefault((TTFT, protocol, model, provider), []).append(rec.ttft_ms / 1000)
        if rec.overhead_ms is not None:
            seconds.setdefault((OVERHEAD, protocol), []).append(max(0.0, rec.overhead_ms) / 1000)
        if rec.provider is not None:
            for kind, value in (("input", rec.input_tokens), ("output", rec.output_tokens),
                                ("cached", rec.cached_tokens)):
                if value:
                    key = (TOKENS, model, provider, kind)
                    counts[key] = counts.get(key, 0) + value
        if rec.cache_status is not None:
            key = (CACHE, rec.cache_status if rec.cache_status in CACHE_STATUSES else "other")
            counts[key] = counts.get(key, 0) + 1
    for (metric, *labels), n in counts.items():
        _child(metric, *labels).inc(n)
    for (metric, *labels), values in seconds.items():
        _observe_all(_child(metric, *labels), values)


def _observe_all(child: Any, values: list[float]) -> None:
    """Histogram.observe for each value, with one increment per bucket. prometheus-client has
    no batch API; its histogram keeps per-bucket counts in `_buckets` (bounds `_upper_bounds`)
    and the total in `_sum`, as it has for years. Anything else: one observe() per value."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            child.observe(value)
        return
    hits: dict[int, int] = {}
    for value in values:
        i = bisect.bisect_left(bounds, value)   # the first bound >= value: observe()'s bucket
        hits[i] = hits.get(i, 0) + 1
    for i, n in hits.items():
        buckets[i].inc(n)
    total.inc(math.fsum(values))


def count_retry(provider: str) -> None:
    """An upstream attempt to `provider` failed and is being retried."""
    RETRIES.labels(provider).inc()


def count_fallback(provider: str) -> None:
    """`provider` failed and the request moves on to a fallback provider."""
    FALLBACKS.labels(provider).inc()


def count_cooldown(provider: str) -> None:
    """One of `provider`'s API keys was put into cooldown."""
    COOLDOWNS.labels(provider).inc()


def count_reqlog_dropped() -> None:
    REQLOG_DROPPED.inc()


def count_reqlog_error() -> None:
    REQLOG_ERRORS.inc()


def stream_opened() -> None:
    """A stream starts (the gauge is set at the next flush: a locked increment per stream
    and its decrement were a visible part of a short stream's cost)."""
    global _open_streams
    _open_streams += 1
    _flush_soon()


def stream_closed() -> None:
    global _open_streams
    _open_streams -= 1
    _flush_soon()


def render() -> bytes:
    """The text exposition of this process, or of all workers in multiprocess mode."""
    flush()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def keys(config: Any) -> bool:
    """Whether /metrics is guarded by its own key: `metrics.key` or the admin key."""
    admin = getattr(config, "admin", None)
    return bool(config.metrics.key or getattr(admin, "key_sha256", None))


def authorized(config: Any, token: str | None) -> bool:
    """`token` (from Authorization: Bearer) is the metrics key or the admin key."""
    if not token:
        return False
    ok = False
    if config.metrics.key:
        ok |= hmac.compare_digest(token.encode(), config.metrics.key.encode())
    digest = getattr(getattr(config, "admin", None), "key_sha256", None)
    if digest:
        ok |= hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), str(digest))
    return ok
