"""Real clients through the real gateway process, against the scripted fake upstream
(tests/fakes/scripted.py), fully offline.

- Claude Code (npm @anthropic-ai/claude-code, pinned in .ci/run, installed to .ci/node/; or
  $P5PROXY_CLAUDE_BIN) in print mode: a Bash round trip through an OpenAI-compatible upstream
  with native tools, the same through a text-only upstream with tool emulation, and a plain
  answer through an Anthropic-format upstream.
- The OpenAI Agents SDK (`openai-agents`): a function-tool round trip through the gateway's
  OpenAI surface to an Anthropic-format upstream.

Missing clients skip the tests, except with P5PROXY_REQUIRE_REAL_CLIENTS=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gateway
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.fixtures import start_fake
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripted import (PROOF_TEXT, agent_reply, emulated_reply, last_user_text,
                                  plain_reply)
from tests.processes import REPO, REQUIRE_ENV, GatewayProcess, require_program

CLAUDE_TIMEOUT = 150.0   # one print-mode run, start-up included (2 shared cores in CI)
MODEL = "claude-sonnet-4-5"


def claude_bin() -> str:
    return require_program("claude", env_var="P5PROXY_CLAUDE_BIN",
                           candidates=[REPO / ".ci/node/node_modules/.bin/claude"])


async def run_claude(binary: str, *, gateway: str, workdir: Path, home: Path,
                     prompt: str) -> dict[str, Any]:
    """`claude -p PROMPT --output-format json` pointed at the gateway; returns its JSON."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
        "ANTHROPIC_BASE_URL": gateway, "ANTHROPIC_API_KEY": "p5proxy-test-key",
        "ANTHROPIC_MODEL": MODEL, "ANTHROPIC_DEFAULT_HAIKU_MODEL": "claude-haiku-4-5",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0", "IS_SANDBOX": "1", "CI": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        binary, "-p", prompt, "--output-format", "json", "--dangerously-skip-permissions",
        cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLAUDE_TIMEOUT)
    except TimeoutError:
        proc.kill()   # the process we started, by its handle
        await proc.wait()
        pytest.fail(f"claude did not finish within {CLAUDE_TIMEOUT:g}s")
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"claude exited {proc.returncode}: {text}\n{err.decode()}"
    try:
        result: dict[str, Any] = json.loads(text)
    except ValueError:
        pytest.fail(f"claude printed no JSON: {text!r}\n{err.decode()}")
    return result


def gateway_config(provider: dict[str, Any]) -> dict[str, Any]:
    return {"server": {"heartbeat_secs": 1},
            "providers": {"up": provider},
            "models": {MODEL: {"provider": "up", "model": "scripted-model",
                               "max_output_tokens": 8192},
                       "claude-*": {"provider": "up", "model": "scripted-small",
                                    "max_output_tokens": 8192}}}


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    return work, home


def chat_requests(fake: Any) -> list[Any]:
    return [r.json for r in fake.requests if r.path.endswith(("/chat/completions", "/messages"))]


