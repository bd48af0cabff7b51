"""The gateway as a one-api / new-api channel: the requests those front-ends send, replayed
byte for byte as their Go code builds them, and the checks they make on the answers.

What they send (one-api `controller/channel-test.go`, `controller/channel-billing.go`,
`relay/adaptor/openai`, `relay/adaptor/anthropic`; new-api likewise):
- channel test: a non-stream chat call with one user message; the answer must be JSON with a
  string `choices[0].message.content` and a non-zero `usage.completion_tokens`;
- relayed streams: `stream_options.include_usage` forced on for OpenAI-type channels (one-api),
  removed for some channel types (new-api), so usage must be right either way;
- "fetch models": `GET /v1/models` with the channel key as Bearer;
- balance: `GET /v1/dashboard/billing/subscription`, then
  `GET /v1/dashboard/billing/usage?start_date=…&end_date=…`; balance = hard_limit_usd -
  total_usage / 100, and a balance <= 0 disables the channel;
- automatic disabling (`ShouldDisableChannel`): HTTP 401, error types authentication_error,
  permission_error, insufficient_quota, forbidden, codes invalid_api_key/account_deactivated,
  and messages mentioning credit, balance, permission denied, api key not valid...
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from tests.conftest import Gateway, start_gateway
from tests.fakes.replies import Reply

KEY = "sk-oneapi-channel-key"
TEST_PROMPT = "Output only your specific model name with no additional text."
GO_HEADERS = {"User-Agent": "Go-http-client/1.1", "Accept-Encoding": "gzip"}
# (gateway model name, fake upstream behind it): native OpenAI, translated to Anthropic
MODELS = [("gpt-4o", "openai"), ("gpt-via-claude", "anthropic")]


def go_json(value: Any) -> bytes:
    """encoding/json's output: compact, keys in struct order."""
    return orjson.dumps(value)


def should_disable(status: int, error: dict[str, Any]) -> bool:
    """one-api's ShouldDisableChannel rule, on an OpenAI-shaped error object."""
    if status == 401:
        return True
    if error.get("type") in ("insufficient_quota", "authentication_error", "permission_error",
                             "forbidden"):
        return True
    if error.get("code") in ("invalid_api_key", "account_deactivated"):
        return True
    message = str(error.get("message", "")).lower()
    return any(words in message for words in (
        "your access was terminated", "violation of our policies", "credit", "balance",
        "permission denied", "organization has been restricted", "api key not valid",
        "api key expired", "organization has been disabled", "quota"))


@pytest.fixture
async def gw(make_gateway: Any) -> Gateway:
    return await make_gateway(auth={"keys": [KEY]})


def upstream(gw: Gateway, kind: str) -> Any:
    return gw.openai if kind == "openai" else gw.anthropic


async def send(method: str, url: str, *, body: bytes | None = None,
               headers: dict[str, str]) -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession(skip_auto_headers=("User-Agent",)) as session:
        async with session.request(method, url, data=body, headers={**GO_HEADERS, **headers}) as r:
            return r.status, await r.read(), r.headers


def openai_channel_headers(stream: bool = False) -> dict[str, str]:
    # relay/adaptor/openai: Content-Type and Accept from the client request, the channel key
    return {"Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "Authorization": "Bearer " + KEY}


@pytest.mark.parametrize("model,kind", MODELS)
async def test_channel_test_openai_type(gw: Gateway, model: str, kind: str) -> None:
    upstream(gw, kind).replies.append(Reply(text="qwen3-coder", usage={"input": 17, "output": 3}))
    body = go_json({"model": model, "messages": [{"role": "user", "content": TEST_PROMPT}]})
    status, raw, _ = await send("POST", gw.url + "/v1/chat/completions", body=body,
                                headers=openai_channel_headers())
    assert status == 200
    answer = orjson.loads(raw)
    content = answer["choices"][0]["message"]["content"]
    assert isinstance(content, str) and content == "qwen3-coder"   # parseTestResponse
    assert answer["usage"]["completion_tokens"] == 3                # != 0, or the test fails
    assert answer["usage"]["prompt_tokens"] == 17
    assert answer["usage"]["total_tokens"] == 20
    assert answer["model"] == model


async def test_channel_test_anthropic_type(gw: Gateway) -> None:
    """An Anthropic-type channel: one-api converts the test to a Messages call."""
    gw.anthropic.replies.append(Reply(text="claude-sonnet-4-5", usage={"input": 21, "output": 5}))
    body = go_json({"model": "claude-native", "messages": [
        {"role": "user", "content": [{"type": "text", "text": TEST_PROMPT}]}],
        "max_tokens": 4096})
    status, raw, _ = await send("POST", gw.url + "/v1/messages", body=body, headers={
        "Content-Type": "application/json", "Accept": "application/json", "x-api-key": KEY,
        "anthropic-version": "2023-06-01", "anthropic-beta": "messages-2023-12-15"})
    assert status == 200
    answer = orjson.loads(raw)
    assert answer["content"][0] == {"type": "text", "text": "claude-sonnet-4-5"}
    assert answer["usage"]["input_tokens"] == 21 and answer["usage"]["output_tokens"] == 5
    assert gw.anthropic.last.headers["anthropic-beta"] == "messages-2023-12-15"


def sse_chunks(raw: bytes) -> list[Any]:
    chunks = []
    for line in raw.decode().split("\n"):
        if line.startswith("data: "):
            data = line[6:]
            chunks.append(data if data == "[DONE]" else orjson.loads(data))
    return chunks


@pytest.mark.parametrize("model,kind", MODELS)
async def test_relayed_stream_with_forced_include_usage(gw: Gateway, model: str,
                                                        kind: str) -> None:
    upstream(gw, kind).replies.append(Reply(text="Hello there, channel",
                                            usage={"input": 9, "output": 6}))
    body = go_json({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "stream": True, "stream_options": {"include_usage": True}})
    status, raw, headers = await send("POST", gw.url + "/v1/chat/completions", body=body,
                                      headers=openai_channel_headers(stream=True))
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    chunks = sse_chunks(raw)
    assert chunks[-1] == "[DONE]"
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 9
    assert usage_chunk["usage"]["completion_tokens"] == 6
    assert usage_chunk["usage"]["total_tokens"] == 15
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-2]
                   if c["choices"])
    assert text == "Hello there, channel"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-2]
            if c["choices"] and c["choices"][0]["finish_reason"]] == ["stop"]
    assert all(c.get("usage") is None for c in chunks[:-2])   # usage only in the last chunk


