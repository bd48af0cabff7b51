"""A fake OpenAI Chat Completions upstream (base URL `http://host:port/v1`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .base import FakeUpstream, sse
from .replies import Reply, fragments, new_id

__all__ = ["FakeOpenAI", "finish_reason", "openai_usage"]

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# status -> (error.type, error.code) as the real API sends them
_ERRORS = {
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_FINGERPRINT = "fp_fake0001"
CREATED = 1_763_000_000   # every answer's `created`: fixed, so tests can tell it from the gateway's


def finish_reason(reply: Reply) -> str:
    """Anthropic stop reason -> OpenAI finish_reason; unknown values pass through."""
    return _FINISH.get(reply.stop, reply.stop)


def openai_usage(reply: Reply) -> dict[str, Any]:
    c = reply.counts()
    prompt = c["input"] + c["cache_read"] + c["cache_creation"]  # includes cached tokens
    details = {"cached_tokens": c["cache_read"], "audio_tokens": 0}
    if c["cache_creation"]:
        details["cache_write_tokens"] = c["cache_creation"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": c["output"],
        "total_tokens": prompt + c["output"],
        "prompt_tokens_details": details,
        "completion_tokens_details": {
            "reasoning_tokens": c["reasoning"],
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class FakeOpenAI(FakeUpstream):
    default_text = "Hello from fake-openai"
    static_headers = {"openai-version": "2020-10-01", "openai-processing-ms": "7"}
    models = ["gpt-4o", "gpt-4o-mini"]
    require_key = True  # False for key-less local servers (vLLM, Ollama)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.list_models)

    def error_body(self, status: int, message: str, request_id: str) -> dict[str, Any]:
        default = ("server_error" if status >= 500 else "invalid_request_error", None)
        etype, code = _ERRORS.get(status, default)
        return {"error": {"message": message, "type": etype, "param": None, "code": code}}

    async def list_models(self, request: web.Request) -> web.Response:
        await self.record(request)
        data = [{"id": m, "object": "model", "created": 1715367049, "owned_by": "system"} for m in self.models]
        return self.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self.record(request)
        if self.require_key and not rec.headers.get("authorization", "").startswith("Bearer "):
            return self.error_response(request, 401, "You didn't provide an API key.")
        if problem := _problem(rec.json):
            return self.error_response(request, 400, problem)
        return await self.answer(request, rec, render=self.completion, render_stream=self.chunks)

    @staticmethod
    def _envelope(body: dict[str, Any], obj: str) -> dict[str, Any]:
        return {"id": new_id("chatcmpl-", 29), "object": obj, "created": CREATED,
                "model": body["model"]}

    def completion(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text or (None if reply.tool_calls else ""),
            "refusal": None,
            "annotations": [],
        }
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning  # DeepSeek-style extension
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": new_id("call_"), "type": "function", "function": {"name": name, "arguments": args}}
                for (name, _), args in zip(reply.tool_calls, reply.arguments, strict=True)
            ]
        choice = {"index": 0, "message": message, "logprobs": reply.logprobs,
                  "finish_reason": finish_reason(reply)}
        return self._envelope(body, "chat.completion") | {
            "choices": [choice],
            "usage": openai_usage(reply),
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        } | reply.extra_fields

    def chunks(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        base = self._envelope(body, "chat.completion.chunk")
        base |= {"service_tier": "default", "system_fingerprint": _FINGERPRINT}
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        tail = {"usage": None} if with_usage else {}  # the real API nulls usage until the end

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return base | {"choices": [choice]} | tail

        # role, id and name appear once: the Python SDK concatenates repeated strings.
        out = [chunk({"role": "assistant", "content": "", "refusal": None}) | reply.extra_fields]
        out += [chunk({"reasoning_content": f}) for f in fragments(reply.reasoning, reply.chunk_size)]
        out += [chunk({"content": f}) for f in fragments(reply.text, reply.chunk_size)]
        for i, ((name, _), args) in enumerate(zip(reply.tool_calls, reply.arguments, strict=True)):
            head = {"index": i, "id": new_id("call_"), "type": "function", "function": {"name": name, "arguments": ""}}
            out.append(chunk({"tool_calls": [head]}))
            out += [
                chunk({"tool_calls": [{"index": i, "function": {"arguments": f}}]})
                for f in fragments(args, reply.chunk_size)
            ]
        if reply.stream_error is not None:
            error = {"message": "Fake stream error", "type": "server_error", "param": None, "code": None}
            return [sse(c) for c in out] + [sse({"error": error | reply.stream_error})]
        out.append(chunk({}, finish_reason(reply)))
        if with_usage:
            out.append(base | {"choices": [], "usage": openai_usage(reply)})
        return [sse(c) for c in out] + [b"data: [DONE]\n\n"]


def _problem(body: Any) -> str | None:
    """The few request checks of the real API that catch gateway bugs."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request."
    for key in ("model", "messages"):
        if key not in body:
            return f"Missing required parameter: '{key}'."
    if body.get("stream_options") is not None and not body.get("stream"):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    return None
