"""A/B of two gateway source trees (or two settings) in one run, with the reference alongside.

    git worktree add /tmp/before HEAD~1
    .venv/bin/python bench/ab.py /tmp/before .                 # code change
    .venv/bin/python bench/ab.py . . --yaml-b 'logs: {enabled: false}'   # one setting

Both gateways and the reference proxy run at once on core 0 against one mock on core 1; wrk
(core 1) measures them in turn, alternating the order (A, B, R, then R, B, A ...), `--n` rounds
of `--dur` seconds. Prints the medians of requests/s and of CPU per request of each, and the
median of the per-round ratios B/A, with their range: on a shared machine a single run of the
full bench moves by ±10%, while two trees measured side by side in the same minutes show a
difference of a few percent reliably (repeat when the range straddles 1.0).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import (AN_HEADERS, OA_HEADERS, Procs, free_port, proc_cpu_s,  # noqa: E402
                      wait_ready)
from run import LOAD_CPU, PROXY_CPU, gateway_config, run_wrk, write_bodies  # noqa: E402

BODIES = {"oa_ns": "/v1/chat/completions", "oa_stream": "/v1/chat/completions",
          "an_ns": "/v1/messages", "an_stream": "/v1/messages", "cc": "/v1/messages"}


def headers_for(path: str) -> dict[str, str]:
    return AN_HEADERS if path == "/v1/messages" else OA_HEADERS


def start_mock(procs: Procs, out: Path) -> int:
    """The fast mock (20 chunks per stream, no delay) on the load core; its port."""
    mock = free_port()
    procs.start("mock", [sys.executable, str(HERE / "mock_upstream.py"), "--port", str(mock),
                         "--chunks", "20", "--delay-ms", "0"], cpu=str(LOAD_CPU))
    if not wait_ready(f"http://127.0.0.1:{mock}/health", procs.procs["mock"]):
        raise SystemExit(f"the mock did not start; see {out}/logs")
    return mock


def serve_cmd(tree: Path, config: Path) -> list[str]:
    # `-m p5proxy` would import the checkout the bench runs from (its working directory comes
    # first on sys.path), whatever PYTHONPATH says: put the tree first explicitly
    code = (f"import sys; sys.path.insert(0, {str(tree)!r}); from p5proxy.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", code, "serve", "--config", str(config)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree_a", type=Path)
    ap.add_argument("tree_b", type=Path)
    ap.add_argument("--body", default="oa_ns", choices=sorted(BODIES))
    ap.add_argument("--conc", type=int, default=64)
    ap.add_argument("--n", type=int, default=8, help="rounds (default 8)")
    ap.add_argument("--dur", type=int, default=3, help="seconds per measurement (default 3)")
    ap.add_argument("--yaml-a", default="", help="YAML appended to A's config")
    ap.add_argument("--yaml-b", default="", help="YAML appended to B's config")
    ap.add_argument("--vary", action="store_true", help="every request unique (see run.py --vary)")
    a = ap.parse_args()
    if a.vary:
        os.environ["BENCH_VARY"] = "1"   # read by post.lua
    out = Path(tempfile.mkdtemp(prefix="p5proxy-ab-"))
    (out / "logs").mkdir()
    bodies = write_bodies(out / "bodies")
    procs = Procs(out / "logs")
    try:
        mock = start_mock(procs, out)
        ports: dict[str, int] = {}
        for name, tree, extra in (("A", a.tree_a, a.yaml_a), ("B", a.tree_b, a.yaml_b)):
            ports[name] = free_port()
            config = out / f"{name}.yaml"
            config.write_text(gateway_config(ports[name], mock, mock, out / f"{name}.db", extra))
            procs.start(name, serve_cmd(tree.resolve(), config), cpu=PROXY_CPU)
            if not wait_ready(f"http://127.0.0.1:{ports[name]}/health", procs.procs[name], timeout=30):
                raise SystemExit(f"gateway {name} did not start; see {out}/logs/{name}.log")
        ports["R"] = free_port()
        procs.start("R", [sys.executable, str(HERE / "ref_proxy.py"), f"http://127.0.0.1:{mock}",
                          "--port", str(ports["R"])], cpu=PROXY_CPU)
        time.sleep(1.5)
        path = BODIES[a.body]
        headers = headers_for(path)
        rps: dict[str, list[float]] = {"A": [], "B": [], "R": []}
        cpu: dict[str, list[float]] = {"A": [], "B": [], "R": []}
        for name in rps:   # warm-up
            run_wrk(f"http://127.0.0.1:{ports[name]}{path}", bodies[a.body], headers, conc=a.conc, duration=2)
        for i in range(a.n):
            for name in (("A", "B", "R") if i % 2 == 0 else ("R", "B", "A")):
                pid = procs.procs[name].pid
                before = proc_cpu_s(pid)
                r = run_wrk(f"http://127.0.0.1:{ports[name]}{path}", bodies[a.body], headers,
                            conc=a.conc, duration=a.dur)
                rps[name].append(r["rps"])
                cpu[name].append((proc_cpu_s(pid) - before) * 1e6 / max(1, r["requests"]))
        ratios = [b / x for x, b in zip(rps["A"], rps["B"])]
        med = statistics.median
        for name in rps:
            print(f"{name}: {med(rps[name]):7.0f} req/s {med(cpu[name]):6.0f} us CPU/request"
                  + ("" if name == "R" else
                     f"  {med([x / r for x, r in zip(rps[name], rps['R'])]):.3f} of the reference"))
        print(f"B/A: {med(ratios):.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f})")
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
