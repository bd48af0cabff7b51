"""The real nginx (Debian's, installed by .ci/run) in front of the real gateway process, with
the production example config/nginx.conf: its TLS server block is served on a local port
without TLS and with a short proxy_read_timeout; everything else is the example's.

nginx runs as the current user with a private prefix, pid, temp and log paths, on a free port.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from p5proxy.config import DEFAULT_MAX_BODY_BYTES
from tests.fakes.fixtures import start_fake
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.replies import Reply
from tests.processes import REPO, GatewayProcess, astop_pid, free_port, require_program

EXAMPLE = REPO / "config" / "nginx.conf"
READ_TIMEOUT = 2          # nginx's proxy_read_timeout in the tests, seconds


def nginx_bin() -> str:
    return require_program("nginx", env_var="P5PROXY_NGINX_BIN",
                           candidates=[Path("/usr/sbin/nginx")])


def _strip_comments(text: str) -> str:
    return re.sub(r"#[^\n]*", "", text)


def _blocks(text: str, head: str) -> list[str]:
    """Every top-level `head {...}` block of `text` (braces matched), whole."""
    found = []
    for match in re.finditer(r"(?m)^\s*" + re.escape(head) + r"\s*\{", text):
        depth, i = 0, match.end() - 1
        while i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
            if depth == 0:
                break
        found.append(text[match.start():i])
    return found


def _directive(block: str, name: str) -> str:
    match = re.search(r"(?m)^\s*" + name + r"\s+([^;]+);", block)
    assert match, f"{name} missing from the example"
    return match.group(1).strip()


def example_server() -> tuple[str, str]:
    """The example's upstream block and its TLS server block (comments removed)."""
    text = _strip_comments(EXAMPLE.read_text(encoding="utf-8"))
    upstream = _blocks(text, "upstream p5proxy")
    tls = [b for b in _blocks(text, "server") if "ssl_certificate" in b]
    assert len(upstream) == 1 and len(tls) == 1, "config/nginx.conf changed shape"
    return upstream[0], tls[0]


def test_example_matches_the_gateway_defaults() -> None:
    _, server = example_server()
    size = _directive(server, "client_max_body_size")
    assert size.endswith("m") and int(size[:-1]) * 1024 * 1024 == DEFAULT_MAX_BODY_BYTES
    location = _blocks(server, "location /")[0]
    for directive, value in (("proxy_buffering", "off"), ("gzip", "off"),
                             ("proxy_cache", "off"), ("proxy_http_version", "1.1")):
        assert _directive(location, directive) == value
    assert int(_directive(location, "proxy_read_timeout").rstrip("s")) >= 600
    headers = re.findall(r"proxy_set_header\s+(\S+)", location)
    assert {"Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Real-IP"} <= set(headers)


def _main_conf(prefix: Path, http: str) -> str:
    user = ""
    if os.geteuid() == 0:   # the master runs as root: keep the workers as the same user
        user = f"user {pwd.getpwuid(0).pw_name};"
    temp = "\n".join(f"    {name}_temp_path {prefix / name};"
                     for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} info;
