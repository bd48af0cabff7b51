"""A negative test for every field of the request, in both protocols: a wrong type or value
gives 400 in the caller's shape, with a message that starts with the field's path (and, for
OpenAI callers, the path in `param`), and nothing is sent upstream."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import Gateway

MSG: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "hi"}]}
CHAT: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
USER = {"role": "user", "content": "hi"}

# (field path the error must name, the body's field changes)
ANTHROPIC_CASES: list[tuple[str, dict[str, Any]]] = [
    ("model", {"model": 5}), ("model", {"model": ""}), ("model", {"model": None}),
    ("max_tokens", {"max_tokens": "many"}), ("max_tokens", {"max_tokens": 0}),
    ("max_tokens", {"max_tokens": 1.5}), ("max_tokens", {"max_tokens": True}),
    ("max_tokens", {"max_tokens": 2 ** 64 - 1}),
    ("thinking.budget_tokens", {"thinking": {"type": "enabled", "budget_tokens": 2 ** 63}}),
    ("messages", {"messages": "hi"}), ("messages", {"messages": None}),
    ("messages.0", {"messages": ["hi"]}),
    ("messages.0.role", {"messages": [{"role": "robot", "content": "x"}]}),
    ("messages.0.content", {"messages": [{"role": "user", "content": 5}]}),
    ("messages.0.content.0", {"messages": [{"role": "user", "content": ["x"]}]}),
    ("messages.0.content.0.type", {"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
    ("messages.0.content.0.text", {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}),
    ("messages.0.content.0.source", {"messages": [{"role": "user", "content": [{"type": "image", "source": 3}]}]}),
    ("messages.0.content.0.source.data", {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": 7}}]}]}),
    ("messages.0.content.0.source", {"messages": [{"role": "user", "content": [
        {"type": "document", "source": [1]}]}]}),
    ("messages.1.content.0.input", {"messages": [USER, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "f", "input": "x"}]}]}),
    ("messages.1.content.0.id", {"messages": [USER, {"role": "assistant", "content": [
        {"type": "tool_use", "name": "f", "input": {}}]}]}),
    ("messages.0.content.0.tool_use_id", {"messages": [{"role": "user", "content": [
        {"type": "tool_result", "content": "ok"}]}]}),
    ("messages.0.content.0.is_error", {"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": "ok", "is_error": "yes"}]}]}),
    ("messages.0.content.0.content", {"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": 5}]}]}),
    ("messages.1.content.0.thinking", {"messages": [USER, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": 5, "signature": "s"}]}]}),
    ("messages.1.content.0.signature", {"messages": [USER, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "t", "signature": ["s"]}]}]}),
    ("system", {"system": 5}), ("system.0", {"system": ["x"]}),
    ("system.0.type", {"system": [{"type": "image", "text": "x"}]}),
    ("system.0.text", {"system": [{"type": "text", "text": None}]}),
    ("temperature", {"temperature": "hot"}), ("temperature", {"temperature": -0.5}),
    ("temperature", {"temperature": 7}),
    ("top_p", {"top_p": "all"}), ("top_p", {"top_p": 1.5}),
    ("top_k", {"top_k": "k"}), ("top_k", {"top_k": -1}),
    ("stop_sequences", {"stop_sequences": "STOP"}), ("stop_sequences.1", {"stop_sequences": ["a", 2]}),
    ("stream", {"stream": "yes"}), ("stream", {"stream": 1}),
    ("tools", {"tools": {"name": "f"}}), ("tools.0", {"tools": ["f"]}),
    ("tools.0.name", {"tools": [{"input_schema": {}}]}),
    ("tools.0.input_schema", {"tools": [{"name": "f", "input_schema": "object"}]}),
    ("tools.0.description", {"tools": [{"name": "f", "description": 5, "input_schema": {}}]}),
    ("tool_choice", {"tool_choice": "auto"}),
    ("tool_choice.type", {"tool_choice": {"type": "some"}}),
    ("tool_choice.name", {"tool_choice": {"type": "tool"}}),
    ("tool_choice.disable_parallel_tool_use", {"tool_choice": {"type": "auto", "disable_parallel_tool_use": "no"}}),
    ("thinking", {"thinking": True}), ("thinking.type", {"thinking": {"type": "maybe"}}),
    ("thinking.type", {"thinking": {"budget_tokens": 2048}}),
    ("thinking.budget_tokens", {"thinking": {"type": "enabled", "budget_tokens": "lots"}}),
    ("metadata", {"metadata": "me"}), ("metadata.user_id", {"metadata": {"user_id": 42}}),
    ("output_config", {"output_config": "fast"}),
    ("output_config.effort", {"output_config": {"effort": 3}}),
    ("output_config.format", {"output_config": {"format": "json"}}),
    ("output_config.format.schema", {"output_config": {"format": {"type": "json_schema", "schema": 1}}}),
]

OPENAI_CASES: list[tuple[str, dict[str, Any]]] = [
    ("model", {"model": 5}), ("model", {"model": ""}), ("model", {"model": None}),
    ("messages", {"messages": "hi"}), ("messages", {"messages": []}), ("messages", {"messages": None}),
    ("messages.0", {"messages": [5]}),
    ("messages.0.role", {"messages": [{"role": "robot", "content": "x"}]}),
    ("messages.0.content", {"messages": [{"role": "user", "content": 5}]}),
    ("messages.0.content.0", {"messages": [{"role": "user", "content": ["x"]}]}),
    ("messages.0.content.0.type", {"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
    ("messages.0.content.0.text", {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}),
    ("messages.0.content.0.image_url.url", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": 5}}]}]}),
    ("messages.0.content", {"messages": [{"role": "system", "content": 5}]}),
    ("messages.1.tool_calls", {"messages": [USER, {"role": "assistant", "tool_calls": "f"}]}),
    ("messages.1.tool_calls.0.function", {"messages": [USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function"}]}]}),
    ("messages.1.tool_calls.0.id", {"messages": [USER, {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
    ("messages.1.tool_calls.0.function.name", {"messages": [USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"arguments": "{}"}}]}]}),
    ("messages.1.tool_calls.0.function.arguments", {"messages": [USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": [1]}}]}]}),
    ("messages.1.tool_call_id", {"messages": [USER, {"role": "tool", "content": "ok"}]}),
    ("max_tokens", {"max_tokens": "many"}), ("max_tokens", {"max_tokens": 0}),
    ("max_tokens", {"max_completion_tokens": 10, "max_tokens": "x"}),
    ("max_completion_tokens", {"max_completion_tokens": -1}),
    ("temperature", {"temperature": "hot"}), ("temperature", {"temperature": 2.5}),
    ("top_p", {"top_p": "all"}), ("top_p", {"top_p": -0.1}),
    ("n", {"n": "two"}), ("n", {"n": 0}),
    ("stop", {"stop": 5}), ("stop.1", {"stop": ["a", None]}),
    ("stream", {"stream": "yes"}),
    ("stream_options", {"stream_options": True}),
    ("stream_options.include_usage", {"stream_options": {"include_usage": "yes"}}),
    ("tools", {"tools": "f"}), ("tools.0", {"tools": [1]}),
    ("tools.0.function", {"tools": [{"type": "function"}]}),
    ("tools.0.function.name", {"tools": [{"type": "function", "function": {}}]}),
    ("tools.0.function.parameters", {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}),
    ("tools.0.function.description", {"tools": [{"type": "function", "function": {"name": "f", "description": {}}}]}),
    ("tool_choice", {"tool_choice": "sometimes"}), ("tool_choice", {"tool_choice": 3}),
    ("tool_choice.function", {"tool_choice": {"type": "function"}}),
    ("tool_choice.function.name", {"tool_choice": {"type": "function", "function": {}}}),
    ("parallel_tool_calls", {"parallel_tool_calls": "no"}),
    ("response_format", {"response_format": "json"}),
    ("response_format.type", {"response_format": {}}),
    ("response_format.json_schema", {"response_format": {"type": "json_schema"}}),
    ("response_format.json_schema.schema", {"response_format": {"type": "json_schema",
                                                                "json_schema": {"name": "x", "schema": 1}}}),
    ("reasoning_effort", {"reasoning_effort": 3}),
    ("metadata", {"metadata": ["a"]}),
    ("user", {"user": 5}), ("safety_identifier", {"safety_identifier": {}}),
    ("seed", {"seed": "s"}), ("presence_penalty", {"presence_penalty": 3}),
    ("frequency_penalty", {"frequency_penalty": "x"}), ("logprobs", {"logprobs": "yes"}),
    ("top_logprobs", {"top_logprobs": "x"}), ("logit_bias", {"logit_bias": [1]}),
]


def _body(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    return {**base, **change}


async def _check(gateway: Gateway, path: str, base: dict[str, Any],
                 cases: list[tuple[str, dict[str, Any]]], headers: dict[str, str]) -> None:
    problems = []
    async with aiohttp.ClientSession() as session:
        for field, change in cases:
            for stream in (False, True):
                body = _body(base, change)
                if stream and "stream" not in change:
                    body["stream"] = True
                async with session.post(gateway.url + path, json=body, headers=headers) as resp:
                    raw = await resp.read()
                if resp.content_type != "application/json":
                    problems.append(f"{field} {change}: {resp.status} {raw[:200]!r}")
                    continue
                answer = orjson.loads(raw)
                error = answer.get("error") or {}
                message = str(error.get("message", ""))
                ok = resp.status == 400 and error.get("type") == "invalid_request_error" \
                    and message.startswith(field + ":")
                if path.endswith("completions"):
                    ok = ok and error.get("param") == field
                else:
                    ok = ok and answer.get("type") == "error" and "request_id" in answer
                if not ok:
                    problems.append(f"{field} {change}: {resp.status} {answer}")
    assert not problems, "\n".join(problems)
    assert gateway.openai.requests == [] and gateway.anthropic.requests == []


async def test_every_anthropic_field(gateway: Gateway) -> None:
    await _check(gateway, "/v1/messages", MSG, ANTHROPIC_CASES,
                 {"anthropic-version": "2023-06-01", "x-api-key": "k"})


async def test_every_openai_field(gateway: Gateway) -> None:
    await _check(gateway, "/v1/chat/completions", CHAT, OPENAI_CASES, {"Authorization": "Bearer k"})


@pytest.mark.parametrize("field, change", [
    ("model", {"model": 1}), ("messages", {"messages": {}}), ("system", {"system": 1}),
    ("tools.0.name", {"tools": [{"input_schema": {}}]}), ("max_tokens", {"max_tokens": "x"})])
async def test_count_tokens_fields(gateway: Gateway, field: str, change: dict[str, Any]) -> None:
    body = _body({"model": "claude-sonnet-4-5", "messages": [USER]}, change)
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.url + "/v1/messages/count_tokens", json=body,
                                headers={"anthropic-version": "2023-06-01"}) as resp:
            answer = await resp.json()
    assert resp.status == 400 and answer["error"]["message"].startswith(field + ":"), answer


async def test_several_choices_are_answered_plainly_not_streamed(gateway: Gateway) -> None:
    """A stream carries one choice here: n > 1 with stream is a 400 naming `n` (it used to
    come back as one choice with every choice's text interleaved); without stream the
    upstream's answer is relayed as it is, every choice included."""
    body = {**CHAT, "n": 2}
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer k"}) as session:
        async with session.post(gateway.url + "/v1/chat/completions",
                                json={**body, "stream": True}) as resp:
            error = (await resp.json())["error"]
        assert resp.status == 400 and error["param"] == "n"
        assert error["message"].startswith("n: only one choice can be streamed")
        assert gateway.openai.requests == []
        async with session.post(gateway.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
        assert orjson.loads(gateway.openai.last.body)["n"] == 2


async def test_valid_values_at_the_edges_are_accepted(gateway: Gateway) -> None:
    edges_an = [{"temperature": 0}, {"temperature": 1.0}, {"top_p": 1}, {"top_k": 0},
                {"metadata": {"user_id": None}}, {"metadata": {}}, {"thinking": {"type": "disabled"}},
                {"output_config": {"effort": "low"}}, {"stop_sequences": []}, {"system": ""}]
    edges_oa = [{"temperature": 2}, {"top_p": 0}, {"n": 1}, {"stop": "x"}, {"stop": None},
                {"max_tokens": 1}, {"seed": -5}, {"presence_penalty": -2}, {"logprobs": False},
                {"response_format": {"type": "text"}}, {"response_format": {"type": "json_object"}},
                {"reasoning_effort": "low"}, {"stream_options": None}, {"user": ""},
                {"tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}]
    async with aiohttp.ClientSession() as session:
        for change in edges_an:
            async with session.post(gateway.url + "/v1/messages", json=_body(MSG, change),
                                    headers={"anthropic-version": "2023-06-01"}) as resp:
                assert resp.status == 200, (change, await resp.text())
        for change in edges_oa:
            async with session.post(gateway.url + "/v1/chat/completions", json=_body(CHAT, change),
                                    headers={"Authorization": "Bearer k"}) as resp:
                assert resp.status == 200, (change, await resp.text())
