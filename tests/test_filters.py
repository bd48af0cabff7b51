"""The bundled output filters `think_tags` and `strip`: unit tests on canonical events (every
split of the text gives the same answer), property tests, and end to end through the running
gateway with both official SDKs and fake upstreams of both protocols."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p5proxy.aggregate import Aggregator
from p5proxy.canonical import (HEARTBEAT, BlockStart, BlockStop, ChatRequest, ErrorEvent,
                               MessageDelta, MessageStart, MessageStop, SignatureDelta,
                               StreamEvent, TextDelta, TextPart, ThinkingDelta, ThinkingPart)
from p5proxy.config import config_from_dict
from p5proxy.errors import ConfigError
from p5proxy.filters import Filter
from p5proxy.plugins import build_registry, make_plugin_manager
from p5proxy.thinking import mint_signature
from p5proxy_plugins.filter_strip import Strip, strip_text
from p5proxy_plugins.filter_think_tags import ThinkTags
from tests.conftest import Gateway
from tests.fakes import Reply
from tests.test_sdk_openai import ask, comparable

REQ = ChatRequest(model="m", messages=[], ingress="anthropic", raw={})


# --- helpers ----------------------------------------------------------------------------------

def events(pieces: Sequence[str]) -> list[StreamEvent]:
    return [MessageStart(), BlockStart(0, TextPart("")), *(TextDelta(0, p) for p in pieces),
            BlockStop(0), MessageDelta("end_turn"), MessageStop()]


def run(filters: Sequence[Filter], evs: Iterable[StreamEvent]) -> list[StreamEvent]:
    runs = [f.open(REQ, None) for f in filters]
    out = list(evs)
    for r in runs:
        out = [o for ev in out for o in r.on_event(ev)] + list(r.on_end())
    return out


def well_formed(evs: list[StreamEvent]) -> None:
    """One block open at a time; deltas only inside their open block; every block closed."""
    open_index = None
    for ev in evs:
        if isinstance(ev, BlockStart):
            assert open_index is None, evs
            open_index = ev.index
        elif isinstance(ev, (TextDelta, ThinkingDelta, SignatureDelta)):
            assert ev.index == open_index, evs
        elif isinstance(ev, BlockStop):
            assert ev.index == open_index, evs
            open_index = None
    assert open_index is None, evs


def blocks(evs: list[StreamEvent]) -> list[tuple[str, str]]:
    """The answer as (kind, text) pairs; thinking signatures are checked on the way."""
    well_formed(evs)
    agg = Aggregator()
    for ev in evs:
        agg.feed(ev)
    out = []
    for part in agg.result().blocks:
        if isinstance(part, ThinkingPart):
            assert part.signature == mint_signature(part.text)
            out.append(("thinking", part.text))
        else:
            assert isinstance(part, TextPart)
            out.append(("text", part.text))
    return out


def splits(text: str) -> Iterable[list[str]]:
    """The text whole, character by character, and cut at every pair of positions."""
    yield [text]
    yield list(text)
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            yield [text[:i], text[i:j], text[j:]]


def released(run_: Any, pieces: Iterable[str]) -> Iterable[tuple[str, str]]:
    """Feed deltas one at a time: (text fed so far, text passed on so far) after each."""
    run_.on_event(BlockStart(0, TextPart("")))
    fed = out = ""
    for piece in pieces:
        fed += piece
        out += "".join(ev.text for ev in run_.on_event(TextDelta(0, piece))
                       if isinstance(ev, (TextDelta, ThinkingDelta)))
        yield fed, out


# --- think_tags -------------------------------------------------------------------------------

THINK_CASES = {
    "<think>abc</think>answer": [("thinking", "abc"), ("text", "answer")],
    " \n<think>\n a b \n</think>\n\nanswer  ": [("thinking", "a b"), ("text", "answer  ")],
    "<thinking>x</thinking>y": [("thinking", "x"), ("text", "y")],
    "<think>a</thinking>b < </th</think>c": [("thinking", "a</thinking>b < </th"), ("text", "c")],
    "plain <think>x</think>": [("text", "plain <think>x</think>")],
    "  <thin": [("text", "  <thin")],
    "<Think>x</Think>": [("text", "<Think>x</Think>")],
    "<think>cut off \n": [("thinking", "cut off")],
    "<think>\n\n</think>\n\nanswer": [("text", "answer")],
    "<think>only</think>\n": [("thinking", "only")],
    "": [("text", "")],
    "   ": [("text", "   ")],
}


@pytest.mark.parametrize("text", list(THINK_CASES))
def test_think_tags_same_answer_for_every_split(text: str) -> None:
    for pieces in splits(text):
        assert blocks(run([ThinkTags()], events(pieces))) == THINK_CASES[text], pieces


def test_think_tags_holds_back_only_what_could_be_the_tag() -> None:
    steps = list(released(ThinkTags().open(REQ, None), ["  <th", "ink", ">\nab", "c </", "x", "</think>"]))
    assert [out for _, out in steps] == ["", "", "ab", "abc", "abc </x", "abc </x"]
    steps = list(released(ThinkTags().open(REQ, None), ["<th", "e answer"]))
    assert steps[-1][1] == "<the answer"   # not the tag after all: passed on unchanged


def test_think_tags_configured_names_and_later_blocks_untouched() -> None:
    filt = ThinkTags(["reasoning"])
    evs = [*events(["<reasoning>r</reasoning>a"])[:-2],
           BlockStart(1, TextPart("")), TextDelta(1, "<reasoning>kept</reasoning>"), BlockStop(1),
           MessageDelta("end_turn"), MessageStop()]
    assert blocks(run([filt], evs)) == [("thinking", "r"), ("text", "a"),
                                         ("text", "<reasoning>kept</reasoning>")]
    assert blocks(run([filt], events(["<think>x</think>"]))) == [("text", "<think>x</think>")]
    with pytest.raises(ConfigError):
        ThinkTags([])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<think>", "</think>", "<thinking>", "<th", "</", "ink>", "a",
                                 " ", "\n", "<", ">", "x y"]), max_size=10),
       st.lists(st.integers(min_value=0, max_value=60), max_size=6))
def test_think_tags_property_splits_never_matter(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts)
    bounds = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)])]
    assert blocks(run([ThinkTags()], events(pieces))) == blocks(run([ThinkTags()], events([text])))


# --- strip ------------------------------------------------------------------------------------

START = [r"(?i)(sure|certainly)[!,.] *\n*", r"#+ [^\n]*\n+"]
END = [r"\s*(?i:let me know)[^\n]*\s*", r"\s+"]
STRIP_CASES = {
    "Sure! # Plan\n\nStep one.\n\nLet me know if that helps.\n": "Step one.",
    "certainly.\n# Plan\nBody": "Body",
    "# Plan\nBody  ": "Body",
    "Surely not": "Surely not",
    "Body\nplease let me know": "Body\nplease",
    "Body. Let me know!": "Body.",
    "Sure!": "",
    "": "",
}


@pytest.mark.parametrize("text", list(STRIP_CASES))
def test_strip_same_answer_for_every_split(text: str) -> None:
    filt = Strip(start=START, end=END, lookahead=40)
    want = [("text", STRIP_CASES[text])] if STRIP_CASES[text] or not text else []
    for pieces in splits(text):
        assert blocks(run([filt], events(pieces))) == want, pieces


def test_strip_bounded_look_ahead() -> None:
    text = "Nothing to strip in this rather long answer, really nothing."
    for start, end in (([r"Sure! "], []), ([], [r" *Bye\."]), ([r"Sure! "], [r" *Bye\."])):
        for fed, out in released(Strip(start=start, end=end, lookahead=8).open(REQ, None), text):
            assert len(out) >= len(fed) - 8   # at most the look-ahead is held back
    # without end patterns, text flows on at once after the start decision
    steps = list(released(Strip(start=[r"Sure! "], lookahead=8).open(REQ, None), [text[:8], "x"]))
    assert steps == [(text[:8], text[:8]), (text[:8] + "x", text[:8] + "x")]
    # a match must fit within the look-ahead
    assert blocks(run([Strip(start=[r"x{10}"], lookahead=8)], events(["x" * 12]))) == [("text", "x" * 12)]


def test_strip_only_first_block_for_start_every_block_for_end() -> None:
    filt = Strip(start=[r"Hi\. "], end=[r" Bye\."])
    evs = [MessageStart(), BlockStart(0, TextPart("")), TextDelta(0, "Hi. One. Bye."), BlockStop(0),
           BlockStart(3, TextPart("")), TextDelta(3, "Hi. Two. Bye."), BlockStop(3),
           MessageDelta("end_turn"), MessageStop()]
    assert blocks(run([filt], evs)) == [("text", "One."), ("text", "Hi. Two.")]


def test_strip_config_errors() -> None:
    for bad in ({"start": ["("]}, {"end": ["[a"]}, {"lookahead": 0}, {"lookahead": "many"}):
        with pytest.raises(ConfigError):
            Strip(**bad)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="Sb! \nxB.", max_size=30),
       st.lists(st.integers(min_value=0, max_value=30), max_size=5),
       st.integers(min_value=1, max_value=12))
def test_strip_property_matches_reference(text: str, cuts: list[int], lookahead: int) -> None:
    start, end = [r"S+b*!? *", r"\n+"], [r"\s*B\.*", r" +"]
    filt = Strip(start=start, end=end, lookahead=lookahead)
    bounds = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)])]
    got = blocks(run([filt], events(pieces)))
    want = strip_text(text, start=[re.compile(p) for p in start],
                      end=[re.compile(p) for p in end], lookahead=lookahead)
    assert got == ([("text", want)] if want or not text else [])


def test_filters_are_registered_by_default() -> None:
    config = config_from_dict({"plugins": {"think_tags": {"tags": "r"}, "strip": {"end": ["x"]}}})
    registry = build_registry(make_plugin_manager(config, entry_point_plugins=False), config)
    think, strip = registry.filters["think_tags"](config), registry.filters["strip"](config)
    assert list(think.opens) == ["<r>"] and [p.pattern for p in strip.end] == ["x"]


# --- through the gateway ----------------------------------------------------------------------

THOUGHT = "<think>\nThe user wants 2+2.\n</think>\n\nSure! 2 + 2 = 4.\n\nLet me know if you need more."


def filtered(cfg: dict[str, Any]) -> None:
    cfg["plugins"] = {"strip": {"start": [r"(?i)sure! *"], "end": [r"\s*Let me know[^\n]*"]}}
    cfg["models"]["think-oa"] = {"provider": "oa", "model": "qwen3", "filters": ["think_tags", "strip"]}
    cfg["models"]["think-an"] = {"provider": "an", "model": "claude-x", "filters": ["think_tags"]}
    cfg["providers"]["an"]["filters"] = ["strip"]   # provider filters run first: strip, think_tags


ROUTES = pytest.mark.parametrize("model", ["think-oa", "think-an"])


def upstream(gw: Gateway, model: str) -> Any:
    return gw.openai if model == "think-oa" else gw.anthropic


@ROUTES
async def test_anthropic_sdk_sees_a_thinking_block(make_gateway: Any, model: str) -> None:
    gw = await make_gateway(configure=filtered)
    upstream(gw, model).replies += [Reply(text=THOUGHT, chunk_size=3), Reply(text=THOUGHT, chunk_size=1)]
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0) as client:
        kwargs: Any = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "2+2?"}]}
        plain = await client.messages.create(**kwargs)
        async with client.messages.stream(**kwargs) as stream:
            streamed = await stream.get_final_message()
    assert plain.model_dump(exclude={"id"}) == streamed.model_dump(exclude={"id"})
    thinking, text = plain.content
    assert thinking.type == "thinking" and thinking.thinking == "The user wants 2+2."
    assert thinking.signature == mint_signature("The user wants 2+2.")
    # on think-an `strip` (a provider filter) runs before think_tags, so "Sure!" is not at the start
    assert text.type == "text" and text.text == ("Sure! " if model == "think-an" else "") + "2 + 2 = 4."


@ROUTES
async def test_openai_sdk_sees_reasoning_content(make_gateway: Any, model: str) -> None:
    gw = await make_gateway(configure=filtered)
    upstream(gw, model).replies += [Reply(text=THOUGHT, chunk_size=2), Reply(text=THOUGHT, chunk_size=5)]
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key="k", max_retries=0) as client:
        plain = await ask(client, stream=False, model=model)
        streamed = await ask(client, stream=True, model=model)
    assert comparable(plain) == comparable(streamed)
    message = plain.choices[0].message
    assert message.content == ("Sure! " if model == "think-an" else "") + "2 + 2 = 4."
    assert (message.model_extra or {})["reasoning_content"] == "The user wants 2+2."


async def test_unfiltered_models_are_untouched(make_gateway: Any) -> None:
    gw = await make_gateway(configure=filtered)
    gw.openai.replies.append(Reply(text=THOUGHT))
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key="k", max_retries=0) as client:
        plain = await ask(client, stream=False, model="gpt-4o")
    assert plain.choices[0].message.content == THOUGHT


@pytest.mark.parametrize("filt,kind", [(ThinkTags(), ThinkingDelta), (Strip(end=[r"!"]), TextDelta)],
                         ids=["think_tags", "strip"])
def test_held_text_is_released_before_a_stream_error(filt: Filter, kind: type) -> None:
    error = ErrorEvent(RuntimeError("upstream went away"))
    text = "<think>half a thou" if kind is ThinkingDelta else "half an answer"
    out = run([filt], [MessageStart(), BlockStart(0, TextPart("")), TextDelta(0, text),
                       HEARTBEAT, error])
    assert out[-1] is error and HEARTBEAT in out
    assert "".join(ev.text for ev in out if isinstance(ev, kind)) == text.removeprefix("<think>")
