"""GET /metrics over real requests: counters, histograms, bounded labels, access control."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from p5proxy import metrics
from tests.conftest import Gateway
from tests.fakes import Reply

HI = [{"role": "user", "content": "hi"}]


async def scrape(client: httpx.AsyncClient, gw: Gateway, **headers: str) -> dict[tuple[Any, ...], float]:
    resp = await client.get(f"{gw.url}/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out: dict[tuple[Any, ...], float] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict[tuple[Any, ...], float], name: str, **labels: str) -> float:
    return samples.get((name, *sorted(labels.items())), 0.0)


def delta(before: dict[tuple[Any, ...], float], after: dict[tuple[Any, ...], float], name: str,
          **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_requests_tokens_and_latency_are_counted(make_gateway: Any) -> None:
    gw = await make_gateway()
    gw.openai.replies.append(Reply(text="one", usage={"input": 10, "output": 4, "cache_read": 6}))
    async with httpx.AsyncClient(timeout=20) as client:
        before = await scrape(client, gw)
        ok = await client.post(f"{gw.url}/v1/chat/completions",
                               json={"model": "gpt-4o", "messages": HI})
        assert ok.status_code == 200
        streamed = await client.post(f"{gw.url}/v1/messages",
                                     json={"model": "claude-haiku-4-5", "max_tokens": 50,
                                           "messages": HI, "stream": True})
        assert streamed.status_code == 200
        missing = await client.post(f"{gw.url}/v1/chat/completions",
                                    json={"model": "made-up-name-123", "messages": HI})
        assert missing.status_code == 404
        after = await scrape(client, gw)
    req = "p5proxy_requests_total"
    assert delta(before, after, req, protocol="openai", model="gpt-4o", provider="oa",
                 status="2xx") == 1
    # a glob entry is its own label: client names cannot grow the label set
    assert delta(before, after, req, protocol="anthropic", model="claude-haiku-*", provider="oa",
                 status="2xx") == 1
    assert delta(before, after, req, protocol="openai", model="other", provider="none",
                 status="4xx") == 1
    assert not any(k[0] == req and ("model", "made-up-name-123") in k for k in after)
    assert delta(before, after, "p5proxy_errors_total", provider="none",
                 type="not_found_error") == 1
    tokens = "p5proxy_tokens_total"
    assert delta(before, after, tokens, model="gpt-4o", provider="oa", type="input") == 16
    assert delta(before, after, tokens, model="gpt-4o", provider="oa", type="output") == 4
    assert delta(before, after, tokens, model="gpt-4o", provider="oa", type="cached") == 6
    assert delta(before, after, "p5proxy_request_duration_seconds_count", protocol="openai",
                 model="gpt-4o", provider="oa") == 1
    # time to first token: streams only
    assert delta(before, after, "p5proxy_time_to_first_token_seconds_count",
                 protocol="anthropic", model="claude-haiku-*", provider="oa") == 1
    assert delta(before, after, "p5proxy_time_to_first_token_seconds_count", protocol="openai",
                 model="gpt-4o", provider="oa") == 0
    assert delta(before, after, "p5proxy_gateway_overhead_seconds_count", protocol="openai") == 1
    # /metrics and /health are not API traffic
    assert not any(k[0] == req and ("model", "none") in k for k in after)


async def test_open_streams_gauge(make_gateway: Any) -> None:
    gw = await make_gateway()
    gw.openai.replies.append(Reply(text="slow stream of words here", chunk_size=3, delay=0.3))
    async with httpx.AsyncClient(timeout=20) as client:
        base = value(await scrape(client, gw), "p5proxy_open_streams")
        task = asyncio.create_task(client.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": HI, "stream": True}))
        async with asyncio.timeout(10):
            while value(await scrape(client, gw), "p5proxy_open_streams") < base + 1:
                await asyncio.sleep(0.05)
        assert (await task).status_code == 200
        assert value(await scrape(client, gw), "p5proxy_open_streams") == base


async def test_counters_for_other_parts_of_the_gateway(make_gateway: Any) -> None:
    """count_retry / count_fallback / count_cooldown are what retries, failover and key pools
    call; they show up under the provider's name."""
    gw = await make_gateway()
    async with httpx.AsyncClient(timeout=20) as client:
        before = await scrape(client, gw)
        metrics.count_retry("oa")
        metrics.count_retry("oa")
        metrics.count_fallback("an")
        metrics.count_cooldown("oa")
        after = await scrape(client, gw)
    assert delta(before, after, "p5proxy_upstream_retries_total", provider="oa") == 2
    assert delta(before, after, "p5proxy_fallbacks_total", provider="an") == 1
    assert delta(before, after, "p5proxy_key_cooldowns_total", provider="oa") == 1


async def test_cache_results_are_counted(make_gateway: Any) -> None:
    gw = await make_gateway(cache={"enabled": True})
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "count me"}]}
    async with httpx.AsyncClient(timeout=20) as client:
        before = await scrape(client, gw)
        for headers in ({}, {}, {"Cache-Control": "no-cache"}):
            resp = await client.post(gw.url + "/v1/chat/completions", json=body,
                                     headers={"Authorization": "Bearer k", **headers})
            assert resp.status_code == 200
        after = await scrape(client, gw)
    name = "p5proxy_cache_requests_total"
    assert delta(before, after, name, cache_status="miss") == 1
    assert delta(before, after, name, cache_status="hit") == 1
    assert delta(before, after, name, cache_status="bypass") == 1


