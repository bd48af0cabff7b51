"""End to end with the official Anthropic SDK: a real client on a real socket against the running
gateway, which talks to fake upstreams of both protocols.

`claude-sonnet-4-5` is translated to the OpenAI-format fake; `claude-native` passes through to
the Anthropic-format fake. Most tests run both routes and both modes (create / stream).
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from anthropic import AsyncAnthropic

from tests.conftest import Gateway
from tests.fakes import FakeAnthropic, FakeOpenAI, Reply
from tests.fakes.fixtures import eventually

TRANSLATED = "claude-sonnet-4-5"   # -> OpenAI-format upstream `qwen3-coder`
NATIVE = "claude-native"           # -> Anthropic-format upstream, same protocol
_TLS = ssl.create_default_context()
ROUTES = pytest.mark.parametrize("model", [TRANSLATED, NATIVE], ids=["translated", "native"])
MODES = pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
HI: Any = [{"role": "user", "content": "hi"}]
TOOLS: Any = [
    {"name": "get_weather", "description": "Weather for a city",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "get_time", "description": "Local time",
     "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}},
]
TWO_CALLS = Reply(
    text="Let me check both.",
    tool_calls=[("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})],
    usage={"input": 20, "output": 30, "cache_read": 100, "cache_creation": 5},
)
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()


def sdk(gw: Gateway) -> AsyncAnthropic:
    # One TLS context for every client: building one per client costs ~30 ms (loopback is plain HTTP).
    http = anthropic.DefaultAsyncHttpxClient(verify=_TLS)
    return AsyncAnthropic(base_url=gw.url, api_key="client-key", max_retries=0, http_client=http)


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[AsyncAnthropic]:
    async with sdk(gateway) as c:
        yield c


def upstream(gw: Gateway, model: str) -> FakeOpenAI | FakeAnthropic:
    return gw.openai if model == TRANSLATED else gw.anthropic


async def ask(client: AsyncAnthropic, *, stream: bool, **kwargs: Any) -> Any:
    """One turn, through `messages.create` or the SDK's stream accumulator."""
    kwargs.setdefault("max_tokens", 1024)
    kwargs.setdefault("messages", HI)
    if not stream:
        return await client.messages.create(**kwargs)
    async with client.messages.stream(**kwargs) as s:
        return await s.get_final_message()


def comparable(message: Any) -> dict[str, Any]:
    """The message without its random ids (checked separately)."""
    data = message.model_dump(exclude_none=True)
    data.pop("id")
    for block in data["content"]:
        if block["type"] == "tool_use":
            block.pop("id")
    return data


def params(message: Any) -> list[dict[str, Any]]:
    """A response's content as request blocks, for the next turn's history."""
    return [b.model_dump(exclude_none=True) for b in message.content]


# The streamed message equals the plain one -------------------------------------------------
REPLIES = {
    "text": Reply(text="Hello, world! How are you today?"),
    "tools": TWO_CALLS,
    "thinking": Reply(reasoning="The user greets me; answer briefly.", text="Hi there!"),
    "stop-sequence": Reply(text="1, 2, ", stop_sequence="3"),
    "max-tokens": Reply(text="cut sh", stop_reason="max_tokens"),
    "refusal": Reply(text="I can't help with that.", stop_reason="refusal"),
    "empty-input-tool": Reply(tool_calls=[("ls", {})]),
    "thinking-tools": Reply(reasoning="Need the weather.", tool_calls=[("get_weather", {"city": "Oslo"})]),
    "thinking-only": Reply(reasoning="Still thinking when the budget ran out", stop_reason="max_tokens"),
}
# What an OpenAI upstream can say: it does not name the stop string that matched.
TRANSLATED_STOP = {"end_turn": "end_turn", "stop_sequence": "end_turn", "max_tokens": "max_tokens",
                   "tool_use": "tool_use", "refusal": "refusal"}


