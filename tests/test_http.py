"""HTTP behaviour of the gateway seen with a plain HTTP client: endpoints, auth, limits,
errors in each protocol's shape, timeouts, keep-alives and cancellation."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from p5proxy.config import config_from_dict
from tests.conftest import Gateway, app_for, gateway_config, start_gateway
from tests.fakes.fixtures import eventually
from tests.fakes.replies import Reply

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "client-key"}
MSG = {"model": "claude-sonnet-4-5", "max_tokens": 64,
       "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


async def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=data, headers=headers or ANTHROPIC_HEADERS) as resp:
            raw = await resp.read()
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = raw
            return resp.status, parsed, resp.headers


async def stream_lines(url: str, body: Any, headers: dict[str, str] | None = None) -> list[str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers=headers or ANTHROPIC_HEADERS) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
            return (await resp.text()).split("\n")


async def test_root_health_and_preflight(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.head(gateway.url + "/") as resp:
            assert resp.status == 200
        async with session.get(gateway.url + "/") as resp:
            assert resp.status == 200
        async with session.get(gateway.url + "/health") as resp:
            health = await resp.json()
            raw = orjson.dumps(health).decode()
    assert health["status"] == "ok"
    assert health["providers"]["oa"]["type"] == "openai"
    assert "sk-upstream" not in raw   # no secrets


async def test_models_in_both_shapes(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/v1/models",
                               headers={"Authorization": "Bearer k"}) as resp:
            openai_shape = await resp.json()
        async with session.get(gateway.url + "/v1/models", headers=ANTHROPIC_HEADERS) as resp:
            anthropic_shape = await resp.json()
    ids = [m["id"] for m in openai_shape["data"]]
    assert openai_shape["object"] == "list" and "gpt-4o" in ids and "claude-haiku-*" not in ids
    assert anthropic_shape["has_more"] is False
    assert anthropic_shape["first_id"] == ids[0] and anthropic_shape["last_id"] == ids[-1]


async def test_count_tokens_counts_system_tools_messages_and_images(gateway: Gateway) -> None:
    url = gateway.url + "/v1/messages/count_tokens?beta=true"
    base = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hello " * 50}]}
    tools = [{"name": f"tool{i}", "description": "does things " * 20,
              "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}}}
             for i in range(5)]
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
    counts = []
    for body in (base, {**base, "system": "You are helpful. " * 40}, {**base, "tools": tools},
                 {**base, "messages": [{"role": "user", "content": [image, {"type": "text", "text": "hi"}]}]}):
        status, answer, _ = await post(url, body)
        assert status == 200, answer
        counts.append(answer["input_tokens"])
    assert all(c > 0 for c in counts)
    assert counts[1] > counts[0] and counts[2] > counts[0] and counts[3] > 1000
    assert gateway.openai.requests == []   # answered locally


async def test_invalid_json_in_each_protocol_shape(gateway: Gateway) -> None:
    status, body, headers = await post(gateway.url + "/v1/messages?beta=true", b"{not json")
    assert status == 400 and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error" and "JSON" in body["error"]["message"]
    assert body["request_id"] == headers["request-id"]
    status, body, _ = await post(gateway.url + "/v1/chat/completions", b"[1,",
                                 {"Authorization": "Bearer k"})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert set(body["error"]) == {"message", "type", "param", "code"}


async def test_wrong_field_types_name_the_field(gateway: Gateway) -> None:
    cases = [
        ("/v1/messages", {**MSG, "max_tokens": "many"}, "max_tokens"),
        ("/v1/messages", {**MSG, "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ("/v1/messages", {**MSG, "messages": [{"role": "user", "content": [{"type": "image",
                                                                            "source": 3}]}]},
         "messages.0.content.0.source"),
        ("/v1/messages", {k: v for k, v in MSG.items() if k != "max_tokens"}, "max_tokens"),
        ("/v1/chat/completions", {**CHAT, "messages": "hi"}, "messages"),
        ("/v1/chat/completions", {**CHAT, "temperature": "hot"}, "temperature"),
        ("/v1/chat/completions", {**CHAT, "model": 5}, "model"),
    ]
    for path, body, field in cases:
        status, answer, _ = await post(gateway.url + path, body)
        assert status == 400, (field, answer)
        message = answer["error"]["message"]
        assert message.startswith(field + ":"), (field, message)
        if path.endswith("completions"):
            assert answer["error"]["param"] == field


async def test_unknown_model_is_404_listing_configured_names(gateway: Gateway) -> None:
    status, body, _ = await post(gateway.url + "/v1/messages", {**MSG, "model": "nope-1"})
    assert status == 404 and body["error"]["type"] == "not_found_error"
    assert "gpt-4o" in body["error"]["message"] and "nope-1" in body["error"]["message"]
    status, body, _ = await post(gateway.url + "/v1/chat/completions", {**CHAT, "model": "nope-1"})
    assert status == 404 and body["error"]["code"] == "model_not_found"


async def test_unconfigured_gateway_says_how_to_configure(aiohttp_server: Any) -> None:
    url = await start_gateway(aiohttp_server, {})
    status, body, _ = await post(url + "/v1/messages", MSG)
    assert status == 404
    assert "OPENAI_BASE_URL" in body["error"]["message"] and "--config" in body["error"]["message"]


async def test_oversize_body_is_413_in_protocol_shape(make_gateway: Any) -> None:
    gw = await make_gateway(server={"max_body_bytes": 4096, "heartbeat_secs": 0.5})
    big = {**MSG, "messages": [{"role": "user", "content": "x" * 10_000}]}
    status, body, _ = await post(gw.url + "/v1/messages", big)
    assert status == 413 and body["error"]["type"] == "request_too_large"
    status, body, _ = await post(gw.url + "/v1/chat/completions", {**CHAT, **big, "model": "gpt-4o"})
    assert status == 413 and body["error"]["type"] == "invalid_request_error"


async def test_client_keys_checked_and_never_forwarded(make_gateway: Any) -> None:
    gw = await make_gateway(auth={"keys": ["team-key"]})
    status, body, _ = await post(gw.url + "/v1/messages", MSG, {"anthropic-version": "2023-06-01"})
    assert status == 401 and body["error"]["type"] == "authentication_error"
    status, body, _ = await post(gw.url + "/v1/chat/completions", CHAT, {"Authorization": "Bearer wrong"})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, _, _ = await post(gw.url + "/v1/messages", MSG, {"x-api-key": "team-key"})
    assert status == 200
    status, _, _ = await post(gw.url + "/v1/chat/completions", CHAT, {"Authorization": "Bearer team-key"})
    assert status == 200
    for rec in gw.openai.requests:
        assert rec.headers["authorization"] == "Bearer sk-upstream-openai"
        assert "team-key" not in str(rec.headers)


async def test_unreachable_upstream_is_502(aiohttp_server: Any, unused_tcp_port: int) -> None:
    url = await start_gateway(aiohttp_server, {
        "providers": {"dead": {"type": "openai", "base_url": f"http://127.0.0.1:{unused_tcp_port}/v1"}},
        "models": {"gpt-4o": {"provider": "dead"}}})
    status, body, _ = await post(url + "/v1/chat/completions", CHAT, {"Authorization": "Bearer k"})
    assert status == 502 and body["error"]["type"] == "server_error"
    status, body, _ = await post(url + "/v1/messages", {**MSG, "model": "gpt-4o"})
    assert status == 502 and body["error"]["type"] == "api_error"


def timeouts(provider: str, **values: float) -> Any:
    def configure(cfg: dict[str, Any]) -> None:
        cfg["providers"][provider]["timeouts"] = values
    return configure


async def test_silent_upstream_times_out_with_504(make_gateway: Any) -> None:
    gw = await make_gateway(timeouts("oa", first_byte=0.3))
    gw.openai.replies.append(Reply(hang=True))
    status, body, _ = await post(gw.url + "/v1/messages", MSG)
    assert status == 504 and body["error"]["type"] == "timeout_error"
    await eventually(lambda: gw.openai.cancelled == 1)   # the upstream call was closed


async def test_stream_stalling_mid_way_ends_with_error_event(make_gateway: Any) -> None:
    gw = await make_gateway(timeouts("oa", idle=0.4))
    gw.openai.replies.append(Reply(text="abcdefgh" * 4, chunk_size=8, delay=5.0))
    lines = await stream_lines(gw.url + "/v1/messages", {**MSG, "stream": True})
    events = [line[7:] for line in lines if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "error"
    assert "message_stop" not in events
    error = orjson.loads(next(line[6:] for line in reversed(lines) if line.startswith("data: ")))
    assert error["error"]["type"] == "timeout_error"


async def test_keepalives_during_upstream_silence(make_gateway: Any) -> None:
    gw = await make_gateway(server={"heartbeat_secs": 0.2})
    gw.openai.replies.append(Reply(text="slowly", chunk_size=6, delay=0.5))
    lines = await stream_lines(gw.url + "/v1/messages", {**MSG, "stream": True})
    events = [line[7:] for line in lines if line.startswith("event: ")]
    assert events.count("ping") >= 2 and events[-1] == "message_stop"
    gw.openai.replies.append(Reply(text="slowly", chunk_size=6, delay=0.5))
    lines = await stream_lines(gw.url + "/v1/chat/completions", {**CHAT, "stream": True},
                               {"Authorization": "Bearer k"})
    assert lines.count(": keep-alive") >= 2 and "data: [DONE]" in lines


async def test_client_disconnect_cancels_the_upstream_stream(gateway: Gateway) -> None:
    gateway.openai.replies.append(Reply(text="x" * 400, chunk_size=4, delay=0.05))
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.url + "/v1/messages", json={**MSG, "stream": True},
                                headers=ANTHROPIC_HEADERS) as resp:
            assert resp.status == 200
            await resp.content.readany()
    # leaving the block closed the connection mid-stream
    await eventually(lambda: gateway.openai.cancelled == 1, timeout=3)
    assert gateway.openai.open_streams == 0


async def test_client_gone_before_its_answer_is_written_logs_no_traceback(
        fake_openai: Any, fake_anthropic: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A client that hangs up while its (non-stream) answer is on the way: the write fails,
    which is the client's business, not an error of the gateway's to log with a traceback.
    (Without handler cancellation, aiohttp's default, the handler always gets that far.)"""
    (oa, oa_url), (_, an_url) = fake_openai, fake_anthropic
    app = app_for(config_from_dict(gateway_config(oa_url, an_url)))
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        await _hang_up_before_the_answer(port, oa, caplog)
    finally:
        await runner.cleanup()


