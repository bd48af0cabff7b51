"""Run the p5proxy benchmark end to end and print a table of gateway / reference-proxy ratios.

    .venv/bin/python bench/run.py            # full run, about 6 minutes
    .venv/bin/python bench/run.py --quick    # smoke run, under 2 minutes

Starts the mock upstreams (core 1), the reference proxy and the gateway (core 0, only one of them
under load at any time), drives each scenario with wrk (core 1) or the slow-stream client, and
writes everything to bench/results/<timestamp>/. See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import claude_code_body  # noqa: E402
import report  # noqa: E402
import slow_streams  # noqa: E402
from benchlib import (AN_HEADERS, OA_HEADERS, CpuMeter, Procs, check_anthropic_json,  # noqa: E402
                      _descendants, check_anthropic_sse, check_openai_json, check_openai_sse, free_port,
                      http, mock_stats, proc_cpu_s, rss_kib, wait_ready)

LUA = HERE / "post.lua"
PROXY_CPU = "0"
LOAD_CPU = 1


# --- bodies and scenarios --------------------------------------------------------------------

def write_bodies(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    chat = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in twenty words."}]
    usage = {"stream": True, "stream_options": {"include_usage": True}}
    an = {"max_tokens": 256, "system": "You are a helpful assistant.",
          "messages": [{"role": "user", "content": "Say hello in twenty words."}]}
    bodies = {
        "oa_ns": {"model": "gpt-bench", "messages": chat, "max_tokens": 256},
        "oa_stream": {"model": "gpt-bench", "messages": chat, "max_tokens": 256, **usage},
        "an_ns": {"model": "claude-bench", **an},
        "an_stream": {"model": "claude-bench", **an, "stream": True},
        "cc": claude_code_body.build(model="claude-bench"),
        "slow": {"model": "gpt-slow", "messages": chat, "max_tokens": 256, **usage},
        "slow_ns": {"model": "gpt-slow", "messages": chat, "max_tokens": 256},
    }
    paths = {}
    for name, obj in bodies.items():
        paths[name] = d / f"{name}.json"
        paths[name].write_bytes(json.dumps(obj, separators=(",", ":")).encode())
    return paths


@dataclass
class Req:
    path: str
    body: str           # key into the bodies dict
    headers: dict[str, str]
    check: object       # callable(bytes) -> error string


@dataclass
class Scenario:
    key: str
    title: str
    conc: int
    gw: Req
    ref: Req
    ref_note: str
    target: float | None     # minimum gateway/reference requests-per-second ratio


def scenarios() -> list[Scenario]:
    oa_ns = Req("/v1/chat/completions", "oa_ns", OA_HEADERS, check_openai_json)
    oa_st = Req("/v1/chat/completions", "oa_stream", OA_HEADERS, check_openai_sse)
    an_ns = Req("/v1/messages", "an_ns", AN_HEADERS, check_anthropic_json)
    an_st = Req("/v1/messages", "an_stream", AN_HEADERS, check_anthropic_sse)
    cc = Req("/v1/messages", "cc", AN_HEADERS, check_anthropic_sse)
    same = "same request"
    passthru = "Anthropic->Anthropic pass-through (ref cannot translate)"
    return [
        Scenario("oa_ns_c1", "OpenAI->OpenAI non-stream, c=1", 1, oa_ns, oa_ns, same, None),
        Scenario("oa_ns_c64", "OpenAI->OpenAI non-stream, c=64", 64, oa_ns, oa_ns, same, 0.70),
        Scenario("oa_stream_c64", "OpenAI stream 20 chunks + usage, c=64", 64, oa_st, oa_st, same, 0.60),
        Scenario("an2oa_ns_c64", "Anthropic->OpenAI non-stream, c=64", 64, an_ns, an_ns, passthru, 0.60),
        Scenario("an2oa_stream_c64", "Anthropic->OpenAI stream, c=64", 64, an_st, an_st, passthru, 0.50),
        Scenario("cc_120k_c16", "Claude Code 120 KB Anthropic->OpenAI stream, c=16", 16, cc, cc,
                 "same body, Anthropic->Anthropic pass-through", 0.50),
    ]


# --- wrk -------------------------------------------------------------------------------------

def run_wrk(url: str, body: Path, headers: dict[str, str], *, conc: int, duration: int) -> dict:
    env = dict(os.environ, BENCH_BODY=str(body), BENCH_HEADERS="|".join(f"{k}: {v}" for k, v in headers.items()))
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{duration}s", "--timeout", "10s", "-s", str(LUA), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            r = json.loads(line[len("BENCH_JSON "):])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            r["errors"] = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors",
                                             "status_errors", "timeouts"))
            return r
    raise RuntimeError(f"wrk gave no summary: {out.stdout[-500:]} {out.stderr[-500:]}")


def merge(runs: list[dict]) -> dict:
    """Requests/s over all repeats; latency percentiles as the median of the repeats."""
    def med(k: str) -> float:
        v = sorted(r[k] for r in runs)
        return v[len(v) // 2]
    reqs = sum(r["requests"] for r in runs)
    secs = sum(r["duration_us"] for r in runs) / 1e6
    return {"rps": reqs / secs, "requests": reqs, "p50_us": med("p50_us"), "p90_us": med("p90_us"),
            "p99_us": med("p99_us"), "cpu_us_per_req": med("cpu_us_per_req"), "errors": sum(r["errors"] for r in runs),
            "foreign_cpu_pct": max(r.get("foreign_cpu_pct", 0.0) for r in runs),
            "load_core_busy_pct": max(r["core_busy_pct"].get(LOAD_CPU, 0.0) for r in runs),
            "upstream_requests": sum(r.get("upstream_requests", 0) for r in runs), "runs": runs}


def gateway_config(port: int, mock: int, slow_mock: int, db: Path, extra: str = "") -> str:
    """The gateway's config for the bench: the mocks as providers, the bench's model names."""
    text = f"""# generated by bench/run.py