@ROUTES
@pytest.mark.parametrize("reply", list(REPLIES.values()), ids=list(REPLIES))
async def test_stream_rebuilds_the_plain_message(gateway: Gateway, client: AsyncAnthropic,
                                                 model: str, reply: Reply) -> None:
    upstream(gateway, model).replies += [reply, reply]
    plain = await ask(client, stream=False, model=model, tools=TOOLS)
    streamed = await ask(client, stream=True, model=model, tools=TOOLS)
    assert comparable(streamed) == comparable(plain)

    for msg in (plain, streamed):
        assert msg.id.startswith("msg_") and msg.model == model and msg.role == "assistant"
        kinds = [b.type for b in msg.content]
        assert kinds == ["thinking"] * bool(reply.reasoning) + ["text"] * bool(reply.text) \
            + ["tool_use"] * len(reply.tool_calls)
        texts = [b.text for b in msg.content if b.type == "text"]
        assert texts == ([reply.text] if reply.text else [])
        calls = [b for b in msg.content if b.type == "tool_use"]
        assert [(b.name, b.input) for b in calls] == reply.tool_calls
        assert all(b.id.startswith("toolu_") for b in calls)
        assert len({b.id for b in calls}) == len(calls)
        for block in msg.content:
            if block.type == "thinking":
                assert block.thinking == reply.reasoning and block.signature
                if model == NATIVE:
                    assert block.signature == reply.signature
        if model == NATIVE:
            assert (msg.stop_reason, msg.stop_sequence) == (reply.stop, reply.stop_sequence)
        else:
            assert (msg.stop_reason, msg.stop_sequence) == (TRANSLATED_STOP[reply.stop], None)
        counts = reply.counts()
        usage = msg.usage
        assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens,
                usage.output_tokens) == (counts["input"], counts["cache_read"],
                                         counts["cache_creation"], counts["output"])


@ROUTES
async def test_stream_events_follow_the_protocol(gateway: Gateway, client: AsyncAnthropic, model: str) -> None:
    upstream(gateway, model).replies.append(Reply(reasoning="Hmm.", text="Checking.", tool_calls=TWO_CALLS.tool_calls))
    async with client.messages.stream(model=model, max_tokens=1024, messages=HI, tools=TOOLS) as s:
        events = [e async for e in s if e.type in ("message_start", "content_block_start",
                                                   "content_block_stop", "message_delta", "message_stop")]
    start, *blocks, delta, stop = events
    assert (start.type, delta.type, stop.type) == ("message_start", "message_delta", "message_stop")
    assert start.message.content == [] and start.message.usage.input_tokens > 0   # estimated if need be
    assert [(e.type, e.index) for e in blocks] == [(kind, i) for i in range(4)
                                                   for kind in ("content_block_start", "content_block_stop")]
    assert [e.content_block.type for e in blocks[::2]] == ["thinking", "text", "tool_use", "tool_use"]
    assert all(e.content_block.input == {} for e in blocks[4::2])   # input comes as deltas only
    assert delta.usage.output_tokens > 1 and delta.delta.stop_reason == "tool_use"


async def test_ids_are_unique_per_request(gateway: Gateway, client: AsyncAnthropic) -> None:
    gateway.openai.replies += [TWO_CALLS, TWO_CALLS]
    first = await ask(client, stream=False, model=TRANSLATED, tools=TOOLS)
    second = await ask(client, stream=True, model=TRANSLATED, tools=TOOLS)
    assert first.id != second.id
    ids = [b.id for m in (first, second) for b in m.content if b.type == "tool_use"]
    assert len(set(ids)) == 4


# Requests reach the upstream correctly translated ---------------------------------------------
SYSTEMS = {
    "string": "You are terse.",
    "blocks": [{"type": "text", "text": "You are terse."},
               {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}}],
}


@ROUTES
@MODES
@pytest.mark.parametrize("system", list(SYSTEMS.values()), ids=list(SYSTEMS))
async def test_system_prompt(gateway: Gateway, client: AsyncAnthropic, model: str, stream: bool,
                             system: Any) -> None:
    msg = await ask(client, stream=stream, model=model, system=system)
    assert msg.content[0].type == "text"
    sent = upstream(gateway, model).last.json
    if model == NATIVE:
        assert sent["system"] == system
        return
    joined = "You are terse." if isinstance(system, str) else "You are terse.\nAnswer in French."
    assert sent["messages"] == [{"role": "system", "content": joined}, {"role": "user", "content": "hi"}]
    assert "cache_control" not in json.dumps(sent)