async def _hang_up_before_the_answer(port: int, oa: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    raw = orjson.dumps(CHAT)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n").encode()
    for _ in range(3):
        oa.replies.append(Reply(text="late", delay=0.1))
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + raw)
        await writer.drain()
        writer.close()   # gone while the gateway waits on the upstream
    await eventually(lambda: len(oa.requests) == 3, timeout=3)
    await eventually(lambda: caplog.text.count("p5proxy.access") >= 3, timeout=3)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert caplog.text.count("error_type=client_closed") == 3


async def test_upstream_error_before_first_byte_is_a_real_http_error(gateway: Gateway) -> None:
    gateway.openai.replies.append(Reply(status=429, headers={"retry-after": "7"}))
    status, body, headers = await post(gateway.url + "/v1/messages", {**MSG, "stream": True})
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert headers["Retry-After"] == "7"
    gateway.anthropic.replies.append(Reply(status=529))
    status, body, _ = await post(gateway.url + "/v1/chat/completions",
                                 {**CHAT, "model": "gpt-via-claude", "stream": True},
                                 {"Authorization": "Bearer k"})
    assert status == 503 and body["error"]["type"] == "server_error"


async def test_unknown_paths_answer_in_protocol_shape(gateway: Gateway) -> None:
    status, body, _ = await post(gateway.url + "/v1/nothing", {}, {"Authorization": "Bearer k"})
    assert status == 404 and "error" in body and "message" in body["error"]


