"""Live reload: `p5proxy serve` as a real process, its file changed, then SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from p5proxy.app import create_app
from p5proxy.appkeys import STATE
from p5proxy.config import load_config
from p5proxy.hookspecs import hookimpl
from p5proxy.plugins import make_plugin_manager
from p5proxy.reload import reload_app
from p5proxy_plugins.provider_openai import OpenAIProvider
from tests.admin_support import csrf_of
from tests.fakes.fixtures import eventually
from tests.fakes.replies import Reply
from tests.processes import free_port

CHAT = "/v1/chat/completions"


def write_config(path: Path, upstream: str, models: dict[str, Any], **extra: Any) -> None:
    path.write_text(yaml.safe_dump({
        "providers": {"oa": {"type": "openai", "base_url": upstream, "api_key": "k"}},
        "models": models, "logs": {"database_url": f"sqlite:///{path.parent}/requests.db"},
        **extra}))


class Served:
    def __init__(self, proc: Any, url: str) -> None:
        self.proc = proc
        self.url = url
        self.log: list[str] = []

    async def wait_log(self, text: str, timeout: float = 20) -> str:
        """Read the process's stderr until a line contains `text`."""
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError(f"gateway ended before logging {text!r}: {self.log}")
                self.log.append(line)
                if text in line:
                    return line


@contextlib.asynccontextmanager
async def serve(cfg: Path, *args: str) -> AsyncIterator[Served]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p5proxy", "serve", "--config", str(cfg), "--port", str(port),
        "--grace", "10", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    served = Served(proc, f"http://127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(served.url + "/health") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                proc.kill()
                err = await proc.stderr.read()
                pytest.fail(f"gateway did not start: {err.decode()[-2000:]}")
        yield served
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def chat(url: str, model: str) -> tuple[int, Any]:
    # a new connection each time, so that with --workers every worker gets asked
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        async with s.post(url + CHAT, json={"model": model, "messages": [
                {"role": "user", "content": "hi"}]}) as resp:
            return resp.status, await resp.json()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_routes_a_new_model(tmp_path: Path, fake_openai: Any, workers: int) -> None:
    fake, upstream = fake_openai
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, upstream, {"gpt-4o": {"provider": "oa"}})
    async with serve(cfg, "--workers", str(workers)) as gw:
        status, body = await chat(gw.url, "gpt-new")
        assert status == 404 and "gpt-new" in body["error"]["message"]
        write_config(cfg, upstream, {"gpt-4o": {"provider": "oa"},
                                     "gpt-new": {"provider": "oa", "model": "upstream-new"}})
        gw.proc.send_signal(signal.SIGHUP)
        for _ in range(workers):
            line = await gw.wait_log("configuration reloaded (SIGHUP)")
            assert "models added: gpt-new" in line
        for _ in range(3 * workers):   # every worker has it
            status, body = await chat(gw.url, "gpt-new")
            assert status == 200, body
            assert fake.last.json["model"] == "upstream-new"
        assert gw.proc.returncode is None   # SIGHUP did not end anything


@pytest.mark.timeout(60)
async def test_an_invalid_file_keeps_the_running_configuration(tmp_path: Path,
                                                                fake_openai: Any) -> None:
    fake, upstream = fake_openai
    cfg = tmp_path / "gw.yaml"
    admin = {"key": "admin-key-reload-test-42"}
    write_config(cfg, upstream, {"gpt-4o": {"provider": "oa", "model": "first"}}, admin=admin)
    async with serve(cfg) as gw:
        cfg.write_text(yaml.safe_dump({
            "logs": {"database_url": f"sqlite:///{tmp_path}/requests.db"},
            "providers": {"oa": {"type": "no-such-type", "base_url": upstream}},
            "models": {"gpt-4o": {"provider": "oa", "model": "second"},
                       "broken": {"provider": "missing"}}}))
        gw.proc.send_signal(signal.SIGHUP)
        await gw.wait_log("rejected; the running configuration stays")
        problems = await gw.wait_log("models.broken.provider")
        assert "unknown provider 'missing'" in problems
        status, _ = await chat(gw.url, "gpt-4o")
        assert status == 200 and fake.last.json["model"] == "first"
        cfg.write_text("providers: [unclosed")   # not even YAML
        gw.proc.send_signal(signal.SIGHUP)
        await gw.wait_log("not valid YAML")
        status, _ = await chat(gw.url, "gpt-4o")
        assert status == 200 and fake.last.json["model"] == "first"
        # the admin page lists both rejections with their problems
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            async with s.post(gw.url + "/admin/login", data={"key": admin["key"]}) as resp:
                assert resp.status == 200
            async with s.get(gw.url + "/admin/config") as resp:
                text = await resp.text()
        assert text.count('<span class="bad">rejected</span>') == 2
        assert "models.broken.provider: unknown provider &#x27;missing&#x27;" in text
        assert "not valid YAML" in text and "SIGHUP" in text


