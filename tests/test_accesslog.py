"""The per-request log line (p5proxy.access) and request ids, over real requests."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import orjson
import pytest

from p5proxy.accesslog import JsonFormatter, redact
from tests.fakes import Reply

HI = [{"role": "user", "content": "hi"}]
CLIENT_KEY = "sk-client-secret-0123456789"


def access_lines(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "p5proxy.access"]


async def test_text_line_has_the_fields_and_never_the_key(make_gateway: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="p5proxy.access")
    gw = await make_gateway(auth={"keys": [CLIENT_KEY]})
    gw.openai.replies.append(Reply(text="hello", usage={"input": 12, "output": 3}))
    async with httpx.AsyncClient(timeout=20) as client:
        resp = await client.post(f"{gw.url}/v1/chat/completions",
                                 headers={"Authorization": f"Bearer {CLIENT_KEY}",
                                          "X-Request-Id": "trace-42"},
                                 json={"model": "gpt-4o", "messages": HI})
        assert resp.status_code == 200
        health = await client.get(f"{gw.url}/health")
        assert health.status_code == 200
    lines = access_lines(caplog)
    assert len(lines) == 1, lines   # /health is not an API request
    line = lines[0]
    for part in ("request_id=trace-42", "model=gpt-4o", "route=oa/gpt-4o-upstream",
                 "status=200", "input_tokens=12", "output_tokens=3", "protocol=openai",
                 "latency_ms="):
        assert part in line, line
    assert CLIENT_KEY not in line and "ttft_ms" not in line


async def test_json_line_for_a_stream_and_an_error(make_gateway: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="p5proxy.access")
    gw = await make_gateway(logging={"format": "json"})
    gw.anthropic.replies.append(Reply(text="streamed", usage={"input": 5, "output": 2}))
    async with httpx.AsyncClient(timeout=20) as client:
        streamed = await client.post(f"{gw.url}/v1/messages",
                                     json={"model": "claude-native", "max_tokens": 20,
                                           "messages": HI, "stream": True})
        assert streamed.status_code == 200
        bad = await client.post(f"{gw.url}/v1/messages",
                                json={"model": "claude-native", "messages": HI})
        assert bad.status_code == 400
    first, second = (orjson.loads(line) for line in access_lines(caplog))
    assert first["request_id"] == streamed.headers["request-id"]
    assert first["stream"] is True and first["status"] == 200 and first["ttft_ms"] > 0
    assert first["route"] == "an/claude-sonnet-4-5-20250929" and first["output_tokens"] == 2
    assert second["status"] == 400 and second["error_type"] == "invalid_request_error"
    assert second["protocol"] == "anthropic"


async def test_stream_error_event_is_logged(make_gateway: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="p5proxy.access")
    gw = await make_gateway(logging={"format": "json"})
    gw.openai.replies.append(Reply(text="partial answer then failure", chunk_size=4,
                                   stream_error={"type": "server_error",
                                                 "message": "upstream blew up"}))
    async with httpx.AsyncClient(timeout=20) as client:
        resp = await client.post(f"{gw.url}/v1/chat/completions",
                                 json={"model": "gpt-4o", "messages": HI, "stream": True})
        assert resp.status_code == 200 and "upstream blew up" in resp.text
    (line,) = (orjson.loads(x) for x in access_lines(caplog))
    assert line["status"] == 200 and line["error_type"] and line["stream"] is True


async def test_bodies_are_logged_only_when_enabled_redacted_and_capped(make_gateway: Any,
                                                                       caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="p5proxy.access")
    secret = "sk-proj-abcdefghijklmnop1234"
    long_text = "x" * 5000
    body = {"model": "gpt-4o", "api_key": "hunter2-very-secret",
            "messages": [{"role": "user", "content": f"my key is {secret} {long_text}"}]}
    quiet = await make_gateway()
    loud = await make_gateway(logging={"format": "json", "bodies": True, "body_max_bytes": 300})
    async with httpx.AsyncClient(timeout=20) as client:
        for gw in (quiet, loud):
            resp = await client.post(f"{gw.url}/v1/chat/completions", json=body)
            assert resp.status_code == 200
    quiet_line, loud_line = access_lines(caplog)
    assert "request_body" not in quiet_line and secret not in quiet_line
    fields = orjson.loads(loud_line)
    logged = fields["request_body"]
    assert secret not in logged and "hunter2" not in logged and "[REDACTED]" in logged
    assert "more bytes]" in logged and len(logged) < 400
    assert "Hello from fake-openai" in fields["response_body"]


async def test_text_line_with_bodies_quotes_them(make_gateway: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="p5proxy.access")
    gw = await make_gateway(logging={"bodies": True, "body_max_bytes": 200})
    async with httpx.AsyncClient(timeout=20) as client:
        resp = await client.post(f"{gw.url}/v1/chat/completions",
                                 json={"model": "gpt-4o", "messages": HI})
        assert resp.status_code == 200
    (line,) = access_lines(caplog)
    assert "stream=false" in line and "status=200" in line
    # a body has spaces, quotes and `=`: JSON-quoted, so the line still splits into pairs
    assert 'request_body="{\\"model\\":' in line, line
    assert 'response_body="' in line and "Hello from fake-openai" in line


@pytest.mark.parametrize("incoming,kept", [
    ("abc-123_X.y:z", True), ("", False), ("has space", False), ("x" * 129, False),
    ("tab\there", False), ("ünïcode", False)])
async def test_incoming_request_id_is_kept_only_when_sane(make_gateway: Any, incoming: str,
                                                          kept: bool) -> None:
    gw = await make_gateway()
    async with httpx.AsyncClient(timeout=20) as client:
        resp = await client.post(f"{gw.url}/v1/messages",
                                 headers={"X-Request-Id": incoming.encode("utf-8")},
                                 json={"model": "claude-native", "max_tokens": 10,
                                       "messages": HI})
    assert resp.status_code == 200
    rid = resp.headers["x-request-id"]
    assert resp.headers["request-id"] == rid   # the protocol's own header says the same
    assert (rid == incoming) is kept
    if not kept:
        assert rid.startswith("req_")


def test_redact_shapes() -> None:
    text = ('{"x-api-key": "abc", "Authorization": "Bearer zzzzzzzzzz", "password": "p\\"w", '
            '"note": "use sk-ant-api03-AAAAAAAAAAAA or Bearer tok.en-1234567", "n": 1}')
    out = redact(text)
    assert "abc" not in out and "zzzz" not in out and 'p\\"w' not in out
    assert "sk-ant" not in out and "tok.en" not in out and '"n": 1' in out


def test_json_formatter_merges_access_fields() -> None:
    record = logging.LogRecord("p5proxy.access", logging.INFO, __file__, 1, "msg", None, None)
    record.p5proxy_fields = {"request_id": "r1", "status": 200}
    out = orjson.loads(JsonFormatter().format(record))
    assert out["request_id"] == "r1" and out["status"] == 200 and out["level"] == "INFO"
    plain = logging.LogRecord("p5proxy", logging.WARNING, __file__, 1, "hello %s", ("w",), None)
    assert orjson.loads(JsonFormatter().format(plain))["message"] == "hello w"


def test_generated_request_ids_sort_by_time_and_stay_unique() -> None:
    """Time-ordered ids keep the request log's index on them growing at its end."""
    from p5proxy.ids import request_id
    early = [request_id() for _ in range(2000)]
    time.sleep(0.002)
    late = request_id()
    assert len(set(early)) == len(early)
    assert all(len(rid) == 28 and rid.startswith("req_01") and rid.isascii() for rid in early)
    assert all(rid[:13] <= late[:13] for rid in early) and early[0] < late


