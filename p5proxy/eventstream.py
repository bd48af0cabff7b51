"""The streaming response of the chat routes. Not compiled (setup.py): a class compiled with
mypyc must not derive from an interpreted one such as aiohttp's, whose instances it lays out
without knowing them (a subclass compiled in routes/chat.py crashed the interpreter)."""

from __future__ import annotations

from aiohttp import web

__all__ = ["EventStream"]


class EventStream(web.StreamResponse):
    """An SSE response whose headers go out with its first bytes rather than on their own
    (aiohttp's buffered headers, as for a whole Response): the stream starts when its first
    events are ready, so waiting for them costs the client nothing and saves a write. An
    aiohttp without the attribute sends the headers at once, as before."""
    _send_headers_immediately = False
