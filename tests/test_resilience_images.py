"""Image URLs: never fetched by default (passed upstream as URLs); with a provider's
`fetch_images`, fetched only from public addresses, also after redirects."""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from p5proxy.config import config_from_dict
from p5proxy.errors import ConfigError
from p5proxy.imagefetch import refusal
from tests.conftest import Gateway, app_for

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
                       "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
AH = {"anthropic-version": "2023-06-01", "x-api-key": "client"}


@pytest.fixture
async def images(aiohttp_server: Any) -> tuple[Counter[str], int]:
    hits: Counter[str] = Counter()
    port_box: list[int] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        hits[request.path] += 1
        if request.path == "/cat.png":
            return web.Response(body=PNG, content_type="image/png")
        if request.path == "/page":
            return web.Response(text="<html></html>", content_type="text/html")
        if request.path == "/to-localhost":
            raise web.HTTPFound(f"http://localhost:{port_box[0]}/cat.png")
        if request.path == "/to-metadata":
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        if request.path == "/to-self":
            raise web.HTTPFound("/cat.png")
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    server = await aiohttp_server(app, host="127.0.0.1")
    port_box.append(server.port)
    return hits, server.port


def message(url: str, model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    return {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": url}},
        {"type": "text", "text": "what is this?"}]}]}


async def post(gw: Gateway, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/v1/messages", json=body, headers=AH) as resp:
            return resp.status, await resp.json()


def fetching(**settings: Any) -> Any:
    def configure(cfg: dict[str, Any]) -> None:
        cfg["providers"]["oa"]["fetch_images"] = settings or True
    return configure


async def test_image_urls_are_passed_on_not_fetched(make_gateway: Any,
                                                    images: tuple[Counter[str], int]) -> None:
    hits, port = images
    gw = await make_gateway()
    url = f"http://127.0.0.1:{port}/cat.png"
    status, _ = await post(gw, message(url))   # translated for an OpenAI upstream
    assert status == 200
    parts = gw.openai.last.json["messages"][0]["content"]
    assert {"type": "image_url", "image_url": {"url": url}} in parts
    status, _ = await post(gw, message(url, "claude-native"))   # Anthropic passthrough
    assert status == 200
    assert gw.anthropic.last.json["messages"][0]["content"][0]["source"] == {"type": "url",
                                                                            "url": url}
    assert hits == Counter()


async def test_fetch_images_inlines_allowed_urls(make_gateway: Any,
                                                 images: tuple[Counter[str], int]) -> None:
    hits, port = images
    gw = await make_gateway(fetching(allow_hosts=["127.0.0.1"]))
    for path in ("/cat.png", "/to-self"):
        status, body = await post(gw, message(f"http://127.0.0.1:{port}{path}"))
        assert status == 200, body
        parts = gw.openai.last.json["messages"][0]["content"]
        expected = "data:image/png;base64," + base64.b64encode(PNG).decode()
        assert {"type": "image_url", "image_url": {"url": expected}} in parts
    assert hits == Counter({"/cat.png": 2, "/to-self": 1})


@pytest.mark.parametrize("url, why", [
    ("http://localhost:{port}/cat.png", "loopback"),
    ("http://127.0.0.1:{port}/cat.png", "loopback"),
    ("http://[::1]:{port}/cat.png", "loopback"),
    ("http://[::ffff:127.0.0.1]:{port}/cat.png", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.1.2.3/cat.png", "private"),
    ("http://192.168.0.10/cat.png", "private"),
    ("http://100.100.100.200/latest/meta-data/", "not a public"),
    ("http://0.0.0.0:{port}/cat.png", "private"),
    ("file:///etc/passwd", "only http and https"),
])
async def test_fetching_refuses_non_public_addresses(
        make_gateway: Any, images: tuple[Counter[str], int], url: str, why: str) -> None:
    hits, port = images
    gw = await make_gateway(fetching())
    status, body = await post(gw, message(url.format(port=port)))
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("messages.0.content.0: refused to fetch")
    assert why in body["error"]["message"]
    assert hits == Counter() and gw.openai.requests == []


@pytest.mark.parametrize("path, why", [("/to-localhost", "loopback"),
                                       ("/to-metadata", "link-local")])
async def test_fetching_refuses_redirects_to_non_public_addresses(
        make_gateway: Any, images: tuple[Counter[str], int], path: str, why: str) -> None:
    hits, port = images
    gw = await make_gateway(fetching(allow_hosts=["127.0.0.1"]))
    status, body = await post(gw, message(f"http://127.0.0.1:{port}{path}"))
    assert status == 400 and why in body["error"]["message"], body
    assert hits == Counter({path: 1}) and gw.openai.requests == []


async def test_fetch_failures_are_400s(make_gateway: Any, images: tuple[Counter[str], int]) -> None:
    _, port = images
    gw = await make_gateway(fetching(allow_hosts=["127.0.0.1"], max_bytes=10))
    status, body = await post(gw, message(f"http://127.0.0.1:{port}/cat.png"))
    assert status == 400 and "larger than 10 bytes" in body["error"]["message"]
    for path, text in (("/page", "is not an image"), ("/missing.png", "HTTP 404")):
        status, body = await post(gw, message(f"http://127.0.0.1:{port}{path}"))
        assert status == 400 and text in body["error"]["message"], body


def test_refusal_of_addresses() -> None:
    assert refusal("8.8.8.8") is None and refusal("2606:4700:4700::1111") is None
    assert refusal("fd00:ec2::254") == "a private address"
    assert refusal("fe80::1") is not None and refusal("224.0.0.1") is not None


def test_fetch_images_setting_is_checked() -> None:
    cfg = config_from_dict({"providers": {"p": {"type": "openai", "base_url": "http://x/v1",
                                                "fetch_images": {"allow_host": []}}},
                            "models": {"m": "p"}})
    with pytest.raises(ConfigError, match="providers.p.fetch_images.allow_host: unknown"):
        app_for(cfg)
