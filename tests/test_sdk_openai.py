"""End to end with the official OpenAI SDK: a real client on a real socket against the running
gateway, which talks to fake upstreams of both protocols.

`gpt-4o` passes through to the OpenAI-format fake; `gpt-via-claude` is translated to the
Anthropic-format fake. Most tests run both routes and both modes (create / stream).
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import Gateway
from tests.fakes import FakeAnthropic, FakeOpenAI, Reply
from tests.fakes.fixtures import eventually
from tests.fakes.openai_upstream import CREATED

NATIVE = "gpt-4o"                  # -> OpenAI-format upstream, same protocol
TRANSLATED = "gpt-via-claude"      # -> Anthropic-format upstream
_TLS = ssl.create_default_context()
ROUTES = pytest.mark.parametrize("model", [NATIVE, TRANSLATED], ids=["native", "translated"])
MODES = pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
HI: Any = [{"role": "user", "content": "hi"}]


def _tool(name: str, description: str, prop: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {prop: {"type": "string"}}, "required": [prop],
              "additionalProperties": False}
    # strict: the SDK's stream helper only accepts tools it can parse
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": schema, "strict": True}}


TOOLS: Any = [_tool("get_weather", "Weather for a city", "city"), _tool("get_time", "Local time", "tz")]
TWO_CALLS = Reply(
    text="Let me check both.",
    tool_calls=[("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})],
    usage={"input": 20, "output": 30, "cache_read": 100, "cache_creation": 5},
)
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(24)).decode()


def sdk(gw: Gateway) -> AsyncOpenAI:
    # One TLS context for every client: building one per client costs ~30 ms (loopback is plain HTTP).
    http = openai.DefaultAsyncHttpxClient(verify=_TLS)
    return AsyncOpenAI(base_url=gw.openai_base, api_key="client-key", max_retries=0, http_client=http)


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[AsyncOpenAI]:
    async with sdk(gateway) as c:
        yield c


def upstream(gw: Gateway, model: str) -> FakeOpenAI | FakeAnthropic:
    return gw.openai if model == NATIVE else gw.anthropic


async def ask(client: AsyncOpenAI, *, stream: bool, **kwargs: Any) -> Any:
    """One turn, through `create` or the SDK's stream accumulator (asking for usage)."""
    kwargs.setdefault("messages", HI)
    if not stream:
        return await client.chat.completions.create(**kwargs)
    kwargs.setdefault("stream_options", {"include_usage": True})
    async with client.chat.completions.stream(**kwargs) as s:
        try:
            return await s.get_final_completion()
        except openai.LengthFinishReasonError as exc:   # the helper refuses to parse a cut answer
            return exc.completion


async def chunks(client: AsyncOpenAI, **kwargs: Any) -> list[Any]:
    kwargs.setdefault("messages", HI)
    stream = await client.chat.completions.create(stream=True, **kwargs)
    return [chunk async for chunk in stream]


def comparable(completion: Any) -> dict[str, Any]:
    """The completion without ids, timestamps and the stream helper's parsed extras."""
    data = completion.model_dump(exclude_none=True, exclude={"id", "created", "object"})
    for choice in data["choices"]:
        message = choice["message"]
        message.pop("parsed", None)
        # the real API's plain answers carry `annotations: []`, its streams never do, and the
        # gateway passes a same-protocol plain answer through verbatim
        if message.get("annotations") == []:
            del message["annotations"]
        for call in message.get("tool_calls", []):
            call.pop("id")
            call.pop("index", None)   # the accumulator keeps the delta index
            call["function"].pop("parsed_arguments", None)
            # an Anthropic upstream's plain answer has input objects, not the streamed text
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return data


def history_message(message: Any) -> dict[str, Any]:
    """An assistant response as the next request's history entry."""
    return message.model_dump(exclude_none=True, include={"role", "content", "tool_calls"})


# The streamed completion equals the plain one -------------------------------------------------
REPLIES = {
    "text": Reply(text="Hello, world! How are you today?"),
    "tools": TWO_CALLS,
    "reasoning": Reply(reasoning="The user greets me; answer briefly.", text="Hi there!"),
    "stop-sequence": Reply(text="1, 2, ", stop_sequence="3"),
    "length": Reply(text="cut sh", stop_reason="max_tokens"),
    "empty-input-tool": Reply(tool_calls=[("ls", {})]),
    "reasoning-tools": Reply(reasoning="Need the weather.", tool_calls=[("get_weather", {"city": "Oslo"})]),
    "reasoning-only": Reply(reasoning="Still thinking when the budget ran out", stop_reason="max_tokens"),
}
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


