"""Many concurrent slow streams against one proxy: a small asyncio client for the bench.

`hold()` opens N streaming requests (ramped over `ramp` seconds) and reads each to its end;
`leave()` opens N, waits until every one has received its first bytes, keeps them `stay`
seconds, then drops all connections at once. Both return plain dicts for the results file.

    python bench/slow_streams.py URL BODY.json --n 1000 [--leave 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import aiohttp


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _session(n: int) -> aiohttp.ClientSession:
    # One connection per stream; a generous timeout but never unbounded.
    connector = aiohttp.TCPConnector(limit=n + 10, force_close=True)
    timeout = aiohttp.ClientTimeout(total=180, sock_connect=30, sock_read=60)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


def _complete(tail: bytes) -> bool:
    return b"[DONE]" in tail or b"message_stop" in tail


async def hold(url: str, body: bytes, *, n: int, headers: dict[str, str], ramp: float = 1.0) -> dict:
    """N streams read to the end; counts the ones that completed with the protocol's last event."""
    results: list[tuple[bool, float, str]] = []

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        await asyncio.sleep(ramp * i / n)
        t0 = time.monotonic()
        tail = b""
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status != 200:
                    results.append((False, 0.0, f"status {resp.status}"))
                    await resp.read()
                    return
                async for chunk in resp.content.iter_any():
                    tail = (tail + chunk)[-256:]
            ok = _complete(tail)
            results.append((ok, time.monotonic() - t0, "" if ok else "no final event"))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            results.append((False, time.monotonic() - t0, f"{type(exc).__name__}: {exc}"[:200]))

    t0 = time.monotonic()
    async with _session(n) as session:
        await asyncio.gather(*(one(i, session) for i in range(n)))
    durations = sorted(d for ok, d, _ in results if ok)
    errors = [e for ok, _, e in results if not ok]
    return {
        "n": n,
        "completed": len(durations),
        "failed": len(errors),
        "errors_sample": sorted(set(errors))[:5],
        "wall_s": round(time.monotonic() - t0, 2),
        "stream_p50_s": round(durations[len(durations) // 2], 2) if durations else None,
        "stream_max_s": round(durations[-1], 2) if durations else None,
    }


async def leave(url: str, body: bytes, *, n: int, headers: dict[str, str], stay: float = 3.0,
                ramp: float = 1.0, first_byte_timeout: float = 30.0) -> dict:
    """N streams that each receive their first bytes, stay `stay` s, then all disconnect at once."""
    started = 0
    failed: list[str] = []
    all_started = asyncio.Event()
    release = asyncio.Event()

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        nonlocal started
        await asyncio.sleep(ramp * i / n)
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status != 200:
                    failed.append(f"status {resp.status}")
                    return
                await resp.content.readany()
                started += 1
                if started == n - len(failed):
                    all_started.set()
                await release.wait()
                resp.close()  # drop the connection mid-stream
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            failed.append(f"{type(exc).__name__}: {exc}"[:200])
        finally:
            if started + len(failed) >= n:
                all_started.set()

    async with _session(n) as session:
        tasks = [asyncio.create_task(one(i, session)) for i in range(n)]
        try:
            await asyncio.wait_for(all_started.wait(), ramp + first_byte_timeout)
        except asyncio.TimeoutError:
            pass
        await asyncio.sleep(stay)
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"n": n, "started": started, "failed": len(failed), "errors_sample": sorted(set(failed))[:5]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("body")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--leave", type=float, default=None, help="disconnect after this many seconds")
    a = p.parse_args()
    raise_nofile()
    with open(a.body, "rb") as f:
        body = f.read()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer x", "x-api-key": "x",
               "anthropic-version": "2023-06-01"}
    if a.leave is None:
        out = asyncio.run(hold(a.url, body, n=a.n, headers=headers))
    else:
        out = asyncio.run(leave(a.url, body, n=a.n, headers=headers, stay=a.leave))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
