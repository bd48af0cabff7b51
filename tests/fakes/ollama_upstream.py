"""A fake of Ollama's native chat API, `POST /api/chat` (base URL `http://host:port`).

Streams by default, as Ollama does: NDJSON lines `{"model":..,"message":{"role":"assistant",
"content":".."},"done":false}` and a last `{"done":true,"done_reason":"stop",
"prompt_eval_count":N,"eval_count":M}`; `"stream": false` gives one JSON object. Errors are
`{"error": "..."}` with the HTTP status; a mid-stream error is an `{"error": ...}` line.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from aiohttp import web

from .base import FakeUpstream
from .replies import Reply, fragments

__all__ = ["FakeOllama"]

_CREATED = "2025-01-01T00:00:00.000000Z"
_NDJSON = {"content-type": "application/x-ndjson"}


class FakeOllama(FakeUpstream):
    default_text = "Hello from fake-ollama"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self.chat)

    def error_body(self, status: int, message: str, request_id: str) -> dict[str, Any]:
        return {"error": message}

    async def chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self.record(request)
        if problem := _problem(rec.json):
            return self.error_response(request, 400, problem)
        reply = await self.next_reply(rec.json)
        if reply.hang:
            await self.hang()
        if reply.is_error:
            return self.reply_error(request, reply)
        ndjson = dataclasses.replace(reply, headers={**_NDJSON, **reply.headers})
        if reply.raw_sse is not None:
            raw = reply.raw_sse
            return await self.stream(request, ndjson, [raw] if isinstance(raw, bytes) else list(raw))
        if rec.json.get("stream", True):
            return await self.stream(request, ndjson, self.lines(reply, rec.json))
        return self.json_response(self.final(reply, rec.json, whole=True), headers=reply.headers)

    @staticmethod
    def _message(body: dict[str, Any], content: str, thinking: str = "") -> dict[str, Any]:
        message = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        return {"model": body["model"], "created_at": _CREATED, "message": message}

    def final(self, reply: Reply, body: dict[str, Any], *, whole: bool = False) -> dict[str, Any]:
        c = reply.counts()
        out = self._message(body, reply.text if whole else "", reply.reasoning if whole else "")
        return out | {"done": True, "done_reason": "length" if reply.stop == "max_tokens" else "stop",
                      "total_duration": 1000, "load_duration": 10, "prompt_eval_count": c["input"],
                      "eval_count": c["output"]}

    def lines(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        out = [self._message(body, "", f) | {"done": False}
               for f in fragments(reply.reasoning, reply.chunk_size)]
        out += [self._message(body, f) | {"done": False} for f in fragments(reply.text, reply.chunk_size)]
        if reply.stream_error is not None:
            out.append({"error": reply.stream_error.get("message", "fake stream error")})
        else:
            out.append(self.final(reply, body))
        return [orjson.dumps(line) + b"\n" for line in out]


def _problem(body: Any) -> str | None:
    """The checks of the real server that catch gateway bugs."""
    if not isinstance(body, dict):
        return "invalid character looking for beginning of value"
    if not body.get("model"):
        return "model is required"
    for msg in body.get("messages") or []:
        if not isinstance(msg.get("content", ""), (str, type(None))):
            return "json: cannot unmarshal array into Go struct field Message.messages.content of type string"
        if msg.get("role") not in ("system", "user", "assistant", "tool"):
            return f"invalid role: {msg.get('role')}"
    return None