async def test_sampling_stripped_for_anthropic_version_2026_10_21(gateway: Gateway) -> None:
    """That version removed temperature/top_p/top_k (400 even at defaults)."""
    body = {**MSG, "model": "claude-native", "temperature": 0.2, "top_k": 5}
    status, answer, _ = await post(gateway.url + "/v1/messages", body,
                                   {**ANTHROPIC_HEADERS, "anthropic-version": "2026-10-21"})
    assert status == 200, answer
    sent = gateway.anthropic.last
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert "temperature" not in sent.json and "top_k" not in sent.json
    status, _, _ = await post(gateway.url + "/v1/messages", body)   # 2023-06-01 keeps them
    assert status == 200 and gateway.anthropic.last.json["temperature"] == 0.2


async def test_overhead_header_reports_the_gateways_own_time(gateway: Gateway) -> None:
    for body, extra in ((MSG, {}), ({**MSG, "stream": True}, {})):
        _, _, headers = await post(gateway.url + "/v1/messages", {**body, **extra})
        overhead = float(headers["X-Gateway-Overhead-Ms"])
        assert 0 <= overhead < 1000
    # a slow upstream answer is upstream time, not overhead
    gateway.openai.replies.append(Reply(text="slow answer", chunk_size=3, delay=0.2))
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.url + "/v1/chat/completions",
                                json={**CHAT, "stream": True},
                                headers={"Authorization": "Bearer k"}) as resp:
            await resp.read()
            assert float(resp.headers["X-Gateway-Overhead-Ms"]) < 150