@ROUTES
@pytest.mark.parametrize("reply", list(REPLIES.values()), ids=list(REPLIES))
async def test_stream_rebuilds_the_plain_completion(gateway: Gateway, client: AsyncOpenAI, model: str,
                                                    reply: Reply) -> None:
    upstream(gateway, model).replies += [reply, reply]
    tools = {"tools": TOOLS} if reply.tool_calls else {}
    plain = await ask(client, stream=False, model=model, **tools)
    streamed = await ask(client, stream=True, model=model, **tools)
    assert comparable(streamed) == comparable(plain)
    if model == NATIVE:   # same protocol: the arguments text as the model wrote it, both ways
        arguments = [[c.function.arguments for c in m.choices[0].message.tool_calls or []]
                     for m in (plain, streamed)]
        assert arguments[0] == arguments[1] == reply.arguments

    for completion in (plain, streamed):
        assert completion.id.startswith("chatcmpl-") and completion.model == model
        assert len(completion.choices) == 1
        choice = completion.choices[0]
        assert choice.finish_reason == FINISH[reply.stop]
        message = choice.message
        assert message.role == "assistant"
        assert (message.content or "") == reply.text
        calls = message.tool_calls or []
        assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == reply.tool_calls
        assert all(c.id.startswith("call_") and c.type == "function" for c in calls)
        assert len({c.id for c in calls}) == len(calls)
        extra = message.model_extra or {}
        assert extra.get("reasoning_content", "") == reply.reasoning
        counts = reply.counts()
        prompt = counts["input"] + counts["cache_read"] + counts["cache_creation"]
        usage = completion.usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) \
            == (prompt, counts["output"], prompt + counts["output"])
        assert usage.prompt_tokens_details.cached_tokens == counts["cache_read"]


@ROUTES
@pytest.mark.parametrize("include_usage", [False, True], ids=["no-usage", "usage"])
async def test_usage_chunk_only_when_asked(gateway: Gateway, client: AsyncOpenAI, model: str,
                                           include_usage: bool) -> None:
    upstream(gateway, model).replies.append(TWO_CALLS)
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    got = await chunks(client, model=model, tools=TOOLS, **options)
    body = got[:-1] if include_usage else got
    assert all(len(c.choices) == 1 and c.usage is None for c in body)
    assert len({c.id for c in got}) == 1 and all(c.model == model for c in got)
    deltas = [c.choices[0].delta for c in body]
    assert sum(d.role is not None for d in deltas) == 1
    assert [c.choices[0].finish_reason for c in body if c.choices[0].finish_reason] == ["tool_calls"]
    entries = [t for d in deltas for t in d.tool_calls or []]
    assert [t.index for t in entries if t.id] == [0, 1]
    assert sum(t.function.name is not None for t in entries) == 2   # names are never repeated
    if include_usage:
        assert got[-1].choices == [] and got[-1].usage.prompt_tokens == 125
        assert got[-1].usage.prompt_tokens_details.cached_tokens == 100
    if model == NATIVE:   # the gateway wants usage for itself, whatever the client asked
        assert gateway.openai.last.json["stream_options"] == {"include_usage": True}


# Requests reach the upstream correctly translated ---------------------------------------------
@ROUTES
@MODES
async def test_system_and_developer_messages(gateway: Gateway, client: AsyncOpenAI, model: str,
                                             stream: bool) -> None:
    messages: Any = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Salut."},
        {"role": "developer", "content": "Now switch to English."},
        {"role": "user", "content": "again"},
    ]
    await ask(client, stream=stream, model=model, messages=messages)
    sent = upstream(gateway, model).last.json
    if model == NATIVE:
        assert sent["messages"] == messages
        return
    # mid-conversation system/developer messages are hoisted into `system`
    assert sent["system"] == [{"type": "text", "text": "You are terse."},
                              {"type": "text", "text": "Answer in French."},
                              {"type": "text", "text": "Now switch to English."}]
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Salut."}]},
        {"role": "user", "content": [{"type": "text", "text": "again"}]},
    ]