@ROUTES
async def test_system_message_mid_conversation(gateway: Gateway, client: AsyncAnthropic, model: str) -> None:
    history: Any = [{"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "system", "content": "From now on, answer in French."},
                    {"role": "user", "content": "and now?"}]
    await client.messages.create(model=model, max_tokens=100, system="Be brief.", messages=history)
    sent = upstream(gateway, model).last.json["messages"]
    if model == NATIVE:
        assert sent == history
    else:
        assert sent == [{"role": "system", "content": "Be brief."}, *history]


@ROUTES
@MODES
async def test_multi_turn(gateway: Gateway, client: AsyncAnthropic, model: str, stream: bool) -> None:
    history: Any = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada!"}]},
        {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]},
    ]
    upstream(gateway, model).replies.append(Reply(text="Ada."))
    msg = await ask(client, stream=stream, model=model, messages=history)
    assert msg.content[0].text == "Ada."
    sent = upstream(gateway, model).last.json["messages"]
    if model == NATIVE:
        assert sent == history
    else:
        assert sent == [{"role": "user", "content": "My name is Ada."},
                        {"role": "assistant", "content": "Hello Ada!"},
                        {"role": "user", "content": "What is my name?"}]


@ROUTES
@MODES
async def test_images(gateway: Gateway, client: AsyncAnthropic, model: str, stream: bool) -> None:
    content: Any = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "Same animal?"},
    ]
    await ask(client, stream=stream, model=model, messages=[{"role": "user", "content": content}])
    sent = upstream(gateway, model).last.json["messages"]
    if model == NATIVE:
        assert sent == [{"role": "user", "content": content}]
    else:
        assert sent == [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "text", "text": "Same animal?"},
        ]}]


@ROUTES
@MODES
async def test_tool_round_trip(gateway: Gateway, client: AsyncAnthropic, model: str, stream: bool) -> None:
    fake = upstream(gateway, model)
    fake.replies += [TWO_CALLS, Reply(text="Sunny, and it is noon.")]
    question: Any = {"role": "user", "content": "Weather and time in Paris?"}
    first = await ask(client, stream=stream, model=model, tools=TOOLS, messages=[question])
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if b.type == "tool_use"]
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    if model == TRANSLATED:
        assert fake.last.json["tools"] == [
            {"type": "function", "function": {"name": t["name"], "description": t["description"],
                                              "parameters": t["input_schema"]}} for t in TOOLS]
    else:
        assert fake.last.json["tools"] == TOOLS

    results: Any = [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "sunny, 21C"},
                    {"type": "tool_result", "tool_use_id": calls[1].id,
                     "content": [{"type": "text", "text": "12:00"}]},
                    {"type": "text", "text": "Thanks!"}]
    history: Any = [question, {"role": "assistant", "content": params(first)},
                    {"role": "user", "content": results}]
    second = await ask(client, stream=stream, model=model, tools=TOOLS, messages=history)
    assert second.content[0].text == "Sunny, and it is noon." and second.stop_reason == "end_turn"

    sent = fake.last.json["messages"]
    if model == NATIVE:
        assert sent == history
        return
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "user"]
    assistant = sent[1]
    assert assistant["content"] == "Let me check both."
    ids = [c["id"] for c in assistant["tool_calls"]]
    assert ids == [c.id for c in calls]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in assistant["tool_calls"]] == TWO_CALLS.tool_calls
    assert sent[2:] == [{"role": "tool", "tool_call_id": ids[0], "content": "sunny, 21C"},
                        {"role": "tool", "tool_call_id": ids[1], "content": "12:00"},
                        {"role": "user", "content": "Thanks!"}]


