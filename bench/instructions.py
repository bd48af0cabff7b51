"""Instructions per request: the gateway under valgrind's callgrind, which counts instructions
instead of timing them. The count is the same from run to run whatever else the machine does,
so two versions of the gateway compare to a fraction of a percent on a host where requests/s
and even CPU time per request move by ±15% between runs.

    .venv/bin/python bench/instructions.py                    # this checkout, oa_ns, 500 requests
    .venv/bin/python bench/instructions.py /tmp/before .      # two trees, same requests
    .venv/bin/python bench/instructions.py . --body cc --n 100 --top 25
    .venv/bin/python bench/instructions.py . --body an_stream \
        --gateway-yaml 'models: {claude-bench: {provider: mockanthropic, model: claude-bench}}'

Each tree's gateway runs under callgrind with instrumentation off until it has answered a
warm-up; then `--n` requests go one after another (keep-alive, one connection) and only those
are counted. Prints instructions per request, and with `--top` the largest functions by
inclusive count (the compiled modules, orjson and the C parts of aiohttp show by name; Python
code shows as the interpreter). The call graphs stay in the output folder for
`callgrind_annotate` or kcachegrind.

Read with care: work done per batch of requests (metrics, access lines, request-log inserts)
is spread over fewer requests at callgrind's speed (~50x slower), so it counts more here than
in a real run; a large memcpy (`rep movsb`) counts one instruction per byte. For a change to
the per-request path the difference between two trees is exact.
"""
from __future__ import annotations

import argparse
import http.client
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ab import BODIES, headers_for, serve_cmd, start_mock  # noqa: E402
from benchlib import Procs, free_port, wait_ready  # noqa: E402
from run import PROXY_CPU, gateway_config, write_bodies  # noqa: E402


def send(port: int, path: str, body: bytes, headers: dict[str, str], n: int) -> None:
    """`n` requests in a row on one connection; every answer must be a 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        for _ in range(n):
            conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
            resp = conn.getresponse()
            answer = resp.read()
            if resp.status != 200:
                raise SystemExit(f"the gateway answered {resp.status}: {answer[:300]!r}")
    finally:
        conn.close()


def callgrind_control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def totals(path: Path) -> int:
    # `summary:` is written at start-up (0: nothing counted yet), `totals:` at the end
    match = re.search(r"^totals: (\d+)", path.read_text(errors="replace"), re.M)
    if match is None:
        raise SystemExit(f"no totals in {path}")
    return int(match.group(1))


_OWN = re.compile(r"CPyDef_|\bloads\b|\bdumps\b|llhttp__internal_execute|sqlite3_step"
                  r"|_http_writer|pysqlite_connection_execute")


def top(path: Path, n: int, requests: int) -> list[str]:
    """The `n` largest inclusive entries worth reading (compiled functions, orjson, parsers)."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
                          capture_output=True, text=True, check=True).stdout
    rows: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)", line)
        if not match or not _OWN.search(match.group(2)) or "'" in match.group(2) \
                or "generator_helper" in match.group(2):
            continue
        name = re.sub(r"\s*\[.*\]$", "", match.group(2)).rsplit(":", 1)[-1]
        if name in seen:   # a function shows once per source file it was inlined from
            continue
        seen.add(name)
        rows.append(f"  {int(match.group(1).replace(',', '')) / requests:10,.0f}  {name}")
    return rows[:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", type=Path, nargs="*", default=[Path(".")])
    ap.add_argument("--body", default="oa_ns", choices=sorted(BODIES))
    ap.add_argument("--n", type=int, default=500, help="requests counted per tree (default 500)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--top", type=int, default=0, help="also list the N largest functions")
    ap.add_argument("--gateway-yaml", default="", help="YAML appended to every gateway's config")
    a = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install valgrind)")
    out = Path(tempfile.mkdtemp(prefix="p5proxy-instructions-"))
    (out / "logs").mkdir()
    bodies = write_bodies(out / "bodies")
    body = bodies[a.body].read_bytes()
    path = BODIES[a.body]
    headers = headers_for(path)
    procs = Procs(out / "logs")
    try:
        mock = start_mock(procs, out)
        results = []
        for i, tree in enumerate(a.trees):
            port, name = free_port(), f"gw{i}"
            config = out / f"{name}.yaml"
            config.write_text(gateway_config(port, mock, mock, out / f"{name}.db", a.gateway_yaml))
            graph = out / f"callgrind-{name}.out"
            proc = procs.start(name, ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                      f"--callgrind-out-file={graph}",
                                      *serve_cmd(tree.resolve(), config)], cpu=PROXY_CPU)
            if not wait_ready(f"http://127.0.0.1:{port}/health", proc, timeout=180):
                raise SystemExit(f"{tree} did not start under valgrind; see {out}/logs/{name}.log")
            send(port, path, body, headers, a.warmup)
            callgrind_control(proc.pid, "--instr=on")
            send(port, path, body, headers, a.n)
            callgrind_control(proc.pid, "--instr=off")
            procs.stop(name)   # callgrind writes the graph as the process exits
            per = totals(graph) / a.n
            results.append(per)
            print(f"{tree}: {per:,.0f} instructions per request ({a.body}, {a.n} requests)")
            if a.top:
                print("\n".join(top(graph, a.top, a.n)))
        if len(results) > 1:
            print(f"B/A: {results[-1] / results[0]:.3f} of the instructions")
        print(f"call graphs: {out}")
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
