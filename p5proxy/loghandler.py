"""Log output for `p5proxy` commands: stderr, a few system calls per second.

Every API request logs an access line. Under load a write(2) per line, or even per event-loop
iteration, was a measurable part of the gateway's time, so lines emitted while the event loop
runs are collected and written together (in order) every WRITE_EVERY seconds, or as soon as
WRITE_LINES of them are waiting. Lines from other threads, or with no loop running, are written
at once, after whatever is waiting; so is everything at exit (logging.shutdown flushes).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["BatchedStreamHandler", "TextFormatter", "configure", "direct"]


WRITE_EVERY = 0.05   # seconds a line may wait
WRITE_LINES = 256    # lines that may wait

# A line written later: formatted by `make(item, formatter)` when the batch is written.
Later = tuple[Callable[[Any, "TextFormatter"], str], Any]


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._pending: list[str | Later] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._timer_loop: asyncio.AbstractEventLoop | None = None   # where the flush is due

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:   # logging's own convention: report, never raise
            self.handleError(record)
            return
        self._add(line)

    def write_later(self, make: Callable[[Any, TextFormatter], str], item: Any) -> None:
        """A line the caller leaves to be formatted with the batch it is written in: the
        access log's fast path. Formatting lines together, in one loop, costs a fraction of
        formatting each at the end of its request, between the request's other steps."""
        self.acquire()
        try:
            self._add((make, item))
        finally:
            self.release()

    def _add(self, line: str | Later) -> None:
        loop = self._loop
        # the loop seen last, when it is still running in this thread (asyncio's own lookup
        # makes a getpid() system call on every line)
        if loop is None or self._thread != threading.get_ident() or not loop.is_running():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            self._loop, self._thread = loop, threading.get_ident()
        if loop is None:
            self._pending.append(line)
            self._drain()
            return
        if not self._pending or self._timer_loop is not loop:   # (a loop that ended with lines)
            loop.call_later(WRITE_EVERY, self.flush)
            self._timer_loop = loop
        self._pending.append(line)
        if len(self._pending) >= WRITE_LINES:
            self._drain()   # the timer finds nothing left, or the next lines

    def _drain(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            try:
                text = "".join([line if isinstance(line, str) else self._late(line)
                                for line in pending])
                self.stream.write(text)
                self.stream.flush()
            except Exception:   # stderr closed or full: nothing sensible left to do
                pass

    def _late(self, later: Later) -> str:
        make, item = later
        formatter = self.formatter
        if not isinstance(formatter, TextFormatter):   # changed since: lines wait a few ms
            formatter = TextFormatter()
        try:
            return make(item, formatter) + self.terminator
        except Exception:   # noqa: BLE001 - one bad line must not cost the batch
            logging.getLogger(__name__).exception("formatting a log line failed")
            return ""

    def flush(self) -> None:
        self.acquire()
        try:
            self._drain()
        finally:
            self.release()


class TextFormatter(logging.Formatter):
    """The commands' text format; the time (strftime) is formatted once per second."""

    _second = -1
    _text = ""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(created))
            self._second = second
        return f"{self._text},{int((created - second) * 1000):03d}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self.stamp(record.created)


def direct(logger: logging.Logger) -> BatchedStreamHandler | None:
    """The handler a line of `logger` would end in, when that is only our own handler with
    our text format: the caller may then format the line itself and skip logging's record
    machinery (several microseconds per line). None when anything else is configured
    (other handlers, another format, a test's capture): use the logger then."""
    root = logging.getLogger()
    node: logging.Logger | None = logger
    while node is not None and node is not root:   # e.g. p5proxy.access -> p5proxy -> root
        if node.handlers or node.filters or not node.propagate or node.disabled:
            return None
        node = node.parent
    if node is not root or len(root.handlers) != 1 or root.filters:
        return None
    handler = root.handlers[0]
    if type(handler) is not BatchedStreamHandler or type(handler.formatter) is not TextFormatter \
            or handler.level > logging.INFO or handler.filters:
        return None
    return handler


def configure(level: str) -> None:
    """Root logging for the commands: the usual format, batched writes, and no per-record
    lookups of process and thread names (the format does not show them)."""
    logging.logMultiprocessing = False
    logging.logThreads = False
    logging.logProcesses = False
    handler = BatchedStreamHandler()
    handler.setFormatter(TextFormatter())
    logging.basicConfig(level=level, handlers=[handler])
