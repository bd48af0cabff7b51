"""Anthropic surface: POST /v1/messages and /v1/messages/count_tokens (also with ?beta=true)."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from ..access import check_model
from ..appkeys import RECORD
from ..protocols.anthropic import decode_request
from ..record import note_request
from ..surfaces import ANTHROPIC
from ..tokens import estimate_input_tokens
from .chat import handle_chat, read_json

__all__ = ["routes"]

routes = web.RouteTableDef()


# the chat handler itself, not a coroutine around it: one frame less on every resumption
routes.post("/v1/messages")(partial(handle_chat, surface=ANTHROPIC))


@routes.post("/v1/messages/count_tokens")
async def count_tokens(request: web.Request) -> web.Response:
    """Answered locally with an estimate (system, tools, messages, images): Claude Code calls
    this often, and a 404 here degrades its context accounting."""
    req = decode_request(await read_json(request), count_only=True)
    note_request(request.get(RECORD), req)
    check_model(request, req.model)
    return web.json_response({"input_tokens": estimate_input_tokens(req)})
