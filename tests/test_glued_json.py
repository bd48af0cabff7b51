"""Several JSON values glued into one event's data are split, never a failed stream."""

from __future__ import annotations

import orjson
import pytest

from p5proxy.errors import UpstreamProtocolError
from p5proxy.protocols.anthropic import AnthropicStreamParser
from p5proxy.protocols.openai import OpenAIStreamParser

DATA = {
    "openai": [
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "He"}}]},
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "llo"}}]},
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ],
    "anthropic": [
        {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        {"type": "message_stop"},
    ],
}
PARSERS = {"openai": OpenAIStreamParser, "anthropic": AnthropicStreamParser}


def run(protocol: str, datas: list[str]) -> list[object]:
    parser = PARSERS[protocol]("test")
    events = [ev for data in datas for ev in parser.feed("", data)]
    if protocol == "openai":
        events += parser.feed("", "[DONE]")
    return [repr(e) for e in events + parser.close()]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_glued_values_give_the_same_events(protocol: str) -> None:
    values = [orjson.dumps(v).decode() for v in DATA[protocol]]
    separate = run(protocol, values)
    assert run(protocol, ["".join(values)]) == separate
    assert run(protocol, [values[0] + "\n " + values[1], *values[2:]]) == separate


def test_garbage_is_still_an_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        OpenAIStreamParser("test").feed("", '{"id": "c1"} not json')
