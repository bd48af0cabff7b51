"""Golden files for the codecs: a Claude Code-shaped request translated for an OpenAI upstream
and passed through to an Anthropic one, and SSE transcripts translated both ways.

Set UPDATE_GOLDEN=1 to rewrite the expected files after a deliberate change, then review the
diff: these files are the specification."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import Gateway
from tests.fakes.replies import Reply

DATA = Path(__file__).parent / "data"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
CLAUDE_CODE_HEADERS = {
    "anthropic-version": "2023-06-01", "x-api-key": "client-key", "x-app": "cli",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27",
    "user-agent": "claude-cli/2.1.80 (external, cli)",
}


def golden(name: str, actual: str) -> None:
    path = DATA / name
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"golden file {name} is missing; run with UPDATE_GOLDEN=1 and review it")
        path.write_text(actual)
    assert actual == path.read_text(), f"differs from {name} (UPDATE_GOLDEN=1 to accept)"


def pretty(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def normalise(transcript: str) -> str:
    """Ids and timestamps minted per request vary; everything else must match byte for byte."""
    transcript = re.sub(r'"(msg_01|chatcmpl-)[A-Za-z0-9]+"', r'"\1<id>"', transcript)
    return re.sub(r'"created":\d+', '"created":0', transcript)


async def raw_post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=orjson.dumps(body), headers=headers) as resp:
            return resp.status, await resp.text()


def claude_code_request() -> dict[str, Any]:
    return orjson.loads((DATA / "claude_code_request.json").read_bytes())


async def test_claude_code_request_translated_for_openai_upstream(gateway: Gateway) -> None:
    status, _ = await raw_post(gateway.url + "/v1/messages?beta=true", claude_code_request(),
                               CLAUDE_CODE_HEADERS)
    assert status == 200
    sent = gateway.openai.last.json
    golden("claude_code_request.openai.json", pretty(sent))
    # the properties the golden file pins down, spelled out
    assert sent["model"] == "qwen3-coder" and sent["max_tokens"] == 32000
    assert sent["stream_options"] == {"include_usage": True}
    assert not sent["messages"][0]["content"].startswith("x-anthropic-billing-header")
    assert len(sent["tools"]) == 20 and "$schema" not in sent["tools"][0]["function"]["parameters"]
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "system", "user", "assistant", "tool", "tool", "user"]
    assert "cache_control" not in orjson.dumps(sent).decode()


async def test_claude_code_request_passed_through_to_anthropic(gateway: Gateway) -> None:
    body = claude_code_request()
    status, _ = await raw_post(gateway.url + "/v1/messages?beta=true", {**body, "model": "claude-native"},
                               CLAUDE_CODE_HEADERS)
    assert status == 200
    rec = gateway.anthropic.last
    assert rec.json == {**body, "model": "claude-sonnet-4-5-20250929"}   # unknown fields included
    assert rec.headers["anthropic-beta"] == CLAUDE_CODE_HEADERS["anthropic-beta"]
    assert rec.headers["anthropic-version"] == "2023-06-01"
    assert rec.headers["x-api-key"] == "sk-upstream-anthropic"


STREAM_CASES = [
    # (upstream transcript, fake, model, client path, client body extras, golden)
    ("openai_upstream_stream.sse", "openai", "claude-sonnet-4-5", "/v1/messages", {},
     "openai_upstream_stream.to_anthropic.sse"),
    ("anthropic_upstream_stream.sse", "anthropic", "gpt-via-claude", "/v1/chat/completions",
     {"stream_options": {"include_usage": True}}, "anthropic_upstream_stream.to_openai.sse"),
    ("anthropic_upstream_stream.sse", "anthropic", "claude-native", "/v1/messages", {},
     "anthropic_upstream_stream.passthrough.sse"),
    ("openai_upstream_stream.sse", "openai", "gpt-4o", "/v1/chat/completions", {},
     "openai_upstream_stream.passthrough.sse"),
]


@pytest.mark.parametrize("source,fake,model,path,extra,expected", STREAM_CASES,
                         ids=[c[-1] for c in STREAM_CASES])
async def test_stream_transcripts(gateway: Gateway, source: str, fake: str, model: str, path: str,
                                  extra: dict[str, Any], expected: str) -> None:
    raw = (DATA / source).read_bytes()
    # one network write per byte range of 7: framing must not depend on chunking
    getattr(gateway, fake).replies.append(Reply(raw_sse=[raw[i:i + 7] for i in range(0, len(raw), 7)]))
    body = {"model": model, "max_tokens": 1024, "stream": True,
            "messages": [{"role": "user", "content": "Weather in Paris and Oslo?"}], **extra}
    status, text = await raw_post(gateway.url + path, body,
                                  {**CLAUDE_CODE_HEADERS, "Authorization": "Bearer k"})
    assert status == 200, text
    golden(expected, normalise(text))
    assert text.endswith("\n\n")