@pytest.mark.parametrize("setup", ["metrics-key", "admin-key"])
async def test_metrics_key_is_a_bearer_token(make_gateway: Any, setup: str) -> None:
    overrides: dict[str, Any] = {"auth": {"keys": ["client-key-1"]}}
    if setup == "metrics-key":
        overrides["metrics"] = {"key": "scrape-secret"}
    else:
        overrides["admin"] = {"key": "scrape-secret"}
    gw = await make_gateway(**overrides)
    async with httpx.AsyncClient(timeout=20) as client:
        assert (await client.get(f"{gw.url}/metrics")).status_code == 401
        as_client = await client.get(f"{gw.url}/metrics",
                                     headers={"Authorization": "Bearer client-key-1"})
        assert as_client.status_code == 401   # a client key is not a metrics key
        wrong = await client.get(f"{gw.url}/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        samples = await scrape(client, gw, Authorization="Bearer scrape-secret")
        assert any(k[0] == "p5proxy_open_streams" for k in samples)


async def test_without_a_metrics_key_metrics_follow_the_api_auth(make_gateway: Any) -> None:
    gw = await make_gateway(auth={"keys": ["client-key-1"]})
    async with httpx.AsyncClient(timeout=20) as client:
        assert (await client.get(f"{gw.url}/metrics")).status_code == 401
        await scrape(client, gw, Authorization="Bearer client-key-1")
    open_gw = await make_gateway()
    async with httpx.AsyncClient(timeout=20) as client:
        await scrape(client, open_gw)


async def test_metrics_can_be_turned_off(make_gateway: Any) -> None:
    """Off means off: no /metrics, and requests are not counted either (work nobody reads)."""
    gw: Gateway = await make_gateway(metrics={"enabled": False})
    gw.openai.replies.append(Reply(text="one"))

    def counted() -> float:   # this process's registry: the gateway runs in the test process
        samples = {(s.name, *sorted(s.labels.items())): s.value
                   for f in text_string_to_metric_families(metrics.render().decode())
                   for s in f.samples}
        return value(samples, "p5proxy_requests_total", protocol="openai", model="gpt-4o",
                     provider="oa", status="2xx")

    before = counted()
    async with httpx.AsyncClient(timeout=20) as client:
        assert (await client.get(f"{gw.url}/metrics")).status_code == 404
        ok = await client.post(f"{gw.url}/v1/chat/completions",
                               json={"model": "gpt-4o", "messages": HI})
        assert ok.status_code == 200
    assert counted() == before


async def test_workers_add_up_in_one_scrape(tmp_path: Any, fake_openai: Any) -> None:
    """`serve --workers 2`: whichever worker answers the scrape reports all workers' counts."""
    import signal

    import aiohttp

    from tests.test_server import start_serve
    _, upstream = fake_openai
    proc, url = await start_serve(tmp_path, upstream, "--workers", "2")
    try:
        connector = aiohttp.TCPConnector(force_close=True)   # new connections: spread by the kernel
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(12):
                async with session.post(url + "/v1/chat/completions", json={
                        "model": "gpt-4o", "messages": HI}) as resp:
                    assert resp.status == 200
            # each worker writes its counts to the shared files within metrics.FLUSH_SECS
            await asyncio.sleep(metrics.FLUSH_SECS + 0.5)
            for _ in range(6):
                async with session.get(url + "/metrics") as resp:
                    assert resp.status == 200
                    text = await resp.text()
                counts = [s.value for f in text_string_to_metric_families(text) for s in f.samples
                          if s.name == "p5proxy_requests_total" and s.labels.get("model") == "gpt-4o"]
                assert sum(counts) == 12, text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


def test_batched_histogram_counts_match_one_observe_per_value() -> None:
    """flush() puts a batch into a histogram with one increment per bucket: the exposition must
    be what one observe() per value gives, bucket edges included."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    values = [0.0, 0.05, 0.0500001, 0.1, 0.3, 2.5, 7, 599.9, 600, 601, 1e9, 0.25]
    out = []
    for batched in (False, True):
        registry = CollectorRegistry()
        hist = Histogram("h", "h", ("a",), buckets=metrics._LATENCY_BUCKETS, registry=registry)
        child = hist.labels("x")
        if batched:
            metrics._observe_all(child, values)
        else:
            for v in values:
                child.observe(v)
        out.append({(smp.name, smp.labels.get("le")): smp.value
                    for fam in text_string_to_metric_families(generate_latest(registry).decode())
                    for smp in fam.samples if not smp.name.endswith("_created")})
    assert out[0].keys() == out[1].keys()
    for key, value in out[0].items():
        assert out[1][key] == pytest.approx(value), key


def test_counts_are_flushed_on_a_new_event_loop_after_the_first_one_ended() -> None:
    """The flush timer belongs to a loop: when that loop ends first, the next observation on
    another loop schedules its own (tests, and `serve` restarting its loop, do this)."""
    import time

    from p5proxy.record import RequestRecord

    labels = {"protocol": "loopcheck", "model": "m-loop", "provider": "p-loop", "status": "2xx"}
    rec = RequestRecord(time.time(), "req_t", "loopcheck", "POST", "/v1/x")
    rec.model_label, rec.provider, rec.status = "m-loop", "p-loop", 200

    async def first() -> None:
        metrics.observe(rec)   # its flush timer dies with this loop

    async def second() -> None:
        metrics.observe(rec)
        await asyncio.sleep(metrics.FLUSH_SECS + 0.3)
        assert metrics.REGISTRY.get_sample_value("p5proxy_requests_total", labels) == 2

    asyncio.run(first())
    asyncio.run(second())
