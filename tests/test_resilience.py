"""Key pools, retries and fallbacks before the first byte, against a fault-injecting upstream
on a real socket (tests/fakes/faulty_upstream.py), through the official SDKs with their own
retries off: every retry seen here is the gateway's."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.conftest import app_for, start_gateway
from tests.fakes import FakeAnthropic
from tests.fakes.faulty_upstream import FaultyUpstream, ok, start_faulty, status

HI = [{"role": "user", "content": "hi"}]
FAST = {"attempts": 3, "backoff_base": 0.01, "backoff_max": 0.05, "max_wait": 5}


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyUpstream]:
    fake = await start_faulty()
    yield fake
    await fake.stop()


def config(url: str, *, keys: Any = ("sk-key-alpha-0001",), retry: dict[str, Any] | None = None,
           **provider: Any) -> dict[str, Any]:
    return {"retry": retry or FAST,
            "cache": {"enabled": False},   # every request reaches the upstream
            "providers": {"fx": {"type": "openai", "base_url": url, "api_keys": list(keys),
                                 **provider}},
            "models": {"gpt-4o": {"provider": "fx", "model": "up-model"}}}


def oa(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="client", max_retries=0)


def an(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="client", max_retries=0)


async def ask(url: str, model: str = "gpt-4o") -> str:
    async with oa(url) as client:
        reply = await client.chat.completions.create(model=model, messages=HI)
        return reply.choices[0].message.content or ""


async def health(url: str) -> Any:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/health") as resp:
            return await resp.json()


# --- key pools ---------------------------------------------------------------------------------

async def test_429_cools_that_key_and_the_next_key_answers(aiohttp_server: Any,
                                                           faulty: FaultyUpstream) -> None:
    a, b = "sk-key-alpha-0001", "sk-key-bravo-0002"
    faulty.faults.append(status(429, "30", key=a))
    url = await start_gateway(aiohttp_server, config(faulty.base_url, keys=[a, b]))
    assert await ask(url) == "Hello from the faulty upstream"
    assert [r.key for r in faulty.requests] == [a, b]      # same request, the other key
    for _ in range(3):
        await ask(url)
    assert [r.key for r in faulty.requests[2:]] == [b, b, b]   # a is cooling
    keys = (await health(url))["providers"]["fx"]["keys"]
    assert keys[0]["key"] == "sk-…0001" and 25 < keys[0]["cooling_secs"] <= 30
    assert "cooling_until" in keys[0] and not keys[0]["disabled"]
    assert "cooling_secs" not in keys[1]
    assert a not in str(await health(url)) and b not in str(await health(url))


async def test_a_429_cools_the_whole_group(aiohttp_server: Any, faulty: FaultyUpstream) -> None:
    keys = [{"key": "sk-acct1-key-aaaa", "group": "acct1"},
            {"key": "sk-acct1-key-bbbb", "group": "acct1"}, "sk-other-key-cccc"]
    faulty.faults.append(status(429, "20", key="sk-acct1-key-aaaa"))
    url = await start_gateway(aiohttp_server, config(faulty.base_url, keys=keys))
    await ask(url)
    await ask(url)
    assert [r.key for r in faulty.requests] == ["sk-acct1-key-aaaa", "sk-other-key-cccc",
                                                "sk-other-key-cccc"]
    described = (await health(url))["providers"]["fx"]["keys"]
    assert [k.get("group") for k in described] == ["acct1", "acct1", None]
    assert all(k["cooling_secs"] > 15 for k in described[:2])


async def test_every_key_cooling_is_429_with_the_shortest_cooldown(
        aiohttp_server: Any, faulty: FaultyUpstream) -> None:
    a, b = "sk-key-alpha-0001", "sk-key-bravo-0002"
    faulty.faults += [status(429, "40", key=a), status(429, "6", key=b)]
    url = await start_gateway(aiohttp_server, config(faulty.base_url, keys=[a, b]))
    async with oa(url) as client:
        with pytest.raises(openai.RateLimitError) as exc:
            await client.chat.completions.create(model="gpt-4o", messages=HI)
        assert exc.value.response.headers["retry-after"] in ("6", "5")
        # the next request is answered at once, without calling the upstream
        with pytest.raises(openai.RateLimitError) as exc:
            await client.chat.completions.create(model="gpt-4o", messages=HI)
        assert 1 <= int(exc.value.response.headers["retry-after"]) <= 6
    async with an(url) as client:
        with pytest.raises(anthropic.RateLimitError) as aexc:
            await client.messages.create(model="gpt-4o", max_tokens=10, messages=HI)
        assert aexc.value.body["error"]["type"] == "rate_limit_error" 
    assert len(faulty.requests) == 2


async def test_429_without_retry_after_cools_with_a_backoff(aiohttp_server: Any,
                                                            faulty: FaultyUpstream) -> None:
    faulty.faults += [status(429), status(429)]
    url = await start_gateway(aiohttp_server, config(
        faulty.base_url, retry={**FAST, "attempts": 1, "cooldown_base": 2, "cooldown_max": 3}))
    for expected in (2, 3):   # 2 s, then doubled but capped at 3 s
        async with oa(url) as client:
            with pytest.raises(openai.RateLimitError) as exc:
                await client.chat.completions.create(model="gpt-4o", messages=HI)
        assert exc.value.response.headers["retry-after"] == str(expected)
        key = (await health(url))["providers"]["fx"]["keys"][0]
        assert expected - 1 < key["cooling_secs"] <= expected
        await _wait_cooled(url)


async def _wait_cooled(url: str) -> None:
    deadline = time.monotonic() + 5
    while "cooling_secs" in (await health(url))["providers"]["fx"]["keys"][0]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("code", [401, 403])
async def test_upstream_auth_failure_disables_the_key_and_is_never_told_as_such(
        aiohttp_server: Any, faulty: FaultyUpstream, caplog: pytest.LogCaptureFixture,
        code: int) -> None:
    a, b = "sk-key-alpha-0001", "sk-key-bravo-0002"
    faulty.faults += [status(code, key=a)]
    url = await start_gateway(aiohttp_server, config(faulty.base_url, keys=[a, b]))
    with caplog.at_level(logging.INFO, "p5proxy"):
        # a is refused: b answers the same request
        assert await ask(url) == "Hello from the faulty upstream"
        faulty.faults += [status(code, key=b)]
        # b is refused too: a neutral 502, not the upstream's 401/403
        async with oa(url) as client:
            with pytest.raises(openai.InternalServerError) as exc:
                await client.chat.completions.create(model="gpt-4o", messages=HI)
        assert exc.value.status_code == 502
        assert "api key" not in exc.value.message.lower()
        # nothing usable is left: 503 without calling the upstream
        async with an(url) as aclient:
            with pytest.raises(anthropic.APIStatusError) as aexc:
                await aclient.messages.create(model="gpt-4o", max_tokens=10, messages=HI)
        assert aexc.value.status_code == 503
    assert [r.key for r in faulty.requests] == [a, b, b]
    refused = [r.getMessage() for r in caplog.records if "disabled until" in r.getMessage()]
    assert len(refused) == 2 and "sk-…0001" in refused[0] and "sk-…0002" in refused[1]
    assert a not in caplog.text and b not in caplog.text
    keys = (await health(url))["providers"]["fx"]["keys"]
    assert [k["disabled"] for k in keys] == [True, True]


async def test_keys_rotate_in_turn(aiohttp_server: Any, faulty: FaultyUpstream) -> None:
    keys = ["sk-key-alpha-0001", "sk-key-bravo-0002", "sk-key-charl-0003"]
    url = await start_gateway(aiohttp_server, config(faulty.base_url, keys=keys))
    for _ in range(6):
        await ask(url)
    assert [r.key for r in faulty.requests] == keys * 2


# --- retries -----------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [500, 502, 503, 504, 529])
async def test_server_errors_are_retried(aiohttp_server: Any, faulty: FaultyUpstream,
                                         code: int) -> None:
    faulty.faults += [status(code), status(code)]
    url = await start_gateway(aiohttp_server, config(faulty.base_url))
    assert await ask(url) == "Hello from the faulty upstream"
    assert len(faulty.requests) == 3


async def test_retries_are_bounded(aiohttp_server: Any, faulty: FaultyUpstream) -> None:
    faulty.faults += [status(503)] * 5
    url = await start_gateway(aiohttp_server, config(faulty.base_url))
    async with an(url) as client:
        with pytest.raises(anthropic.APIStatusError) as exc:
            await client.messages.create(model="gpt-4o", max_tokens=10, messages=HI)
    assert exc.value.status_code == 529 and len(faulty.requests) == 3   # 503 in Anthropic's terms


async def test_request_errors_are_never_retried(aiohttp_server: Any,
                                                faulty: FaultyUpstream) -> None:
    faulty.faults += [status(400), status(404), status(422)]
    url = await start_gateway(aiohttp_server, config(faulty.base_url))
    for expected in (openai.BadRequestError, openai.NotFoundError, openai.UnprocessableEntityError):
        async with oa(url) as client:
            with pytest.raises(expected):
                await client.chat.completions.create(model="gpt-4o", messages=HI)
    assert len(faulty.requests) == 3


async def test_backoff_waits_between_attempts(aiohttp_server: Any, faulty: FaultyUpstream) -> None:
    faulty.faults += [status(500), status(500)]
    url = await start_gateway(aiohttp_server, config(
        faulty.base_url, retry={**FAST, "backoff_base": 0.2, "backoff_max": 1}))
    await ask(url)
    gaps = [b.at - a.at for a, b in zip(faulty.requests, faulty.requests[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2   # half of 0.2, then half of 0.4, at least


async def test_retry_after_is_waited_for_within_the_budget(aiohttp_server: Any,
                                                           faulty: FaultyUpstream) -> None:
    faulty.faults += [status(503, "1")]
    url = await start_gateway(aiohttp_server, config(
        faulty.base_url, retry={**FAST, "backoff_max": 2}))
    await ask(url)
    assert faulty.requests[1].at - faulty.requests[0].at >= 0.9
    # a Retry-After over the budget (max_wait) is not waited for: the client gets it
    faulty.faults += [status(503, "3")]
    url = await start_gateway(aiohttp_server, config(
        faulty.base_url, retry={**FAST, "backoff_max": 5, "max_wait": 2}))
    async with oa(url) as client:
        with pytest.raises(openai.InternalServerError) as exc:
            await client.chat.completions.create(model="gpt-4o", messages=HI)
    assert exc.value.response.headers["retry-after"] == "3"
    assert len(faulty.requests) == 3


async def test_http_date_retry_after(aiohttp_server: Any, faulty: FaultyUpstream) -> None:
    from email.utils import formatdate
    a, b = "sk-key-alpha-0001", "sk-key-bravo-0002"
    faulty.faults.append(status(429, formatdate(time.time() + 120, usegmt=True), key=a))
    url = await start_gateway(aiohttp_server, config(faulty.base_url, keys=[a, b]))
    await ask(url)
    key = (await health(url))["providers"]["fx"]["keys"][0]
    assert 100 < key["cooling_secs"] <= 121


async def test_provider_retry_overrides_the_top_level(aiohttp_server: Any,
                                                      faulty: FaultyUpstream) -> None:
    faulty.faults += [status(502)] * 3
    cfg = config(faulty.base_url, retry={**FAST, "attempts": 4})
    cfg["providers"]["fx"]["retry"] = {"attempts": 1}
    url = await start_gateway(aiohttp_server, cfg)
    async with oa(url) as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="gpt-4o", messages=HI)
    assert len(faulty.requests) == 1


async def test_connection_refused_is_retried_then_502(aiohttp_server: Any,
                                                      unused_tcp_port: int) -> None:
    url = await start_gateway(aiohttp_server, config(f"http://127.0.0.1:{unused_tcp_port}/v1"))
    started = time.monotonic()
    async with oa(url) as client:
        with pytest.raises(openai.InternalServerError) as exc:
            await client.chat.completions.create(model="gpt-4o", messages=HI)
    assert exc.value.status_code == 502 and time.monotonic() - started < 5


# --- fallbacks ---------------------------------------------------------------------------------

def with_fallback(cfg: dict[str, Any], anthropic_url: str) -> dict[str, Any]:
    cfg["providers"]["an"] = {"type": "anthropic", "base_url": anthropic_url, "api_key": "sk-an"}
    cfg["models"]["gpt-4o"]["fallbacks"] = ["claude-backup"]
    cfg["models"]["claude-backup"] = {"provider": "an", "model": "claude-upstream"}
    return cfg


@pytest.mark.parametrize("stream", [False, True])
async def test_fallback_answers_translated_for_its_provider(
        aiohttp_server: Any, faulty: FaultyUpstream, fake_anthropic: Any, stream: bool) -> None:
    fake, an_url = fake_anthropic
    faulty.faults += [status(503)] * 3
    url = await start_gateway(aiohttp_server, with_fallback(config(faulty.base_url), an_url))
    async with oa(url) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HI, stream=stream)
        assert raw.headers["x-proxy-fallback"] == "claude-backup"
        if stream:
            text = "".join([c.choices[0].delta.content or "" async for c in raw.parse()
                            if c.choices])
        else:
            text = raw.parse().choices[0].message.content or ""
    assert text == FakeAnthropic.default_text
    assert len(faulty.requests) == 3   # the primary's attempts came first
    assert fake.last.path == "/v1/messages" and fake.last.json["model"] == "claude-upstream"
    assert fake.last.headers["x-api-key"] == "sk-an"
    # a healthy primary answers itself, without the header
    async with oa(url) as client:
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        assert "x-proxy-fallback" not in raw.headers


async def test_a_fallback_answer_is_not_cached_for_the_primary(
        aiohttp_server: Any, faulty: FaultyUpstream, fake_anthropic: Any) -> None:
    fake, an_url = fake_anthropic
    faulty.faults += [status(503)] * 3
    cfg = with_fallback(config(faulty.base_url), an_url)
    cfg["cache"] = {"enabled": True}
    url = await start_gateway(aiohttp_server, cfg)
    async with oa(url) as client:
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        assert raw.headers["x-proxy-fallback"] == "claude-backup"
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        assert raw.headers["x-proxy-cache"] == "MISS"   # the primary was asked again
        assert "x-proxy-fallback" not in raw.headers
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        assert raw.headers["x-proxy-cache"] == "HIT"    # and its own answer is kept
    assert len(faulty.requests) == 4


async def test_no_fallback_after_a_request_error(aiohttp_server: Any, faulty: FaultyUpstream,
                                                 fake_anthropic: Any) -> None:
    fake, an_url = fake_anthropic
    faulty.faults.append(status(400))
    url = await start_gateway(aiohttp_server, with_fallback(config(faulty.base_url), an_url))
    async with oa(url) as client:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="gpt-4o", messages=HI)
    assert fake.requests == []


async def test_fallback_when_every_key_is_cooling(aiohttp_server: Any, faulty: FaultyUpstream,
                                                  fake_anthropic: Any) -> None:
    fake, an_url = fake_anthropic
    faulty.faults.append(status(429, "60"))
    url = await start_gateway(aiohttp_server, with_fallback(config(faulty.base_url), an_url))
    assert await ask(url) == FakeAnthropic.default_text   # 429, key cooling: the fallback
    assert await ask(url) == FakeAnthropic.default_text   # straight to the fallback
    assert len(faulty.requests) == 1 and len(fake.requests) == 2


async def test_fallbacks_are_tried_in_order(aiohttp_server: Any, faulty: FaultyUpstream,
                                            unused_tcp_port: int) -> None:
    cfg = config(faulty.base_url, retry={**FAST, "attempts": 1})
    cfg["providers"]["dead"] = {"type": "openai",
                                "base_url": f"http://127.0.0.1:{unused_tcp_port}/v1"}
    cfg["models"] = {"primary": {"provider": "dead", "fallbacks": ["second", "third"]},
                     "second": {"provider": "dead"},
                     "third": {"provider": "fx", "model": "third-upstream"}}
    url = await start_gateway(aiohttp_server, cfg)
    async with oa(url) as client:
        raw = await client.chat.completions.with_raw_response.create(model="primary", messages=HI)
    assert raw.headers["x-proxy-fallback"] == "third"
    assert raw.parse().model == "primary"   # the client's name, whoever answered
    assert faulty.requests[0].json["model"] == "third-upstream"


def test_fallbacks_must_name_other_models() -> None:
    from p5proxy.config import config_from_dict
    from p5proxy.errors import ConfigError
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"providers": {"p": {"type": "openai", "base_url": "http://x/v1"}},
                          "models": {"a": {"provider": "p", "fallbacks": ["a", "nope"]}},
                          "retry": {"attempts": 0, "bogus": 1}})
    text = str(exc.value)
    assert "models.a.fallbacks: 'a'" in text and "models.a.fallbacks: 'nope'" in text
    assert "retry.attempts: must be at least 1" in text and "retry.bogus: unknown" in text


async def test_a_short_cooldown_is_waited_for_on_the_only_key(aiohttp_server: Any,
                                                              faulty: FaultyUpstream) -> None:
    faulty.faults.append(status(429))
    url = await start_gateway(aiohttp_server, config(
        faulty.base_url, retry={**FAST, "cooldown_base": 0.4, "backoff_max": 1}))
    assert await ask(url) == "Hello from the faulty upstream"
    assert [r.key for r in faulty.requests] == ["sk-key-alpha-0001"] * 2
    assert faulty.requests[1].at - faulty.requests[0].at >= 0.35   # the key's cooldown


async def test_a_retry_prefers_a_key_the_request_has_not_tried(aiohttp_server: Any,
                                                               faulty: FaultyUpstream) -> None:
    keys = ["sk-key-alpha-0001", "sk-key-bravo-0002", "sk-key-charl-0003"]
    faulty.faults += [status(500, key=keys[0]), status(502, key=keys[1])]
    url = await start_gateway(aiohttp_server, config(faulty.base_url, keys=keys))
    assert await ask(url) == "Hello from the faulty upstream"
    assert [r.key for r in faulty.requests] == keys


def test_retry_after_values() -> None:
    from email.utils import formatdate

    from p5proxy.retry import parse_retry_after
    now = 1_800_000_000.0
    assert parse_retry_after("7") == 7 and parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0 and parse_retry_after("") is None
    assert parse_retry_after("soon") is None and parse_retry_after("inf") is None
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now=now) == 90
    assert parse_retry_after(formatdate(now - 90, usegmt=True), now=now) == 0


async def test_tools_auto_emulation_survives_a_retry(aiohttp_server: Any,
                                                     faulty: FaultyUpstream) -> None:
    """`tools: auto`: the native attempt is refused for its tools, the emulated one meets a
    503, and the retry sends the same emulated request again (not emulated twice)."""
    call = ('<function_calls><invoke name="get_weather"><parameter name="city">Paris'
            '</parameter></invoke></function_calls>')
    faulty.faults += [status(400, message="tools are not supported by this model"), status(503),
                      ok(call)]
    url = await start_gateway(aiohttp_server, config(faulty.base_url, tools="auto"))
    tool = {"name": "get_weather", "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    async with an(url) as client:
        reply = await client.messages.create(model="gpt-4o", max_tokens=50, messages=HI,
                                             tools=[tool])
    assert [(b.type, getattr(b, "input", None)) for b in reply.content] == \
        [("tool_use", {"city": "Paris"})]   # the retry still reads the emulated tool call
    native, emulated, retried = (r.json for r in faulty.requests)
    assert "tools" in native and "tools" not in emulated
    assert emulated["messages"] == retried["messages"]
    assert emulated.get("stop") == retried.get("stop")


async def test_a_disabled_key_comes_back_on_reload(tmp_path: Any, aiohttp_server: Any,
                                                   faulty: FaultyUpstream) -> None:
    import yaml

    from p5proxy.config import load_config
    from p5proxy.reload import reload_app
    a, b = "sk-key-alpha-0001", "sk-key-bravo-0002"
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({**config(faulty.base_url, keys=[a, b]),
                                    "logs": {"enabled": False}}))
    cfg = load_config(path)
    app = app_for(cfg)
    server = await aiohttp_server(app, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}"
    faulty.faults.append(status(401, key=a))
    await ask(url)
    assert [k["disabled"] for k in (await health(url))["providers"]["fx"]["keys"]] == [True, False]
    assert (await reload_app(app, trigger="test")).ok
    assert [k["disabled"] for k in (await health(url))["providers"]["fx"]["keys"]] == [False, False]
    await ask(url)
    await ask(url)
    assert [r.key for r in faulty.requests] == [a, b, a, b]


async def test_retries_fallbacks_and_cooldowns_are_counted(
        aiohttp_server: Any, faulty: FaultyUpstream, fake_anthropic: Any) -> None:
    from p5proxy.metrics import REGISTRY

    def sample(name: str, provider: str) -> float:
        return REGISTRY.get_sample_value(name, {"provider": provider}) or 0.0

    names = ("p5proxy_upstream_retries_total", "p5proxy_fallbacks_total",
             "p5proxy_key_cooldowns_total")
    before = [sample(n, "fx") for n in names]
    faulty.faults += [status(429), status(503), status(503)]
    _, an_url = fake_anthropic
    url = await start_gateway(aiohttp_server, with_fallback(config(
        faulty.base_url, retry={**FAST, "cooldown_base": 0.01}), an_url))
    assert await ask(url) == FakeAnthropic.default_text
    after = [sample(n, "fx") for n in names]
    assert [b - a for a, b in zip(before, after)] == [2, 1, 1]
