"""Plugins: the example plugins loaded from a plugins folder and routed through, a misspelt hook,
the CLI commands that list plugins and check a configuration, and the hook documentation."""

from __future__ import annotations

import configparser
import inspect
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from p5proxy import hookspecs
from p5proxy.config import config_from_dict
from p5proxy.errors import PluginError
from p5proxy.plugins import build_registry, describe_plugins, make_plugin_manager
from tests.conftest import start_gateway
from tests.fakes.fixtures import start_fake
from tests.fakes.openai_upstream import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
HEADER_PLUGIN = ROOT / "config" / "plugins" / "example_header_provider.py"
EXAMPLE_PACKAGE = ROOT / "docs" / "example_provider"
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("p5proxy_"))


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty plugins folder; modules loaded from it are dropped from sys.modules afterwards."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    before = set(sys.modules)
    try:
        yield folder
    finally:
        for name in set(sys.modules) - before:
            if name.startswith("p5proxy_local_"):
                del sys.modules[name]


def _cli_env() -> dict[str, str]:
    """The CLI in a subprocess: no configuration or upstreams from this machine's environment,
    and no third-party entry-point plugins."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("P5PROXY_", "P5JS2API_", "OPENAI_", "ANTHROPIC_"))}
    env["P5PROXY_LOAD_PLUGINS"] = ""
    return env


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p5proxy", *args], capture_output=True, text=True,
                          env=_cli_env(), cwd=ROOT, timeout=30)


async def _post(url: str, body: dict[str, Any], **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers=headers) as resp:
            return resp.status, await resp.json()


# --- the single-file example plugin, from a plugins folder ----------------------------------

def test_header_plugin_registers_its_provider_type(plugins_dir: Path) -> None:
    shutil.copy(HEADER_PLUGIN, plugins_dir)
    config = config_from_dict({"plugins_dir": str(plugins_dir)})
    pm = make_plugin_manager(config, entry_point_plugins=False)
    registry = build_registry(pm, config)
    assert {"openai", "anthropic", "openai-affinity"} <= set(registry.providers)
    names = [p["name"] for p in describe_plugins(pm)]
    # load order: bundled defaults first, then the plugins folder
    assert names[-1] == str(plugins_dir / HEADER_PLUGIN.name)
    assert {"name": names[-1], "version": None,
            "hooks": ["p5proxy_register_providers"]} in describe_plugins(pm)


async def test_header_plugin_routes_to_the_upstream_with_its_header(
        aiohttp_server: Any, fake_openai: tuple[FakeOpenAI, str], plugins_dir: Path) -> None:
    fake, base_url = fake_openai
    shutil.copy(HEADER_PLUGIN, plugins_dir)
    url = await start_gateway(aiohttp_server, {
        "plugins_dir": str(plugins_dir),
        "providers": {"vllm": {"type": "openai-affinity", "base_url": base_url,
                               "api_key": "sk-upstream", "session_header": "x-user-id"}},
        "models": {"claude-sonnet-4-5": {"provider": "vllm", "model": "qwen3-coder"}},
    })
    first = {"role": "user", "content": "List the files."}
    # Anthropic client, translated to the OpenAI-compatible upstream
    status, body = await _post(url + "/v1/messages", {
        "model": "claude-sonnet-4-5", "max_tokens": 100, "system": "You are terse.",
        "messages": [first]}, **{"anthropic-version": "2023-06-01", "x-api-key": "client-key"})
    assert status == 200, body
    assert body["content"] == [{"type": "text", "text": fake.default_text}]
    turn1 = fake.last
    assert turn1.path == "/v1/chat/completions"
    assert turn1.json["model"] == "qwen3-coder"
    assert turn1.headers["authorization"] == "Bearer sk-upstream"   # never the client's key
    key = turn1.headers["x-user-id"]
    assert len(key) == 32
    # the next turn of the same conversation, from an OpenAI client: same session header
    status, body = await _post(url + "/v1/chat/completions", {
        "model": "claude-sonnet-4-5", "messages": [
            {"role": "system", "content": "You are terse."}, first,
            {"role": "assistant", "content": fake.default_text},
            {"role": "user", "content": "And the hidden ones?"}]})
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == fake.default_text
    assert fake.last.headers["x-user-id"] == key
    # another conversation: another header value
    await _post(url + "/v1/chat/completions", {
        "model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello"}]})
    assert fake.last.headers["x-user-id"] != key


# --- the packaged example plugin (docs/example_provider) ------------------------------------

class FakeAzure(FakeOpenAI):
    """The OpenAI fake under Azure's deployments URL, with Azure's `api-key` header."""
    require_key = False

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self.chat)


def test_example_package_declares_its_entry_point() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(EXAMPLE_PACKAGE / "setup.cfg")
    assert cfg["metadata"]["name"] == "p5proxy-azure"
    assert cfg["options"]["py_modules"].strip() == "p5proxy_azure"
    assert cfg["options.entry_points"]["p5proxy"].strip() == "azure = p5proxy_azure"
    assert (EXAMPLE_PACKAGE / "p5proxy_azure.py").is_file()
    assert (EXAMPLE_PACKAGE / "pyproject.toml").is_file()


async def test_example_package_provider_routes_to_azure_urls(aiohttp_server: Any) -> None:
    fake, base_url = await start_fake(aiohttp_server, FakeAzure())
    url = await start_gateway(aiohttp_server, {
        "plugins_dir": str(EXAMPLE_PACKAGE),   # its one module also works as a plugin file
        "providers": {"azure": {"type": "azure-openai", "base_url": base_url.removesuffix("/v1"),
                                "api_key": "azure-key"}},
        "models": {"gpt-4o": {"provider": "azure", "model": "my-gpt-4o"}},
    })
    try:
        status, body = await _post(url + "/v1/chat/completions", {
            "model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
            Authorization="Bearer client-key")
    finally:
        sys.modules.pop("p5proxy_local_p5proxy_azure", None)
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == fake.default_text
    assert fake.last.path == "/openai/deployments/my-gpt-4o/chat/completions"
    assert fake.last.query == {"api-version": "2024-10-21"}
    assert fake.last.headers["api-key"] == "azure-key"
    assert "authorization" not in fake.last.headers


# --- a misspelt hook ------------------------------------------------------------------------

def test_misspelt_hook_fails_with_its_name(plugins_dir: Path) -> None:
    (plugins_dir / "typo.py").write_text(
        "from p5proxy import hookimpl\n\n"
        "@hookimpl\n"
        "def p5proxy_register_provider(register, config):\n"
        "    register('x', object)\n")
    config = config_from_dict({"plugins_dir": str(plugins_dir)})
    with pytest.raises(PluginError, match="p5proxy_register_provider"):
        make_plugin_manager(config, entry_point_plugins=False)


def test_plugin_overrides_a_bundled_provider_type(plugins_dir: Path) -> None:
    (plugins_dir / "mine.py").write_text(
        "from p5proxy import hookimpl\n"
        "from p5proxy_plugins.provider_openai import OpenAIProvider\n\n"
        "class Mine(OpenAIProvider):\n"
        "    pass\n\n"
        "@hookimpl\n"
        "def p5proxy_register_providers(register, config):\n"
        "    register('openai', Mine)\n")
    config = config_from_dict({"plugins_dir": str(plugins_dir)})
    registry = build_registry(make_plugin_manager(config, entry_point_plugins=False), config)
    assert registry.providers["openai"].__name__ == "Mine"


# --- documentation meta-tests ---------------------------------------------------------------

@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_is_documented(hook: str) -> None:
    assert len(HOOKS) >= 5
    assert (inspect.getdoc(getattr(hookspecs, hook)) or "").strip(), f"{hook} has no docstring"
    assert f"`{hook}" in (ROOT / "README.md").read_text(encoding="utf-8"), \
        f"{hook} is not described in README.md"


def test_readme_test_command_is_what_ci_runs() -> None:
    command = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest -q"
    assert command in (ROOT / "README.md").read_text(encoding="utf-8")
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_plugins_lists_plugins_and_hooks() -> None:
    result = _cli("plugins")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "p5proxy_plugins.provider_openai: p5proxy_register_providers" in lines
    assert "p5proxy.default_plugins.config_router: p5proxy_resolve_route" in lines
    assert "provider types: anthropic, http, openai" in lines


def test_cli_plugins_includes_the_plugins_dir(tmp_path: Path, plugins_dir: Path) -> None:
    shutil.copy(HEADER_PLUGIN, plugins_dir)
    config = tmp_path / "p5proxy.yaml"
    config.write_text(f"plugins_dir: {plugins_dir}\n")
    result = _cli("plugins", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"{plugins_dir / HEADER_PLUGIN.name}: p5proxy_register_providers" in result.stdout
    assert "provider types: anthropic, http, openai, openai-affinity" in result.stdout


def test_cli_check_config_reports_every_problem_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "server: {port: 99999, colour: blue}\n"
        "providers:\n"
        "  x: {type: openai}\n"
        "  z: {type: openai, base_url: ftp://example.com, timeouts: {idle: -1}}\n"
        "models:\n"
        "  y: {provider: nowhere}\n"
        "  w: {}\n"
        "default_model: missing\n")
    result = _cli("check-config", "--config", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr
    for path in ("server.port:", "server.colour:", "providers.x.base_url:",
                 "providers.z.base_url:", "providers.z.timeouts.idle:", "models.y.provider:",
                 "models.w.provider:", "default_model:"):
        assert f"  {path}" in result.stderr, (path, result.stderr)
    assert "Traceback" not in result.stderr


def test_cli_check_config_accepts_the_example_configuration() -> None:
    result = _cli("check-config", "--config", "config/p5proxy.example.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK (2 providers, 3 models)" in result.stdout


def test_cli_check_config_reports_an_unknown_provider_type(tmp_path: Path) -> None:
    config = tmp_path / "p5proxy.yaml"
    config.write_text("providers:\n  az: {type: azure-openai, base_url: https://example.com}\n")
    result = _cli("check-config", "--config", str(config))
    assert result.returncode == 2
    assert "providers.az.type: unknown provider type 'azure-openai'" in result.stderr