async def test_tool_result_with_an_image_and_an_error(gateway: Gateway, client: AsyncAnthropic) -> None:
    """OpenAI tool messages carry text only: the image follows in a user message."""
    image: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    history: Any = [
        HI[0],
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_01A", "name": "screenshot", "input": {}},
            {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {"tz": "Mars"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [{"type": "text", "text": "here"}, image]},
            {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "unknown zone", "is_error": True}]},
    ]
    await client.messages.create(model=TRANSLATED, max_tokens=100, tools=TOOLS, messages=history)
    sent = gateway.openai.last.json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "user"]
    assert [m["tool_call_id"] for m in sent[2:4]] == ["toolu_01A", "toolu_01B"]
    assert sent[2]["content"].startswith("here") and "unknown zone" in sent[3]["content"]
    assert "error" in sent[3]["content"]
    assert sent[4]["content"] == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]


TOOL_CHOICES = {
    "any": ({"type": "any"}, {"tool_choice": "required"}),
    "named": ({"type": "tool", "name": "get_time"},
              {"tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
    "none": ({"type": "none"}, {"tool_choice": "none"}),
    "auto-serial": ({"type": "auto", "disable_parallel_tool_use": True},
                    {"tool_choice": "auto", "parallel_tool_calls": False}),
    "any-serial": ({"type": "any", "disable_parallel_tool_use": True},
                   {"tool_choice": "required", "parallel_tool_calls": False}),
}


@ROUTES
@MODES
@pytest.mark.parametrize(("choice", "expected"), list(TOOL_CHOICES.values()), ids=list(TOOL_CHOICES))
async def test_tool_choice(gateway: Gateway, client: AsyncAnthropic, model: str, stream: bool,
                           choice: Any, expected: dict[str, Any]) -> None:
    await ask(client, stream=stream, model=model, tools=TOOLS, tool_choice=choice)
    sent = upstream(gateway, model).last.json
    if model == NATIVE:
        assert sent["tool_choice"] == choice
    else:
        assert {k: sent.get(k) for k in ("tool_choice", "parallel_tool_calls") if k in sent} == expected


@ROUTES
@MODES
async def test_stop_sequences(gateway: Gateway, client: AsyncAnthropic, model: str, stream: bool) -> None:
    await ask(client, stream=stream, model=model, stop_sequences=["\n\nHuman:", "END"])
    sent = upstream(gateway, model).last.json
    key = "stop_sequences" if model == NATIVE else "stop"
    assert sent[key] == ["\n\nHuman:", "END"]


@MODES
@pytest.mark.parametrize("provider", ["oa", "an"])
async def test_max_tokens_clamped_to_the_model_cap(make_gateway: Any, stream: bool, provider: str) -> None:
    models = {"capped": {"provider": provider, "model": "small", "max_output_tokens": 8192}}
    gw = await make_gateway(models=models)
    async with sdk(gw) as c:
        await ask(c, stream=stream, model="capped", max_tokens=20000)
        await ask(c, stream=stream, model="capped", max_tokens=100)
    fake = gw.openai if provider == "oa" else gw.anthropic
    assert [r.json["max_tokens"] for r in fake.requests] == [8192, 100]


@MODES
async def test_minted_thinking_round_trip(gateway: Gateway, client: AsyncAnthropic, stream: bool) -> None:
    """OpenAI-upstream reasoning becomes a signed thinking block; sent back, it is reasoning_content
    for the OpenAI upstream and is dropped before a real Anthropic upstream (bad signature)."""
    gateway.openai.replies.append(Reply(reasoning="Think first.", tool_calls=[("ls", {})]))
    first = await ask(client, stream=stream, model=TRANSLATED, tools=TOOLS)
    thinking, call = first.content
    assert thinking.type == "thinking" and thinking.thinking == "Think first." and thinking.signature
    history: Any = [HI[0], {"role": "assistant", "content": params(first)},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                  "content": "a.txt"}]}]
    await ask(client, stream=stream, model=TRANSLATED, tools=TOOLS, messages=history)
    assistant = gateway.openai.last.json["messages"][1]
    assert assistant["reasoning_content"] == "Think first."
    assert assistant["tool_calls"][0]["id"] == call.id

    await ask(client, stream=stream, model=NATIVE, tools=TOOLS, messages=history)
    sent = gateway.anthropic.last.json["messages"][1]["content"]
    assert [b["type"] for b in sent] == ["tool_use"]


