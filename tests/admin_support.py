"""Helpers for the admin page tests: a gateway loaded from a real file (so that reload works),
with its request log in SQLite in the test's directory, and a logged-in HTTP client."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from p5proxy.app import GatewayState
from p5proxy.appkeys import STATE
from p5proxy.config import load_config
from tests.conftest import app_for, gateway_config
from tests.fakes.replies import Reply

__all__ = ["ADMIN_KEY", "CLIENT_KEY", "AdminGateway", "start_admin_gateway", "csrf_of",
           "login", "wait_rows", "send_traffic"]

ADMIN_KEY = "admin-key-for-tests-0123456789"
CLIENT_KEY = "client-key-for-tests-abcdef"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class AdminGateway:
    url: str
    state: GatewayState
    config_path: Path
    cfg: dict[str, Any]

    def rewrite(self, change: Callable[[dict[str, Any]], None]) -> None:
        change(self.cfg)
        self.config_path.write_text(yaml.safe_dump(self.cfg))


async def start_admin_gateway(aiohttp_server: Any, tmp_path: Path, fake_openai: Any,
                              fake_anthropic: Any, *, admin: bool = True,
                              **overrides: Any) -> AdminGateway:
    cfg = gateway_config(fake_openai[1], fake_anthropic[1], **overrides)
    cfg.setdefault("logs", {"database_url": f"sqlite:///{tmp_path}/requests.db",
                            "flush_secs": 0.05})
    if admin:
        cfg.setdefault("admin", {"key": ADMIN_KEY})
    path = tmp_path / "p5proxy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    app = app_for(load_config(path, env={}))
    server = await aiohttp_server(app, host="127.0.0.1")
    return AdminGateway(f"http://127.0.0.1:{server.port}", app[STATE], path, cfg)


def csrf_of(page: str) -> str:
    match = _CSRF.search(page)
    assert match, "no CSRF token on the page"
    return match.group(1)


async def login(session: aiohttp.ClientSession, url: str, key: str = ADMIN_KEY) -> str:
    """Log in; returns the overview page's CSRF token."""
    async with session.post(url + "/admin/login", data={"key": key, "next": "/admin"}) as resp:
        assert resp.status == 200, await resp.text()   # after the redirect to /admin
        assert str(resp.url).endswith("/admin")
        return csrf_of(await resp.text())


async def wait_rows(gw: AdminGateway, count: int, timeout: float = 10) -> None:
    """Until the request log holds `count` rows (it writes in the background)."""
    store = gw.state.request_log
    assert store is not None
    async with asyncio.timeout(timeout):
        while True:
            await store.flush()
            _, total = await store.query(limit=0)
            if total >= count:
                return
            await asyncio.sleep(0.05)


async def send_traffic(gw: AdminGateway, fake: Any) -> None:
    """8 requests: 4 OpenAI and 2 streamed Anthropic ones that succeed, an unknown model whose
    name is HTML, and an upstream 500 whose message is HTML."""
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        for i in range(4):
            async with s.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": [
                    {"role": "user", "content": f"hi {i}"}]}) as resp:
                assert resp.status == 200
        for _ in range(2):
            async with s.post(gw.url + "/v1/messages", json={
                    "model": "claude-sonnet-4-5", "max_tokens": 20, "stream": True,
                    "messages": [{"role": "user", "content": "hi"}]}) as resp:
                assert resp.status == 200
                await resp.read()
        async with s.post(gw.url + "/v1/chat/completions", json={"model": "<script>alert(1)</script>",
                                               "messages": [{"role": "user", "content": "x"}]}
                          ) as resp:
            assert resp.status == 404
        fake.replies.append(Reply(status=500, error={"error": {
            "message": "upstream <b>exploded</b>", "type": "server_error"}}))
        async with s.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": [
                {"role": "user", "content": "boom"}]}) as resp:
            assert resp.status >= 500
