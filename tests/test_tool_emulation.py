"""Tool-use emulation: a text-only upstream, real SDK clients with native tools on the other side."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import orjson
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p5proxy.toolxml import CallArgs, CallEnd, CallStart, Output, Text, ToolCallExtractor
from tests.conftest import Gateway
from tests.fakes import Reply
from tests.fakes.base import sse

EMU = "emu"          # OpenAI-format upstream, tools: emulate on the model
EMU_AN = "emu-an"    # Anthropic-format upstream, tools: emulate on the provider
AUTO = "auto-m"      # OpenAI-format upstream, tools: auto

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                   "metric": {"type": "boolean"}, "scale": {"type": "number"},
                   "tags": {"type": "array", "items": {"type": "string"}},
                   "where": {"type": "object", "properties": {"lat": {"type": "number"}},
                             "required": ["lat"], "additionalProperties": False}},
    "required": ["city", "days", "metric", "scale", "tags", "where"], "additionalProperties": False,
}
TIME_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"tz": {"type": "string"}},
                               "required": ["tz"], "additionalProperties": False}
A_TOOLS: Any = [{"name": "get_weather", "description": "Weather forecast", "input_schema": SCHEMA},
                {"name": "get_time", "description": "Local time", "input_schema": TIME_SCHEMA}]
O_TOOLS: Any = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                  "parameters": t["input_schema"], "strict": True}}
                for t in A_TOOLS]

XML = ('Checking → Zürich.\n\n<function_calls>\n<invoke name="get_weather">\n'
       '<parameter name="city">Zürich & "Bern" <CH></parameter>\n'
       '<parameter name="days">3</parameter>\n<parameter name="metric">true</parameter>\n'
       '<parameter name="scale">1.5</parameter>\n<parameter name="tags">["a", "b"]</parameter>\n'
       '<parameter name="where"><![CDATA[{"lat": 47.4}]]></parameter>\n</invoke>\n'
       '<invoke name="get_time">\n<parameter name="tz">Europe/Zurich</parameter>\n</invoke>\n'
       '</function_calls>')
TEXT = "Checking → Zürich."
CALLS = [("get_weather", {"city": 'Zürich & "Bern" <CH>', "days": 3, "metric": True, "scale": 1.5,
                          "tags": ["a", "b"], "where": {"lat": 47.4}}),
         ("get_time", {"tz": "Europe/Zurich"})]
SCHEMAS = {t["name"]: t["input_schema"] for t in A_TOOLS}
HI: Any = [{"role": "user", "content": "weather and time in Zürich?"}]


def models(**extra: Any) -> dict[str, Any]:
    return {EMU: {"provider": "oa", "model": "text-only", "tools": "emulate"},
            AUTO: {"provider": "oa", "model": "picky", "tools": "auto"},
            EMU_AN: {"provider": "an2", "model": "claude-text"}, **extra}


@pytest.fixture
async def gw(make_gateway: Any) -> Gateway:
    def configure(cfg: dict[str, Any]) -> None:
        cfg["providers"]["an2"] = {**cfg["providers"]["an"], "tools": "emulate"}
    return await make_gateway(configure, models=models())


def openai_sse(pieces: list[str], finish: str = "stop") -> list[bytes]:
    """An OpenAI-format stream carrying `pieces` as content deltas."""
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
        return sse(base | {"choices": [{"index": 0, "delta": delta, "finish_reason": reason}]})
    usage = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
    return [chunk({"role": "assistant", "content": ""}), *(chunk({"content": p}) for p in pieces),
            chunk({}, finish), sse(base | {"choices": [], "usage": usage}), b"data: [DONE]\n\n"]


# The extractor alone ---------------------------------------------------------------------

def collect(outputs: list[Output]) -> tuple[str, list[tuple[str, Any]]]:
    text, calls, current = "", [], None
    for item in outputs:
        if isinstance(item, Text):
            text += item.text
        elif isinstance(item, CallStart):
            current = [item.name, ""]
        elif isinstance(item, CallArgs):
            assert current is not None
            current[1] += item.partial_json
        elif isinstance(item, CallEnd):
            assert current is not None
            calls.append((current[0], json.loads(current[1])))
    return text, calls


def extract(pieces: list[str], *, parallel: bool = True) -> tuple[str, list[tuple[str, Any]]]:
    x = ToolCallExtractor(SCHEMAS, parallel=parallel)
    out: list[Output] = []
    for piece in pieces:
        out += x.feed(piece)   # callers compare the joined text: a leaked half tag shows there
    return collect(out + x.close())


def test_extractor_every_split_point() -> None:
    for i in range(len(XML) + 1):
        assert extract([XML[:i], XML[i:]]) == (TEXT, CALLS), i
    assert extract(list(XML)) == (TEXT, CALLS)


def test_extractor_every_pair_of_split_points() -> None:
    for i in range(0, len(XML) + 1, 3):
        for j in range(i, len(XML) + 1, 2):
            assert extract([XML[:i], XML[i:j], XML[j:]]) == (TEXT, CALLS), (i, j)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(XML)), max_size=12),
       st.sampled_from(["", "Plain text < a <b> <function_call", "x" * 3]))
def test_extractor_property_any_chunking(cuts: list[int], tail: str) -> None:
    whole = tail + XML
    points = sorted({min(c, len(whole)) for c in cuts})
    pieces = [whole[a:b] for a, b in zip([0, *points], [*points, len(whole)])]
    assert extract(pieces) == ((tail + TEXT).rstrip(), CALLS)


@given(st.text(alphabet=st.sampled_from("<>/ abfnuctiol_s\n"), max_size=60),
       st.lists(st.integers(min_value=0, max_value=60), max_size=6))
@settings(max_examples=300, deadline=None)
def test_extractor_never_loses_plain_text(text: str, cuts: list[int]) -> None:
    """Text without a block comes out whole whatever the chunking (the tail held back included)."""
    if "<function_calls>" in text:
        return
    points = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]
    assert extract(pieces) == (text, [])


@pytest.mark.parametrize("raw", [
    "Sure. <function_calls> I changed my mind",
    'Sure. <function_calls><invoke name="get_time"><oops/></invoke></function_calls>',
    "Sure. <function_calls></function_calls>",
    "a < b and <function_c",
])
def test_extractor_malformed_block_is_text(raw: str) -> None:
    assert extract([raw]) == (raw, [])


def test_extractor_completes_a_block_cut_by_the_stop_sequence() -> None:
    cut = XML[:XML.index("</function_calls>")]
    assert extract([cut]) == (TEXT, CALLS)
    no_invoke_end = cut[:cut.rindex("</invoke>")]
    assert extract([no_invoke_end]) == (TEXT, CALLS)


def test_extractor_cuts_after_the_first_call_without_parallel_calls() -> None:
    assert extract([XML], parallel=False) == (TEXT, CALLS[:1])


# Both SDKs, both modes, the block split everywhere -------------------------------------------

async def test_anthropic_sdk_every_split_point(gw: Gateway) -> None:
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0) as client:
        for i in range(len(XML) + 1):
            gw.openai.replies.append(Reply(raw_sse=openai_sse([XML[:i], XML[i:]])))
            async with client.messages.stream(model=EMU, max_tokens=500, messages=HI,
                                              tools=A_TOOLS) as s:
                msg = await s.get_final_message()
            assert [b.type for b in msg.content] == ["text", "tool_use", "tool_use"], i
            assert msg.content[0].text == TEXT
            assert [(b.name, b.input) for b in msg.content[1:]] == CALLS
            assert all(b.id.startswith("toolu_") for b in msg.content[1:])
            assert msg.stop_reason == "tool_use" and msg.stop_sequence is None
        gw.openai.replies.append(Reply(text=XML, chunk_size=7))
        msg = await client.messages.create(model=EMU, max_tokens=500, messages=HI, tools=A_TOOLS)
        assert [(b.name, b.input) for b in msg.content[1:]] == CALLS and msg.stop_reason == "tool_use"


async def test_openai_sdk_every_split_point(gw: Gateway) -> None:
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key="k", max_retries=0) as client:
        for i in range(len(XML) + 1):
            gw.openai.replies.append(Reply(raw_sse=openai_sse([XML[:i], XML[i:]])))
            async with client.chat.completions.stream(model=EMU, messages=HI, tools=O_TOOLS) as s:
                done = await s.get_final_completion()
            choice = done.choices[0]
            assert choice.finish_reason == "tool_calls" and choice.message.content == TEXT, i
            calls = choice.message.tool_calls or []
            assert [(c.function.name, c.function.parsed_arguments) for c in calls] == CALLS
            assert all(c.id.startswith("call_") for c in calls)
        gw.openai.replies.append(Reply(text=XML))
        done = await client.chat.completions.create(model=EMU, messages=HI, tools=O_TOOLS)
        calls = done.choices[0].message.tool_calls or []
        assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == CALLS
        assert done.choices[0].finish_reason == "tool_calls"


async def test_request_carries_the_tools_as_instructions(gw: Gateway) -> None:
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0) as client:
        gw.openai.replies.append(Reply(text="Hi."))
        await client.messages.create(model=EMU, max_tokens=50, messages=HI, tools=A_TOOLS,
                                     stop_sequences=["a", "b", "c", "d"], system="Be brief.")
    sent = gw.openai.last.json
    assert "tools" not in sent and "tool_choice" not in sent
    assert sent["stop"] == ["</function_calls>", "a", "b", "c"]
    system = sent["messages"][0]["content"]
    assert system.startswith("Be brief.") and '<invoke name="$FUNCTION_NAME">' in system
    assert '"name":"get_weather"' in system and '"description":"Local time"' in system


async def test_large_request_carries_its_raw_schemas_as_instructions(gw: Gateway) -> None:
    """A body past rawjson.LAZY_FROM keeps its schemas as JSON bytes: the instructions and the
    typed arguments of the emulated call read them all the same."""
    system = "Be brief. " * 1200   # ~12 KB
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0) as client:
        gw.openai.replies.append(Reply(text=XML))
        msg = await client.messages.create(model=EMU, max_tokens=50, messages=HI, tools=A_TOOLS,
                                           system=system)
    sent = gw.openai.last.json["messages"][0]["content"]
    for tool in A_TOOLS:
        assert orjson.dumps(tool["input_schema"]).decode() in sent
    calls = [b for b in msg.content if b.type == "tool_use"]
    assert [(c.name, c.input) for c in calls] == CALLS   # typed by the schemas: days is 3


# tool_choice -----------------------------------------------------------------------------

@pytest.mark.parametrize("choice, phrase", [
    ({"type": "any"}, "must call at least one function"),
    ({"type": "tool", "name": "get_time"}, 'must call the function "get_time"'),
    ({"type": "none"}, "do not call any function"),
    ({"type": "auto", "disable_parallel_tool_use": True}, "at most one function"),
])
async def test_tool_choice_becomes_an_instruction(gw: Gateway, choice: Any, phrase: str) -> None:
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0) as client:
        gw.openai.replies.append(Reply(text=XML))
        msg = await client.messages.create(model=EMU, max_tokens=50, messages=HI, tools=A_TOOLS,
                                           tool_choice=choice)
    sent = gw.openai.last.json
    assert phrase in sent["messages"][0]["content"]
    if choice["type"] == "none":   # no call may come back: the text is the answer
        assert "stop" not in sent and msg.stop_reason == "end_turn"
        assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == XML
    elif choice.get("disable_parallel_tool_use"):
        assert [(b.name, b.input) for b in msg.content[1:]] == CALLS[:1]
    else:
        assert len(msg.content) == 3 and msg.stop_reason == "tool_use"


async def test_openai_tool_choice_required(gw: Gateway) -> None:
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key="k", max_retries=0) as client:
        gw.openai.replies.append(Reply(text=XML))
        await client.chat.completions.create(model=EMU, messages=HI, tools=O_TOOLS,
                                             tool_choice="required", parallel_tool_calls=False)
    system = gw.openai.last.json["messages"][0]["content"]
    assert "must call at least one function" in system and "at most one function" in system


# Malformed, stop sequences, other upstream protocol --------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_block_comes_back_as_text(gw: Gateway, stream: bool,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    raw = 'I will try. <function_calls><invoke name="get_time"><tz>UTC</tz></invoke>'
    gw.openai.replies.append(Reply(text=raw, chunk_size=3))
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0) as client:
        if stream:
            async with client.messages.stream(model=EMU, max_tokens=50, messages=HI,
                                              tools=A_TOOLS) as s:
                msg = await s.get_final_message()
        else:
            msg = await client.messages.create(model=EMU, max_tokens=50, messages=HI, tools=A_TOOLS)
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == raw
    assert msg.stop_reason == "end_turn"
    assert "returning it as text" in caplog.text


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_upstream_stopped_on_the_closing_tag(gw: Gateway, stream: bool) -> None:
    cut = XML[:XML.index("</function_calls>")]
    gw.anthropic.replies.append(Reply(text=cut, stop_sequence="</function_calls>", chunk_size=5))
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key="k", max_retries=0) as client:
        if stream:
            async with client.chat.completions.stream(model=EMU_AN, messages=HI, tools=O_TOOLS) as s:
                done = await s.get_final_completion()
        else:
            done = await client.chat.completions.create(model=EMU_AN, messages=HI, tools=O_TOOLS)
    sent = gw.anthropic.last.json
    assert sent["stop_sequences"] == ["</function_calls>"] and "tools" not in sent
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == TEXT
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == CALLS


# tools: auto ------------------------------------------------------------------------------

TOOLS_REJECTED = Reply(status=400, error={"error": {
    "message": "tools are not supported by this model", "type": "invalid_request_error",
    "param": "tools", "code": None}})


async def test_auto_falls_back_to_emulation_once_and_remembers(gw: Gateway) -> None:
    gw.openai.replies += [TOOLS_REJECTED, Reply(text=XML), Reply(text=XML)]
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0) as client:
        for _ in range(2):
            msg = await client.messages.create(model=AUTO, max_tokens=50, messages=HI, tools=A_TOOLS)
            assert [(b.name, b.input) for b in msg.content[1:]] == CALLS
            assert msg.stop_reason == "tool_use"
    first, second, third = (r.json for r in gw.openai.requests)
    assert "tools" in first and "tools" not in second and "tools" not in third
    assert "<functions>" in second["messages"][0]["content"]


async def test_auto_does_not_fall_back_on_other_errors(gw: Gateway) -> None:
    gw.openai.replies.append(Reply(status=400, error={"error": {
        "message": "context length exceeded", "type": "invalid_request_error", "param": None,
        "code": None}}))
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(model=AUTO, max_tokens=50, messages=HI, tools=A_TOOLS)
    assert len(gw.openai.requests) == 1


# An agent loop of several round trips -----------------------------------------------------

STEPS = [('get_weather', '<parameter name="city">Paris</parameter><parameter name="days">2'
          '</parameter><parameter name="metric">false</parameter><parameter name="scale">1'
          '</parameter><parameter name="tags">[]</parameter><parameter name="where">'
          '{"lat": 48.9}</parameter>'),
         ("get_time", '<parameter name="tz">Europe/Paris</parameter>'),
         ("get_time", '<parameter name="tz">UTC</parameter>')]
RESULTS = ["sunny, 21 C", "14:05", "12:05"]


def looping_model(problems: list[str]) -> Any:
    """A text-only model that makes STEPS one per turn and checks the history it is sent."""
    def respond(body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        if "tools" in body or "</function_calls>" not in body.get("stop", []):
            problems.append(f"native tools or no stop sequence: {sorted(body)}")
        results = [m for m in messages if m["role"] == "user"
                   and "<function_results>" in str(m.get("content"))]
        done = len(results)
        for n in range(done):   # each earlier call and its result, as XML, in order
            call = next((m for m in messages[1:] if m["role"] == "assistant"
                         and f'<invoke name="{STEPS[n][0]}">' in str(m["content"])
                         and STEPS[n][1].split("</parameter>")[0] in str(m["content"])), None)
            result = results[n]
            if call is None or f"<tool_name>{STEPS[n][0]}</tool_name>" not in result["content"] \
                    or RESULTS[n] not in result["content"]:
                problems.append(f"turn {done}: call/result {n} missing from the history")
        if done == len(STEPS):
            return Reply(text="Paris: sunny, 14:05 local, 12:05 UTC.")
        name, params = STEPS[done]
        return Reply(text=f'Step {done}.\n<function_calls>\n<invoke name="{name}">{params}'
                          f"</invoke>\n", chunk_size=3)
    return respond


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_agent_loop(gw: Gateway, stream: bool) -> None:
    problems: list[str] = []
    gw.openai.responder = looping_model(problems)
    history: list[Any] = list(HI)
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0) as client:
        for turn in range(len(STEPS) + 1):
            kwargs: Any = dict(model=EMU, max_tokens=500, messages=history, tools=A_TOOLS)
            if stream:
                async with client.messages.stream(**kwargs) as s:
                    msg = await s.get_final_message()
            else:
                msg = await client.messages.create(**kwargs)
            history.append({"role": "assistant",
                            "content": [b.model_dump(exclude_none=True) for b in msg.content]})
            calls = [b for b in msg.content if b.type == "tool_use"]
            if turn == len(STEPS):
                assert msg.stop_reason == "end_turn" and not calls
                assert msg.content[0].text == "Paris: sunny, 14:05 local, 12:05 UTC."
                break
            assert msg.stop_reason == "tool_use" and [c.name for c in calls] == [STEPS[turn][0]]
            history.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": calls[0].id, "content": RESULTS[turn]}]})
    assert problems == []
    assert len(gw.openai.requests) == len(STEPS) + 1


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_agent_loop(gw: Gateway, stream: bool) -> None:
    problems: list[str] = []
    gw.openai.responder = looping_model(problems)
    history: list[Any] = list(HI)
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key="k", max_retries=0) as client:
        for turn in range(len(STEPS) + 1):
            if stream:
                async with client.chat.completions.stream(model=EMU, messages=history,
                                                          tools=O_TOOLS) as s:
                    done = await s.get_final_completion()
            else:
                done = await client.chat.completions.create(model=EMU, messages=history,
                                                            tools=O_TOOLS)
            message = done.choices[0].message
            history.append(message.model_dump(exclude_none=True,
                                              include={"role", "content", "tool_calls"}))
            if turn == len(STEPS):
                assert done.choices[0].finish_reason == "stop" and not message.tool_calls
                break
            calls = message.tool_calls or []
            assert [c.function.name for c in calls] == [STEPS[turn][0]]
            history.append({"role": "tool", "tool_call_id": calls[0].id, "content": RESULTS[turn]})
    assert problems == []


async def test_scripted_emulated_upstream_round_trip(gw: Gateway) -> None:
    """The text-only mode of tests.fakes.scripted, used to try Claude Code by hand."""
    from tests.fakes.scripted import PROOF_COMMAND, PROOF_TEXT, emulated_reply
    gw.openai.responder = emulated_reply
    bash: Any = [{"name": "Bash", "description": "Run a command", "input_schema": {
        "type": "object", "properties": {"command": {"type": "string"},
                                         "description": {"type": "string"}}}}]
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0) as client:
        async with client.messages.stream(model=EMU, max_tokens=500, messages=HI, tools=bash) as s:
            first = await s.get_final_message()
        call = first.content[-1]
        assert call.type == "tool_use" and call.input == {"command": PROOF_COMMAND,
                                                          "description": "write proof"}
        history: Any = [*HI, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                      "content": PROOF_TEXT + "\n"}]}]
        second = await client.messages.create(model=EMU, max_tokens=500, messages=history, tools=bash)
    assert second.content[0].text == f"The command printed: {PROOF_TEXT}"


def test_stream_error_releases_held_text_but_no_call() -> None:
    from p5proxy.canonical import BlockStart, ErrorEvent, MessageStart, TextDelta, TextPart
    from p5proxy.filters import FilterRun
    from p5proxy_plugins.filter_tool_emulation import ToolEmulationRun

    def run(text: str) -> list[Any]:
        filt: FilterRun = ToolEmulationRun(ToolCallExtractor(SCHEMAS))
        error = ErrorEvent(RuntimeError("upstream went away"))
        events = [MessageStart(), BlockStart(0, TextPart("")), TextDelta(0, text), error]
        out = [o for ev in events for o in filt.on_event(ev)] + list(filt.on_end())
        assert out[-1] is error
        return out
    out = run("half an answer <function_ca")
    assert "".join(ev.text for ev in out if isinstance(ev, TextDelta)) == "half an answer <function_ca"
    out = run(XML[:XML.index("</parameter>")])   # the stream ends in error: no call is made
    assert "".join(ev.text for ev in out if isinstance(ev, TextDelta)) == TEXT
    assert not any(isinstance(ev, BlockStart) and not isinstance(ev.block, TextPart) for ev in out)