def test_the_time_part_of_request_ids_is_the_milliseconds_in_base62(monkeypatch: Any) -> None:
    """ids.py keeps the time's high digits between calls and takes the last two from a table:
    across the table's wrap (every 3,844 ms) the text must stay the plain conversion."""
    from p5proxy import ids

    def plain(ms: int) -> str:
        return "".join(ids._DIGITS[ms // 62 ** i % 62] for i in reversed(range(7)))

    wrap = 1_795_000_000_000 // 3844 * 3844
    seen = []
    for ms in (wrap - 3845, wrap - 2, wrap - 1, wrap, wrap + 1, wrap + 3843, wrap + 3844, wrap - 1):
        monkeypatch.setattr(time, "time_ns", lambda ms=ms: ms * 1_000_000 + 999_999)
        seen.append(ids._time62(7))
        assert seen[-1] == plain(ms), ms
    assert seen[:-1] == sorted(seen[:-1])   # the order of the times (the last one went back)


def test_a_forked_worker_does_not_reuse_the_parents_random_characters() -> None:
    """Ids come from a pool of random characters (p5proxy/ids.py); `--workers` forks, and a
    worker that kept the parent's pool would hand out the parent's next ids."""
    import os

    from p5proxy.ids import request_id
    request_id()   # the parent's pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: its next ids, then out without running pytest's exit code
        os.write(write, " ".join(request_id()[13:] for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = set(os.read(read, 4096).decode().split())
    os.close(read)
    parent = {request_id()[13:] for _ in range(5)}
    assert len(child) == 5 and not child & parent


async def test_every_response_carries_its_request_id(make_gateway: Any) -> None:
    """X-Request-Id and the protocol's own header, on answers, streams, errors and /health."""
    gw = await make_gateway()
    gw.anthropic.replies.append(Reply(text="one"))
    gw.anthropic.replies.append(Reply(text="two"))
    gw.openai.replies.append(Reply(text="three"))
    async with httpx.AsyncClient(timeout=20) as client:
        answers = [
            await client.post(f"{gw.url}/v1/messages", json={
                "model": "claude-native", "max_tokens": 20, "messages": HI}),
            await client.post(f"{gw.url}/v1/messages", json={
                "model": "claude-native", "max_tokens": 20, "messages": HI, "stream": True}),
            await client.post(f"{gw.url}/v1/chat/completions", json={
                "model": "gpt-4o", "messages": HI, "stream": True}),
            await client.post(f"{gw.url}/v1/messages", json={
                "model": "claude-native", "messages": HI}),   # 400: max_tokens missing
            await client.get(f"{gw.url}/health")]
    assert [r.status_code for r in answers] == [200, 200, 200, 400, 200]
    ids = [r.headers.get("x-request-id") for r in answers]
    assert all(rid and rid.startswith("req_01") for rid in ids) and len(set(ids)) == 5, ids
    for resp in answers[:2] + answers[3:4]:   # Anthropic clients also get `request-id`
        assert resp.headers["request-id"] == resp.headers["x-request-id"]