@ROUTES
@MODES
async def test_multi_turn(gateway: Gateway, client: AsyncOpenAI, model: str, stream: bool) -> None:
    history: Any = [{"role": "user", "content": "My name is Ada."},
                    {"role": "assistant", "content": "Hello Ada!"},
                    {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}]
    upstream(gateway, model).replies.append(Reply(text="Ada."))
    completion = await ask(client, stream=stream, model=model, messages=history)
    assert completion.choices[0].message.content == "Ada."
    sent = upstream(gateway, model).last.json["messages"]
    if model == NATIVE:
        assert sent == history
    else:
        assert sent == [{"role": "user", "content": [{"type": "text", "text": "My name is Ada."}]},
                        {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada!"}]},
                        {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}]


@ROUTES
@MODES
async def test_images(gateway: Gateway, client: AsyncOpenAI, model: str, stream: bool) -> None:
    content: Any = [
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "Same animal?"},
    ]
    await ask(client, stream=stream, model=model, messages=[{"role": "user", "content": content}])
    sent = upstream(gateway, model).last.json["messages"]
    if model == NATIVE:
        assert sent == [{"role": "user", "content": content}]
    else:
        assert sent == [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": JPEG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            {"type": "text", "text": "Same animal?"},
        ]}]


@ROUTES
@MODES
async def test_tool_round_trip(gateway: Gateway, client: AsyncOpenAI, model: str, stream: bool) -> None:
    fake = upstream(gateway, model)
    fake.replies += [TWO_CALLS, Reply(text="Sunny, and it is noon.")]
    question: Any = {"role": "user", "content": "Weather and time in Paris?"}
    first = await ask(client, stream=stream, model=model, tools=TOOLS, messages=[question])
    assert first.choices[0].finish_reason == "tool_calls"
    calls = first.choices[0].message.tool_calls
    if model == TRANSLATED:
        assert fake.last.json["tools"] == [
            {"name": t["function"]["name"], "description": t["function"]["description"],
             "input_schema": t["function"]["parameters"], "strict": True} for t in TOOLS]
    else:
        assert fake.last.json["tools"] == TOOLS

    history: Any = [
        question, history_message(first.choices[0].message),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21C"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": [{"type": "text", "text": "12:00"}]},
        {"role": "user", "content": "Thanks!"},
    ]
    second = await ask(client, stream=stream, model=model, tools=TOOLS, messages=history)
    assert second.choices[0].message.content == "Sunny, and it is noon."
    assert second.choices[0].finish_reason == "stop"

    sent = fake.last.json["messages"]
    if model == NATIVE:
        assert sent == history
        return
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    text, *uses = sent[1]["content"]
    assert text == {"type": "text", "text": "Let me check both."}
    assert [(u["type"], u["name"], u["input"]) for u in uses] == \
        [("tool_use", name, args) for name, args in TWO_CALLS.tool_calls]
    ids = [u["id"] for u in uses]
    assert len(set(ids)) == 2
    assert sent[2]["content"] == [   # one user turn: every result first, then the text
        {"type": "tool_result", "tool_use_id": ids[0], "content": [{"type": "text", "text": "sunny, 21C"}]},
        {"type": "tool_result", "tool_use_id": ids[1], "content": [{"type": "text", "text": "12:00"}]},
        {"type": "text", "text": "Thanks!"},
    ]


TOOL_CHOICES = {
    "required": ({"tool_choice": "required"}, {"type": "any"}),
    "named": ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
              {"type": "tool", "name": "get_time"}),
    "none": ({"tool_choice": "none"}, {"type": "none"}),
    "serial": ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
    "required-serial": ({"tool_choice": "required", "parallel_tool_calls": False},
                        {"type": "any", "disable_parallel_tool_use": True}),
}


@ROUTES
@MODES
@pytest.mark.parametrize(("choice", "expected"), list(TOOL_CHOICES.values()), ids=list(TOOL_CHOICES))
async def test_tool_choice(gateway: Gateway, client: AsyncOpenAI, model: str, stream: bool,
                           choice: dict[str, Any], expected: dict[str, Any]) -> None:
    await ask(client, stream=stream, model=model, tools=TOOLS, **choice)
    sent = upstream(gateway, model).last.json
    if model == NATIVE:
        assert {k: sent[k] for k in choice} == choice
    else:
        assert sent["tool_choice"] == expected


