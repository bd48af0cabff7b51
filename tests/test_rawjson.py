"""Large bodies keep their tool schemas as JSON bytes (p5proxy/rawjson.py): upstreams must
get what the whole parse would have sent them, and clients the same errors."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from p5proxy.errors import InvalidRequest
from p5proxy.inputs import parse_json
from p5proxy.rawjson import LAZY_FROM, RawJSON, json_default, schema_dict, without_meta_schema
from p5proxy.surfaces import ANTHROPIC, OPENAI
from tests.conftest import Gateway
from tests.test_limits_input import AN, OA, post_raw

META = "https://json-schema.org/draft/2020-12/schema"
# long enough that every body here takes the split path
SYSTEM = "You are a careful assistant. " * (LAZY_FROM // 20)

SCHEMAS: list[dict[str, Any]] = [
    {"$schema": META, "type": "object", "properties": {"command": {"type": "string"}},
     "required": ["command"], "additionalProperties": False},
    {"type": "object", "$schema": META, "properties": {}},            # not first: parsed
    {"$schema": META},                                                   # nothing else
    {"type": "object", "properties": {"$schema": {"type": "string"}}},  # a property so named
    {"$schema": META, "properties": {"p": {"pattern": "^[a-z]+$", "const": "$schema"}}},
    {"$schema": 'urn:"quoted"', "$id": "x"},                             # an escape in the URI
    {"$schema": META, "properties": {"$ref": {"$ref": "#/$defs/a"}}, "$defs": {"a": {}}},
    {},
    {"type": "object", "description": "日本語 \"quoted\" \\ back\\slash \u0001 🚀 </tag>",
     "properties": {"n": {"type": "number", "minimum": -1.5e-7, "maximum": 9007199254740993,
                          "default": 0.1},
                    "e": {"enum": [True, False, None, [], {}, [[1, [2]]]]}}},
]


def _expected_openai(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "$schema"}


def _anthropic_tools() -> list[dict[str, Any]]:
    return [{"name": f"tool_{i}", "description": f"tool number {i}", "input_schema": s,
             **({"cache_control": {"type": "ephemeral"}} if i == 0 else {})}
            for i, s in enumerate(SCHEMAS)]


def _openai_tools() -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": f"tool_{i}", "parameters": s}}
            for i, s in enumerate(SCHEMAS)]


def _message_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "system": SYSTEM,
            "messages": [{"role": "user", "content": "hi"}], "tools": _anthropic_tools(), **extra}


def _chat_body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "system", "content": SYSTEM},
                                         {"role": "user", "content": "hi"}],
            "tools": _openai_tools()}


async def test_large_anthropic_requests_reach_each_upstream_with_their_schemas(gateway: Gateway) -> None:
    status, body = await post_raw(gateway.url + "/v1/messages",
                               orjson.dumps(_message_body("claude-sonnet-4-5")), AN)
    assert status == 200, body
    sent = gateway.openai.last.json["tools"]   # translated: OpenAI functions without $schema
    assert [t["function"]["parameters"] for t in sent] == [_expected_openai(s) for s in SCHEMAS]
    assert [t["function"]["name"] for t in sent] == [f"tool_{i}" for i in range(len(SCHEMAS))]

    status, body = await post_raw(gateway.url + "/v1/messages",
                               orjson.dumps(_message_body("claude-native", x_unknown={"a": [1]})), AN)
    assert status == 200, body
    sent_body = gateway.anthropic.last.json   # same protocol: every field as the client sent it
    assert [t["input_schema"] for t in sent_body["tools"]] == SCHEMAS
    assert sent_body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent_body["x_unknown"] == {"a": [1]}


async def test_large_openai_requests_reach_each_upstream_with_their_schemas(gateway: Gateway) -> None:
    status, body = await post_raw(gateway.url + "/v1/chat/completions",
                               orjson.dumps(_chat_body("gpt-4o")), OA)
    assert status == 200, body
    assert [t["function"]["parameters"] for t in gateway.openai.last.json["tools"]] == SCHEMAS

    status, body = await post_raw(gateway.url + "/v1/chat/completions",
                               orjson.dumps(_chat_body("gpt-via-claude")), OA)
    assert status == 200, body
    assert [t["input_schema"] for t in gateway.anthropic.last.json["tools"]] == SCHEMAS


async def test_large_bodies_get_the_same_errors(gateway: Gateway) -> None:
    url = gateway.url + "/v1/messages"
    good = orjson.dumps(_message_body("claude-sonnet-4-5"))
    bad_utf8 = good.replace("日本語".encode(), b"\xff\xfe", 1)   # inside a schema
    status, body = await post_raw(url, bad_utf8, AN)
    assert status == 400 and body["error"]["message"].startswith("body: invalid JSON"), body
    status, body = await post_raw(url, good + b" x", AN)
    assert status == 400 and body["error"]["message"].startswith("body: invalid JSON"), body

    not_object = _message_body("claude-sonnet-4-5")
    not_object["tools"][2]["input_schema"] = "object"
    status, body = await post_raw(url, orjson.dumps(not_object), AN)
    assert status == 400 and body["error"]["message"].startswith("tools.2.input_schema:"), body

    def nested(levels: int) -> dict[str, Any]:   # a schema `levels` objects deep
        schema: dict[str, Any] = {"type": "string"}
        for _ in range(levels - 1):
            schema = {"type": "object", "properties": {"p": schema}}
        return schema

    # body, tools and the tool are three levels; every `properties` adds one more
    for levels, allowed in ((31, True), (32, False), (120, False)):
        deep = _message_body("claude-sonnet-4-5")
        deep["tools"][1]["input_schema"] = nested(levels)   # 2 * levels - 1 objects deep
        status, body = await post_raw(url, orjson.dumps(deep), AN)
        assert (status == 200) is allowed, (levels, body)
        if not allowed:
            assert body["error"]["message"].startswith("body: JSON nested deeper than 64"), body

    # outside the schemas: lists nested in a tool call's input
    for levels, allowed in ((58, True), (59, False)):
        inner: Any = "leaf"
        for _ in range(levels):
            inner = [inner]
        deep = _message_body("claude-sonnet-4-5")
        deep["metadata"] = {"user_id": "u"}
        deep["messages"] = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "tool_0",
                                               "input": {"deep": inner}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": "ok"}]}]
        # body > messages > message > content > block > input > deep: 6 levels, then `inner`
        status, body = await post_raw(url, orjson.dumps(deep), AN)
        assert (status == 200) is allowed, (levels, body)
        if not allowed:
            assert body["error"]["message"].startswith("body: JSON nested deeper than 64"), body

    # an integer past 64 bits in a schema goes on as written (orjson's whole parse would
    # make it a float; the upstream reads the same number either way)
    huge = b"123456789012345678901234567890"
    big = good.replace(b'"maximum":9007199254740993', b'"maximum":' + huge)
    assert big != good
    status, body = await post_raw(url, big, AN)
    assert status == 200, body
    at = next(i for i, s in enumerate(SCHEMAS) if "n" in s.get("properties", {}))
    sent = gateway.openai.last.json["tools"][at]["function"]["parameters"]
    assert sent["properties"]["n"]["maximum"] == orjson.loads(huge)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["$schema", "type", "properties", "x", "é"]),
                                json_values, max_size=5), min_size=1, max_size=4),
       st.booleans())
def test_the_split_agrees_with_the_whole_parse(schemas: list[dict[str, Any]], anthropic: bool) -> None:
    if anthropic:
        tools: list[Any] = [{"name": "f", "input_schema": s} for s in schemas]
    else:
        tools = [{"type": "function", "function": {"name": "f", "parameters": s}} for s in schemas]
    padding = {"system": SYSTEM} if anthropic else {
        "messages": [{"role": "system", "content": SYSTEM}]}   # `system` is not an OpenAI field
    raw = orjson.dumps({"model": "m", **padding, "tools": tools})
    whole = parse_json(raw, 64)
    split = parse_json(raw, 64, (ANTHROPIC if anthropic else OPENAI).splitter)
    assert orjson.loads(orjson.dumps(split, default=json_default)) == whole
    for i, schema in enumerate(schemas):
        kept = split["tools"][i]["input_schema"] if anthropic else \
            split["tools"][i]["function"]["parameters"]
        assert isinstance(kept, RawJSON) and schema_dict(kept) == schema and kept == schema
        # read like the dict it stands for, for plugins that look into a tool's schema
        assert dict(kept.items()) == schema and list(kept) == list(schema)
        assert len(kept) == len(schema) and kept.get("type") == schema.get("type")
        assert ("x" in kept) == ("x" in schema)
        assert orjson.loads(orjson.dumps(without_meta_schema(kept))) == _expected_openai(schema)


def test_a_repeated_key_keeps_the_last_value_as_the_whole_parse_does() -> None:
    tool = b'{"name":"first","input_schema":{"type":"object"},"name":"second"}'
    for raw in (b'{"model":"a","system":"' + SYSTEM.encode() + b'","tools":[' + tool + b'],"model":"b"}',
                b'{"model":"a","system":"' + SYSTEM.encode() + b'","tools":[' + tool + b']}'):
        split = parse_json(raw, 64, ANTHROPIC.splitter)
        assert orjson.loads(orjson.dumps(split, default=json_default)) == orjson.loads(raw)


def test_a_body_past_a_mebibyte_is_split_too() -> None:
    tools = [{"name": f"t{i}", "input_schema": s} for i, s in enumerate(SCHEMAS)]
    raw = orjson.dumps({"model": "m", "system": "x" * (1 << 20), "tools": tools})
    split = parse_json(raw, 64, ANTHROPIC.splitter)
    assert all(isinstance(t["input_schema"], RawJSON) for t in split["tools"])
    assert orjson.loads(orjson.dumps(split, default=json_default)) == orjson.loads(raw)


def test_a_body_with_a_field_its_protocol_does_not_define_is_parsed_whole() -> None:
    tools = [{"name": f"t{i}", "input_schema": s} for i, s in enumerate(SCHEMAS)]
    raw = orjson.dumps({"model": "m", "system": SYSTEM, "tools": tools, "vendor_field": [1]})
    split = parse_json(raw, 64, ANTHROPIC.splitter)
    assert split == orjson.loads(raw) and not any(isinstance(t["input_schema"], RawJSON)
                                                  for t in split["tools"])


def test_schemas_of_the_same_length_are_measured_apart() -> None:
    """The bracket counts of schemas seen before are looked up by length, then compared."""
    def nested(levels: int) -> dict[str, Any]:
        schema: dict[str, Any] = {}
        for _ in range(levels):
            schema = {"a": schema}
        return schema

    deep = nested(70)
    shallow = {"a": "x" * (len(orjson.dumps(deep)) - 8)}
    assert len(orjson.dumps(deep)) == len(orjson.dumps(shallow))
    for schema, allowed in ((shallow, True), (deep, False), (shallow, True), (deep, False)):
        raw = orjson.dumps({"model": "m", "system": SYSTEM,
                            "tools": [{"name": "same", "input_schema": schema}]})
        try:
            parse_json(raw, 64, ANTHROPIC.splitter)
            assert allowed
        except InvalidRequest as exc:
            assert not allowed and "nested deeper than 64" in str(exc)


def test_an_integer_past_64_bits_outside_the_schemas_reads_as_the_whole_parse_reads_it() -> None:
    tools = [{"name": "t", "input_schema": SCHEMAS[0]}]
    for number in (b"123456789012345678901234567890", b"-9223372036854775809",
                   b"18446744073709551615", b"-9223372036854775808"):
        raw = (b'{"model":"m","system":' + orjson.dumps(SYSTEM) + b',"tools":' + orjson.dumps(tools)
               + b',"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"x",'
               b'"content":"ok","n":[' + number + b']}]}]}')
        split = parse_json(raw, 64, ANTHROPIC.splitter)
        whole = orjson.loads(raw)
        kept = split["messages"][0]["content"][0]["n"][0]
        assert kept == whole["messages"][0]["content"][0]["n"][0]
        assert type(kept) is type(whole["messages"][0]["content"][0]["n"][0])
        orjson.dumps(split, default=json_default)   # the encoders can write it
