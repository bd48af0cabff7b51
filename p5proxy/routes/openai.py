"""OpenAI surface: POST /v1/chat/completions."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from ..surfaces import OPENAI
from .chat import handle_chat

__all__ = ["routes"]

routes = web.RouteTableDef()


# the chat handler itself, not a coroutine around it: one frame less on every resumption
routes.post("/v1/chat/completions")(partial(handle_chat, surface=OPENAI))
