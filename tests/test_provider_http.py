"""The declarative `http` provider end to end: the official SDKs through the gateway against
the shipped Ollama example (NDJSON), a JSON-only format and an SSE format of their own."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from p5proxy.config import RetryConfig, config_from_dict, load_config
from p5proxy.errors import ConfigError
from plugins.provider_http import JSONPath, render_template
from tests.conftest import app_for, start_gateway
from tests.fakes import FakeOllama, Reply
from tests.fakes.custom_upstream import FakeCustomJSON, FakeCustomSSE

EXAMPLE = Path(__file__).parent.parent / "config" / "ollama-native.example.yaml"
HI: Any = [{"role": "user", "content": "hi"}]
MODES = pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
HAS_EMULATION = importlib.util.find_spec("p5proxy_plugins.filter_tool_emulation") is not None


class Clients:
    def __init__(self, url: str) -> None:
        self.oa = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        self.an = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)

    async def openai_text(self, stream: bool, model: str = "llama3.2", **kw: Any) -> tuple[str, Any]:
        """(text, finish_reason) through chat.completions, streamed or not."""
        if not stream:
            done = await self.oa.chat.completions.create(model=model, messages=HI, **kw)
            return done.choices[0].message.content or "", done.choices[0].finish_reason
        texts, finish = [], None
        chunks = await self.oa.chat.completions.create(model=model, messages=HI, stream=True,
                                                       stream_options={"include_usage": True}, **kw)
        async for chunk in chunks:
            if chunk.choices:
                texts.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                self.usage = chunk.usage
        return "".join(texts), finish

    async def anthropic_message(self, stream: bool, model: str = "claude-sonnet-4-5",
                                **kw: Any) -> Any:
        kw.setdefault("max_tokens", 256)
        if not stream:
            return await self.an.messages.create(model=model, messages=HI, **kw)
        async with self.an.messages.stream(model=model, messages=HI, **kw) as s:
            return await s.get_final_message()

    async def close(self) -> None:
        await self.oa.close()
        await self.an.close()


@pytest.fixture
async def ollama(aiohttp_server: Any) -> Any:
    fake = FakeOllama()
    server = await aiohttp_server(fake.app(), host="127.0.0.1")
    config = load_config(EXAMPLE, env={"OLLAMA_HOST": f"http://127.0.0.1:{server.port}"})
    config = dataclasses.replace(config, retry=RetryConfig(attempts=1))   # errors as they come
    gw = await aiohttp_server(app_for(config), host="127.0.0.1")
    clients = Clients(f"http://127.0.0.1:{gw.port}")
    yield fake, clients
    await clients.close()


# --- Ollama's native API, from config/ollama-native.example.yaml ------------------------------

@MODES
async def test_ollama_openai_sdk(ollama: Any, stream: bool) -> None:
    fake, c = ollama
    fake.replies.append(Reply(text="Bonjour, le monde 😀", usage={"input": 26, "output": 9}))
    text, finish = await c.openai_text(stream, max_tokens=50, temperature=0.2)
    assert (text, finish) == ("Bonjour, le monde 😀", "stop")
    sent = fake.last.json
    assert sent == {"model": "llama3.2", "messages": HI, "stream": stream,
                    "options": {"num_predict": 50, "temperature": 0.2}}
    assert fake.last.headers["x-request-id"].startswith("req_")
    if stream:
        assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (26, 9)


@MODES
async def test_ollama_anthropic_sdk(ollama: Any, stream: bool) -> None:
    fake, c = ollama
    fake.replies.append(Reply(reasoning="Short greeting.", text="Hi there!",
                              usage={"input": 12, "output": 5}))
    msg = await c.anthropic_message(stream, system="Be brief.")
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "Short greeting." and msg.content[1].text == "Hi there!"
    assert msg.stop_reason == "end_turn" and msg.model == "claude-sonnet-4-5"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (12, 5)
    sent = fake.last.json
    assert sent["model"] == "qwen3:8b" and sent["options"] == {"num_predict": 256}
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, *HI]


@MODES
async def test_ollama_length_is_max_tokens(ollama: Any, stream: bool) -> None:
    fake, c = ollama
    fake.replies += [Reply(text="cut sh", stop_reason="max_tokens")] * 2
    assert (await c.openai_text(stream))[1] == "length"
    assert (await c.anthropic_message(stream)).stop_reason == "max_tokens"


@pytest.mark.parametrize("status,oa_error,an_type,an_status", [
    (404, openai.NotFoundError, "not_found_error", 404),
    (400, openai.BadRequestError, "invalid_request_error", 400),
    (500, openai.InternalServerError, "api_error", 500),
    (503, openai.InternalServerError, "overloaded_error", 529)])   # Anthropic's overloaded
async def test_ollama_errors_keep_status_and_type(ollama: Any, status: int, oa_error: Any,
                                                  an_type: str, an_status: int) -> None:
    fake, c = ollama
    message = "model 'llama3.2' not found, try pulling it first"
    fake.replies += [Reply(status=status, error={"error": message})] * 2
    with pytest.raises(oa_error, match="not found, try pulling") as exc:
        await c.openai_text(True)
    assert exc.value.status_code == status
    with pytest.raises(anthropic.APIStatusError) as aexc:
        await c.anthropic_message(False)
    assert aexc.value.status_code == an_status and aexc.value.body["error"]["type"] == an_type


async def test_ollama_rate_limit_forwards_retry_after(ollama: Any) -> None:
    fake, c = ollama
    fake.replies.append(Reply(status=429, error={"error": "busy"}, headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as exc:
        await c.openai_text(False)
    assert exc.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("cut", [1, 3])
async def test_ollama_truncated_ndjson_is_the_protocols_error_event(ollama: Any, cut: int) -> None:
    fake, c = ollama
    fake.replies += [Reply(text="a long answer that gets cut", break_after=cut)] * 2
    got = []
    with pytest.raises(openai.APIError, match="upstream"):
        async for chunk in await c.oa.chat.completions.create(model="llama3.2", messages=HI,
                                                              stream=True):
            got.append(chunk)
    assert not any(ch.choices and ch.choices[0].finish_reason for ch in got)
    with pytest.raises(anthropic.APIStatusError) as exc:
        await c.anthropic_message(True)
    assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "api_error"


async def test_ollama_mid_stream_error_line(ollama: Any) -> None:
    fake, c = ollama
    fake.replies.append(Reply(text="partial", stream_error={"message": "GPU fell over"}))
    with pytest.raises(anthropic.APIStatusError, match="GPU fell over"):
        await c.anthropic_message(True)


@pytest.mark.skipif(not HAS_EMULATION, reason="the tool_emulation filter plugin is not there yet")
@MODES
async def test_ollama_tools_are_emulated(ollama: Any, stream: bool) -> None:
    fake, c = ollama
    xml = ('Checking.<function_calls><invoke name="get_weather">'
           '<parameter name="city">Paris</parameter></invoke></function_calls>')
    fake.replies += [Reply(text=xml), Reply(text="It is sunny in Paris.")]
    tools: Any = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    if stream:
        calls: dict[int, Any] = {}
        finish = None
        async for chunk in await c.oa.chat.completions.create(
                model="llama3.2", messages=HI, tools=tools, stream=True):
            for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                entry = calls.setdefault(tc.index, {"id": tc.id, "name": "", "args": ""})
                entry["name"] += tc.function.name or ""
                entry["args"] += tc.function.arguments or ""
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        call = calls[0]
    else:
        done = await c.oa.chat.completions.create(model="llama3.2", messages=HI, tools=tools)
        finish = done.choices[0].finish_reason
        tc = done.choices[0].message.tool_calls[0]
        call = {"id": tc.id, "name": tc.function.name, "args": tc.function.arguments}
    assert finish == "tool_calls" and call["name"] == "get_weather"
    assert call["args"].replace(" ", "") == '{"city":"Paris"}'
    sent = fake.last.json
    assert "tools" not in sent and "get_weather" in sent["messages"][0]["content"]
    assert "</function_calls>" in sent["options"]["stop"]
    history = [*HI, {"role": "assistant", "content": None, "tool_calls": [
        {"id": call["id"], "type": "function",
         "function": {"name": "get_weather", "arguments": call["args"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    done = await c.oa.chat.completions.create(model="llama3.2", messages=history, tools=tools)
    assert done.choices[0].message.content == "It is sunny in Paris."
    assert all(isinstance(m["content"], str) for m in fake.last.json["messages"])


# --- custom formats ----------------------------------------------------------------------------

def custom_config(url: str, provider: dict[str, Any]) -> dict[str, Any]:
    return {"providers": {"custom": {"type": "http", "url": url, **provider}},
            "models": {"*": {"provider": "custom", "model": "house-model"}},
            "retry": {"attempts": 1}}


JSON_PROVIDER = {
    "messages_format": "text", "response_format": "json",
    "headers": {"X-Trace": "trace-{uuid}", "Authorization": "Token ${CUSTOM_KEY:-}"},
    "body": {"prompt": "{{messages}}", "system": "{{system}}", "id": "{{request_id}}",
             "params": {"max_new_tokens": "{{max_tokens}}", "model": "{{model}}",
                        "note": "model={{model}} max={{max_tokens}}"}},
    "paths": {"text": "result.output.0.text", "finish": "status", "finish_value": "complete",
              "stop_reason": "status", "error": "detail.message",
              "input_tokens": "tokens.in", "output_tokens": "tokens.out"},
    "stop_reasons": {"truncated": "max_tokens"},
}


@pytest.fixture
async def custom_json(aiohttp_server: Any) -> Any:
    fake = FakeCustomJSON()
    server = await aiohttp_server(fake.app(), host="127.0.0.1")
    url = await start_gateway(aiohttp_server, custom_config(
        f"http://127.0.0.1:{server.port}/generate", JSON_PROVIDER))
    clients = Clients(url)
    yield fake, clients
    await clients.close()


@MODES
async def test_custom_json_format(custom_json: Any, stream: bool) -> None:
    fake, c = custom_json
    fake.replies.append(Reply(text="Forty-two.", usage={"input": 7, "output": 3}))
    msg = await c.anthropic_message(stream, system="Answer tersely.", max_tokens=64)
    assert msg.content[0].text == "Forty-two." and msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (7, 3)
    sent = fake.last.json
    assert sent["prompt"] == "User: hi\n\nAssistant:" and sent["system"] == "Answer tersely."
    assert sent["params"] == {"max_new_tokens": 64, "model": "house-model",
                              "note": "model=house-model max=64"}
    assert sent["id"].startswith("req_") and "stream" not in sent
    assert fake.last.headers["x-trace"].startswith("trace-") and len(fake.last.headers["x-trace"]) == 42
    fake.replies.append(Reply(text="cut", stop_reason="max_tokens"))
    assert await c.openai_text(stream, model="any") == ("cut", "length")


async def test_custom_json_errors(custom_json: Any) -> None:
    fake, c = custom_json
    fake.replies.append(Reply(status=401, error={"detail": {"message": "bad token"}}))
    # the upstream refused the gateway's credentials, not the client's: never a 401 to it
    with pytest.raises(openai.InternalServerError, match="refused the gateway's upstream key") as exc:
        await c.openai_text(False)
    assert exc.value.status_code == 502
    fake.replies.append(Reply(status=502, error={"detail": {"message": "backend down"}}))
    with pytest.raises(anthropic.InternalServerError, match="backend down"):
        await c.anthropic_message(True)


SSE_PROVIDER = {
    "messages_format": "anthropic", "response_format": "sse", "sse_repair": True,
    "body": {"inputs": {"system": "{{system}}", "messages": "{{messages}}"},
             "parameters": {"max_new_tokens": "{{max_tokens}}", "stop": "{{stop}}"},
             "stream": "{{stream}}"},
    "paths": {"text": "token.text", "finish": "final.reason", "error": "error",
              "input_tokens": "final.usage.prompt", "output_tokens": "final.usage.completion"},
    "json_paths": {"text": "generated_text"},
    "tools": "native",
}


@pytest.fixture
async def custom_sse(aiohttp_server: Any) -> Any:
    fake = FakeCustomSSE()
    server = await aiohttp_server(fake.app(), host="127.0.0.1")
    url = await start_gateway(aiohttp_server, custom_config(
        f"http://127.0.0.1:{server.port}/v2/stream", SSE_PROVIDER))
    clients = Clients(url)
    yield fake, clients
    await clients.close()


@MODES
async def test_custom_sse_format(custom_sse: Any, stream: bool) -> None:
    fake, c = custom_sse
    fake.replies.append(Reply(text="Streaming along.", usage={"input": 4, "output": 6}))
    text, finish = await c.openai_text(stream)
    assert (text, finish) == ("Streaming along.", "stop")
    sent = fake.last.json
    blocks = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert sent == {"inputs": {"messages": blocks}, "parameters": {}, "stream": stream}


async def test_custom_sse_repair_and_max_length(custom_sse: Any) -> None:
    fake, c = custom_sse
    raw = (b'data: {"token":{"text":"A"}}\n\nddata: {"token":{"text":"B"}}\n\n'
           b'data: {"token":{"text":""},"final":{"reason":"max_length","usage":{"prompt":1,"completion":2}}}\n\n')
    fake.replies.append(Reply(raw_sse=[raw[:17], raw[17:]]))
    msg = await c.anthropic_message(True)
    assert msg.content[0].text == "AB" and msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 2


async def test_custom_sse_truncated(custom_sse: Any) -> None:
    fake, c = custom_sse
    fake.replies.append(Reply(text="never finished", break_after=2))
    with pytest.raises(anthropic.APIStatusError) as exc:
        await c.anthropic_message(True)
    assert exc.value.body["error"]["type"] == "api_error"


# --- units and configuration -------------------------------------------------------------------

def test_template_placeholders_keep_types_and_drop_nulls() -> None:
    template = {"a": "{{n}}", "b": "{{none}}", "c": ["{{n}}", "{{none}}", "x{{n}}y"],
                "d": {"e": "{{flag}}", "f": "{{obj}}", "g": "<{{obj}}>"}, "h": None}
    values = {"n": 3, "none": None, "flag": False, "obj": {"k": [1]}}
    assert render_template(template, values) == {
        "a": 3, "c": [3, "x3y"], "d": {"e": False, "f": {"k": [1]}, "g": '<{"k":[1]}>'}, "h": None}


def test_json_paths() -> None:
    obj = {"choices": [{"delta": {"content": "x"}}], "a": {"0": "zero"}, "l": [1, 2, 3]}
    assert JSONPath("choices.0.delta.content").get(obj) == "x"
    assert JSONPath("a.0").get(obj) == "zero" and JSONPath("l.-1").get(obj) == 3
    assert JSONPath("choices.5.delta").get(obj) is None and JSONPath("l.x").get(obj) is None


def test_bad_options_stop_start_up() -> None:
    cfg = config_from_dict(custom_config("http://127.0.0.1:1/x", {
        "messages_format": "xml", "response_format": "grpc", "body": {"q": "{{prompt}}"},
        "paths": {"txt": "a"}}))
    with pytest.raises(ConfigError) as exc:
        app_for(cfg)
    text = str(exc.value)
    for needle in ("providers.custom.messages_format", "providers.custom.response_format",
                   "unknown placeholder {{prompt}}", "providers.custom.paths.txt",
                   "providers.custom.paths.text: is required"):
        assert needle in text
