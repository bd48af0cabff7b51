"""Configuration: file + environment, every problem reported with its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from p5proxy.config import DEFAULT_PORT, load_config
from p5proxy.errors import ConfigError

ISSUE_EXAMPLE = """
server: {host: 127.0.0.1, port: 18185}
auth: {keys: []}
providers:
  local:
    type: openai
    base_url: http://127.0.0.1:11434/v1
    api_key: ${OLLAMA_KEY}
  claude:
    type: anthropic
    base_url: https://api.anthropic.com
    api_key: ${ANTHROPIC_API_KEY:-unset}
models:
  claude-sonnet-4-5: {provider: local, model: qwen3-coder}
  "claude-haiku-*":   {provider: local, model: qwen3:8b}
  gpt-4o:            {provider: claude, model: claude-sonnet-4-5}
default_model: claude-sonnet-4-5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p5proxy.yaml"
    path.write_text(text)
    return path


def test_issue_example_loads_with_env_expansion(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ISSUE_EXAMPLE), env={"OLLAMA_KEY": "ollama-secret"})
    assert cfg.providers["local"].api_keys == ("ollama-secret",)
    assert cfg.providers["claude"].api_keys == ("unset",)
    assert cfg.server.port == 18185
    assert [m.pattern for m in cfg.models][:2] == ["claude-sonnet-4-5", "gpt-4o"]  # exact first
    assert cfg.default_model == "claude-sonnet-4-5"


def test_every_problem_is_reported_with_its_path(tmp_path: Path) -> None:
    bad = """
server: {port: lots, colour: blue}
providers:
  x: {type: openai}
  y: {type: anthropic, base_url: ftp://nope}
models:
  m1: {provider: nowhere}
  m2: {}
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, bad), env={})
    text = "\n".join(info.value.problems)
    for path in ("server.port", "server.colour", "providers.x.base_url", "providers.y.base_url",
                 "models.m1.provider", "models.m2.provider"):
        assert path in text, path


def test_no_file_routes_from_environment() -> None:
    cfg = load_config(None, env={"OPENAI_BASE_URL": "http://127.0.0.1:1/v1", "OPENAI_API_KEY": "k",
                                 "ANTHROPIC_API_KEY": "a", "P5JS2API_PORT": "19999"})
    assert set(cfg.providers) == {"openai", "anthropic"}
    assert cfg.providers["anthropic"].base_url == "https://api.anthropic.com"
    assert cfg.server.port == 19999
    assert [(m.pattern, m.provider) for m in cfg.models] == [("claude-*", "anthropic"), ("*", "openai")]


def test_embedded_defaults_need_nothing() -> None:
    cfg = load_config(None, env={})
    assert cfg.providers == {} and cfg.server.port == DEFAULT_PORT
    assert cfg.server.host == "127.0.0.1"


def test_p5proxy_port_wins_over_the_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ISSUE_EXAMPLE), env={"P5PROXY_PORT": "18999"})
    assert cfg.server.port == 18999


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", env={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "providers: [unclosed"), env={})
