"""Output filters: plugins that see (and may rewrite) the request and every stream event.

A registered filter object is shared; `open(req, route)` gives the per-request state, whose
`on_event` returns the events to pass on (none drops the event, several insert) and whose
`on_end` may flush anything held back. Filters run in the order a model lists them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from .canonical import ChatRequest, StreamEvent

__all__ = ["Filter", "FilterRun", "apply_filters"]


class FilterRun:
    def on_event(self, ev: StreamEvent) -> Iterable[StreamEvent]:
        return (ev,)

    def on_end(self) -> Iterable[StreamEvent]:
        return ()


class Filter:
    name = ""

    def open(self, req: ChatRequest, route: Any) -> FilterRun:
        """Called once per request before it is sent upstream; may change `req`."""
        return FilterRun()


async def apply_filters(batches: AsyncIterator[list[StreamEvent]],
                        runs: list[FilterRun]) -> AsyncIterator[list[StreamEvent]]:
    async for batch in batches:
        for run in runs:
            batch = [out for ev in batch for out in run.on_event(ev)]
        if batch:
            yield batch
    tail: list[StreamEvent] = []
    for run in runs:
        tail = [out for ev in tail for out in run.on_event(ev)] + list(run.on_end())
    if tail:
        yield tail
