"""RequestLog: records requests off the hot path and answers the admin page's questions.

Writing: `add(record)` only appends to a bounded in-memory queue (a full queue drops the row and
counts it); a background task writes the queue in batches every `flush_secs` or `batch_rows`
rows. A database that is down, refuses the password or is full never fails a request: the
failure is counted (`p5proxy_request_log_errors_total`), logged once, and the batch is retried
with backoff while the queue keeps what fits. Retention (`retention_days`, `max_rows`) is
applied at start and then every minute.

Reading (used by the admin page; all times are Unix seconds, rows are plain dicts with the
names of `COLUMNS`, newest first):

    rows, total = await log.query(model=None, status=None, key_id=None, provider=None,
                                  since=None, until=None, limit=50, offset=0)
        status: 200 (exact), "4xx" (class), "error" (status >= 400 or a stream that ended
        with an error event: error_type set) or "ok"; `total` counts every matching row.
    row = await log.get(request_id)          # the newest row with that id, or None
    s = await log.summary(window_secs=3600, buckets=60)
        {"since", "until", "window_secs", "bucket_secs",
         "series": [{"ts": bucket start, "requests", "errors", "latency_p50_ms",
                     "latency_p95_ms", "ttft_p50_ms", "ttft_p95_ms", "input_tokens",
                     "output_tokens", "cached_tokens", "cache_hits", "cache_misses"}, ...],
         "totals": the same keys over the whole window, plus "success_rate" and
                   "cache_hit_rate" (None without requests / cache lookups)}
    log.describe() -> {"backend", "url" (password masked), "up", "queued", "written",
                       "dropped", "errors", "last_error"}

The read methods raise RequestLogError (HTTP 503) when the database cannot be reached.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import operator
import os
import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import metrics
from ..errors import P5ProxyError
from ..masking import mask_text

if TYPE_CHECKING:
    from ..config import LogsConfig

__all__ = ["COLUMNS", "Backend", "RequestLog", "RequestLogError", "default_database_url",
           "open_request_log", "summarize"]

log = logging.getLogger("p5proxy.reqlog")

# (column, type): "real" | "int" | "text"; booleans are stored as 0/1 integers.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "real"), ("request_id", "text"), ("instance", "text"), ("protocol", "text"),
    ("method", "text"), ("path", "text"), ("model", "text"), ("provider", "text"),
    ("upstream_model", "text"), ("client_key_id", "text"), ("client_ip", "text"),
    ("stream", "int"), ("status", "int"), ("error_type", "text"), ("error_message", "text"),
    ("latency_ms", "real"), ("ttft_ms", "real"), ("overhead_ms", "real"),
    ("input_tokens", "int"), ("output_tokens", "int"), ("cached_tokens", "int"),
    ("cache_status", "text"), ("cache_source", "text"), ("retries", "int"), ("fallback", "int"),
)
NAMES = tuple(name for name, _ in COLUMNS)
_BOOLS = ("stream", "fallback")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PRUNE_EVERY = 60.0
_MAX_BACKOFF = 30.0
_SUMMARY_ROW_CAP = 500_000   # rows a summary reads at most (newest first)
_ERROR_MESSAGE_CAP = 4000


class RequestLogError(P5ProxyError):
    """The request log database cannot answer (admin reads only; writes never raise)."""
    status = 503
    kind = "api_error"


class Backend(abc.ABC):
    """One database. SQL is written with `?` placeholders; a backend converts them."""
    kind: str = ""

    def __init__(self, url: str, table: str) -> None:
        if not _TABLE.match(table):
            raise ValueError(f"invalid table name {table!r}")
        self.url = url
        self.table = table

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create the table and its indexes if missing. Raises on failure."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def insert(self, rows: list[tuple[Any, ...]]) -> None: ...

    @abc.abstractmethod
    async def fetch(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]: ...

    @abc.abstractmethod
    async def execute(self, sql: str, args: Sequence[Any]) -> int:
        """Run one statement; the number of rows it changed."""

    def masked_url(self) -> str:
        return mask_text(self.url)

    def ddl(self, types: dict[str, str], id_column: str) -> list[str]:
        cols = ", ".join(f"{name} {types[kind]}" for name, kind in COLUMNS)
        t = self.table
        return [f"CREATE TABLE IF NOT EXISTS {t} ({id_column}, {cols})",
                f"CREATE INDEX IF NOT EXISTS {t}_ts ON {t} (ts)",
                f"CREATE INDEX IF NOT EXISTS {t}_rid ON {t} (request_id)"]


def default_database_url(env: dict[str, str] | None = None) -> str:
    """sqlite:///<data dir>/p5proxy-requests.db; the data dir is $P5PROXY_DATA_DIR, else
    $XDG_STATE_HOME/p5proxy, else ~/.local/state/p5proxy."""
    env = dict(os.environ) if env is None else env
    base = env.get("P5PROXY_DATA_DIR")
    if not base:
        state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                          "state")
        base = os.path.join(state, "p5proxy")
    return "sqlite:///" + os.path.join(os.path.abspath(base), "p5proxy-requests.db")


def open_request_log(settings: LogsConfig) -> RequestLog:
    """The RequestLog for `settings` (not started yet: `await log.start()`)."""
    url = settings.database_url or default_database_url()
    backend: Backend
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresBackend
        backend = PostgresBackend(url, settings.table)
    elif url.startswith("sqlite://"):
        from .sqlite import SQLiteBackend
        backend = SQLiteBackend(url, settings.table)
    else:
        raise ValueError(f"logs.database_url: unsupported scheme in {url!r} "
                         "(sqlite:///path or postgresql://...)")
    return RequestLog(backend, settings)


def _epoch(value: float | int | datetime | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def _status_clause(status: int | str) -> tuple[str, list[Any]]:
    text = str(status).strip().lower()
    if text.isdigit():
        return "status = ?", [int(text)]
    if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
        low = int(text[0]) * 100
        return "status >= ? AND status < ?", [low, low + 100]
    if text == "error":
        return "(status >= 400 OR error_type IS NOT NULL)", []
    if text == "ok":
        return "(status < 400 AND error_type IS NULL)", []
    raise ValueError(f"status: expected a code, 2xx..5xx, 'ok' or 'error', got {status!r}")


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of a sorted list."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


_WINDOW_COLS = ("ts", "status", "error_type", "latency_ms", "ttft_ms", "input_tokens",
                "output_tokens", "cached_tokens", "cache_status")


def _stats(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    lat = sorted(r[3] for r in rows if r[3] is not None)
    ttft = sorted(r[4] for r in rows if r[4] is not None)
    return {
        "requests": len(rows),
        "errors": sum(1 for r in rows if (r[1] or 0) >= 400 or r[2] is not None),
        "latency_p50_ms": _percentile(lat, 0.5), "latency_p95_ms": _percentile(lat, 0.95),
        "ttft_p50_ms": _percentile(ttft, 0.5), "ttft_p95_ms": _percentile(ttft, 0.95),
        "input_tokens": sum(r[5] or 0 for r in rows),
        "output_tokens": sum(r[6] or 0 for r in rows),
        "cached_tokens": sum(r[7] or 0 for r in rows),
        "cache_hits": sum(1 for r in rows if r[8] == "hit"),
        "cache_misses": sum(1 for r in rows if r[8] == "miss"),
    }


def summarize(rows: list[tuple[Any, ...]], *, since: float, until: float,
              buckets: int) -> dict[str, Any]:
    """Time series over [since, until) from rows shaped like _WINDOW_COLS."""
    buckets = max(1, buckets)
    width = (until - since) / buckets
    grouped: list[list[tuple[Any, ...]]] = [[] for _ in range(buckets)]
    for row in rows:
        i = int((row[0] - since) // width) if width > 0 else 0
        grouped[min(max(i, 0), buckets - 1)].append(row)
    series = [{"ts": since + i * width, **_stats(group)} for i, group in enumerate(grouped)]
    totals = _stats(rows)
    n, looked = totals["requests"], totals["cache_hits"] + totals["cache_misses"]
    totals["success_rate"] = (n - totals["errors"]) / n if n else None
    totals["cache_hit_rate"] = totals["cache_hits"] / looked if looked else None
    return {"since": since, "until": until, "window_secs": until - since, "bucket_secs": width,
            "series": series, "totals": totals}


_FIELDS = [name for name in NAMES if name != "instance"]
_GET_FIELDS = operator.attrgetter(*_FIELDS)   # one C call for every column of a record
_INSTANCE_AT = NAMES.index("instance")
_BOOL_AT = [NAMES.index(name) for name in _BOOLS]
_MESSAGE_AT = NAMES.index("error_message")


def _row(record: Any, instance: str) -> tuple[Any, ...]:
    out = list(_GET_FIELDS(record))
    out.insert(_INSTANCE_AT, instance)
    for i in _BOOL_AT:
        out[i] = 1 if out[i] else 0
    message = out[_MESSAGE_AT]
    if message is not None and len(message) > _ERROR_MESSAGE_CAP:
        out[_MESSAGE_AT] = message[:_ERROR_MESSAGE_CAP] + "…"
    return tuple(out)


class RequestLog:
    """See the module docstring. One per worker process; `GatewayState.request_log`."""

    def __init__(self, backend: Backend, settings: LogsConfig) -> None:
        self.backend = backend
        self.settings = settings
        self.instance = f"{os.uname().nodename}:{os.getpid()}"
        self._queue: list[tuple[Any, ...]] = []   # rows (_row), oldest first
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._opened = False
        self._stale = False   # a failed connection to close before the next open
        self._up = False
        self._retry_at = 0.0
        self._failures = 0
        self._next_prune = 0.0
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None

    # --- writing ----------------------------------------------------------------------------

    def add(self, record: Any) -> None:
        """Queue one finished RequestRecord (never blocks, never raises). Its row is made
        now, a microsecond per request, rather than for the whole batch at the flush: that
        held the event loop for most of a millisecond every `batch_rows` requests."""
        if len(self._queue) >= self.settings.queue_max:
            self.dropped += 1
            metrics.count_reqlog_dropped()
            return
        self._queue.append(_row(record, self.instance))
        if len(self._queue) >= self.settings.batch_rows:
            self._wake.set()

    async def start(self) -> None:
        """Open the database (a failure is logged, not raised) and start the writer."""
        self.instance = f"{os.uname().nodename}:{os.getpid()}"
        await self._ensure_open()
        self._task = asyncio.create_task(self._run(), name="p5proxy-request-log")

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the writer, write what is queued (within `timeout`), close the database."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._retry_at = 0.0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.flush()
        with contextlib.suppress(Exception):
            await self.backend.close()
        self._opened = self._up = False

    async def flush(self, *, whole_batches: bool = False) -> bool:
        """Write everything queued now (or only whole batches of `batch_rows`, leaving the
        rest for a later batch); False when the database failed (rows kept)."""
        least = self.settings.batch_rows if whole_batches else 1
        async with self._lock:
            while len(self._queue) >= least:
                if not await self._ensure_open():
                    return False
                batch = self._queue[:self.settings.batch_rows]
                try:
                    await self.backend.insert(batch)
                except Exception as exc:   # noqa: BLE001 - any database failure: keep serving
                    self._failed(exc)
                    return False
                del self._queue[:len(batch)]
                self.written += len(batch)
                self._recovered()
            return True

    async def prune(self, now: float | None = None) -> int:
        """Apply retention now: delete rows older than retention_days and the oldest past
        max_rows. The number of rows deleted."""
        if not await self._ensure_open():
            return 0
        now = time.time() if now is None else now
        t = self.backend.table
        deleted = 0
        try:
            if self.settings.retention_days > 0:
                deleted += await self.backend.execute(
                    f"DELETE FROM {t} WHERE ts < ?", [now - self.settings.retention_days * 86400])
            if self.settings.max_rows > 0:
                # ids only grow, so the newest max_rows rows have ids above max(id) - max_rows
                # (fewer rows when ids have gaps): two index lookups, where an OFFSET walked the
                # whole table every minute
                deleted += await self.backend.execute(
                    f"DELETE FROM {t} WHERE id <= (SELECT max(id) FROM {t}) - ?",
                    [self.settings.max_rows])
        except Exception as exc:   # noqa: BLE001
            self._failed(exc)
        return deleted

    async def _run(self) -> None:
        while True:
            full = True   # woken by a full batch; else flush_secs passed
            try:
                async with asyncio.timeout(self.settings.flush_secs):
                    await self._wake.wait()
            except TimeoutError:
                full = False
            self._wake.clear()
            if time.monotonic() < self._retry_at:
                continue
            try:
                # Under load, only whole batches: the rows that arrive while one batch is
                # written wait for the next. Writing them at once kept the writer busy with
                # a transaction of a dozen rows after every batch, which cost the gateway
                # about a tenth of its throughput (bench/README.md).
                await self.flush(whole_batches=full)
                if self._up and time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + _PRUNE_EVERY
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:   # noqa: BLE001 - the writer must outlive any bug in one batch
                log.exception("request log writer failed; continuing")

    async def _ensure_open(self, *, now: bool = False) -> bool:
        if self._opened:
            return True
        if not now and time.monotonic() < self._retry_at:
            return False
        if self._stale:
            self._stale = False
            with contextlib.suppress(Exception):
                await self.backend.close()
        try:
            await self.backend.open()
        except Exception as exc:   # noqa: BLE001
            self._failed(exc)
            return False
        self._opened = True
        return True

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        metrics.count_reqlog_error()
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if self._failures == 0:
            log.warning("request log database %s is failing (%s); requests are still served, "
                        "rows wait in memory (up to logs.queue_max) and are retried",
                        self.backend.masked_url(), self.last_error)
        self._failures += 1
        self._up = False
        self._retry_at = time.monotonic() + min(_MAX_BACKOFF, 0.5 * 2 ** min(self._failures, 6))
        if self._opened:   # reconnect next time: the connection or the table may be gone
            self._opened = False
            self._stale = True

    def _recovered(self) -> None:
        if self._failures:
            log.warning("request log database %s is back (%d rows dropped so far)",
                        self.backend.masked_url(), self.dropped)
        self._failures = 0
        self._up = True

    # --- reading ----------------------------------------------------------------------------

    async def _read(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        if not await self._ensure_open(now=True):   # an admin read tries at once
            raise RequestLogError(f"the request log database is unavailable: {self.last_error}")
        try:
            return await self.backend.fetch(sql, args)
        except Exception as exc:   # noqa: BLE001
            self._failed(exc)
            raise RequestLogError(f"the request log database failed: {self.last_error}") from exc

    async def query(self, *, model: str | None = None, status: int | str | None = None,
                    key_id: str | None = None, provider: str | None = None,
                    since: float | datetime | None = None, until: float | datetime | None = None,
                    limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("model", model), ("client_key_id", key_id),
                              ("provider", provider)):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        if status is not None and status != "":
            clause, extra = _status_clause(status)
            clauses.append(clause)
            args += extra
        for op, bound in ((">=", _epoch(since)), ("<", _epoch(until))):
            if bound is not None:
                clauses.append(f"ts {op} ?")
                args.append(bound)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        t = self.backend.table
        total = (await self._read(f"SELECT count(*) FROM {t}{where}", args))[0][0]
        rows = await self._read(f"SELECT {', '.join(NAMES)} FROM {t}{where} "
                                "ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
                                [*args, max(0, int(limit)), max(0, int(offset))])
        return [self._dict(r) for r in rows], int(total)

    async def get(self, request_id: str) -> dict[str, Any] | None:
        rows = await self._read(f"SELECT {', '.join(NAMES)} FROM {self.backend.table} "
                                "WHERE request_id = ? ORDER BY id DESC LIMIT 1", [request_id])
        return self._dict(rows[0]) if rows else None

    async def summary(self, window_secs: float = 3600, buckets: int = 60, *,
                      now: float | None = None) -> dict[str, Any]:
        until = time.time() if now is None else now
        since = until - window_secs
        rows = await self._read(f"SELECT {', '.join(_WINDOW_COLS)} FROM {self.backend.table} "
                                "WHERE ts >= ? AND ts < ? ORDER BY ts DESC LIMIT ?",
                                [since, until, _SUMMARY_ROW_CAP])
        # sorting a large window takes a while: off the event loop
        return await asyncio.to_thread(summarize, rows, since=since, until=until, buckets=buckets)

    @staticmethod
    def _dict(row: tuple[Any, ...]) -> dict[str, Any]:
        out = dict(zip(NAMES, row))
        for name in _BOOLS:
            out[name] = bool(out[name])
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend.kind, "url": self.backend.masked_url(),
                "table": self.backend.table, "up": self._up or (self._opened and not
                                                                 self._failures),
                "queued": len(self._queue), "written": self.written, "dropped": self.dropped,
                "errors": self.errors, "last_error": self.last_error}
