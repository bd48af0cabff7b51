"""Outbound proxies: UPSTREAM_PROXY_URL, a provider's `proxy`, HTTP(S)_PROXY and NO_PROXY,
through a real forward proxy on a loopback port that counts the requests it carries."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from p5proxy.config import CacheConfig, load_config
from tests.conftest import app_for, start_gateway
from tests.fakes.faulty_upstream import FaultyUpstream, start_faulty
from tests.fakes.http_proxy import CountingProxy
from tests.test_resilience import HI, config

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
              "all_proxy", "no_proxy", "UPSTREAM_PROXY_URL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyUpstream]:
    fake = await start_faulty()
    yield fake
    await fake.stop()


@pytest.fixture
async def proxy() -> AsyncIterator[CountingProxy]:
    px = CountingProxy()
    await px.start()
    yield px
    await px.stop()


async def chat(url: str) -> tuple[int, Any]:
    """aiohttp ignores the proxy variables (trust_env off), so the test's own call is direct."""
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions",
                                json={"model": "gpt-4o", "messages": HI}) as resp:
            return resp.status, await resp.json()


async def health(url: str) -> tuple[Any, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/health") as resp:
            return await resp.json(), await resp.text()


async def env_gateway(aiohttp_server: Any, env: dict[str, str]) -> str:
    """A gateway configured from the environment alone, as `p5proxy serve` without a file."""
    cfg = dataclasses.replace(load_config(env=env), cache=CacheConfig(enabled=False))
    app = app_for(cfg)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}"


async def test_upstream_proxy_url_carries_the_requests(aiohttp_server: Any, faulty: FaultyUpstream,
                                                       proxy: CountingProxy) -> None:
    proxy_url = f"http://gw-user:s3cret-pw@127.0.0.1:{proxy.port}"
    url = await env_gateway(aiohttp_server, {"OPENAI_BASE_URL": faulty.base_url,
                                             "OPENAI_API_KEY": "sk-upstream-key-0001",
                                             "UPSTREAM_PROXY_URL": proxy_url})
    for _ in range(2):
        status, body = await chat(url)
        assert status == 200, body
    assert len(proxy.requests) == 2 and len(faulty.requests) == 2
    seen = proxy.requests[0]
    assert seen.method == "POST" and seen.target == faulty.base_url + "/chat/completions"
    assert seen.headers["proxy-authorization"] == \
        "Basic " + base64.b64encode(b"gw-user:s3cret-pw").decode()
    assert "proxy-authorization" not in faulty.requests[0].headers
    info, text = await health(url)
    assert info["providers"]["openai"]["proxy"] == {
        "url": proxy.url, "from": "UPSTREAM_PROXY_URL", "credentials": True}
    assert "s3cret" not in text and "gw-user" not in text


async def test_no_proxy_is_honoured(aiohttp_server: Any, faulty: FaultyUpstream,
                                    proxy: CountingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    url = await env_gateway(aiohttp_server, {"OPENAI_BASE_URL": faulty.base_url,
                                             "UPSTREAM_PROXY_URL": proxy.url})
    status, _ = await chat(url)
    assert status == 200 and proxy.requests == [] and len(faulty.requests) == 1
    info, _ = await health(url)
    assert info["providers"]["openai"]["proxy"] is None


async def test_provider_proxy_wins_and_false_means_direct(
        aiohttp_server: Any, faulty: FaultyUpstream, proxy: CountingProxy) -> None:
    cfg = config(faulty.base_url, proxy=proxy.url)
    cfg["providers"]["direct"] = {"type": "openai", "base_url": faulty.base_url, "proxy": False}
    cfg["models"]["direct-model"] = {"provider": "direct"}
    cfg["upstream_proxy"] = "http://127.0.0.1:9"   # would fail: nothing listens there
    url = await start_gateway(aiohttp_server, cfg)
    assert (await chat(url))[0] == 200
    assert len(proxy.requests) == 1
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions",
                                json={"model": "direct-model", "messages": HI}) as resp:
            assert resp.status == 200
    assert len(proxy.requests) == 1 and len(faulty.requests) == 2
    info, _ = await health(url)
    assert info["providers"]["fx"]["proxy"]["from"] == "provider"
    assert info["providers"]["direct"]["proxy"] is None


