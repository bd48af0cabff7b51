"""Real processes for the end-to-end tests: the gateway as `python -m p5proxy serve` on a free
port, and a helper to find programs that CI installs (Claude Code, nginx).

Every process is started here and stopped here, by its PID; each wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

__all__ = ["REPO", "free_port", "wait_http", "GatewayProcess", "require_program", "stop_pid",
           "astop_pid"]

REPO = Path(__file__).resolve().parent.parent
REQUIRE_ENV = "P5PROXY_REQUIRE_REAL_CLIENTS"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_http(url: str, *, timeout: float = 30.0, proc: Any = None) -> None:
    """Poll `url` until it answers 200; fail early if `proc` (a Popen) exits."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:g}s")
            await asyncio.sleep(0.1)


def stop_pid(proc: subprocess.Popen[Any], *, timeout: float = 15.0) -> None:
    """SIGTERM the process we started (by its PID), SIGKILL it if it does not stop."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def astop_pid(proc: subprocess.Popen[Any], *, timeout: float = 15.0) -> None:
    """`stop_pid` that keeps the event loop (and the fakes on it) running while it waits."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    stop_pid(proc, timeout=5)


class GatewayProcess:
    """`python -m p5proxy serve --config <tmp>/gateway.yaml --port <free>` in a subprocess.

        async with GatewayProcess(tmp_path, config, access_log=True) as gw:
            ... gw.url ... gw.log_text()
    """

    def __init__(self, tmp: Path, config: dict[str, Any], *, access_log: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = tmp / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = tmp / "gateway.log"
        self.access_log = access_log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> "GatewayProcess":
        args = [sys.executable, "-m", "p5proxy", "serve", "--config", str(self.config_path),
                "--host", "127.0.0.1", "--port", str(self.port), "--grace", "2"]
        if self.access_log:
            args.append("--access-log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("P5PROXY_")}
        env["P5PROXY_DATA_DIR"] = str(self.config_path.parent / "p5proxy-data")  # request log
        env.update(self.env or {})
        env["P5PROXY_LOAD_PLUGINS"] = ""   # no entry-point plugins of the machine
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        try:
            await wait_http(self.url + "/health", proc=self.proc)
        except BaseException:
            stop_pid(self.proc)
            raise RuntimeError("gateway did not start:\n" + self.log_text()) from None
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.proc is not None:
            await astop_pid(self.proc)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


def require_program(name: str, *, env_var: str, candidates: list[Path]) -> str:
    """The path of a program CI installs; skipped when it is missing, unless
    P5PROXY_REQUIRE_REAL_CLIENTS=1 (set by .ci/run), where a missing program fails."""
    explicit = os.environ.get(env_var)
    if explicit:
        if not Path(explicit).exists():
            pytest.fail(f"{env_var}={explicit} does not exist")
        return explicit
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    message = (f"{name} is not installed (looked at ${env_var}, "
               f"{', '.join(str(c) for c in candidates)}, PATH); `.ci/run` installs it")
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(message)
    pytest.skip(message)
