"""Micro-benchmark of the per-chunk streaming path without any network: SSE decoder, the
OpenAI stream parser and a surface renderer over the mock upstream's 20-chunk stream.

    .venv/bin/python bench/micro_stream.py [--n 20000] [--split]

Two routes, as in the bench's stream rows: OpenAI upstream -> OpenAI client (pass-through
renderer) and OpenAI upstream -> Anthropic client. By default the whole stream arrives as one
network read (what readany() returns from the fast mock); --split feeds one read per SSE
event (a slow upstream). Prints microseconds per stream; compare runs on a quiet machine.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from mock_upstream import _openai  # noqa: E402

from p5proxy.protocols.anthropic import AnthropicStreamRenderer  # noqa: E402
from p5proxy.protocols.openai import OpenAIStreamParser, OpenAIStreamRenderer  # noqa: E402
from p5proxy.sse import SSEDecoder  # noqa: E402


def _events() -> list[bytes]:
    """The SSE events of the mock's include_usage stream, chunked framing removed."""
    stream = _openai(20)[2]
    raw = stream.whole.split(b"\r\n\r\n", 1)[1]
    events, pos = [], 0
    while True:
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol], 16)
        if size == 0:
            return events
        events.append(raw[eol + 2:eol + 2 + size])
        pos = eol + 2 + size + 2


def _one(reads: list[bytes], renderer_cls: type, passthrough: bool) -> int:
    decoder = SSEDecoder()
    parser = OpenAIStreamParser("bench")
    renderer = renderer_cls(model="m", include_usage=True, input_estimate=10,
                            passthrough=passthrough)
    render = renderer.render
    size = 0
    for chunk in reads:
        batch = []
        for event, data in decoder.feed(chunk):
            batch.extend(parser.feed(event, data))
        size += len(b"".join([render(ev) for ev in batch]))
    for event, data in decoder.close():
        parser.feed(event, data)
    parser.close()
    return size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--split", action="store_true", help="one read per SSE event")
    args = ap.parse_args()
    events = _events()
    reads = events if args.split else [b"".join(events)]
    for name, cls, passthrough in (("openai->openai", OpenAIStreamRenderer, True),
                                   ("openai->anthropic", AnthropicStreamRenderer, False)):
        _one(reads, cls, passthrough)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(args.n // 5):
                _one(reads, cls, passthrough)
            best = min(best, (time.perf_counter() - t0) / (args.n // 5))
        print(f"{name:18} {best * 1e6:7.1f} us/stream ({len(events)} events, "
              f"{len(reads)} reads)")


if __name__ == "__main__":
    main()