# Errors ---------------------------------------------------------------------------------------
@ROUTES
@MODES
async def test_rate_limit_keeps_retry_after(gateway: Gateway, client: AsyncAnthropic, model: str,
                                            stream: bool) -> None:
    upstream(gateway, model).replies.append(Reply(status=429, headers={"retry-after": "7"}))
    with pytest.raises(anthropic.RateLimitError) as exc:
        await ask(client, stream=stream, model=model)
    assert exc.value.response.headers["retry-after"] == "7"
    assert exc.value.body["error"]["type"] == "rate_limit_error"
    assert exc.value.request_id and exc.value.request_id.startswith("req_")


@ROUTES
@MODES
async def test_overloaded_is_529(gateway: Gateway, client: AsyncAnthropic, model: str, stream: bool) -> None:
    upstream(gateway, model).replies.append(Reply(status=503 if model == TRANSLATED else 529))
    with pytest.raises(anthropic.OverloadedError) as exc:
        await ask(client, stream=stream, model=model)
    assert exc.value.status_code == 529
    assert exc.value.body["error"]["type"] == "overloaded_error"


@MODES
async def test_unknown_model_names_the_configured_ones(gateway: Gateway, client: AsyncAnthropic,
                                                       stream: bool) -> None:
    with pytest.raises(anthropic.NotFoundError) as exc:
        await ask(client, stream=stream, model="claude-nope")
    message = exc.value.body["error"]["message"]
    assert "claude-nope" in message and "gpt-4o" in message and "claude-native" in message
    assert exc.value.body["error"]["type"] == "not_found_error"
    assert not gateway.openai.requests and not gateway.anthropic.requests