async def test_standard_http_proxy_variables(aiohttp_server: Any, faulty: FaultyUpstream,
                                             proxy: CountingProxy,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    # a name that resolves nowhere: only the proxy can reach it (it maps it to 127.0.0.1)
    remote = f"http://upstream.invalid:{faulty.port}/v1"
    cfg = config(remote)
    cfg["providers"]["local"] = {"type": "openai", "base_url": faulty.base_url}
    cfg["models"]["local-model"] = {"provider": "local"}
    url = await start_gateway(aiohttp_server, cfg)
    assert (await chat(url))[0] == 200
    assert [r.target for r in proxy.requests] == [remote + "/chat/completions"]
    async with aiohttp.ClientSession() as session:   # loopback upstreams never use it
        async with session.post(url + "/v1/chat/completions",
                                json={"model": "local-model", "messages": HI}) as resp:
            assert resp.status == 200
    assert len(proxy.requests) == 1 and len(faulty.requests) == 2
    info, _ = await health(url)
    assert info["providers"]["fx"]["proxy"] == {"url": proxy.url, "from": "HTTP_PROXY",
                                                "credentials": False}
    monkeypatch.setenv("no_proxy", ".invalid")
    url = await start_gateway(aiohttp_server, cfg)
    info, _ = await health(url)
    assert info["providers"]["fx"]["proxy"] is None   # NO_PROXY names its domain


def test_proxy_setting_is_checked() -> None:
    from p5proxy.config import config_from_dict
    from p5proxy.errors import ConfigError
    with pytest.raises(ConfigError, match="providers.p.proxy: must be an http"):
        config_from_dict({"providers": {"p": {"type": "openai", "base_url": "http://x/v1",
                                              "proxy": "socks5://127.0.0.1:1080"}}})


async def test_https_upstreams_go_through_connect(aiohttp_server: Any, faulty: FaultyUpstream,
                                                  proxy: CountingProxy,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The tunnel is opened to the name as given (the gateway resolves nothing); the plain-HTTP
    fake at its end then fails the TLS handshake, which is a 502 for the client."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    cfg = config(f"https://upstream.invalid:{faulty.port}/v1", retry={"attempts": 1})
    url = await start_gateway(aiohttp_server, cfg)
    status, body = await chat(url)
    assert status == 502, body
    assert [(r.method, r.target) for r in proxy.requests] == \
        [("CONNECT", f"upstream.invalid:{faulty.port}")]
    info, _ = await health(url)
    assert info["providers"]["fx"]["proxy"]["from"] == "HTTPS_PROXY"


@pytest.mark.parametrize("url, env, upstream, expected", [
    ("https://api.x.com/v1", {"HTTPS_PROXY": "http://a:1", "HTTP_PROXY": "http://b:1"}, None,
     ("http://a:1", "HTTPS_PROXY")),
    ("http://api.x.com/v1", {"HTTPS_PROXY": "http://a:1", "HTTP_PROXY": "http://b:1"}, None,
     ("http://b:1", "HTTP_PROXY")),
    ("https://api.x.com/v1", {"ALL_PROXY": "http://c:1"}, None, ("http://c:1", "ALL_PROXY")),
    ("https://api.x.com/v1", {"HTTPS_PROXY": "http://a:1", "https_proxy": "http://l:1"}, None,
     ("http://l:1", "HTTPS_PROXY")),   # the lower-case variable wins, as in curl
    ("https://api.x.com/v1", {"HTTPS_PROXY": "http://a:1", "NO_PROXY": "*"}, None,
     (None, "NO_PROXY")),
    ("https://api.x.com/v1", {"HTTPS_PROXY": "http://a:1", "NO_PROXY": "x.com"}, None,
     (None, "NO_PROXY")),
    ("https://api.x.com:8443/v1", {"HTTPS_PROXY": "http://a:1", "NO_PROXY": "api.x.com:443"},
     None, ("http://a:1", "HTTPS_PROXY")),   # another port: not named
    ("http://localhost:8000/v1", {"HTTP_PROXY": "http://a:1"}, None, (None, "")),
    ("http://[::1]:8000/v1", {"HTTP_PROXY": "http://a:1"}, None, (None, "")),
    ("http://127.0.0.1:8000/v1", {}, "http://u:1", ("http://u:1", "UPSTREAM_PROXY_URL")),
    ("https://api.x.com/v1", {"HTTPS_PROXY": "http://a:1"}, "http://u:1",
     ("http://u:1", "UPSTREAM_PROXY_URL")),
])
def test_proxy_choice(url: str, env: dict[str, str], upstream: str | None,
                      expected: tuple[str | None, str]) -> None:
    from p5proxy.proxies import choose_proxy
    choice = choose_proxy(url, provider_proxy=None, upstream_proxy=upstream, env=env)
    assert (choice.url, choice.source) == expected
    explicit = choose_proxy(url, provider_proxy="http://p:1", upstream_proxy=upstream, env=env)
    assert (explicit.url, explicit.source) == ("http://p:1", "provider")
    assert choose_proxy(url, provider_proxy="", upstream_proxy=upstream, env=env).url is None