@pytest.mark.parametrize("model,kind", MODELS)
async def test_stream_without_stream_options(gw: Gateway, model: str, kind: str) -> None:
    """new-api strips stream_options for some channels and counts tokens itself: the stream
    must be a plain, complete OpenAI stream without a usage chunk."""
    upstream(gw, kind).replies.append(Reply(text="counted by the front-end"))
    body = go_json({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "stream": True})
    status, raw, _ = await send("POST", gw.url + "/v1/chat/completions", body=body,
                                headers=openai_channel_headers(stream=True))
    assert status == 200
    chunks = sse_chunks(raw)
    assert chunks[-1] == "[DONE]"
    assert all(c["choices"] and c.get("usage") is None for c in chunks[:-1])
    assert "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks[:-1]) == "counted by the front-end"
    # the upstream was still asked for usage where it speaks OpenAI (the gateway needs it)
    if kind == "openai":
        assert gw.openai.last.json["stream_options"] == {"include_usage": True}


async def test_max_completion_tokens_and_developer_role(gw: Gateway) -> None:
    body = go_json({"model": "gpt-via-claude", "max_completion_tokens": 77, "messages": [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "hi"}]})
    status, raw, _ = await send("POST", gw.url + "/v1/chat/completions", body=body,
                                headers=openai_channel_headers())
    assert status == 200, raw
    sent = gw.anthropic.last.json
    assert sent["max_tokens"] == 77
    assert "Answer in French." in orjson.dumps(sent["system"]).decode()
    assert [m["role"] for m in sent["messages"]] == ["user"]
    status, raw, _ = await send("POST", gw.url + "/v1/chat/completions", body=go_json(
        {"model": "gpt-4o", "max_completion_tokens": 55, "messages": [
            {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}]}),
        headers=openai_channel_headers())
    assert status == 200, raw
    sent = gw.openai.last.json
    assert (sent.get("max_completion_tokens") or sent.get("max_tokens")) == 55
    assert sent["messages"][0]["content"] == "Be brief."


async def test_fetch_models_with_bearer_key(gw: Gateway) -> None:
    status, raw, _ = await send("GET", gw.url + "/v1/models",
                                headers={"Authorization": "Bearer " + KEY})
    assert status == 200
    ids = [m["id"] for m in orjson.loads(raw)["data"]]
    assert {"gpt-4o", "gpt-via-claude", "claude-native"} <= set(ids)
    status, _, _ = await send("GET", gw.url + "/v1/models",
                              headers={"Authorization": "Bearer wrong"})
    assert status == 401


async def test_billing_polls(gw: Gateway) -> None:
    """updateChannelBalance: subscription, then usage since the start of the month (or the
    last 100 days without a payment method); the channel stays enabled when balance > 0."""
    auth = {"Authorization": "Bearer " + KEY}
    status, raw, _ = await send("GET", gw.url + "/v1/dashboard/billing/subscription",
                                headers=auth)
    assert status == 200
    sub = orjson.loads(raw)
    assert isinstance(sub["hard_limit_usd"], float) and sub.get("error") is None
    assert isinstance(sub["has_payment_method"], bool)
    now = datetime.date.today()
    start = now.replace(day=1) if sub["has_payment_method"] else now - datetime.timedelta(100)
    status, raw, _ = await send(
        "GET", f"{gw.url}/v1/dashboard/billing/usage?start_date={start:%Y-%m-%d}"
               f"&end_date={now:%Y-%m-%d}", headers=auth)
    assert status == 200
    usage = orjson.loads(raw)
    assert isinstance(usage["total_usage"], float)
    assert sub["hard_limit_usd"] - usage["total_usage"] / 100 > 0
    status, raw, _ = await send("GET", gw.url + "/v1/dashboard/billing/subscription",
                                headers={"Authorization": "Bearer wrong"})
    assert status == 401   # the billing endpoints are behind the keys like the rest


