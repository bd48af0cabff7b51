"""`p5proxy serve` as a real process: one or several workers, graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.fakes.replies import Reply
from tests.processes import free_port


async def start_serve(tmp_path: Path, upstream: str, *args: str) -> tuple[Any, str]:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({
        "providers": {"oa": {"type": "openai", "base_url": upstream, "api_key": "k"}},
        "models": {"gpt-4o": {"provider": "oa"}}}))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p5proxy", "serve", "--config", str(cfg), "--port", str(port),
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(url + "/health") as resp:
                    if resp.status == 200:
                        return proc, url
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    proc.kill()
    await proc.wait()
    pytest.fail("gateway did not start")


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_lets_an_in_flight_stream_finish(tmp_path: Path, fake_openai: Any,
                                                       workers: int) -> None:
    fake, upstream = fake_openai
    fake.replies.append(Reply(text="one two three four", chunk_size=5, delay=0.3))
    proc, url = await start_serve(tmp_path, upstream, "--workers", str(workers), "--grace", "10")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/v1/chat/completions", json={
                    "model": "gpt-4o", "stream": True,
                    "messages": [{"role": "user", "content": "count"}]}) as resp:
                assert resp.status == 200
                first = await resp.content.readline()
                assert first.startswith(b"data: ")
                proc.send_signal(signal.SIGTERM)   # mid-stream
                rest = (await resp.read()).decode()
        assert "data: [DONE]" in rest and '"finish_reason":"stop"' in rest   # a normal ending
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        # what was logged last (batched by the log handler) is written before the process ends
        log = (await proc.stderr.read()).decode()
        assert "stopping: in-flight requests get up to 10s" in log
        assert "path=/v1/chat/completions" in log and "stream=true" in log
        async with aiohttp.ClientSession() as session:   # and the port is closed
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(url + "/health")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_workers_share_the_port(tmp_path: Path, fake_openai: Any) -> None:
    _, upstream = fake_openai
    proc, url = await start_serve(tmp_path, upstream, "--workers", "2")
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for _ in range(20):
                async with session.post(url + "/v1/chat/completions", json={
                        "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}) as resp:
                    assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


async def test_stream_longer_than_the_grace_period_ends_with_an_error_event(
        tmp_path: Path, fake_openai: Any) -> None:
    fake, upstream = fake_openai
    fake.replies.append(Reply(text="a" * 40, chunk_size=2, delay=0.5))
    proc, url = await start_serve(tmp_path, upstream, "--grace", "0.5")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/v1/chat/completions", json={
                    "model": "gpt-4o", "stream": True,
                    "messages": [{"role": "user", "content": "go"}]}) as resp:
                await resp.content.readline()
                proc.send_signal(signal.SIGTERM)
                received = b""
                with contextlib.suppress(aiohttp.ClientPayloadError):   # the body is cut after it
                    async for chunk in resp.content.iter_any():
                        received += chunk
        rest = received.decode()
        assert '"error"' in rest and "shutting down" in rest and "[DONE]" not in rest
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("env,expected", [
    ({}, "True"),
    # the operator's own settings win
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}, "False"),
    ({"MALLOC_MMAP_THRESHOLD_": "262144"}, "False"),
])
async def test_malloc_thresholds_are_set_unless_the_environment_sets_them(
        env: dict[str, str], expected: str) -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    clean = {k: v for k, v in os.environ.items()
             if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from p5proxy.server import tune_malloc; print(tune_malloc())",
        env={**clean, **env}, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert out.decode().strip() == expected