@pytest.mark.timeout(60)
async def test_a_stream_in_flight_finishes_on_the_old_configuration(
        tmp_path: Path, fake_openai: Any, fake_anthropic: Any) -> None:
    fake, upstream = fake_openai
    an, an_url = fake_anthropic
    fake.replies.append(Reply(text="one two three four five six", chunk_size=4, delay=0.2))
    cfg = tmp_path / "gw.yaml"
    write_config(cfg, upstream, {"gpt-4o": {"provider": "oa", "model": "old-upstream"}})
    async with serve(cfg) as gw:
        async with aiohttp.ClientSession() as session:
            async with session.post(gw.url + CHAT, json={
                    "model": "gpt-4o", "stream": True,
                    "messages": [{"role": "user", "content": "count"}]}) as resp:
                assert resp.status == 200
                assert (await resp.content.readline()).startswith(b"data: ")
                # gpt-4o now goes to another provider of another type
                cfg.write_text(yaml.safe_dump({
                    "logs": {"database_url": f"sqlite:///{tmp_path}/requests.db"},
                    "providers": {"an": {"type": "anthropic", "base_url": an_url,
                                         "api_key": "k2"}},
                    "models": {"gpt-4o": {"provider": "an", "model": "new-upstream"}}}))
                gw.proc.send_signal(signal.SIGHUP)
                await gw.wait_log("configuration reloaded")
                status, body = await chat(gw.url, "gpt-4o")   # a new request: new route
                assert status == 200, body
                assert an.last.json["model"] == "new-upstream"
                rest = (await resp.read()).decode()
        text = "".join(line for line in rest.splitlines() if '"content"' in line)
        assert "data: [DONE]" in rest and '"finish_reason":"stop"' in rest
        assert "six" in text
        assert len(fake.requests) == 1 and fake.requests[0].json["model"] == "old-upstream"


class ClosingProvider(OpenAIProvider):
    """A provider with resources of its own: records when the gateway closes it."""
    closed: list[tuple[str, int]] = []
    state: Any = None   # the gateway's state, to count its open streams when closed

    async def aclose(self) -> None:
        ClosingProvider.closed.append((self.name, len(ClosingProvider.state.streams)))


@hookimpl
def p5proxy_register_providers(register: Any, config: Any) -> None:
    register("openai-closing", ClosingProvider)


@pytest.mark.timeout(30)
async def test_a_replaced_provider_is_closed_after_its_streams(
        tmp_path: Path, fake_openai: Any, aiohttp_client: Any) -> None:
    fake, upstream = fake_openai
    fake.replies.append(Reply(text="a b c d e f", chunk_size=2, delay=0.15))
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({
        "logs": {"enabled": False},
        "providers": {"oa": {"type": "openai-closing", "base_url": upstream, "api_key": "k"}},
        "models": {"gpt-4o": {"provider": "oa"}}}))
    config = load_config(cfg)
    pm = make_plugin_manager(config, entry_point_plugins=False)
    pm.register(sys.modules[__name__], name="closing-provider")
    app = create_app(config, pm=pm)
    client = await aiohttp_client(app)
    state = app[STATE]
    ClosingProvider.closed.clear()
    ClosingProvider.state = state
    resp = await client.post(CHAT, json={"model": "gpt-4o", "stream": True,
                                         "messages": [{"role": "user", "content": "x"}]})
    assert (await resp.content.readline()).startswith(b"data: ")
    old_router = state.router
    result = await reload_app(app, trigger="test")
    assert result.ok and result.changes == ("no change",)
    assert state.router is not old_router
    await asyncio.sleep(0.2)
    assert ClosingProvider.closed == []   # the stream is still open
    body = (await resp.read()).decode()
    assert "data: [DONE]" in body
    await eventually(lambda: ClosingProvider.closed == [("oa", 0)], timeout=5)