@ROUTES
@MODES
@pytest.mark.parametrize("stop", ["END", ["END", "###"]], ids=["string", "list"])
async def test_stop(gateway: Gateway, client: AsyncOpenAI, model: str, stream: bool, stop: Any) -> None:
    await ask(client, stream=stream, model=model, stop=stop)
    sent = upstream(gateway, model).last.json
    if model == NATIVE:
        assert sent["stop"] == stop
    else:
        assert sent["stop_sequences"] == ([stop] if isinstance(stop, str) else stop)


@MODES
async def test_max_tokens_default_and_clamp(make_gateway: Any, stream: bool) -> None:
    models = {"an-capped": {"provider": "an", "model": "small", "max_output_tokens": 8192},
              "an-default": {"provider": "an", "model": "small", "max_tokens": 2000},
              "oa-capped": {"provider": "oa", "model": "small", "max_output_tokens": 8192}}
    gw = await make_gateway(models=models)
    async with sdk(gw) as c:
        await ask(c, stream=stream, model=TRANSLATED)                      # Anthropic requires one
        await ask(c, stream=stream, model="an-default")
        await ask(c, stream=stream, model="an-capped", max_tokens=64000)
        await ask(c, stream=stream, model="an-capped", max_completion_tokens=64000)
        await ask(c, stream=stream, model="an-capped", max_completion_tokens=100)
        await ask(c, stream=stream, model="oa-capped", max_completion_tokens=64000)
        await ask(c, stream=stream, model="oa-capped", max_tokens=64000)
    assert [r.json["max_tokens"] for r in gw.anthropic.requests] == [4096, 2000, 8192, 8192, 100]
    sent = [r.json for r in gw.openai.requests]
    assert sent[0]["max_completion_tokens"] == 8192 and "max_tokens" not in sent[0]
    assert sent[1]["max_tokens"] == 8192 and "max_completion_tokens" not in sent[1]


@MODES
async def test_reasoning_effort_becomes_a_thinking_budget(gateway: Gateway, client: AsyncOpenAI,
                                                          stream: bool) -> None:
    await ask(client, stream=stream, model=TRANSLATED, reasoning_effort="high", max_tokens=1000)
    sent = gateway.anthropic.last.json
    budget = sent["thinking"]["budget_tokens"]
    assert sent["thinking"]["type"] == "enabled" and budget >= 1024 and sent["max_tokens"] > budget


