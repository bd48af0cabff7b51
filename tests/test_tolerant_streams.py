"""The tolerant stream path end to end: quirky recordings through the gateway reach both SDKs
whole, and a stream cut anywhere before its completion signal ends with the protocol's error
event, never a fake normal ending."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Gateway
from tests.fakes import Reply

DATA = Path(__file__).parent / "data"
QUIRKS = (DATA / "openai_quirks.sse").read_bytes()
QUIRKS_TEXT = json.loads((DATA / "openai_quirks.sse.json").read_text(encoding="utf-8"))["text"]
HI: Any = [{"role": "user", "content": "hi"}]
FINISH = QUIRKS.index(b'"finish_reason":"stop"')   # the completion signal
CUTS = [QUIRKS.index(b"data: {}"), QUIRKS.index(b"ddata:") + 3, QUIRKS.index(b"ata: {"),
        FINISH - 40, FINISH + 10]


def repair(cfg: dict[str, Any]) -> None:
    cfg["providers"]["oa"]["sse_repair"] = True


def pieces(raw: bytes, size: int) -> list[bytes]:
    return [raw[i:i + size] for i in range(0, len(raw), size)]


@pytest.fixture
async def gw(make_gateway: Any) -> Gateway:
    gateway: Gateway = await make_gateway(configure=repair)
    return gateway


def clients(gw: Gateway) -> tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]:
    return (openai.AsyncOpenAI(base_url=gw.openai_base, api_key="k", max_retries=0),
            anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0))


@pytest.mark.parametrize("size", [7, 4096])
async def test_quirky_stream_reaches_both_sdks_whole(gw: Gateway, size: int) -> None:
    oa, an = clients(gw)
    async with oa, an:
        gw.openai.replies.append(Reply(raw_sse=pieces(QUIRKS, size)))
        texts = []
        stream = await oa.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
        assert "".join(texts) == QUIRKS_TEXT

        gw.openai.replies.append(Reply(raw_sse=pieces(QUIRKS, size)))
        async with an.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=HI) as s:
            message = await s.get_final_message()
        assert message.content[0].text == QUIRKS_TEXT and message.stop_reason == "end_turn"


async def test_without_sse_repair_corrupted_lines_are_dropped(make_gateway: Any) -> None:
    gw = await make_gateway()
    oa, _ = clients(gw)
    async with oa:
        gw.openai.replies.append(Reply(raw_sse=QUIRKS))
        done = await oa.chat.completions.create(model="gpt-4o", messages=HI)
        assert done.choices[0].message.content != QUIRKS_TEXT   # `ddata:`/`ata:` lines ignored


@pytest.mark.parametrize("cut", CUTS)
async def test_truncated_stream_ends_with_the_protocols_error_event(gw: Gateway, cut: int) -> None:
    oa, an = clients(gw)
    async with oa, an:
        gw.openai.replies.append(Reply(raw_sse=[QUIRKS[:cut], b""], break_after=1))
        got = []
        with pytest.raises(openai.APIError, match="upstream"):
            stream = await oa.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
            async for chunk in stream:
                got.append(chunk)
        assert not any(c.choices and c.choices[0].finish_reason for c in got)

        gw.openai.replies.append(Reply(raw_sse=[QUIRKS[:cut], b""], break_after=1))
        with pytest.raises(anthropic.APIStatusError) as exc:
            async with an.messages.stream(model="claude-sonnet-4-5", max_tokens=100,
                                          messages=HI) as s:
                await s.get_final_message()
        assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "api_error"


async def test_finish_then_eof_without_done_is_complete(gw: Gateway) -> None:
    oa, _ = clients(gw)
    async with oa:
        end = QUIRKS.index(b"dat: [DONE]")
        gw.openai.replies.append(Reply(raw_sse=QUIRKS[:end]))   # then a clean end of body
        stream = await oa.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        finishes = [c.choices[0].finish_reason async for c in stream if c.choices]
        assert finishes[-1] == "stop"


async def test_json_body_under_an_event_stream_content_type(gw: Gateway) -> None:
    """An upstream that ignores `stream` (or reports an error) with the wrong content type."""
    oa, an = clients(gw)
    whole = {"id": "c1", "object": "chat.completion", "model": "m",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "in one piece"},
                          "finish_reason": "stop"}]}
    async with oa, an:
        gw.openai.replies.append(Reply(raw_sse=[b"\n" + json.dumps(whole).encode()[:30],
                                                json.dumps(whole).encode()[30:]]))
        stream = await oa.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) \
            == "in one piece"
        error = {"error": {"message": "quota exhausted", "type": "insufficient_quota", "code": 429}}
        gw.openai.replies.append(Reply(raw_sse=json.dumps(error).encode()))
        with pytest.raises(anthropic.APIStatusError, match="quota exhausted"):
            async with an.messages.stream(model="claude-sonnet-4-5", max_tokens=100,
                                          messages=HI) as s:
                await s.get_final_message()