@pytest.mark.timeout(240)
async def test_claude_code_bash_round_trip_openai_native_tools(
        aiohttp_server: Any, tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    binary = claude_bin()
    fake, url = await start_fake(aiohttp_server, FakeOpenAI(responder=agent_reply))
    work, home = dirs
    cfg = gateway_config({"type": "openai", "base_url": url, "api_key": "sk-upstream"})
    async with GatewayProcess(tmp_path, cfg) as gw:
        result = await run_claude(binary, gateway=gw.url, workdir=work, home=home,
                                  prompt="Write the proof file with a shell command.")
    assert (work / "proof.txt").read_text().strip() == PROOF_TEXT   # Claude Code ran Bash
    assert result["is_error"] is False, result
    assert f"The command printed: {PROOF_TEXT}" in result["result"]
    requests = chat_requests(fake)
    asked = [r for r in requests if any(t["function"]["name"] == "Bash" for t in r.get("tools", []))]
    assert asked, "Claude Code's Bash tool never reached the upstream as a native tool"
    results = [m for r in requests for m in r["messages"] if m["role"] == "tool"]
    assert any(PROOF_TEXT in str(m["content"]) for m in results)   # the tool result went back


@pytest.mark.timeout(240)
async def test_claude_code_bash_round_trip_text_only_upstream_emulated(
        aiohttp_server: Any, tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    binary = claude_bin()
    fake, url = await start_fake(aiohttp_server, FakeOpenAI(responder=emulated_reply))
    work, home = dirs
    cfg = gateway_config({"type": "openai", "base_url": url, "api_key": "sk-upstream",
                          "tools": "emulate"})
    async with GatewayProcess(tmp_path, cfg) as gw:
        result = await run_claude(binary, gateway=gw.url, workdir=work, home=home,
                                  prompt="Write the proof file with a shell command.")
    assert (work / "proof.txt").read_text().strip() == PROOF_TEXT
    assert result["is_error"] is False, result
    assert f"The command printed: {PROOF_TEXT}" in result["result"]
    requests = chat_requests(fake)
    assert requests and all("tools" not in r for r in requests)   # text only upstream
    assert any("<function_results>" in json.dumps(r["messages"]) for r in requests)


@pytest.mark.timeout(240)
async def test_claude_code_plain_answer_anthropic_upstream(
        aiohttp_server: Any, tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    binary = claude_bin()
    fake, url = await start_fake(aiohttp_server, FakeAnthropic(responder=plain_reply))
    work, home = dirs
    cfg = gateway_config({"type": "anthropic", "base_url": url, "api_key": "sk-ant-upstream"})
    prompt = "What is the colour of a ripe kumquat?"
    async with GatewayProcess(tmp_path, cfg) as gw:
        result = await run_claude(binary, gateway=gw.url, workdir=work, home=home, prompt=prompt)
    assert result["is_error"] is False, result
    assert result["result"] == f"You asked: {prompt}"
    main = [r for r in chat_requests(fake) if last_user_text(r) == prompt]
    assert main and main[0]["model"] == "scripted-model" and main[0]["stream"] is True
    assert main[0]["tools"], "Claude Code's tools were passed through to the Anthropic upstream"


# --- OpenAI Agents SDK -------------------------------------------------------------------------

@pytest.mark.timeout(60)
async def test_openai_agents_function_tool_round_trip(gateway: Gateway, tmp_path: Path) -> None:
    try:
        import agents
    except ImportError:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail("openai-agents is not installed (the `test` extra has it)")
        pytest.skip("openai-agents is not installed")
    from openai import AsyncOpenAI

    gateway.anthropic.responder = agent_reply
    ran: list[str] = []

    @agents.function_tool
    def run_command(command: str, description: str) -> str:
        """Run a shell command in the work folder and return what it printed.

        Args:
            command: the shell command line.
            description: why it is run.
        """
        ran.append(command)
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True,
                              text=True, timeout=10, check=False)
        return done.stdout

    client = AsyncOpenAI(base_url=gateway.openai_base, api_key="agents-key", max_retries=0)
    try:
        agent = agents.Agent(
            name="proof writer", instructions="Use the tools to do what is asked.",
            tools=[run_command],
            model=agents.OpenAIChatCompletionsModel(model="gpt-via-claude",
                                                    openai_client=client))
        result = await agents.Runner.run(agent, "Write the proof file.",
                                         run_config=agents.RunConfig(tracing_disabled=True))
    finally:
        await client.close()
    assert (tmp_path / "proof.txt").read_text().strip() == PROOF_TEXT
    assert len(ran) == 1
    assert result.final_output == f"The command printed: {PROOF_TEXT}"
    first, second = (r.json for r in gateway.anthropic.requests)
    assert [t["name"] for t in first["tools"]] == ["run_command"]
    assert any(b.get("type") == "tool_result" for m in second["messages"]
               if isinstance(m["content"], list) for b in m["content"])


@pytest.mark.timeout(240)
async def test_claude_code_through_nginx(aiohttp_server: Any, tmp_path: Path,
                                         dirs: tuple[Path, Path]) -> None:
    """The production chain: Claude Code -> nginx (config/nginx.conf) -> gateway -> upstream."""
    from tests.test_nginx import Nginx, nginx_bin

    binary, nginx = claude_bin(), nginx_bin()
    fake, url = await start_fake(aiohttp_server, FakeOpenAI(responder=agent_reply))
    work, home = dirs
    cfg = gateway_config({"type": "openai", "base_url": url, "api_key": "sk-upstream"})
    async with GatewayProcess(tmp_path, cfg) as gw:
        async with Nginx(nginx, tmp_path, gw.port) as proxy:
            result = await run_claude(binary, gateway=proxy.url, workdir=work, home=home,
                                      prompt="Write the proof file with a shell command.")
    assert (work / "proof.txt").read_text().strip() == PROOF_TEXT
    assert result["is_error"] is False, result
    assert f"The command printed: {PROOF_TEXT}" in result["result"]
