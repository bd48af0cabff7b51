"""Secrets (upstream keys, client keys, the Redis password) never show in responses, error
bodies, /health or the logs, after a run of successful and failing requests, including upstream
errors that echo the key they were sent."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import aiohttp
import pytest

from tests.fakes.replies import Reply

UPSTREAM_OA, UPSTREAM_AN = "sk-upstream-openai", "sk-upstream-anthropic"
CLIENT_KEY, LIMITED_KEY = "sk-client-secret-4242", "sk-client-limited-777"
REDIS_PASSWORD = "redis-pass-0xdeadbeef"
HEADER_SECRET = "hdr-token-abcdef123456"
SECRETS = (UPSTREAM_OA, UPSTREAM_AN, CLIENT_KEY, LIMITED_KEY, REDIS_PASSWORD, HEADER_SECRET)

MSG = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def echo(key: str, status: int) -> Reply:
    """An upstream error that repeats the key it was given, as some do."""
    return Reply(status=status, error={"error": {"message": f"Incorrect API key provided: {key}",
                                                 "type": "invalid_request_error"}})


async def test_no_secret_in_responses_health_or_logs(make_gateway: Any, unused_tcp_port: int,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # nothing listens there: the limiter's Redis calls fail, get logged, and memory takes over
    gw = await make_gateway(
        auth={"keys": [CLIENT_KEY, {"id": "lim", "key": LIMITED_KEY, "rpm": 1,
                                    "models": ["gpt-4o"]}]},
        redis={"url": f"redis://user:{REDIS_PASSWORD}@127.0.0.1:{unused_tcp_port}/0",
               "op_timeout": 0.3},
        configure=lambda cfg: cfg["providers"]["oa"].update(
            headers={"X-Upstream-Token": HEADER_SECRET}))
    seen: list[str] = []
    oa = {"Authorization": f"Bearer {CLIENT_KEY}"}
    an = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    lim = {"Authorization": f"Bearer {LIMITED_KEY}"}
    # an upstream 401/403 is never passed on (a neutral 502, the key disabled): the 403 comes
    # last for its provider
    gw.openai.replies += [echo(UPSTREAM_OA, 400), echo(UPSTREAM_OA, 500), echo(CLIENT_KEY, 400)]
    gw.anthropic.replies += [echo(UPSTREAM_AN, 529), echo(UPSTREAM_AN, 403)]
    requests: list[tuple[str, str, Any, dict[str, str]]] = [
        ("POST", "/v1/chat/completions", CHAT, oa),                     # upstream 400 echo
        ("POST", "/v1/messages", MSG, an),                              # upstream 500 echo
        ("POST", "/v1/chat/completions", CHAT, oa),                     # echo of the client key
        ("POST", "/v1/messages", {**MSG, "model": "claude-native"}, an),   # Anthropic 529 echo
        ("POST", "/v1/chat/completions", {**CHAT, "model": "gpt-via-claude", "stream": True},
         oa),                                                           # Anthropic 403 echo
        ("POST", "/v1/chat/completions", CHAT, oa),                     # success
        ("POST", "/v1/messages", {**MSG, "stream": True}, an),          # success, stream
        ("POST", "/v1/chat/completions", {**CHAT, "model": "claude-native"}, lim),  # 403
        ("POST", "/v1/chat/completions", CHAT, lim),                    # success
        ("POST", "/v1/chat/completions", CHAT, lim),                    # 429
        ("POST", "/v1/chat/completions", CHAT, {"Authorization": f"Bearer {CLIENT_KEY}x"}),  # 401
        ("POST", "/v1/messages", {**MSG, "max_tokens": "lots"}, an),    # 400
        ("POST", "/v1/messages", b"{not json", an),                     # 400
        ("GET", "/v1/models", None, oa),
        ("GET", "/v1/models/nope", None, oa),
        ("GET", "/health", None, {}),
        ("GET", "/", None, {}),
    ]
    statuses = []
    async with aiohttp.ClientSession() as session:
        for method, path, body, headers in requests:
            data = body if isinstance(body, bytes) or body is None else None
            async with session.request(method, gw.url + path, headers=headers, data=data,
                                       json=None if data is not None or body is None else body) as resp:
                statuses.append(resp.status)
                seen.append(await resp.text())
                seen.append(str(dict(resp.headers)))
    assert 200 in statuses and 401 in statuses and 403 in statuses and 429 in statuses
    assert 400 in statuses and any(s >= 500 for s in statuses), statuses
    assert "Incorrect API key provided: ***" in "".join(seen)   # the echo arrived, redacted
    logs = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert f"Redis at redis://user:****@127.0.0.1:{unused_tcp_port}" in logs   # failed, said so safely
    assert f'"url": "redis://user:****@127.0.0.1:{unused_tcp_port}/0"' in "".join(seen)   # /health
    # the access log names the caller by its key's id, never by the key
    assert "client_key_id=lim" in logs
    assert "client_key_id=key-" + hashlib.sha256(CLIENT_KEY.encode()).hexdigest()[:8] in logs
    everything = "\n".join(seen) + logs
    for secret in SECRETS:
        assert secret not in everything, secret
    # the upstreams did get their keys and the header: redaction is only on the way out
    assert any(r.headers.get("authorization") == f"Bearer {UPSTREAM_OA}" for r in gw.openai.requests)
    assert any(r.headers.get("x-upstream-token") == HEADER_SECRET for r in gw.openai.requests)


@pytest.mark.parametrize("path,body,headers", [
    ("/v1/chat/completions", {**CHAT, "stream": True},
     {"Authorization": f"Bearer {CLIENT_KEY}"}),
    ("/v1/messages", {**MSG, "model": "gpt-4o", "stream": True},
     {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}),
])
async def test_an_error_event_after_the_first_byte_is_scrubbed(
        make_gateway: Any, caplog: pytest.LogCaptureFixture,
        path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    """Once the stream has started, the upstream's error becomes the protocol's error event:
    an echo of the gateway's upstream key or of the caller's own key must not reach the
    client (nor the log) there either."""
    caplog.set_level(logging.INFO)
    gw = await make_gateway(auth={"keys": [CLIENT_KEY]})
    gw.openai.replies.append(Reply(text="partial answer", chunk_size=64, stream_error={
        "type": "server_error",
        "message": f"upstream key {UPSTREAM_OA} and caller key {CLIENT_KEY} rejected"}))
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + path, json=body, headers=headers) as resp:
            assert resp.status == 200   # the stream had started
            text = await resp.text()
    assert "partial" in text and "rejected" in text   # the error event arrived, scrubbed
    assert "upstream key *** and caller key *** rejected" in text
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (UPSTREAM_OA, CLIENT_KEY):
        assert secret not in text and secret not in logs, secret