# Errors ---------------------------------------------------------------------------------------
@ROUTES
@MODES
async def test_rate_limit_keeps_retry_after(gateway: Gateway, client: AsyncOpenAI, model: str,
                                            stream: bool) -> None:
    upstream(gateway, model).replies.append(Reply(status=429, headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as exc:
        await ask(client, stream=stream, model=model)
    assert exc.value.response.headers["retry-after"] == "7"
    assert exc.value.code == "rate_limit_exceeded"
    assert exc.value.request_id and exc.value.request_id.startswith("req_")


@ROUTES
@MODES
async def test_overloaded_is_503(gateway: Gateway, client: AsyncOpenAI, model: str, stream: bool) -> None:
    upstream(gateway, model).replies.append(Reply(status=503 if model == NATIVE else 529))
    with pytest.raises(openai.InternalServerError) as exc:
        await ask(client, stream=stream, model=model)
    assert exc.value.status_code == 503 and exc.value.type == "server_error"


@MODES
async def test_unknown_model_names_the_configured_ones(gateway: Gateway, client: AsyncOpenAI,
                                                       stream: bool) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        await ask(client, stream=stream, model="gpt-nope")
    assert "gpt-nope" in exc.value.message and "gpt-4o" in exc.value.message
    assert "claude-native" in exc.value.message
    assert exc.value.code == "model_not_found" and exc.value.param == "model"
    assert not gateway.openai.requests and not gateway.anthropic.requests


@MODES
@pytest.mark.parametrize(("override", "field"), [
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"max_tokens": "lots"}, "max_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages.0.content.0.image_url.url"),
], ids=["role", "max_tokens", "image_url"])
async def test_invalid_body_names_the_field(gateway: Gateway, client: AsyncOpenAI, stream: bool,
                                            override: dict[str, Any], field: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        await ask(client, stream=stream, model=NATIVE, **override)
    assert exc.value.param == field and field in exc.value.message
    assert exc.value.type == "invalid_request_error"
    assert not gateway.openai.requests


STREAM_ERRORS = {
    NATIVE: {"type": "server_error", "message": "Upstream melted"},
    TRANSLATED: {"type": "overloaded_error", "message": "Upstream melted"},
}


@ROUTES
async def test_mid_stream_error_raises_in_the_sdk(gateway: Gateway, client: AsyncOpenAI, model: str) -> None:
    upstream(gateway, model).replies.append(Reply(text="partial answer", stream_error=STREAM_ERRORS[model]))
    texts = []
    with pytest.raises(openai.APIError, match="Upstream melted"):
        async with client.chat.completions.stream(model=model, messages=HI) as s:
            async for event in s:
                if event.type == "content.delta":
                    texts.append(event.delta)
    assert "".join(texts) == "partial answer"


@ROUTES
@pytest.mark.parametrize("cut", [3, 6])
async def test_truncated_stream_is_an_error_not_an_ending(gateway: Gateway, client: AsyncOpenAI,
                                                          model: str, cut: int) -> None:
    upstream(gateway, model).replies.append(Reply(text="a long answer that gets cut", break_after=cut))
    stream = await client.chat.completions.create(model=model, messages=HI, stream=True)
    got = []
    with pytest.raises(openai.APIError, match="upstream"):
        async for chunk in stream:
            got.append(chunk)
    assert not any(c.choices and c.choices[0].finish_reason for c in got)


@ROUTES
async def test_stream_cut_before_the_first_event_is_an_http_error(gateway: Gateway, client: AsyncOpenAI,
                                                                  model: str) -> None:
    upstream(gateway, model).replies.append(Reply(text="never sent", break_after=0))
    with pytest.raises(openai.InternalServerError) as exc:
        await client.chat.completions.create(model=model, messages=HI, stream=True)
    assert exc.value.status_code == 502


# Pass-through fidelity and credentials --------------------------------------------------------
@MODES
async def test_passthrough_keeps_unknown_fields(gateway: Gateway, client: AsyncOpenAI, stream: bool) -> None:
    extra = {"x_trace": {"id": "t-1", "tags": ["a", "b"]}, "top_k": 20}
    gateway.openai.replies.append(Reply(text="ok", extra_fields={"x_upstream_note": {"kept": True}}))
    completion = await ask(client, stream=stream, model=NATIVE, seed=7, user="u-42", extra_body=extra)
    assert completion.model_extra["x_upstream_note"] == {"kept": True}
    assert completion.created == CREATED   # the upstream's time, streamed or not
    sent = gateway.openai.last.json
    expected = {"model": "gpt-4o-upstream", "messages": HI, "seed": 7, "user": "u-42", **extra}
    if stream:
        expected |= {"stream": True, "stream_options": {"include_usage": True}}
    assert sent == expected


@ROUTES
async def test_client_key_is_never_forwarded(gateway: Gateway, client: AsyncOpenAI, model: str) -> None:
    await client.chat.completions.create(model=model, messages=HI)
    headers = upstream(gateway, model).last.headers
    if model == NATIVE:
        assert headers["authorization"] == "Bearer sk-upstream-openai"
    else:
        assert headers["x-api-key"] == "sk-upstream-anthropic" and "authorization" not in headers
        assert headers["anthropic-version"]
    assert "client-key" not in json.dumps(headers)


async def test_models(gateway: Gateway, client: AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert {NATIVE, TRANSLATED, "claude-native"} <= set(ids)
    assert (await client.models.retrieve(NATIVE)).id == NATIVE
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-nope")


async def test_heartbeats_do_not_disturb_the_sdk(make_gateway: Any) -> None:
    gw = await make_gateway(server={"heartbeat_secs": 0.05})   # a keep-alive comment in every gap
    reply = Reply(text="slow but steady", chunk_size=100, delay=0.07)
    gw.anthropic.replies += [reply, reply]
    async with sdk(gw) as c:
        plain = await ask(c, stream=False, model=TRANSLATED)
        streamed = await ask(c, stream=True, model=TRANSLATED)
    assert comparable(streamed) == comparable(plain)
    assert streamed.choices[0].message.content == "slow but steady"


@ROUTES
async def test_client_leaving_mid_stream_cancels_the_upstream(gateway: Gateway, client: AsyncOpenAI,
                                                              model: str) -> None:
    fake = upstream(gateway, model)
    fake.replies.append(Reply(text="a very long answer " * 20, delay=0.02))
    async with client.chat.completions.stream(model=model, messages=HI) as s:
        async for event in s:
            if event.type == "content.delta":
                break   # leaving the block closes the connection
    await eventually(lambda: fake.cancelled == 1 and fake.open_streams == 0)
