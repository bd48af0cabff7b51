"""Micro-benchmark of an in-flight answer (p5proxy/flight.py) without any network: what sharing
an upstream answer costs per batch and reader, which every request pays with the response
cache on (the default).

    .venv/bin/python bench/micro_flight.py [--n 20000] [--readers 1,2]

A producer yields `--n` one-event batches, each after one event-loop turn (as network reads
arrive); the readers read them all through the flight. Prints CPU microseconds per batch for
the producer alone and through the flight; compare runs on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import time
from collections.abc import AsyncGenerator

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import uvloop  # noqa: E402

from p5proxy.canonical import StreamEvent, TextDelta  # noqa: E402
from p5proxy.flight import Flight  # noqa: E402


async def _producer(n: int) -> AsyncGenerator[list[StreamEvent], None]:
    batch: list[StreamEvent] = [TextDelta(0, "x")]
    for _ in range(n):
        await asyncio.sleep(0)
        yield batch


async def _alone(n: int) -> float:
    t = time.process_time()
    async for _ in _producer(n):
        pass
    return (time.process_time() - t) / n * 1e6


async def _shared(n: int, readers: int) -> float:
    flight = Flight("bench", heartbeat_secs=15)
    flight.start(_producer(n))

    async def read() -> int:
        return sum([1 async for _ in flight.read()])

    t = time.process_time()
    counts = await asyncio.gather(*(read() for _ in range(readers)))
    spent = time.process_time() - t
    assert counts == [n] * readers, counts
    return spent / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--readers", default="1,2")
    a = ap.parse_args()
    for readers in (int(r) for r in a.readers.split(",")):
        alone = uvloop.run(_alone(a.n))
        shared = uvloop.run(_shared(a.n, readers))
        print(f"{readers} reader(s): {shared:6.2f} us/batch through the flight, producer alone "
              f"{alone:5.2f}: the flight adds {shared - alone:5.2f}")


if __name__ == "__main__":
    main()
