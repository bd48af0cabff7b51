"""Client keys: several, plain or hashed, restricted to model patterns; 401/403 in each
protocol's shape through the official SDKs and plain HTTP; `p5proxy hash-key`."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import yaml

from p5proxy.config import config_from_dict
from p5proxy.errors import ConfigError
from tests.conftest import Gateway, app_for

ALICE, BOB, CAROL = "sk-alice-0123456789", "sk-bob-abcdefghij", "sk-carol-zyxwvuts"
KEYS: list[Any] = [
    ALICE,                                                        # plain string: every model
    {"id": "bob", "key_sha256": hashlib.sha256(BOB.encode()).hexdigest(),
     "models": ["claude-haiku-*", "gpt-4o"]},
    {"id": "carol", "key": CAROL, "models": "claude-sonnet-4-5"},
]
MSG = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gw(make_gateway: Any) -> Gateway:
    return await make_gateway(auth={"keys": KEYS})


async def call(url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers=headers) as resp:
            return resp.status, await resp.json(), resp.headers


async def test_each_key_works_with_both_header_styles(gw: Gateway) -> None:
    for key, model in ((ALICE, "gpt-4o"), (BOB, "gpt-4o"), (CAROL, "claude-sonnet-4-5")):
        status, body, _ = await call(gw.url + "/v1/chat/completions", {**CHAT, "model": model},
                                     {"Authorization": f"Bearer {key}"})
        assert status == 200, body
        status, body, _ = await call(gw.url + "/v1/messages", {**MSG, "model": model},
                                     {"x-api-key": key, "anthropic-version": "2023-06-01"})
        assert status == 200, body


async def test_missing_wrong_and_empty_keys_are_401(gw: Gateway) -> None:
    anthropic_url, openai_url = gw.url + "/v1/messages", gw.url + "/v1/chat/completions"
    for headers in ({}, {"x-api-key": ""}, {"Authorization": "Bearer "},
                    {"x-api-key": ALICE[:-1]}, {"x-api-key": ALICE + "x"},
                    {"Authorization": f"Basic {ALICE}"},
                    {"x-api-key": hashlib.sha256(BOB.encode()).hexdigest()}):   # the hash is no key
        status, body, _ = await call(anthropic_url, MSG, {**headers, "anthropic-version": "2023-06-01"})
        assert status == 401 and body["type"] == "error", headers
        assert body["error"]["type"] == "authentication_error"
        status, body, _ = await call(openai_url, CHAT, headers)
        assert status == 401, headers
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["code"] == "invalid_api_key"
    assert gw.openai.requests == [] and gw.anthropic.requests == []


async def test_model_outside_the_keys_patterns_is_403_in_both_shapes(gw: Gateway) -> None:
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key=BOB, max_retries=0) as oa:
        reply = await oa.chat.completions.create(model="claude-haiku-4-5", messages=CHAT["messages"])
        assert reply.choices[0].message.content is not None   # glob allowed
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await oa.chat.completions.create(model="claude-sonnet-4-5", messages=CHAT["messages"])
    err = denied.value.body
    assert isinstance(err, dict) and err["type"] == "permission_error" and err["param"] == "model"
    assert "claude-sonnet-4-5" in err["message"] and "bob" in err["message"]
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=CAROL, max_retries=0) as an:
        await an.messages.create(**MSG)
        with pytest.raises(anthropic.PermissionDeniedError) as denied2:
            await an.messages.create(**{**MSG, "model": "gpt-4o"})
        assert denied2.value.body["error"]["type"] == "permission_error"   # type: ignore[index]
        # count_tokens knows the model too
        with pytest.raises(anthropic.PermissionDeniedError):
            await an.messages.count_tokens(model="gpt-4o", messages=MSG["messages"])  # type: ignore[arg-type]
        counted = await an.messages.count_tokens(model="claude-sonnet-4-5",
                                                 messages=MSG["messages"])  # type: ignore[arg-type]
        assert counted.input_tokens > 0
    # streams are refused before anything is sent upstream
    status, body, _ = await call(gw.url + "/v1/messages", {**MSG, "model": "gpt-4o", "stream": True},
                                 {"x-api-key": CAROL, "anthropic-version": "2023-06-01"})
    assert status == 403 and body["error"]["type"] == "permission_error"
    assert all(r.json.get("model") != "gpt-4o-upstream" for r in gw.openai.requests)


async def test_models_list_shows_only_what_the_key_may_use(gw: Gateway) -> None:
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key=BOB, max_retries=0) as oa:
        listed = sorted([m.id async for m in oa.models.list()])
        assert listed == ["gpt-4o"]   # globs are never listed; claude-haiku-* matches no exact name
        assert (await oa.models.retrieve("gpt-4o")).id == "gpt-4o"
        with pytest.raises(openai.PermissionDeniedError):
            await oa.models.retrieve("claude-native")
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key=ALICE, max_retries=0) as oa:
        everything = [m.id async for m in oa.models.list()]
        assert {"gpt-4o", "claude-sonnet-4-5", "claude-native"} <= set(everything)
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key=CAROL, max_retries=0) as an:
        page = await an.models.list()
        assert [m.id for m in page.data] == ["claude-sonnet-4-5"]
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/v1/models") as resp:
            assert resp.status == 401


async def test_open_paths_and_health_say_nothing_secret(gw: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/health", "/api/hello"):
            async with session.get(gw.url + path) as resp:
                assert resp.status == 200
                text = await resp.text()
                for secret in (ALICE, BOB, CAROL, hashlib.sha256(BOB.encode()).hexdigest()):
                    assert secret not in text
        async with session.get(gw.url + "/health") as resp:
            health = await resp.json()
    assert health["auth"] == "keys"
    assert health["client_keys"] == {"keys": 3, "restricted": 2, "limited": 0,
                                     "limits_backend": None}


def test_config_accepts_strings_and_mappings_and_reports_every_problem() -> None:
    cfg = config_from_dict({"auth": {"keys": KEYS}})
    ids = [k.id for k in cfg.auth_keys]
    assert ids[1:] == ["bob", "carol"]
    assert ids[0] == "key-" + hashlib.sha256(ALICE.encode()).hexdigest()[:8]
    assert ALICE not in repr(cfg)   # only digests are kept, and not shown
    assert cfg.auth_keys[1].models == ("claude-haiku-*", "gpt-4o")
    assert config_from_dict({"auth": {"keys": "single"}}).auth_keys[0].sha256 == \
        hashlib.sha256(b"single").digest()
    assert config_from_dict({"auth": {"keys": ["", None]}}).auth_keys == ()
    with pytest.raises(ConfigError) as bad:
        config_from_dict({"auth": {"keys": [
            {"id": "a"},                                        # no key
            {"key": "x", "key_sha256": "ab" * 32},              # both
            {"key_sha256": "zz"},                               # not hex
            {"key": "y", "rpm": 0, "tpm": "lots", "colour": 1},  # bad limits, unknown field
            {"id": "dup", "key": "k1"}, {"id": "dup", "key": "k2"},
            {"key": "k1"},                                      # same key twice
            5.5,
        ], "extra": 1}})
    problems = "\n".join(bad.value.problems)
    for expected in ("auth.keys.0: needs a non-empty key", "auth.keys.1: give key or key_sha256",
                     "auth.keys.2.key_sha256: must be 64 hex digits", "auth.keys.3.rpm",
                     "auth.keys.3.tpm", "auth.keys.3.colour: unknown setting",
                     "auth.keys.6: the same key is listed twice", "auth.keys.5.id: id 'dup'",
                     "auth.keys.7: must be a key", "auth.extra: unknown setting"):
        assert expected in problems, (expected, problems)


def test_hash_key_command_prints_the_sha256_of_stdin() -> None:
    done = subprocess.run([sys.executable, "-m", "p5proxy", "hash-key"], input=BOB + "\n",
                          capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == hashlib.sha256(BOB.encode()).hexdigest()
    assert BOB not in done.stdout + done.stderr
    empty = subprocess.run([sys.executable, "-m", "p5proxy", "hash-key"], input="\n",
                           capture_output=True, text=True, timeout=30)
    assert empty.returncode == 2 and "empty key" in empty.stderr


async def test_a_reload_swaps_the_keys_and_keeps_the_counters(
        aiohttp_server: Any, fake_openai: Any, tmp_path: Any) -> None:
    from p5proxy.config import load_config
    from p5proxy.reload import reload_app

    _, upstream = fake_openai
    path = tmp_path / "gw.yaml"

    def write(keys: list[Any]) -> None:
        path.write_text(yaml.safe_dump({
            "auth": {"keys": keys},
            "providers": {"oa": {"type": "openai", "base_url": upstream, "api_key": "k"}},
            "models": {"gpt-4o": "oa"}}))

    write([{"id": "a", "key": ALICE, "rpm": 2}])
    app = app_for(load_config(path))
    url = f"http://127.0.0.1:{(await aiohttp_server(app, host='127.0.0.1')).port}"
    alice, bob = {"Authorization": f"Bearer {ALICE}"}, {"Authorization": f"Bearer {BOB}"}
    assert (await call(url + "/v1/chat/completions", CHAT, alice))[0] == 200
    assert (await call(url + "/v1/chat/completions", CHAT, bob))[0] == 401
    write([{"id": "a", "key": ALICE, "rpm": 2}, {"id": "b", "key": BOB, "models": ["gpt-*"]}])
    assert (await reload_app(app, trigger="test")).ok
    assert (await call(url + "/v1/chat/completions", CHAT, bob))[0] == 200
    assert (await call(url + "/v1/chat/completions", CHAT, alice))[0] == 200
    # alice's counter survived the reload: her third request in the minute is refused
    assert (await call(url + "/v1/chat/completions", CHAT, alice))[0] == 429