async def test_wrong_gateway_key_is_what_disables(gw: Gateway) -> None:
    """The one failure that is the channel's own fault: a wrong key (one-api disables)."""
    status, raw, _ = await send("POST", gw.url + "/v1/chat/completions", body=go_json(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        headers={**openai_channel_headers(), "Authorization": "Bearer not-the-key"})
    assert status == 401 and should_disable(status, orjson.loads(raw)["error"])


TRANSIENT = [
    Reply(status=429, error={"error": {"message": "Rate limit reached for requests",
                                       "type": "requests", "code": "rate_limit_exceeded"}}),
    Reply(status=503, error={"error": {"message": "The server is overloaded",
                                       "type": "server_error", "code": None}}),
    Reply(status=500, error={"error": {"message": "Internal error", "type": "server_error"}}),
]


@pytest.mark.parametrize("reply", TRANSIENT, ids=["429", "503", "500"])
@pytest.mark.parametrize("stream", [False, True])
async def test_transient_upstream_failures_do_not_disable(gw: Gateway, reply: Reply,
                                                          stream: bool) -> None:
    gw.openai.replies.append(reply)
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    status, raw, headers = await send("POST", gw.url + "/v1/chat/completions",
                                      body=go_json(body), headers=openai_channel_headers(stream))
    assert status == 429 or status >= 500
    assert int(headers["Retry-After"]) > 0
    error = orjson.loads(raw)["error"]
    assert not should_disable(status, error), error


async def test_transient_translated_failures_do_not_disable(gw: Gateway) -> None:
    """Anthropic upstream overloaded (529) or rate limited, seen through an OpenAI channel."""
    for reply, expected in ((Reply(status=529), 503), (Reply(status=429), 429)):
        gw.anthropic.replies.append(reply)
        status, raw, headers = await send("POST", gw.url + "/v1/chat/completions", body=go_json(
            {"model": "gpt-via-claude", "messages": [{"role": "user", "content": "hi"}]}),
            headers=openai_channel_headers())
        assert status == expected and int(headers["Retry-After"]) > 0
        assert not should_disable(status, orjson.loads(raw)["error"])


async def test_unreachable_and_slow_upstreams_do_not_disable(aiohttp_server: Any,
                                                             unused_tcp_port: int) -> None:
    url = await start_gateway(aiohttp_server, {
        "auth": {"keys": [KEY]},
        "providers": {"dead": {"type": "openai",
                               "base_url": f"http://127.0.0.1:{unused_tcp_port}/v1"}},
        "models": {"gpt-4o": {"provider": "dead"}}})
    status, raw, headers = await send("POST", url + "/v1/chat/completions", body=go_json(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        headers=openai_channel_headers())
    assert status >= 500 and int(headers["Retry-After"]) > 0
    assert not should_disable(status, orjson.loads(raw)["error"])


async def test_timeout_does_not_disable(make_gateway: Any) -> None:
    def short(cfg: dict[str, Any]) -> None:
        cfg["providers"]["oa"]["timeouts"] = {"first_byte": 0.3}
    gw = await make_gateway(short, auth={"keys": [KEY]})
    gw.openai.replies.append(Reply(hang=True))
    status, raw, headers = await send("POST", gw.url + "/v1/chat/completions", body=go_json(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        headers=openai_channel_headers())
    assert status == 504 and int(headers["Retry-After"]) > 0
    assert not should_disable(status, orjson.loads(raw)["error"])


async def test_usage_is_estimated_when_a_same_protocol_upstream_reports_none(
        make_gateway: Any) -> None:
    """Some OpenAI-compatible servers ignore stream_options: the usage chunk one-api bills from
    still carries a prompt token count (the gateway's estimate) rather than 0."""
    gw = await make_gateway()
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi there"},
                          "finish_reason": None}]}
    end = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    gw.openai.replies.append(Reply(raw_sse=b"".join(
        b"data: " + json.dumps(c).encode() + b"\n\n" for c in (chunk, end)) + b"data: [DONE]\n\n"))
    body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "a question of some length " * 20}]}
    async with httpx.AsyncClient(timeout=20) as client:
        resp = await client.post(gw.url + "/v1/chat/completions", json=body,
                                 headers={"Authorization": "Bearer k"})
    usage = [json.loads(line[6:]) for line in resp.text.splitlines()
             if line.startswith("data: {") and '"usage":{' in line][-1]["usage"]
    assert usage["prompt_tokens"] > 50
