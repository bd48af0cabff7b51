"""Property tests: the upstream stream decoders give the same (event, data) list for every
re-chunking of a stream, recorded (tests/data/*.sse, *.ndjson) or generated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p5proxy.canonical import TextDelta
from p5proxy.ndjson import NDJSONDecoder
from p5proxy.protocols.anthropic import AnthropicStreamParser
from p5proxy.protocols.openai import OpenAIStreamParser
from p5proxy.sse import SSEDecoder

DATA = Path(__file__).parent / "data"
RECORDED = sorted(DATA.glob("*.sse")) + sorted(DATA.glob("*.ndjson"))
PROPS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def decoder_for(path: Path) -> Any:
    return NDJSONDecoder() if path.suffix == ".ndjson" else SSEDecoder(repair=True)


def run(decoder: Any, chunks: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    out.extend(decoder.close())
    return out


@st.composite
def rechunked(draw: Any, raw: bytes) -> list[bytes]:
    """`raw` cut at arbitrary byte positions: mid-line, mid-CRLF, mid-UTF-8 character."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(raw) - 1)), max_size=40)))
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
@given(data=st.data())
@PROPS
def test_recorded_streams_survive_any_rechunking(path: Path, data: Any) -> None:
    raw = path.read_bytes()
    whole = run(decoder_for(path), [raw])
    assert whole
    assert run(decoder_for(path), data.draw(rechunked(raw))) == whole


@pytest.mark.parametrize("name", ["openai_quirks.sse", "anthropic_quirks.sse",
                                  "ollama_chat.ndjson"])
def test_quirky_recordings_decode_to_their_golden_events(name: str) -> None:
    path = DATA / name
    expected = json.loads((DATA / (name + ".json")).read_text(encoding="utf-8"))
    assert run(decoder_for(path), [path.read_bytes()]) == [tuple(e) for e in expected["events"]]


@pytest.mark.parametrize("name,parser", [("openai_quirks.sse", OpenAIStreamParser),
                                         ("anthropic_quirks.sse", AnthropicStreamParser)])
def test_quirky_recordings_parse_to_the_full_text(name: str, parser: Any) -> None:
    """Keep-alives are skipped, the first [DONE] ends the stream, nothing is lost."""
    p = parser("test")
    events = []
    for event, data in run(SSEDecoder(repair=True), [(DATA / name).read_bytes()]):
        events.extend(p.feed(event, data))
    assert p.done
    events.extend(p.close())
    expected = json.loads((DATA / (name + ".json")).read_text(encoding="utf-8"))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == expected["text"]


# --- generated streams -------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
EVENTS = st.lists(st.tuples(st.sampled_from(["", "message", "content_block_delta"]),
                            st.dictionaries(st.text(max_size=5), JSON_VALUES, min_size=1, max_size=4)),
                  min_size=1, max_size=8)
NEWLINES = st.sampled_from(["\n", "\r\n", "\r"])


@given(events=EVENTS, newline=NEWLINES, data=st.data(), comments=st.booleans())
@PROPS
def test_generated_sse_streams(events: list[tuple[str, dict[str, Any]]], newline: str,
                               data: Any, comments: bool) -> None:
    body = ""
    expected = []
    for name, obj in events:
        payload = orjson.dumps(obj).decode()
        expected.append((name, payload))
        if comments:
            body += ": keep-alive" + newline + newline
        body += (f"event: {name}{newline}" if name else "") + f"data: {payload}{newline}{newline}"
    raw = body.encode()
    assert run(SSEDecoder(), data.draw(rechunked(raw))) == expected
    assert run(SSEDecoder(repair=True), data.draw(rechunked(raw))) == expected


@given(events=EVENTS, newline=st.sampled_from(["\n", "\r\n"]), data=st.data(),
       final_newline=st.booleans())
@PROPS
def test_generated_ndjson_streams(events: list[tuple[str, dict[str, Any]]], newline: str,
                                  data: Any, final_newline: bool) -> None:
    lines = [orjson.dumps(obj).decode() for _, obj in events]
    raw = (newline.join(lines) + (newline if final_newline else "")).encode()
    assert run(NDJSONDecoder(), data.draw(rechunked(raw))) == [("", x) for x in lines]


def _general_only() -> OpenAIStreamParser:
    """The parser without its plain-text fast path: what every chunk would give otherwise."""
    return OpenAIStreamParser("p", plain_text_fast_path=False)


_DELTAS = st.one_of(
    st.fixed_dictionaries({"content": st.text(max_size=5)}),
    st.fixed_dictionaries({"content": st.none()}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.text(max_size=3)}),
    st.fixed_dictionaries({"reasoning_content": st.text(min_size=1, max_size=3)}),
    st.fixed_dictionaries({"tool_calls": st.just([{"index": 0, "id": "call_1", "type": "function",
                                                   "function": {"name": "f", "arguments": "{"}}])}),
    st.just({}))
_CHUNKS = st.fixed_dictionaries(
    {"id": st.just("c1"), "model": st.just("m"),
     "choices": st.one_of(st.just([]), st.lists(st.fixed_dictionaries(
         {"index": st.just(0), "delta": _DELTAS,
          "finish_reason": st.one_of(st.none(), st.none(), st.just("stop"))}),
         min_size=1, max_size=2))},
    optional={"usage": st.one_of(st.none(), st.just({"prompt_tokens": 3, "completion_tokens": 2})),
              "error": st.one_of(st.none(), st.just({"message": "boom"}))})