def _openai_sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("cache", [False, True], ids=["live", "cached"])
async def test_same_protocol_stream_relays_logprobs(make_gateway: Any, cache: bool) -> None:
    """A client that asks for logprobs in a stream gets the upstream's, chunk by chunk (they
    used to come out as null). With the cache on, such an answer is served but not stored: a
    replay re-chunks the text, and the logprobs would not match it."""
    gw = await make_gateway(cache={"enabled": cache})
    lp = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]}
    envelope = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4o-upstream"}
    answer = Reply(raw_sse=_openai_sse(
        {**envelope, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                  "logprobs": None, "finish_reason": None}]},
        {**envelope, "choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": lp,
                                  "finish_reason": None}]},
        {**envelope, "choices": [{"index": 0, "delta": {"content": " there"},
                                  "logprobs": None, "finish_reason": None}]},
        {**envelope, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                  "finish_reason": "stop"}]}))
    body = {**CHAT, "stream": True, "logprobs": True}
    for _ in range(2):
        gw.openai.replies.append(answer)
        lines = await stream_lines(gw.url + "/v1/chat/completions", body,
                                   {"Authorization": "Bearer k"})
        chunks = [orjson.loads(line[6:]) for line in lines
                  if line.startswith("data: {")]
        choices = [c["choices"][0] for c in chunks if c["choices"]]
        assert [(ch["delta"].get("content"), ch["logprobs"]) for ch in choices
                if ch["delta"].get("content")] == [("Hi", lp), (" there", None)]
    assert len(gw.openai.requests) == 2


async def test_a_streamed_refusal_stays_a_refusal(gateway: Gateway) -> None:
    """OpenAI streams a structured-output refusal as `delta.refusal`: an OpenAI client gets it
    so (it used to get an empty answer), an Anthropic client gets the text."""
    envelope = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4o-upstream"}

    def sse() -> bytes:
        return _openai_sse(*(
            {**envelope, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish}]}
            for delta, finish in (({"role": "assistant", "content": None, "refusal": ""}, None),
                                  ({"refusal": "I can't"}, None), ({"refusal": " help."}, None),
                                  ({}, "stop"))))

    gateway.openai.replies.append(Reply(raw_sse=sse()))
    lines = await stream_lines(gateway.url + "/v1/chat/completions", {**CHAT, "stream": True},
                               {"Authorization": "Bearer k"})
    deltas = [orjson.loads(line[6:])["choices"][0]["delta"] for line in lines
              if line.startswith("data: {")]
    assert "".join(d.get("refusal") or "" for d in deltas) == "I can't help."
    assert not any(d.get("content") for d in deltas)
    gateway.openai.replies.append(Reply(raw_sse=sse()))
    lines = await stream_lines(gateway.url + "/v1/messages", {**MSG, "stream": True})
    texts = [orjson.loads(line[6:])["delta"]["text"] for line in lines
             if line.startswith("data: ") and '"text_delta"' in line]
    assert "".join(texts) == "I can't help."


async def test_same_protocol_non_stream_answer_is_verbatim(gateway: Gateway) -> None:
    """Every field the upstream sent survives (usage details, logprobs, service tier...);
    only the model name is the one the client asked for."""
    gateway.openai.replies.append(Reply(text="hi", extra_fields={"service_tier": "flex",
                                                                 "x_vendor": {"a": 1}}))
    status, body, _ = await post(gateway.url + "/v1/chat/completions", CHAT,
                                 {"Authorization": "Bearer k"})
    assert status == 200 and body["model"] == "gpt-4o"
    assert body["service_tier"] == "flex" and body["x_vendor"] == {"a": 1}
    assert body["choices"][0]["message"]["content"] == "hi"
    gateway.anthropic.replies.append(Reply(text="hi", extra_fields={"container": {"id": "c1"}}))
    status, body, _ = await post(gateway.url + "/v1/messages", {**MSG, "model": "claude-native"})
    assert status == 200 and body["model"] == "claude-native"
    assert body["container"] == {"id": "c1"} and body["id"].startswith("msg_")
