"""Two made-up chat formats for the declarative `http` provider's tests.

FakeCustomJSON, `POST /generate`: takes `{"prompt": "...", ...}` and answers one JSON object
`{"result": {"output": [{"text": ...}]}, "status": "complete"|"truncated", "tokens": {"in", "out"}}`;
errors are `{"detail": {"message": ...}}`.
FakeCustomSSE, `POST /v2/stream`: SSE events `data: {"token": {"text": ...}}` and a last
`data: {"token": {"text": ""}, "final": {"reason": "eos"|"max_length", "usage": {...}}}`,
TGI-like; a non-stream request gets `{"generated_text": ...}`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .base import FakeUpstream, sse
from .replies import Reply, fragments

__all__ = ["FakeCustomJSON", "FakeCustomSSE"]


class FakeCustomJSON(FakeUpstream):
    default_text = "Hello from the JSON fake"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/generate", self.generate)

    def error_body(self, status: int, message: str, request_id: str) -> dict[str, Any]:
        return {"detail": {"message": message, "request": request_id}}

    async def generate(self, request: web.Request) -> web.StreamResponse:
        rec = await self.record(request)
        if not isinstance(rec.json, dict) or not isinstance(rec.json.get("prompt"), str):
            return self.error_response(request, 422, "prompt must be a string")
        reply = await self.next_reply(rec.json)
        if reply.is_error:
            return self.reply_error(request, reply)
        c = reply.counts()
        return self.json_response({
            "result": {"output": [{"text": reply.text}]},
            "status": "truncated" if reply.stop == "max_tokens" else "complete",
            "tokens": {"in": c["input"], "out": c["output"]}})


class FakeCustomSSE(FakeUpstream):
    default_text = "Hello from the SSE fake"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/stream", self.generate)

    def error_body(self, status: int, message: str, request_id: str) -> dict[str, Any]:
        return {"error": message, "error_type": "validation"}

    async def generate(self, request: web.Request) -> web.StreamResponse:
        rec = await self.record(request)
        return await self.answer(request, rec, render=self.whole, render_stream=self.events)

    @staticmethod
    def whole(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        return {"generated_text": reply.text}

    @staticmethod
    def events(reply: Reply, body: dict[str, Any]) -> list[bytes]:
        out = [sse({"token": {"text": f}}) for f in fragments(reply.text, reply.chunk_size)]
        c = reply.counts()
        final = {"reason": "max_length" if reply.stop == "max_tokens" else "eos",
                 "usage": {"prompt": c["input"], "completion": c["output"]}}
        return out + [sse({"token": {"text": ""}, "final": final})]
