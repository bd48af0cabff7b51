"""One test per hookspec, each with a real plugin object registered next to the defaults."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp import web

from p5proxy import Filter, FilterRun, hookimpl
from p5proxy.app import create_app
from p5proxy.canonical import ChatRequest, StreamEvent, TextDelta
from p5proxy.config import ModelConfig, config_from_dict
from p5proxy.plugins import make_plugin_manager
from p5proxy_plugins.provider_openai import OpenAIProvider
from tests.conftest import gateway_config
from tests.fakes.replies import Reply


@pytest.fixture
async def gateway_with(aiohttp_server: Any) -> AsyncIterator[Any]:
    """`await gateway_with(plugin, cfg)` -> URL of a gateway with `plugin` registered for the
    duration of the test."""
    managers = []

    async def start(plugin: Any, cfg: dict[str, Any]) -> str:
        config = config_from_dict(cfg)
        pm = make_plugin_manager(config, entry_point_plugins=False)
        pm.register(plugin, name="test-plugin")
        managers.append(pm)
        server = await aiohttp_server(create_app(config, pm=pm), host="127.0.0.1")
        return f"http://127.0.0.1:{server.port}"

    try:
        yield start
    finally:
        for pm in managers:
            pm.unregister(name="test-plugin")


def plugin(**hooks: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


class Shout(Filter):
    name = "shout"

    def open(self, req: ChatRequest, route: Any) -> FilterRun:
        return ShoutRun()


class ShoutRun(FilterRun):
    def on_event(self, ev: StreamEvent) -> Iterable[StreamEvent]:
        if isinstance(ev, TextDelta):
            return (TextDelta(ev.index, ev.text.upper()),)
        return (ev,)


async def test_hook_p5proxy_register_filters(gateway_with: Any, fake_openai: Any,
                                             fake_anthropic: Any) -> None:
    fake, url = fake_openai
    cfg = gateway_config(url, fake_anthropic[1])
    cfg["models"]["loud"] = {"provider": "oa", "filters": ["shout"]}
    gw = await gateway_with(plugin(
        p5proxy_register_filters=lambda register, config: register("shout", lambda c: Shout())), cfg)
    async with anthropic.AsyncAnthropic(base_url=gw, api_key="k", max_retries=0) as client:
        for _ in range(2):   # streaming and not: one pipeline
            fake.replies.append(Reply(text="quiet words"))
        msg = await client.messages.create(model="loud", max_tokens=50,
                                           messages=[{"role": "user", "content": "hi"}])
        async with client.messages.stream(model="loud", max_tokens=50,
                                          messages=[{"role": "user", "content": "hi"}]) as stream:
            streamed = await stream.get_final_message()
    assert msg.content[0].text == "QUIET WORDS" == streamed.content[0].text


async def test_hook_p5proxy_resolve_route(gateway_with: Any, fake_openai: Any,
                                          fake_anthropic: Any) -> None:
    fake, url = fake_openai

    def resolve(model: str, config: Any) -> ModelConfig | None:
        return ModelConfig(pattern=model, provider="oa", model="tenant-" + model[7:]) \
            if model.startswith("tenant/") else None

    gw = await gateway_with(plugin(p5proxy_resolve_route=resolve),
                            gateway_config(url, fake_anthropic[1]))
    async with aiohttp.ClientSession() as session:
        async with session.post(gw + "/v1/chat/completions", json={
                "model": "tenant/llama", "messages": [{"role": "user", "content": "hi"}]}) as resp:
            assert resp.status == 200
        async with session.post(gw + "/v1/chat/completions", json={
                "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}) as resp:
            assert resp.status == 200   # the default router still answers the rest
    assert [r.json["model"] for r in fake.requests] == ["tenant-llama", "gpt-4o-upstream"]


async def test_hook_p5proxy_register_routes(gateway_with: Any, fake_openai: Any,
                                            fake_anthropic: Any) -> None:
    async def version(request: web.Request) -> web.Response:
        return web.json_response({"custom": True})

    gw = await gateway_with(plugin(
        p5proxy_register_routes=lambda app, config: app.router.add_get("/custom", version)),
        gateway_config(fake_openai[1], fake_anthropic[1]))
    async with aiohttp.ClientSession() as session:
        async with session.get(gw + "/custom") as resp:
            assert await resp.json() == {"custom": True}


async def test_hook_p5proxy_startup(gateway_with: Any, fake_openai: Any,
                                    fake_anthropic: Any) -> None:
    seen: list[str] = []

    async def warm_up(tag: str) -> None:
        seen.append(tag)

    await gateway_with(plugin(
        p5proxy_startup=lambda app, config: warm_up(config.default_model or "ready")),
        gateway_config(fake_openai[1], fake_anthropic[1]))
    assert seen == ["ready"]   # the awaitable was awaited before serving


async def test_hook_p5proxy_register_providers(gateway_with: Any, fake_openai: Any,
                                               fake_anthropic: Any) -> None:
    fake, url = fake_openai

    class Tagged(OpenAIProvider):
        def build_request(self, req: ChatRequest, route: Any) -> Any:
            ureq = super().build_request(req, route)
            ureq.headers["X-Tenant"] = "blue"
            return ureq

    cfg = gateway_config(url, fake_anthropic[1])
    cfg["providers"]["oa"]["type"] = "tagged-openai"
    gw = await gateway_with(plugin(
        p5proxy_register_providers=lambda register, config: register("tagged-openai", Tagged)), cfg)
    async with aiohttp.ClientSession() as session:
        async with session.post(gw + "/v1/chat/completions", json={
                "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}) as resp:
            assert resp.status == 200
    assert fake.last.headers["x-tenant"] == "blue"
