"""Shared fixtures: fake upstreams on loopback ports and the real gateway in front of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from p5proxy.app import create_app
from p5proxy.compiled import stale_modules
from p5proxy.config import Config, config_from_dict
from p5proxy.plugins import make_plugin_manager
from tests.fakes.fixtures import fake_anthropic, fake_openai  # noqa: F401  (fixtures)
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.redis_server import redis_prefix, redis_server, redis_url  # noqa: F401


def pytest_configure(config: Any) -> None:
    stale = stale_modules()
    if stale:   # the tests would run the compiled code, not the edited source
        pytest.exit("compiled modules are older than their source: " + ", ".join(stale)
                    + "; build again with `.venv/bin/pip install -e .` (or remove their .so "
                    "files to test the pure-Python package)", returncode=4)


@dataclass
class Gateway:
    url: str                 # http://127.0.0.1:PORT
    openai: FakeOpenAI       # upstream behind the `oa` provider
    anthropic: FakeAnthropic  # upstream behind the `an` provider

    @property
    def openai_base(self) -> str:   # for openai.OpenAI(base_url=...)
        return self.url + "/v1"


def gateway_config(openai_url: str, anthropic_url: str, **overrides: Any) -> dict[str, Any]:
    """Model names used across the tests:
    gpt-4o -> OpenAI upstream; claude-sonnet-4-5 -> OpenAI upstream (translated);
    claude-native -> Anthropic upstream; gpt-via-claude -> Anthropic upstream (translated)."""
    cfg: dict[str, Any] = {
        "server": {"heartbeat_secs": 0.5},
        # off unless a test is about it: the fakes count upstream calls
        "cache": {"enabled": False},
        "retry": {"attempts": 1},   # one upstream call per request; tests/test_resilience*.py retry
        "providers": {
            "oa": {"type": "openai", "base_url": openai_url, "api_key": "sk-upstream-openai"},
            "an": {"type": "anthropic", "base_url": anthropic_url, "api_key": "sk-upstream-anthropic"},
        },
        "models": {
            "gpt-4o": {"provider": "oa", "model": "gpt-4o-upstream"},
            "claude-sonnet-4-5": {"provider": "oa", "model": "qwen3-coder"},
            "claude-haiku-*": {"provider": "oa", "model": "qwen3:8b"},
            "claude-native": {"provider": "an", "model": "claude-sonnet-4-5-20250929"},
            "gpt-via-claude": {"provider": "an", "model": "claude-sonnet-4-5-20250929"},
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def app_for(config: Config) -> web.Application:
    """The gateway's application for `config`, with the bundled plugins only."""
    return create_app(config, pm=make_plugin_manager(config, entry_point_plugins=False))


async def start_gateway(aiohttp_server: Any, cfg: dict[str, Any]) -> str:
    app = app_for(config_from_dict(cfg))
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Any, monkeypatch: Any) -> None:
    """The request log's default SQLite file goes to the test's own directory."""
    monkeypatch.setenv("P5PROXY_DATA_DIR", str(tmp_path / "p5proxy-data"))


@pytest.fixture
async def make_gateway(aiohttp_server: Any, fake_openai: Any, fake_anthropic: Any) -> Any:
    """`await make_gateway(**config_overrides)` -> Gateway; `configure(cfg)` may edit the
    config dict in place (e.g. provider timeouts) before the gateway starts."""
    oa, oa_url = fake_openai
    an, an_url = fake_anthropic

    async def make(configure: Any = None, **overrides: Any) -> Gateway:
        cfg = gateway_config(oa_url, an_url, **overrides)
        if configure is not None:
            configure(cfg)
        return Gateway(await start_gateway(aiohttp_server, cfg), oa, an)

    return make


@pytest.fixture
async def gateway(make_gateway: Any) -> Gateway:
    return await make_gateway()