@MODES
@pytest.mark.parametrize(("override", "field"), [
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"extra_body": {"max_tokens": "lots"}}, "max_tokens"),   # the SDK itself would choke on it
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
], ids=["role", "max_tokens", "text"])
async def test_invalid_body_names_the_field(gateway: Gateway, client: AsyncAnthropic, stream: bool,
                                            override: dict[str, Any], field: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        await ask(client, stream=stream, model=NATIVE, **override)
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert field in exc.value.body["error"]["message"]
    assert not gateway.anthropic.requests


STREAM_ERRORS = {
    TRANSLATED: {"type": "server_error", "message": "Upstream melted"},
    NATIVE: {"type": "overloaded_error", "message": "Upstream melted"},
}


@ROUTES
async def test_mid_stream_error_raises_in_the_sdk(gateway: Gateway, client: AsyncAnthropic, model: str) -> None:
    upstream(gateway, model).replies.append(Reply(text="partial answer", stream_error=STREAM_ERRORS[model]))
    texts = []
    with pytest.raises(anthropic.APIStatusError, match="Upstream melted") as exc:
        async with client.messages.stream(model=model, max_tokens=1024, messages=HI) as s:
            async for text in s.text_stream:
                texts.append(text)
    assert "".join(texts) == "partial answer"   # what came before the error was delivered
    assert exc.value.body["type"] == "error"


@ROUTES
@pytest.mark.parametrize("cut", [3, 6])
async def test_truncated_stream_is_an_error_not_an_ending(gateway: Gateway, client: AsyncAnthropic,
                                                          model: str, cut: int) -> None:
    upstream(gateway, model).replies.append(Reply(text="a long answer that gets cut", break_after=cut))
    with pytest.raises(anthropic.APIStatusError) as exc:
        async with client.messages.stream(model=model, max_tokens=1024, messages=HI) as s:
            await s.get_final_message()
    assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "api_error"
    assert "upstream" in exc.value.body["error"]["message"]


@ROUTES
async def test_stream_cut_before_the_first_event_is_an_http_error(gateway: Gateway, client: AsyncAnthropic,
                                                                  model: str) -> None:
    upstream(gateway, model).replies.append(Reply(text="never sent", break_after=0))
    with pytest.raises(anthropic.InternalServerError) as exc:
        async with client.messages.stream(model=model, max_tokens=1024, messages=HI) as s:
            await s.get_final_message()
    assert exc.value.status_code == 502 and exc.value.body["error"]["type"] == "api_error"


# Pass-through fidelity and credentials --------------------------------------------------------
@MODES
async def test_passthrough_keeps_unknown_fields(gateway: Gateway, client: AsyncAnthropic, stream: bool) -> None:
    extra = {"x_trace": {"id": "t-1", "tags": ["a", "b"]}}
    gateway.anthropic.replies.append(Reply(text="ok", extra_fields={"x_upstream_note": {"kept": True}}))
    msg = await ask(client, stream=stream, model=NATIVE, system="Be brief.",
                    metadata={"user_id": "u-42"}, extra_body=extra)
    assert msg.model_extra["x_upstream_note"] == {"kept": True}
    sent = gateway.anthropic.last.json
    expected = {"model": "claude-sonnet-4-5-20250929", "max_tokens": 1024, "messages": HI,
                "system": "Be brief.", "metadata": {"user_id": "u-42"}, **extra}
    assert {k: v for k, v in sent.items() if k != "stream"} == expected
    assert sent.get("stream", False) is stream


async def test_headers_forwarded_and_client_key_never(gateway: Gateway, client: AsyncAnthropic) -> None:
    beta = "fine-grained-tool-streaming-2025-05-14,context-1m-2025-08-07"
    raw = await client.messages.with_raw_response.create(
        model=NATIVE, max_tokens=10, messages=HI, extra_headers={"anthropic-beta": beta})
    version = raw.http_request.headers["anthropic-version"]
    assert raw.http_request.headers["authorization"] == "Bearer client-key"
    headers = gateway.anthropic.last.headers
    assert headers["anthropic-version"] == version and headers["anthropic-beta"] == beta
    assert headers["x-api-key"] == "sk-upstream-anthropic" and "authorization" not in headers
    assert "client-key" not in json.dumps(headers)

    await client.messages.create(model=TRANSLATED, max_tokens=10, messages=HI)
    headers = gateway.openai.last.headers
    assert headers["authorization"] == "Bearer sk-upstream-openai" and "x-api-key" not in headers
    assert "client-key" not in json.dumps(headers)


async def test_count_tokens_and_models(gateway: Gateway, client: AsyncAnthropic) -> None:
    bare = await client.messages.count_tokens(model=TRANSLATED, messages=HI)
    full = await client.messages.count_tokens(model=TRANSLATED, messages=HI, system="Be brief. " * 50,
                                              tools=TOOLS)
    assert 0 < bare.input_tokens < full.input_tokens
    page = await client.models.list()
    assert {TRANSLATED, NATIVE, "gpt-4o"} <= {m.id for m in page.data} and not page.has_more
    assert not gateway.openai.requests and not gateway.anthropic.requests   # answered locally


async def test_heartbeats_do_not_disturb_the_sdk(make_gateway: Any) -> None:
    gw = await make_gateway(server={"heartbeat_secs": 0.05})   # a ping in every gap
    reply = Reply(text="slow but steady", chunk_size=100, delay=0.07)
    model = TRANSLATED
    upstream(gw, model).replies += [reply, reply]
    async with sdk(gw) as c:
        plain = await ask(c, stream=False, model=model)
        streamed = await ask(c, stream=True, model=model)
    assert comparable(streamed) == comparable(plain) and streamed.content[0].text == "slow but steady"


@ROUTES
async def test_client_leaving_mid_stream_cancels_the_upstream(gateway: Gateway, client: AsyncAnthropic,
                                                              model: str) -> None:
    fake = upstream(gateway, model)
    fake.replies.append(Reply(text="a very long answer " * 20, delay=0.02))
    async with client.messages.stream(model=model, max_tokens=1024, messages=HI) as s:
        async for _ in s.text_stream:
            break   # leaving the block closes the connection
    await eventually(lambda: fake.cancelled == 1 and fake.open_streams == 0)
