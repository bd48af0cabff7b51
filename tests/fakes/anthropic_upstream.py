"""A fake Anthropic Messages upstream (base URL `http://host:port`, no `/v1`)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .base import FakeUpstream, RecordedRequest, sse
from .replies import Reply, fragments, new_id

__all__ = ["FakeAnthropic", "anthropic_usage"]

_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_SAMPLING = ("temperature", "top_p", "top_k")  # removed in anthropic-version 2026-10-21


def anthropic_usage(reply: Reply, *, output: int | None = None) -> dict[str, Any]:
    c = reply.counts()
    return {
        "input_tokens": c["input"],  # excludes cache reads and writes
        "cache_creation_input_tokens": c["cache_creation"],
        "cache_read_input_tokens": c["cache_read"],
        "cache_creation": {"ephemeral_5m_input_tokens": c["cache_creation"], "ephemeral_1h_input_tokens": 0},
        "output_tokens": c["output"] if output is None else output,
        "service_tier": "standard",
    }


class FakeAnthropic(FakeUpstream):
    default_text = "Hello from fake-anthropic"
    id_header = "request-id"
    id_prefix = "req_011C"
    models = ["claude-sonnet-4-6", "claude-haiku-4-5-20251001"]
    require_key = True
    token_count: int | None = None  # count_tokens answer; None = estimate from the body

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        app.router.add_get("/v1/models", self.list_models)

    def error_body(self, status: int, message: str, request_id: str) -> dict[str, Any]:
        etype = _ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": etype, "message": message}, "request_id": request_id}

    async def messages(self, request: web.Request) -> web.StreamResponse:
        rec = await self.record(request)
        if problem := self._problem(rec, required=("model", "messages", "max_tokens")):
            return self.error_response(request, *problem)
        return await self.answer(request, rec, render=self.message, render_stream=self.events)

    async def count_tokens(self, request: web.Request) -> web.Response:
        rec = await self.record(request)
        if problem := self._problem(rec, required=("model", "messages")):
            return self.error_response(request, *problem)
        counted = orjson.dumps([rec.json.get(k) for k in ("system", "tools", "messages")])
        return self.json_response({"input_tokens": self.token_count or max(1, len(counted) // 4)})

    async def list_models(self, request: web.Request) -> web.Response:
        await self.record(request)
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-09-29T00:00:00Z"}
            for m in self.models
        ]
        page = {"data": data, "has_more": False, "first_id": self.models[0], "last_id": self.models[-1]}
        return self.json_response(page)

    def _problem(self, rec: RecordedRequest, *, required: tuple[str, ...]) -> tuple[int, str] | None:
        """The real API's checks that catch gateway bugs (credentials, version, body)."""
        h = rec.headers
        if self.require_key and "x-api-key" not in h and not h.get("authorization", "").startswith("Bearer "):
            return 401, "x-api-key header is required"
        if "anthropic-version" not in h:
            return 400, "anthropic-version: header is required"
        if not isinstance(rec.json, dict):
            return 400, "Request body must be a JSON object"
        for key in required:
            if key not in rec.json:
                return 400, f"{key}: Field required"
        if h["anthropic-version"] >= "2026-10-21":
            for key in _SAMPLING:
                if key in rec.json:
                    return 400, f"{key}: Extra inputs are not permitted"
        return None

    def message(
        self, reply: Reply, body: dict[str, Any], content: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        return {
            "id": new_id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": self.blocks(reply) if content is None else content,
            **_stop(reply),
            "usage": anthropic_usage(reply),
        } | reply.extra_fields

    @staticmethod
    def blocks(reply: Reply) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if reply.reasoning:
            out.append({"type": "thinking", "thinking": reply.reasoning, "signature": reply.signature})
        if reply.text:
            out.append({"type": "text", "text": reply.text})
        out += [
            {"type": "tool_use", "id": new_id("toolu_01", 22), "name": name, "input": args}
            for name, args in reply.tool_calls
        ]
        return out

    def events(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        start = self.message(reply, body, []) | {"stop_reason": None, "stop_sequence": None}
        start["usage"] = anthropic_usage(reply, output=1)
        out = [{"type": "message_start", "message": start}]
        args = iter(reply.arguments)
        for i, block in enumerate(self.blocks(reply)):
            first, deltas = _split_block(block, reply.chunk_size, args)
            out.append({"type": "content_block_start", "index": i, "content_block": first})
            if i == 0:
                out.append({"type": "ping"})  # where the real API sends it
            out += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
            out.append({"type": "content_block_stop", "index": i})
        if reply.stream_error is not None:
            error = {"type": "api_error", "message": "Fake stream error"} | reply.stream_error
            out.append({"type": "error", "error": error})
        else:
            usage = anthropic_usage(reply)
            final = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")}
            final["output_tokens"] = usage["output_tokens"]
            out.append({"type": "message_delta", "delta": _stop(reply), "usage": final})
            out.append({"type": "message_stop"})
        return [sse(data, data["type"]) for data in out]


def _stop(reply: Reply) -> dict[str, Any]:
    stop = reply.stop
    return {"stop_reason": stop, "stop_sequence": reply.stop_sequence if stop == "stop_sequence" else None}


def _split_block(block: dict[str, Any], size: int, args: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A complete block -> its empty start form and the deltas that rebuild it."""
    kind = block["type"]
    if kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": f} for f in fragments(block["thinking"], size)]
        # One signature_delta, right before the block stops.
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
        return {"type": "thinking", "thinking": "", "signature": ""}, deltas
    if kind == "text":
        return {"type": "text", "text": ""}, [{"type": "text_delta", "text": f} for f in fragments(block["text"], size)]
    # tool_use: input starts as {} and arrives only as JSON text fragments.
    parts = ["", *fragments(next(args), size)]
    return block | {"input": {}}, [{"type": "input_json_delta", "partial_json": p} for p in parts]