events {{ worker_connections 128; }}
http {{
{temp}
    access_log {prefix / 'access.log'};
    default_type application/octet-stream;
    # gzip on for event streams at the http level: the example's `gzip off` must win
    gzip on;
    gzip_min_length 1;
    gzip_types text/event-stream application/json;
{http}
}}
"""


def nginx_test_config(gateway_port: int, port: int, prefix: Path) -> str:
    upstream, server = example_server()
    upstream = re.sub(r"server\s+127\.0\.0\.1:\d+;", f"server 127.0.0.1:{gateway_port};",
                      upstream)
    server = re.sub(r"(?m)^[ \t]*listen\s[^;]*;[ \t]*\n", "", server)
    server = re.sub(r"(?m)^[ \t]*ssl_[a-z_]+\s[^;]*;[ \t]*\n", "", server)
    server = re.sub(r"proxy_read_timeout\s+\w+;", f"proxy_read_timeout {READ_TIMEOUT}s;", server)
    server = server.replace("server {", f"server {{\n    listen 127.0.0.1:{port};", 1)
    assert f"proxy_read_timeout {READ_TIMEOUT}s;" in server
    return _main_conf(prefix, upstream + "\n" + server)




class Nginx:
    def __init__(self, binary: str, tmp: Path, gateway_port: int) -> None:
        self.binary = binary
        self.prefix = tmp / "nginx"
        self.prefix.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(nginx_test_config(gateway_port, self.port, self.prefix))
        self.proc: subprocess.Popen[bytes] | None = None

    def args(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf),
                "-e", str(self.prefix / "error.log"), *extra]

    async def __aenter__(self) -> "Nginx":
        check = subprocess.run(self.args("-t"), capture_output=True, text=True, timeout=30,
                               check=False)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(self.args("-g", "daemon off;"), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, self.log()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return self
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen:\n" + self.log()
                await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: Any) -> None:
        if self.proc is not None:
            await astop_pid(self.proc)

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def gateway_config(openai_url: str, **server: Any) -> dict[str, Any]:
    return {"server": {"heartbeat_secs": 0.5, **server},
            "providers": {"oa": {"type": "openai", "base_url": openai_url, "api_key": "sk-up"}},
            "models": {"gpt-4o": {"provider": "oa"}, "claude-sonnet-4-5": {"provider": "oa"}}}


async def timed_stream(url: str, body: Any, headers: dict[str, str] | None = None
                       ) -> tuple[list[tuple[float, bytes]], Any]:
    """POST and read the body as it arrives: (seconds since the request, bytes) per read."""
    reads: list[tuple[float, bytes]] = []
    start = time.monotonic()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(url, json=body, headers={"Accept-Encoding": "gzip",
                                                         **(headers or {})}) as resp:
            assert resp.status == 200, await resp.text()
            try:
                async for chunk in resp.content.iter_any():
                    reads.append((time.monotonic() - start, chunk))
            except aiohttp.ClientPayloadError:
                reads.append((time.monotonic() - start, b"<cut>"))
            return reads, resp.headers


def data_times(reads: list[tuple[float, bytes]], marker: bytes) -> list[float]:
    return [t for t, chunk in reads for _ in range(chunk.count(marker))]


@pytest.mark.timeout(60)
async def test_stream_arrives_incrementally_through_nginx(aiohttp_server: Any,
                                                          tmp_path: Path) -> None:
    binary = nginx_bin()
    fake, url = await start_fake(aiohttp_server, FakeOpenAI())
    # 10 events 0.25 s apart: the stream takes about 2.5 s upstream
    fake.replies.append(Reply(text="one two three four five six", chunk_size=4, delay=0.25))
    async with GatewayProcess(tmp_path, gateway_config(url)) as gw:
        async with Nginx(binary, tmp_path, gw.port) as nginx:
            reads, headers = await timed_stream(nginx.url + "/v1/chat/completions", {
                "model": "gpt-4o", "stream": True,
                "messages": [{"role": "user", "content": "count"}]})
    assert "Content-Encoding" not in headers   # gzip off for the stream
    body = b"".join(chunk for _, chunk in reads)
    text = "".join(orjson.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                   for line in body.split(b"\n")
                   if line.startswith(b"data: {") and b'"choices":[{' in line)
    assert text == "one two three four five six"
    times = data_times(reads, b"data: ")
    assert len(times) >= 8
    # the upstream's pacing survives nginx: not one burst at the end
    assert times[-1] - times[0] >= 1.5, times
    assert len({round(t, 2) for t in times}) >= 5, times


@pytest.mark.timeout(60)
@pytest.mark.parametrize("heartbeat,kept_alive,before_first_event", [
    (0.5, True, False), (0.5, True, True), (30, False, False)],
    ids=["after-first-event", "before-first-event", "control-no-keepalive"])
async def test_silent_thinking_phase_kept_alive(aiohttp_server: Any, tmp_path: Path,
                                                heartbeat: float, kept_alive: bool,
                                                before_first_event: bool) -> None:
    """The upstream starts its answer (or only sends its headers, as reasoning models do), then
    is silent for 2.5 times nginx's proxy_read_timeout (a long reasoning phase). The gateway's
    keep-alives keep nginx from cutting the stream; with keep-alives rarer than the timeout
    (the control case) nginx cuts it."""
    binary = nginx_bin()
    fake, url = await start_fake(aiohttp_server, FakeOpenAI())
    head = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            b'"finish_reason":null}]}\n\n')
    tail = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[{"index":0,"delta":{"content":"after thinking"},'
            b'"finish_reason":"stop"}]}\n\n'
            b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,'
            b'"total_tokens":7}}\n\ndata: [DONE]\n\n')
    pieces = [b"", head + tail] if before_first_event else [head, tail]
    fake.replies.append(Reply(raw_sse=pieces, delay=READ_TIMEOUT * 2.5))
    async with GatewayProcess(tmp_path, gateway_config(url, heartbeat_secs=heartbeat)) as gw:
        async with Nginx(binary, tmp_path, gw.port) as nginx:
            reads, _ = await timed_stream(nginx.url + "/v1/chat/completions", {
                "model": "gpt-4o", "stream": True,
                "messages": [{"role": "user", "content": "think hard"}]})
            nginx_log = nginx.log()
    body = b"".join(chunk for _, chunk in reads)
    if kept_alive:
        assert b"after thinking" in body and body.rstrip().endswith(b"data: [DONE]")
        pings = data_times(reads, b": keep-alive")   # OpenAI clients get SSE comments
        assert len(pings) >= 3, body
    else:
        assert b"after thinking" not in body
        assert "upstream timed out" in nginx_log


@pytest.mark.timeout(60)
@pytest.mark.parametrize("trusted", [True, False])
async def test_forwarded_for_trusted_only_from_configured_proxies(
        aiohttp_server: Any, tmp_path: Path, trusted: bool) -> None:
    binary = nginx_bin()
    fake, url = await start_fake(aiohttp_server, FakeOpenAI())
    server = {"trusted_proxies": ["127.0.0.1/32", "::1"]} if trusted else {}
    claimed = "203.0.113.9"
    async with GatewayProcess(tmp_path, gateway_config(url, **server), access_log=True) as gw:
        async with Nginx(binary, tmp_path, gw.port) as nginx:
            async with aiohttp.ClientSession() as session:
                async with session.post(nginx.url + "/v1/chat/completions", json={
                        "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                        headers={"X-Forwarded-For": claimed}) as resp:
                    assert resp.status == 200
            deadline = time.monotonic() + 5
            while not ('"POST /v1/chat/completions' in gw.log_text()   # both log lines
                       and "client_ip=" in gw.log_text()) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            log = gw.log_text()
    line = next(ln for ln in log.splitlines() if '"POST /v1/chat/completions' in ln)
    # nginx sent "X-Forwarded-For: 203.0.113.9, 127.0.0.1" from 127.0.0.1
    client = line.split("aiohttp.access: ", 1)[1].split(" ", 1)[0]
    expected = claimed if trusted else "127.0.0.1"
    assert client == expected, line
    # the per-request record (p5proxy.access line, request log store) has the same address
    records = [ln for ln in log.splitlines() if "p5proxy.access" in ln and "client_ip=" in ln]
    assert records and all(f"client_ip={expected}" in ln for ln in records), log
    assert fake.last.headers.get("x-forwarded-for") is None   # not leaked upstream


@pytest.mark.timeout(60)
async def test_full_example_passes_nginx_t(tmp_path: Path) -> None:
    """The example as written (TLS, http2, both server blocks) is valid for this nginx, with a
    throw-away certificate in place of the placeholders."""
    binary = nginx_bin()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                           "-subj", "/CN=api.example.com", "-days", "1",
                           "-keyout", str(key), "-out", str(cert)],
                          capture_output=True, timeout=60, check=False)
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate")
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("/etc/ssl/certs/api.example.com.fullchain.pem", str(cert))
    text = text.replace("/etc/ssl/private/api.example.com.key", str(key))
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(_main_conf(prefix, text))
    check = subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(conf),
                            "-e", str(prefix / "error.log")],
                           capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stderr


# --- server.trusted_proxies without nginx -------------------------------------------------------

def test_trusted_proxies_setting_and_resolution() -> None:
    from p5proxy.config import config_from_dict, load_config
    from p5proxy.errors import ConfigError
    from p5proxy.forwarded import client_ip

    with pytest.raises(ConfigError) as exc:
        config_from_dict({"server": {"trusted_proxies": ["10.0.0.0/8", "nginx.local"]}})
    assert exc.value.problems == [
        "server.trusted_proxies: 'nginx.local' is not an IP address or CIDR network"]
    nets = config_from_dict({"server": {"trusted_proxies": ["127.0.0.1", "10.0.0.0/8",
                                                            "::1"]}}).server.trusted_proxies
    assert config_from_dict({}).server.trusted_proxies == ()
    env = load_config(env={"P5PROXY_TRUSTED_PROXIES": "127.0.0.1, 172.16.0.0/12"})
    assert [str(n) for n in env.server.trusted_proxies] == ["127.0.0.1/32", "172.16.0.0/12"]

    assert client_ip("127.0.0.1", "203.0.113.9", ()) == "127.0.0.1"          # nothing trusted
    assert client_ip("198.51.100.1", "203.0.113.9", nets) == "198.51.100.1"  # untrusted peer
    assert client_ip("127.0.0.1", None, nets) == "127.0.0.1"
    # a client's own (spoofed) entries on the left are skipped: right-most untrusted wins
    assert client_ip("127.0.0.1", "1.2.3.4, 203.0.113.9, 10.1.1.1", nets) == "203.0.113.9"
    assert client_ip("::ffff:127.0.0.1", "203.0.113.9:5123", nets) == "203.0.113.9"
    assert client_ip("::1", "[2001:db8::7]:443", nets) == "2001:db8::7"
    assert client_ip("127.0.0.1", "10.0.0.2, 10.0.0.3", nets) == "10.0.0.2"   # all trusted
    assert client_ip("127.0.0.1", "<script>, 10.0.0.3", nets) == "10.0.0.3"   # malformed: stop
