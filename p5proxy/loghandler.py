"""Log output for `p5proxy` commands: stderr, one system call per event-loop iteration.

Every API request logs an access line. Under load a write(2) per line was a measurable part of
the gateway's time, so lines emitted while the event loop runs are collected and written
together at the end of the loop iteration (in order, at most one iteration late). Lines from
other threads, or with no loop running, are written at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TextIO

__all__ = ["BatchedStreamHandler", "configure"]


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:   # logging's own convention: report, never raise
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self._pending.append(line)
            self._drain()
            return
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append(line)

    def _drain(self) -> None:
        if self._pending:
            text, self._pending = "".join(self._pending), []
            try:
                self.stream.write(text)
                self.stream.flush()
            except Exception:   # stderr closed or full: nothing sensible left to do
                pass

    def flush(self) -> None:
        self.acquire()
        try:
            self._drain()
        finally:
            self.release()


class _Formatter(logging.Formatter):
    """formatTime (strftime) once per second instead of once per line."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second or datefmt is not None:
            self._text = super().formatTime(record, datefmt)[:19]   # "YYYY-mm-dd HH:MM:SS"
            self._second = second
        return f"{self._text},{int(record.msecs):03d}"


def configure(level: str) -> None:
    """Root logging for the commands: the usual format, batched writes, and no per-record
    lookups of process and thread names (the format does not show them)."""
    logging.logMultiprocessing = False
    logging.logThreads = False
    logging.logProcesses = False
    handler = BatchedStreamHandler()
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