def _events(parser: Any, datas: list[str]) -> list[str]:
    """The events as text (errors are exceptions, which compare by identity)."""
    out: list[Any] = []
    for data in datas:
        out.extend(parser.feed("", data))
    try:
        out.extend(parser.close())
    except Exception as exc:   # noqa: BLE001 - a truncation: compare that too
        out.append(exc)
    return [repr(ev) for ev in out]


@given(chunks=st.lists(_CHUNKS, max_size=12), done=st.booleans())
@PROPS
def test_openai_plain_text_fast_path_gives_the_general_paths_events(
        chunks: list[dict[str, Any]], done: bool) -> None:
    datas = [orjson.dumps(c).decode() for c in chunks] + (["[DONE]"] if done else [])
    assert _events(OpenAIStreamParser("p"), datas) == _events(_general_only(), datas)


# How servers write the same chunk: orjson's compact UTF-8, Python's json (ASCII escapes,
# spaces after separators), and both
_WRITERS = [lambda c: orjson.dumps(c).decode(),
            lambda c: json.dumps(c),
            lambda c: json.dumps(c, ensure_ascii=False, separators=(",", ":"))]
_TEXTS = st.one_of(st.text(max_size=6), st.sampled_from(
    ['"', "\\", "\n", '\\"', "p5proxy probe", "content", '","', "é", "\u2028", "\t", "}"]))


@given(texts=st.lists(_TEXTS, min_size=1, max_size=10), writer=st.sampled_from(_WRITERS),
       changes=st.lists(st.sampled_from(["id", "model", "extra", "usage", "finish"]), max_size=3),
       data=st.data())
@PROPS
def test_openai_learned_chunk_envelope_gives_the_general_paths_events(
        texts: list[str], writer: Any, changes: list[str], data: Any) -> None:
    """A stream's later chunks are read by their learned envelope (parse.py _learn): whatever
    the text and however the server writes its JSON, the events are the general path's. Some
    chunks differ from the first in their envelope: those must not be read by it."""
    def chunk(text: str, change: str | None = None) -> dict[str, Any]:
        c: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
                             "model": "m", "choices": [{"index": 0, "delta": {"content": text},
                                                        "logprobs": None, "finish_reason": None}]}
        if change == "id":
            c["id"] = "chatcmpl-2"
        elif change == "model":
            c["model"] = text or "n"
        elif change == "extra":
            c["obfuscation"] = text
        elif change == "usage":
            c["usage"] = {"prompt_tokens": 1, "completion_tokens": 2}
        elif change == "finish":
            c["choices"][0]["finish_reason"] = "stop"
        return c
    role = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                         "logprobs": None, "finish_reason": None}]}
    chunks = [role] + [chunk(t) for t in texts]
    for change in changes:
        at = data.draw(st.integers(1, len(chunks)))
        chunks.insert(at, chunk(data.draw(_TEXTS), change))
    datas = [writer(c) for c in chunks] + ["[DONE]"]
    assert _events(OpenAIStreamParser("p"), datas) == _events(_general_only(), datas)


@pytest.mark.parametrize("name", ["openai_upstream_stream.sse", "openai_quirks.sse"])
def test_openai_recordings_parse_the_same_with_and_without_the_fast_path(name: str) -> None:
    datas = [data for _, data in run(SSEDecoder(repair=True), [(DATA / name).read_bytes()])]
    assert _events(OpenAIStreamParser("p"), datas) == _events(_general_only(), datas)


@given(blocks=st.lists(st.tuples(st.sampled_from(["text", "tool"]),
                                 st.lists(_TEXTS, min_size=1, max_size=6)), min_size=1, max_size=4),
       writer=st.sampled_from(_WRITERS), data=st.data())
@PROPS
def test_anthropic_learned_text_envelope_gives_the_general_paths_events(
        blocks: list[tuple[str, list[str]]], writer: Any, data: Any) -> None:
    """Anthropic text_delta events are read by an envelope learned per text block (the index
    is in it): text blocks between tool calls, any text, any JSON writer, and now and then an
    event of another shape at the same index give the events of a parser that reads all."""
    objs: list[dict[str, Any]] = [{"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
        "stop_reason": None, "usage": {"input_tokens": 3, "output_tokens": 0}}}]
    for index, (kind, texts) in enumerate(blocks):
        block = ({"type": "text", "text": ""} if kind == "text" else
                 {"type": "tool_use", "id": f"toolu_{index}", "name": "f", "input": {}})
        objs.append({"type": "content_block_start", "index": index, "content_block": block})
        for text in texts:
            delta = ({"type": "text_delta", "text": text} if kind == "text" else
                     {"type": "input_json_delta", "partial_json": text})
            objs.append({"type": "content_block_delta", "index": index, "delta": delta})
            if data.draw(st.integers(0, 5)) == 0:   # same index, another shape
                objs.append({"type": "content_block_delta", "index": index,
                             "delta": {"type": "text_delta", "text": text, "extra": 1}})
        objs.append({"type": "content_block_stop", "index": index})
    objs += [{"type": "message_delta", "delta": {"stop_reason": "end_turn"},
              "usage": {"output_tokens": 5}}, {"type": "message_stop"}]
    datas = [writer(o) for o in objs]
    assert _events(AnthropicStreamParser("p"), datas) == \
        _events(AnthropicStreamParser("p", text_fast_path=False), datas)


@pytest.mark.parametrize("name", ["anthropic_upstream_stream.sse", "anthropic_quirks.sse"])
def test_anthropic_recordings_parse_the_same_with_and_without_the_fast_path(name: str) -> None:
    datas = [data for _, data in run(SSEDecoder(repair=True), [(DATA / name).read_bytes()])]
    assert _events(AnthropicStreamParser("p"), datas) == \
        _events(AnthropicStreamParser("p", text_fast_path=False), datas)