@pytest.mark.timeout(90)
async def test_the_admin_reload_button_reaches_every_worker(tmp_path: Path,
                                                            fake_openai: Any) -> None:
    fake, upstream = fake_openai
    cfg = tmp_path / "gw.yaml"
    admin = {"key": "admin-key-reload-test-42"}
    write_config(cfg, upstream, {"gpt-4o": {"provider": "oa"}}, admin=admin)
    async with serve(cfg, "--workers", "2") as gw:
        write_config(cfg, upstream, {"gpt-4o": {"provider": "oa"},
                                     "gpt-new": {"provider": "oa", "model": "upstream-new"}},
                     admin=admin)
        jar = aiohttp.CookieJar(unsafe=True)
        # a new connection per request: the login cookie and its CSRF token work on every worker
        async with aiohttp.ClientSession(cookie_jar=jar, connector=aiohttp.TCPConnector(
                force_close=True)) as s:
            async with s.post(gw.url + "/admin/login", data={"key": admin["key"]}) as resp:
                assert resp.status == 200
                csrf = csrf_of(await resp.text())
            for _ in range(6):
                async with s.get(gw.url + "/admin/config", allow_redirects=False) as resp:
                    assert resp.status == 200 and csrf_of(await resp.text()) == csrf
            async with s.post(gw.url + "/admin/reload", data={"csrf": csrf}) as resp:
                text = await resp.text()
                assert resp.status == 200 and "models added: gpt-new" in text, text
        # the worker that served the button, then both again through the supervisor
        for _ in range(3):
            await gw.wait_log("configuration reloaded")
        for _ in range(6):   # new connections: both workers answer
            status, body = await chat(gw.url, "gpt-new")
            assert status == 200, body
            assert fake.last.json["model"] == "upstream-new"


class PickyProvider(OpenAIProvider):
    def __init__(self, config: Any, settings: Any) -> None:
        if config.options.get("colour") != "blue":
            raise ValueError(f"colour must be blue, not {config.options.get('colour')!r}")
        super().__init__(config, settings)


@pytest.mark.timeout(30)
async def test_a_provider_that_fails_to_build_rejects_the_file(
        tmp_path: Path, fake_openai: Any, aiohttp_client: Any) -> None:
    fake, upstream = fake_openai
    cfg = tmp_path / "gw.yaml"

    def write(colour: str, model: str) -> None:
        cfg.write_text(yaml.safe_dump({
            "logs": {"enabled": False},
            "providers": {"oa": {"type": "openai-picky", "base_url": upstream, "api_key": "k",
                                 "colour": colour}},
            "models": {"gpt-4o": {"provider": "oa", "model": model}}}))

    class Picky:
        @hookimpl
        def p5proxy_register_providers(self, register: Any, config: Any) -> None:
            register("openai-picky", PickyProvider)

    write("blue", "first")
    config = load_config(cfg)
    pm = make_plugin_manager(config, entry_point_plugins=False)
    pm.register(Picky(), name="picky")
    app = create_app(config, pm=pm)
    client = await aiohttp_client(app)
    write("red", "second")
    result = await reload_app(app, trigger="test")
    assert not result.ok
    assert result.problems == ("building providers and filters failed: "
                               "ValueError(\"colour must be blue, not 'red'\")",)
    resp = await client.post(CHAT, json={"model": "gpt-4o", "messages": [
        {"role": "user", "content": "hi"}]})
    assert resp.status == 200 and fake.last.json["model"] == "first"
    write("blue", "second")
    assert (await reload_app(app, trigger="test")).ok
    resp = await client.post(CHAT, json={"model": "gpt-4o", "messages": [
        {"role": "user", "content": "hi"}]})
    assert resp.status == 200 and fake.last.json["model"] == "second"
    assert [r.ok for r in app[STATE].reloads] == [False, True]