server: {{host: 127.0.0.1, port: {port}}}
# every request must reach the mock: the benchmark measures the proxy, not its cache
cache: {{enabled: false}}
# the request log stays on (it is on by default), written next to the results
logs: {{database_url: "sqlite:///{db}"}}
providers:
  mock: {{type: openai, base_url: "http://127.0.0.1:{mock}/v1", api_key: x}}
  mockanthropic: {{type: anthropic, base_url: "http://127.0.0.1:{mock}", api_key: x}}
  mockslow: {{type: openai, base_url: "http://127.0.0.1:{slow_mock}/v1", api_key: x}}
models:
  gpt-bench: {{provider: mock, model: gpt-bench}}
  claude-bench: {{provider: mock, model: gpt-bench}}
  gpt-slow: {{provider: mockslow, model: gpt-bench}}
"""
    if extra:   # later keys win: an A/B of one setting
        text += "# extra YAML (--gateway-yaml)\n" + extra + "\n"
    return text


# --- the bench -------------------------------------------------------------------------------

@dataclass
class Bench:
    args: argparse.Namespace
    out: Path
    procs: Procs
    bodies: dict[str, Path] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    gateway_ok: bool = False

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def url(self, target: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[target]}{path}"

    # processes
    def start_mocks(self) -> None:
        py = sys.executable
        for name, chunks, delay in (("mock", self.args.chunks, 0), ("slowmock", self.args.slow_chunks, 1000)):
            self.ports[name] = free_port()
            proc = self.procs.start(name, [py, str(HERE / "mock_upstream.py"), "--port", str(self.ports[name]),
                                           "--chunks", str(chunks), "--delay-ms", str(delay)], cpu=str(LOAD_CPU))
            if not wait_ready(self.url(name, "/health"), proc):
                raise SystemExit(f"{name} did not start; see {self.out}/logs/{name}.log")

    def start_ref(self, name: str, upstream: str) -> subprocess.Popen:
        self.ports[name] = free_port()
        proc = self.procs.start(name, [sys.executable, str(HERE / "ref_proxy.py"),
                                       f"http://127.0.0.1:{self.ports[upstream]}", "--port", str(self.ports[name])],
                                cpu=PROXY_CPU)
        # GET /health goes through the reference proxy to the mock
        if not wait_ready(self.url(name, "/health"), proc) and proc.poll() is not None:
            raise SystemExit(f"{name} did not start; see {self.out}/logs/{name}.log")
        return proc

    def write_config(self) -> Path:
        path = self.out / "gateway.yaml"
        path.write_text(gateway_config(self.ports["gw"], self.ports["mock"], self.ports["slowmock"],
                                       self.out.resolve() / "requests.db", self.args.gateway_yaml))
        return path

    def start_gateway(self) -> bool:
        if "gw" not in self.ports:
            self.ports["gw"] = free_port()
        cfg = self.write_config()
        cmd = [sys.executable, "-m", "p5proxy", "serve", "--config", str(cfg), "--host", "127.0.0.1",
               "--port", str(self.ports["gw"])]
        if self.args.gateway_workers:
            cmd += ["--workers", str(self.args.gateway_workers)]
        proc = self.procs.start("gw", cmd, cpu=self.args.gateway_cpus)
        if wait_ready(self.url("gw", "/health"), proc, timeout=30):
            return True
        tail = (self.out / "logs" / "gw.log").read_text(errors="replace")[-600:]
        self.notes.append(f"gateway did not answer GET /health: {tail.strip()[-300:]}")
        self.procs.stop("gw")
        return False

    # measurements
    def sanity(self, target: str, req: Req) -> str:
        status, body = http(self.url(target, req.path), self.bodies[req.body].read_bytes(), req.headers, timeout=30)
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        return req.check(body)  # type: ignore[operator]

    def measure(self, target: str, req: Req, conc: int, duration: int) -> dict:
        before = mock_stats(self.ports["mock"]).get("requests", 0)
        meter = CpuMeter([p.pid for p in self.procs.procs.values()])
        own = self.target_pids(target)
        cpu0 = sum(proc_cpu_s(p) for p in own)
        r = run_wrk(self.url(target, req.path), self.bodies[req.body], req.headers, conc=conc, duration=duration)
        # CPU per request is steadier than requests/s when others share the machine: use it to
        # compare two versions of the gateway (requests/s stays the figure the targets use)
        r["cpu_us_per_req"] = round((sum(proc_cpu_s(p) for p in own) - cpu0) * 1e6 / max(1, r["requests"]), 1)
        r["foreign_cpu_pct"] = round(meter.foreign_pct(), 1)
        r["core_busy_pct"] = meter.core_pct()
        time.sleep(0.2)
        r["upstream_requests"] = mock_stats(self.ports["mock"]).get("requests", 0) - before
        return r

    def target_pids(self, target: str) -> list[int]:
        proc = self.procs.procs.get(target)
        return [] if proc is None else [proc.pid, *_descendants(proc.pid)]

    def wait_quiet(self, limit: float = 60.0) -> None:
        """Wait (at most `limit` s) for a second during which other processes stay under --max-noise."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            meter = CpuMeter([p.pid for p in self.procs.procs.values()])
            time.sleep(1.0)
            if meter.foreign_pct() <= self.args.max_noise:
                return

    def measure_quiet(self, target: str, req: Req, conc: int) -> dict:
        """Measure; while other processes took more than --max-noise % of a core, wait and measure
        again (at most --retries times) and keep the quietest run."""
        best = self.measure(target, req, conc, self.args.duration)
        for _ in range(self.args.retries):
            if best["foreign_cpu_pct"] <= self.args.max_noise:
                break
            self.log(f"    other load {best['foreign_cpu_pct']:.0f}% of a core: measuring again")
            self.wait_quiet()
            r = self.measure(target, req, conc, self.args.duration)
            best = min(best, r, key=lambda x: x["foreign_cpu_pct"])
        return best

    def scenario(self, sc: Scenario) -> dict:
        a = self.args
        targets = {"ref": sc.ref, "gw": sc.gw} if self.gateway_ok else {"ref": sc.ref}
        if sc.key == "oa_ns_c1":
            targets = {"direct": sc.ref, **targets}
        res: dict = {"title": sc.title, "conc": sc.conc, "ref_note": sc.ref_note, "target": sc.target}
        for t, req in targets.items():
            port_name = "mock" if t == "direct" else t
            res[f"{t}_check"] = self.sanity(port_name, req)
            if a.warmup > 0:
                run_wrk(self.url(port_name, req.path), self.bodies[req.body], req.headers, conc=sc.conc,
                        duration=a.warmup)
        runs: dict[str, list[dict]] = {t: [] for t in targets}
        names = list(targets)
        for i in range(a.repeat):
            for t in (names if i % 2 == 0 else names[::-1]):
                port_name = "mock" if t == "direct" else t
                self.log(f"  {sc.key}: {t} run {i + 1}/{a.repeat}")
                r = self.measure_quiet(port_name, targets[t], sc.conc)
                self.log(f"    {r['rps']:.0f} req/s, {r['cpu_us_per_req']:.0f} us CPU/request")
                runs[t].append(r)
        for t, rs in runs.items():
            res[t] = merge(rs)
        if a.profile and "gw" in targets:
            res["profile"] = self.profile(sc.key, "gw", targets["gw"], sc.conc)
            res["profile_ref"] = self.profile(sc.key, "ref", targets["ref"], sc.conc)
        return res

    def profile(self, key: str, target: str, req: Req, conc: int) -> dict:
        """One extra, unmeasured run of `target` under py-spy (sampling from core 1). Blocking
        mode (each sample pauses the process, which slows it but keeps the stacks exact), and only
        the thread holding the GIL: a thread waiting for it is not using the core."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        raw = self.out / f"profile-{key}-{target}.txt"
        self.log(f"  {key}: {target} under py-spy -> {raw.name}")
        with open(self.out / "logs" / "py-spy.log", "ab") as log:
            proc = subprocess.Popen([spy, "record", "--pid", str(self.procs.procs[target].pid), "--subprocesses",
                                     "--duration", str(self.args.duration), "--rate", "400", "--gil", "--format", "raw",
                                     *(["--native"] if self.args.profile_native else []),
                                     "-o", str(raw)], stdout=log, stderr=log)
            run_wrk(self.url(target, req.path), self.bodies[req.body], req.headers, conc=conc,
                    duration=self.args.duration)
            try:
                proc.wait(self.args.duration + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if not raw.exists():
            return {"samples": 0, "own": [], "inclusive": [], "error": "py-spy wrote nothing; see logs/py-spy.log"}
        prof = report.profile_top(raw)
        (self.out / f"profile-{key}-{target}-top.txt").write_text(report.profile_text(f"{key} {target}", prof) + "\n")
        return prof

    async def slow_one(self, target: str, path: str, body_key: str) -> dict:
        a = self.args
        pid = self.procs.procs[target].pid
        body = self.bodies[body_key].read_bytes()
        headers = {"Content-Type": "application/json", **OA_HEADERS}
        for _ in range(20):  # warm the code path with instant non-stream answers
            await asyncio.to_thread(http, self.url(target, path), self.bodies["slow_ns"].read_bytes(), OA_HEADERS)
        await asyncio.sleep(0.5)
        idle = rss_kib(pid)
        nproc = 1 + len(_descendants(pid))
        peak = idle

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_kib(pid))
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        self.log(f"  slow: {target}: {a.slow_n} streams held ~{a.slow_chunks} s")
        hold = await slow_streams.hold(self.url(target, path), body, n=a.slow_n, headers=headers)
        sampler.cancel()
        await asyncio.sleep(2)
        after_hold = mock_stats(self.ports["slowmock"])
        rss_after = rss_kib(pid)
        self.log(f"  slow: {target}: {a.slow_n} streams, clients leave after {a.leave_stay} s")
        before = mock_stats(self.ports["slowmock"])
        left = await slow_streams.leave(self.url(target, path), body, n=a.slow_n, headers=headers,
                                        stay=a.leave_stay)
        await asyncio.sleep(2)
        after = mock_stats(self.ports["slowmock"])
        return {"hold": hold, "leave": left, "processes": nproc, "idle_rss_kib": idle, "peak_rss_kib": peak,
                "rss_after_kib": rss_after, "per_stream_kib": (peak - idle) / a.slow_n,
                "open_after_hold": after_hold.get("streams_open"),
                "open_after_leave": after.get("streams_open"),
                "upstream_started_leave": after.get("streams_started", 0) - before.get("streams_started", 0),
                "upstream_aborted_leave": after.get("streams_aborted", 0) - before.get("streams_aborted", 0)}

    def slow(self) -> dict:
        """Fresh processes, so that idle and per-stream RSS do not depend on earlier scenarios."""
        res: dict = {}
        self.procs.stop("ref")
        self.start_ref("refslow", "slowmock")
        res["ref"] = asyncio.run(self.slow_one("refslow", "/v1/chat/completions", "slow"))
        self.procs.stop("refslow")
        if self.gateway_ok:
            self.procs.stop("gw")
            if self.start_gateway():
                res["gw"] = asyncio.run(self.slow_one("gw", "/v1/chat/completions", "slow"))
        return res


# --- main ------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="p5proxy benchmark: gateway vs reference proxy")
    p.add_argument("--quick", action="store_true", help="smoke run: short durations, fewer slow streams")
    p.add_argument("--smoke", action="store_true",
                   help="CI smoke run (~35 s): tiny durations; exit 1 unless the gateway ran and answered right")
    p.add_argument("--duration", type=int, help="seconds per measurement (default 5, quick 2)")
    p.add_argument("--warmup", type=int, help="seconds of warm-up per target and scenario (default 2, quick 1)")
    p.add_argument("--repeat", type=int, help="measurements per target, alternating order (default 4, quick 1)")
    p.add_argument("--slow-n", type=int, help="concurrent slow streams (default 1000, quick 300)")
    p.add_argument("--slow-chunks", type=int, help="chunks of a slow stream, one per second (default 20, quick 4)")
    p.add_argument("--leave-stay", type=float, default=None, help="seconds the leaving clients stay (default 3)")
    p.add_argument("--max-noise", type=float, default=report.NOISY_PCT,
                   help="%% of a core other processes may use during a measurement before it is redone")
    p.add_argument("--retries", type=int, help="re-measurements of a noisy run (default 2, quick 0)")
    p.add_argument("--chunks", type=int, default=20, help="content chunks per fast stream (default 20)")
    p.add_argument("--only", default="", help="comma-separated scenario keys (and/or 'slow') to run")
    p.add_argument("--no-gateway", action="store_true", help="measure the reference proxy only")
    p.add_argument("--gateway-workers", type=int, default=0, help="pass --workers N to p5proxy serve")
    p.add_argument("--gateway-cpus", default=PROXY_CPU, help="taskset CPU list for the gateway (default 0)")
    p.add_argument("--gateway-yaml", default="",
                   help="YAML appended to the generated gateway config (A/B of a setting)")
    p.add_argument("--profile", action="store_true",
                   help="after each gateway measurement, one more run under py-spy; top functions to results/")
    p.add_argument("--profile-native", action="store_true",
                   help="with --profile: py-spy --native, which also shows C frames (compiled modules, orjson)")
    p.add_argument("--vary", action="store_true",
                   help="make every request unique (a number in its first message): with --gateway-yaml "
                        "'cache: {enabled: true}', the cost of the default config's cache on a miss")
    p.add_argument("--report", metavar="RESULTS_JSON", help="print the table of an earlier run and exit")
    a = p.parse_args(argv)
    if a.smoke:
        a.quick = True
        a.duration, a.warmup = a.duration or 1, a.warmup if a.warmup is not None else 0
        a.slow_n, a.slow_chunks = a.slow_n or 50, a.slow_chunks or 2
        a.leave_stay = a.leave_stay if a.leave_stay is not None else 1.0
    q = a.quick
    a.duration = a.duration or (2 if q else 5)
    a.warmup = a.warmup if a.warmup is not None else (1 if q else 2)
    a.repeat = a.repeat or (1 if q else 4)
    a.retries = a.retries if a.retries is not None else (0 if q else 2)
    a.slow_n = a.slow_n or (300 if q else 1000)
    a.slow_chunks = a.slow_chunks or (4 if q else 20)
    a.leave_stay = a.leave_stay if a.leave_stay is not None else (2.0 if q else 3.0)
    return a


def gateway_build() -> str:
    """How the gateway that `python -m p5proxy` runs was built (setup.py): compiled or not."""
    probe = subprocess.run([sys.executable, "-c", "from p5proxy.compiled import *; "
                            "print(len(compiled_modules()), ','.join(stale_modules()))"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return "unknown (p5proxy does not import)"
    count, _, stale = probe.stdout.strip().partition(" ")
    build = f"{count} hot-path modules compiled" if count != "0" else "pure Python"
    return build + (f" (STALE, older than their source: {stale})" if stale else "")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.report:
        res = json.loads(Path(a.report).read_text())
        print(report.table(res, res.get("gateway_measured", False)))
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    if a.vary:
        os.environ["BENCH_VARY"] = "1"  # read by post.lua in every wrk run
    slow_streams.raise_nofile()  # inherited by every process started below
    os.sched_setaffinity(0, {LOAD_CPU})  # this driver, wrk and the slow-stream client share core 1 with the mock
    out = HERE / "results" / time.strftime("%Y%m%d-%H%M%S")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    latest = HERE / "results" / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(out.name)
    procs = Procs(out / "logs")
    b = Bench(a, out, procs)
    b.bodies = write_bodies(out / "bodies")
    only = {s for s in a.only.split(",") if s}
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(a), "scenarios": {},
                     "gateway_build": gateway_build()}
    t0 = time.monotonic()
    try:
        b.start_mocks()
        b.start_ref("ref", "mock")
        b.gateway_ok = not a.no_gateway and b.start_gateway()
        if b.gateway_ok:
            b.sanity("gw", Req("/v1/chat/completions", "oa_ns", OA_HEADERS, check_openai_json))
            time.sleep(0.5)
            results["gateway_idle_rss_kib"] = rss_kib(procs.procs["gw"].pid)
        for sc in scenarios():
            if only and sc.key not in only:
                continue
            b.log(f"scenario {sc.key}: {sc.title}")
            results["scenarios"][sc.key] = b.scenario(sc)
        if not only or "slow" in only:
            b.log("scenario slow: concurrent slow streams")
            results["slow"] = b.slow()
    finally:
        procs.stop_all()
    results["gateway_measured"] = b.gateway_ok
    results["notes"] = b.notes
    results["wall_s"] = round(time.monotonic() - t0, 1)
    text = report.table(results, b.gateway_ok)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "table.md").write_text(text + "\n")
    print(text)
    for key, r in results["scenarios"].items():
        if r.get("profile", {}).get("samples"):
            print("\n" + report.profile_text(key, r["profile"]))
            if r.get("profile_ref", {}).get("samples"):
                compare = report.profile_compare(r["profile"], r["gw"]["cpu_us_per_req"],
                                                 r["profile_ref"], r["ref"]["cpu_us_per_req"])
                (out / f"profile-{key}-compare.txt").write_text(compare + "\n")
                print("\n" + compare)
    for n in b.notes:
        print(f"note: {n}")
    print(f"\nresults: {out} ({results['wall_s']} s)")
    if a.smoke:
        problems = report.smoke_problems(results)
        for problem in problems:
            print(f"smoke: {problem}")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
