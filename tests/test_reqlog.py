"""The request log store over real gateway requests, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from p5proxy.reqlog import RequestLogError
from tests.fakes import Reply
from tests.reqlog_support import Database, LiveGateway, database, start_live  # noqa: F401

HI = [{"role": "user", "content": "hi"}]


async def _chat(client: httpx.AsyncClient, gw: LiveGateway, model: str, *, stream: bool = False,
                rid: str | None = None) -> httpx.Response:
    headers = {"X-Request-Id": rid} if rid else {}
    return await client.post(f"{gw.url}/v1/chat/completions", headers=headers,
                             json={"model": model, "messages": HI, "stream": stream})


async def _messages(client: httpx.AsyncClient, gw: LiveGateway, model: str, *,
                    stream: bool = False) -> httpx.Response:
    return await client.post(f"{gw.url}/v1/messages",
                             headers={"anthropic-version": "2023-06-01"},
                             json={"model": model, "max_tokens": 100, "messages": HI,
                                   "stream": stream})


async def _flushed(gw: LiveGateway) -> Any:
    store = gw.state.request_log
    assert store is not None
    assert await store.flush(), store.describe()
    return store


async def test_requests_are_recorded_and_queried(aiohttp_server: Any, fake_openai: Any,
                                                 fake_anthropic: Any, database: Database) -> None:
    gw = await start_live(aiohttp_server, fake_openai, fake_anthropic, logs=database.logs())
    oa, an = fake_openai[0], fake_anthropic[0]
    oa.replies.append(Reply(text="plain answer", usage={"input": 7, "output": 3,
                                                        "cache_read": 40}))
    an.replies.append(Reply(text="streamed answer", usage={"input": 9, "output": 5}))
    oa.replies.append(Reply(status=429, headers={"retry-after": "3"}))
    async with httpx.AsyncClient(timeout=20) as client:
        plain = await _chat(client, gw, "gpt-4o", rid="trace-abc.123")
        assert plain.status_code == 200
        assert plain.headers["x-request-id"] == "trace-abc.123"
        streamed = await _messages(client, gw, "claude-native", stream=True)
        assert streamed.status_code == 200 and "event: message_stop" in streamed.text
        stream_rid = streamed.headers["request-id"]
        assert streamed.headers["x-request-id"] == stream_rid
        unknown = await _chat(client, gw, "no-such-model")
        assert unknown.status_code == 404
        limited = await _chat(client, gw, "gpt-4o")
        assert limited.status_code == 429
    store = await _flushed(gw)

    rows, total = await store.query()
    assert total == 4 and len(rows) == 4
    assert [r["status"] for r in rows] == [429, 404, 200, 200]   # newest first

    row = await store.get("trace-abc.123")
    assert row is not None
    assert (row["protocol"], row["model"], row["provider"], row["upstream_model"]) == \
        ("openai", "gpt-4o", "oa", "gpt-4o-upstream")
    assert row["status"] == 200 and row["stream"] is False and row["error_type"] is None
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (47, 3, 40)
    assert row["latency_ms"] > 0 and row["ttft_ms"] is None and row["overhead_ms"] is not None
    assert row["path"] == "/v1/chat/completions" and row["client_ip"] == "127.0.0.1"

    srow = await store.get(stream_rid)
    assert srow is not None and srow["stream"] is True and srow["protocol"] == "anthropic"
    assert srow["provider"] == "an" and srow["output_tokens"] == 5 and srow["input_tokens"] == 9
    assert 0 < srow["ttft_ms"] <= srow["latency_ms"]

    errors, n_errors = await store.query(status="error")
    assert n_errors == 2
    assert {r["error_type"] for r in errors} == {"not_found_error", "rate_limit_error"}
    assert "no-such-model" in next(r for r in errors if r["status"] == 404)["error_message"]
    assert (await store.query(status="4xx"))[1] == 2
    assert (await store.query(status=200))[1] == 2
    assert (await store.query(status="ok"))[1] == 2
    assert (await store.query(model="gpt-4o"))[1] == 2
    assert (await store.query(provider="an"))[1] == 1
    assert (await store.query(key_id="nobody"))[1] == 0
    assert (await store.query(since=time.time() + 60))[1] == 0
    assert (await store.query(until=time.time() + 60))[1] == 4
    assert await store.get("never-seen") is None

    summary = await store.summary(window_secs=600, buckets=10)
    totals = summary["totals"]
    assert totals["requests"] == 4 and totals["errors"] == 2 and totals["success_rate"] == 0.5
    assert totals["output_tokens"] == 8 and totals["cached_tokens"] == 40
    assert totals["latency_p50_ms"] is not None and totals["ttft_p95_ms"] == srow["ttft_ms"]
    assert len(summary["series"]) == 10
    assert sum(b["requests"] for b in summary["series"]) == 4
    assert summary["series"][-1]["requests"] == 4   # all in the newest bucket
    assert store.describe()["up"] is True and store.describe()["written"] == 4


async def test_pagination_newest_first(aiohttp_server: Any, fake_openai: Any,
                                       fake_anthropic: Any, database: Database) -> None:
    gw = await start_live(aiohttp_server, fake_openai, fake_anthropic, logs=database.logs())
    async with httpx.AsyncClient(timeout=20) as client:
        for i in range(5):
            assert (await _chat(client, gw, "gpt-4o", rid=f"page-{i}")).status_code == 200
    store = await _flushed(gw)
    rows, total = await store.query(limit=2, offset=1)
    assert total == 5
    assert [r["request_id"] for r in rows] == ["page-3", "page-2"]


async def test_retention_prunes_by_age_and_rows(aiohttp_server: Any, fake_openai: Any,
                                                fake_anthropic: Any, database: Database) -> None:
    gw = await start_live(aiohttp_server, fake_openai, fake_anthropic,
                          logs=database.logs(max_rows=3, retention_days=1))
    async with httpx.AsyncClient(timeout=20) as client:
        for i in range(5):
            assert (await _chat(client, gw, "gpt-4o", rid=f"keep-{i}")).status_code == 200
    store = await _flushed(gw)
    await store.prune()   # over max_rows: the oldest go (the writer may have pruned some already)
    rows, total = await store.query()
    assert total == 3 and [r["request_id"] for r in rows] == ["keep-4", "keep-3", "keep-2"]
    assert await store.prune(now=time.time() + 2 * 86400) == 3   # older than a day
    assert (await store.query())[1] == 0


async def test_instances_share_one_postgresql_table(aiohttp_server: Any, fake_openai: Any,
                                                    fake_anthropic: Any,
                                                    database: Database) -> None:
    if database.kind != "postgresql":
        pytest.skip("sharing is what the PostgreSQL backend is for")
    one = await start_live(aiohttp_server, fake_openai, fake_anthropic, logs=database.logs())
    two = await start_live(aiohttp_server, fake_openai, fake_anthropic, logs=database.logs())
    async with httpx.AsyncClient(timeout=20) as client:
        assert (await _chat(client, one, "gpt-4o", rid="from-one")).status_code == 200
        assert (await _chat(client, two, "gpt-4o", rid="from-two")).status_code == 200
    await _flushed(one)
    store = await _flushed(two)
    rows, total = await store.query()
    assert total == 2 and {r["request_id"] for r in rows} == {"from-one", "from-two"}
    assert await one.state.request_log.get("from-two") is not None   # type: ignore[union-attr]


@pytest.mark.parametrize("where", ["sqlite-unopenable", "postgresql-closed-port"])
async def test_a_lost_database_never_fails_requests(aiohttp_server: Any, fake_openai: Any,
                                                    fake_anthropic: Any, tmp_path: Any,
                                                    unused_tcp_port: int, where: str) -> None:
    if where == "sqlite-unopenable":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        url = f"sqlite:///{blocker}/requests.db"
    else:
        url = f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/test"
    gw = await start_live(aiohttp_server, fake_openai, fake_anthropic,
                          logs={"database_url": url, "flush_secs": 0.05, "queue_max": 3})
    async with httpx.AsyncClient(timeout=20) as client:
        for _ in range(5):
            assert (await _chat(client, gw, "gpt-4o")).status_code == 200
            assert (await _chat(client, gw, "gpt-4o", stream=True)).status_code == 200
        health = await client.get(f"{gw.url}/health")
        assert health.status_code == 200
    store = gw.state.request_log
    assert store is not None
    assert await store.flush() is False
    info = store.describe()
    assert info["up"] is False and info["errors"] >= 1 and info["last_error"]
    assert info["queued"] == 3 and info["dropped"] == 7   # bounded: the rest were dropped
    with pytest.raises(RequestLogError):
        await store.query()


async def test_postgresql_recovers_after_losing_its_table(aiohttp_server: Any,
                                                          fake_openai: Any, fake_anthropic: Any,
                                                          database: Database) -> None:
    """The table dropped under a running gateway (as after a restore or a wiped database):
    requests go on, the failure is counted, and the writer re-creates the table and catches up."""
    if database.kind != "postgresql":
        pytest.skip("a SQLite file cannot be taken away from an open connection")
    import asyncpg
    gw = await start_live(aiohttp_server, fake_openai, fake_anthropic, logs=database.logs())
    store = gw.state.request_log
    assert store is not None
    async with httpx.AsyncClient(timeout=20) as client:
        assert (await _chat(client, gw, "gpt-4o", rid="before")).status_code == 200
        await _flushed(gw)
        conn = await asyncpg.connect(database.url, timeout=5)
        try:
            await conn.execute(f"DROP TABLE {database.table}")
        finally:
            await conn.close()
        assert (await _chat(client, gw, "gpt-4o", rid="during")).status_code == 200
        async with asyncio.timeout(20):
            while store.describe()["errors"] == 0:
                await asyncio.sleep(0.05)
        assert (await _chat(client, gw, "gpt-4o", rid="after")).status_code == 200
        async with asyncio.timeout(20):   # the writer retries with backoff, then catches up
            while store.describe()["queued"]:
                await asyncio.sleep(0.1)
    rows, total = await store.query()
    assert total == 2 and {r["request_id"] for r in rows} == {"during", "after"}


async def test_disabled_store(aiohttp_server: Any, fake_openai: Any, fake_anthropic: Any) -> None:
    gw = await start_live(aiohttp_server, fake_openai, fake_anthropic, logs={"enabled": False})
    assert gw.state.request_log is None
    async with httpx.AsyncClient(timeout=20) as client:
        assert (await _chat(client, gw, "gpt-4o")).status_code == 200


async def test_default_database_is_sqlite_in_the_data_dir(aiohttp_server: Any, fake_openai: Any,
                                                          fake_anthropic: Any,
                                                          tmp_path: Any,
                                                          monkeypatch: Any) -> None:
    monkeypatch.setenv("P5PROXY_DATA_DIR", str(tmp_path / "state"))
    gw = await start_live(aiohttp_server, fake_openai, fake_anthropic)
    async with httpx.AsyncClient(timeout=20) as client:
        assert (await _chat(client, gw, "gpt-4o", rid="default-db")).status_code == 200
    store = await _flushed(gw)
    assert store.describe()["backend"] == "sqlite"
    assert (tmp_path / "state" / "p5proxy-requests.db").is_file()
    assert await store.get("default-db") is not None


async def test_client_leaving_mid_stream_is_recorded(aiohttp_server: Any, fake_openai: Any,
                                                     fake_anthropic: Any,
                                                     database: Database) -> None:
    import aiohttp
    gw = await start_live(aiohttp_server, fake_openai, fake_anthropic, logs=database.logs())
    fake_openai[0].replies.append(Reply(text="word " * 40, chunk_size=5, delay=0.1))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gw.url}/v1/chat/completions",
                                headers={"X-Request-Id": "leaver"},
                                json={"model": "gpt-4o", "messages": HI, "stream": True}) as resp:
            assert resp.status == 200
            await resp.content.readline()
            resp.close()   # hang up mid-stream
    store = gw.state.request_log
    assert store is not None
    async with asyncio.timeout(10):
        while (row := await store.get("leaver")) is None:
            await store.flush()
            await asyncio.sleep(0.05)
    assert row["error_type"] == "client_closed" and row["status"] == 200 and row["stream"] is True
    assert row["ttft_ms"] is not None


async def test_rows_queued_at_shutdown_are_written(aiohttp_server: Any, fake_openai: Any,
                                                   fake_anthropic: Any,
                                                   database: Database) -> None:
    gw = await start_live(aiohttp_server, fake_openai, fake_anthropic,
                          logs=database.logs(flush_secs=3600, batch_rows=1000))
    async with httpx.AsyncClient(timeout=20) as client:
        for i in range(3):
            assert (await _chat(client, gw, "gpt-4o", rid=f"late-{i}")).status_code == 200
    store = gw.state.request_log
    assert store is not None and store.describe()["queued"] == 3
    await gw.server.close()   # the app's cleanup flushes and closes the store
    assert store.describe()["queued"] == 0 and store.describe()["written"] == 3
    again = await start_live(aiohttp_server, fake_openai, fake_anthropic, logs=database.logs())
    reopened = await _flushed(again)
    assert (await reopened.query())[1] == 3


async def test_under_load_the_writer_waits_for_whole_batches(aiohttp_server: Any, fake_openai: Any,
                                                             fake_anthropic: Any,
                                                             database: Database) -> None:
    """A full batch wakes the writer, which writes whole batches only: the rows past the last
    full batch wait for the next one (or for flush_secs), instead of a transaction of a few
    rows after every batch. With little traffic, flush_secs writes whatever is queued."""
    gw = await start_live(aiohttp_server, fake_openai, fake_anthropic,
                          logs=database.logs(flush_secs=2.0, batch_rows=3))
    store = gw.state.request_log
    assert store is not None
    async with httpx.AsyncClient(timeout=20) as client:
        for _ in range(4):
            fake_openai[0].replies.append(Reply(text="ok"))
            assert (await _chat(client, gw, "gpt-4o")).status_code == 200
        for _ in range(50):   # the fourth request filled no batch: one is written, one waits
            if store.written:
                break
            await asyncio.sleep(0.01)
        assert store.written == 3 and store.describe()["queued"] == 1
        for _ in range(300):   # flush_secs without a full batch: the rest is written
            if store.written == 4:
                break
            await asyncio.sleep(0.01)
        assert store.written == 4 and store.describe()["queued"] == 0
        rows, total = await store.query()
        assert total == 4
