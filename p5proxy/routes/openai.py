"""OpenAI surface: POST /v1/chat/completions."""

from __future__ import annotations

from aiohttp import web

from ..surfaces import OPENAI
from .chat import handle_chat

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await handle_chat(request, OPENAI)
