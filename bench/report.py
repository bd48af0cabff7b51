"""The bench's table (stdout and table.md) and the profile summary, from the results dict."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path


NOISY_PCT = 15.0  # other processes' CPU, % of one core, above which a row is flagged
LOAD_SATURATED_PCT = 90.0  # load core (wrk + mock) busier than this: the reference may be held back


# --- report ----------------------------------------------------------------------------------

def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def _ok(good: bool | None) -> str:
    return "-" if good is None else ("ok" if good else "MISS")


def _c1_target(r: dict) -> tuple[str, bool | None]:
    """c=1: the latency each proxy adds to a direct call to the mock, gateway over reference."""
    direct = r["direct"]["p50_us"]
    ref_add = r["ref"]["p50_us"] - direct
    text = f"added p50 <= 1.5x ref's (direct {_ms(direct)} ms, ref +{_ms(ref_add)}"
    if not r.get("gw"):
        return text + ")", None
    gw_add = r["gw"]["p50_us"] - direct
    r["added_p50_ratio"] = ratio = gw_add / ref_add if ref_add > 0 else None
    if ratio is None:
        return text + f", gw +{_ms(gw_add)})", None
    return text + f", gw +{_ms(gw_add)}: {ratio:.2f}x)", ratio <= 1.5


def _row(key: str, r: dict) -> str:
    ref, gw = r["ref"], r.get("gw")
    ratio = gw["rps"] / ref["rps"] if gw and ref["rps"] else None
    if key == "oa_ns_c1":
        target, met = _c1_target(r)
    else:
        target = f">= {r['target']:.2f}x"
        met = None if ratio is None else ratio >= r["target"]
    flags = []
    for t in ("ref", "gw"):
        if r.get(f"{t}_check"):
            flags.append(f"{t} WRONG ANSWER")
            met = False if t == "gw" else met
        if r.get(t) and r[t]["errors"]:
            flags.append(f"{t} {r[t]['errors']} errors")
        if r.get(t) and r[t]["upstream_requests"] < 0.95 * r[t]["requests"]:
            flags.append(f"{t}: only {r[t]['upstream_requests']} of {r[t]['requests']} requests reached the upstream")
        if (t == "ref" and r[t].get("load_core_busy_pct", 0) > LOAD_SATURATED_PCT
                and r[t].get("foreign_cpu_pct", 0) <= NOISY_PCT):
            flags.append(f"load core {r[t]['load_core_busy_pct']:.0f}% busy during ref: ref may be capped, "
                         "gw/ref is an upper bound")
        if r.get(t) and r[t].get("foreign_cpu_pct", 0) > NOISY_PCT:
            flags.append(f"other load {r[t]['foreign_cpu_pct']:.0f}% of a core during {t}")
    title = r["title"] + (" **" + "; ".join(flags) + "**" if flags else "")
    ratio_cell = "n/a" if ratio is None else f"{ratio:.2f}"
    pairs = [g["rps"] / f["rps"] for f, g in zip(ref.get("runs", []), gw.get("runs", []))] if gw else []
    if len(pairs) > 1:
        ratio_cell += f" ({min(pairs):.2f}-{max(pairs):.2f})"
    cells = [title, r["ref_note"], f"{ref['rps']:.0f}", f"{gw['rps']:.0f}" if gw else "n/a", ratio_cell, target, _ok(met),
             _ms(ref["p50_us"]), _ms(gw["p50_us"]) if gw else "-",
             _ms(ref["p99_us"]), _ms(gw["p99_us"]) if gw else "-"]
    return "| " + " | ".join(cells) + " |"


def _slow_rows(slow: dict) -> list[str]:
    lines = ["| slow streams | completed | idle RSS MiB | peak RSS MiB | KiB/stream above idle "
             "| upstream streams open 2 s after clients left | met |", "|---|---:|---:|---:|---:|---:|---|"]
    for t, name in (("ref", "reference proxy"), ("gw", "gateway")):
        s = slow.get(t)
        if not s:
            continue
        n = s["hold"]["n"]
        nproc = s.get("processes", 1)
        met = None
        if t == "gw":  # idle RSS: the target is per process (each worker is a full gateway)
            met = (s["hold"]["completed"] == n and s["per_stream_kib"] <= 40
                   and s["idle_rss_kib"] / nproc <= 80 * 1024
                   and s["open_after_leave"] == 0 and s["open_after_hold"] == 0)
        if nproc > 1:
            name += f" ({nproc} processes, RSS summed)"
        lines.append(f"| {name}, {n} streams | {s['hold']['completed']}/{n} | {s['idle_rss_kib'] / 1024:.1f} | "
                     f"{s['peak_rss_kib'] / 1024:.1f} | {s['per_stream_kib']:.1f} | "
                     f"{s['open_after_leave']} of {s['upstream_started_leave']} (after hold: {s['open_after_hold']})"
                     f" | {_ok(met)} |")
    lines += ["", "slow-stream targets (gateway): all complete; <= 40 KiB RSS per stream above idle; "
              "idle RSS <= 80 MiB; no upstream stream open 2 s after the clients leave"]
    return lines


def table(results: dict, gateway_ok: bool) -> str:
    lines = ["| scenario | reference | ref req/s | gw req/s | gw/ref (range of pairs) | target | met | ref p50 ms | gw p50 ms "
             "| ref p99 ms | gw p99 ms |",
             "|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    lines += [_row(k, r) for k, r in results["scenarios"].items()]
    if results.get("gateway_build"):
        lines += ["", f"gateway build: {results['gateway_build']}"]
    if (results.get("args") or {}).get("vary"):
        lines += ["every request unique (--vary)"]
    args = results.get("args", {})
    if args.get("gateway_workers") or args.get("gateway_cpus", "0") != "0":
        lines += ["", f"gateway: --workers {args.get('gateway_workers') or 1} on cores {args.get('gateway_cpus')} "
                  "(not the one-core setup the targets assume; the reference proxy stays on core 0)"]
    if results.get("slow"):
        lines += [""] + _slow_rows(results["slow"])
    if not gateway_ok:
        lines += ["", "**The gateway was not measured** (not available or did not start): reference-proxy figures only."]
    return "\n".join(lines)


# --- profiles --------------------------------------------------------------------------------

_LINE_NO = re.compile(r":\d+\)$")


def profile_top(raw: Path, n: int = 15) -> dict:
    """Top functions by own and by inclusive samples from py-spy's raw (collapsed-stack) output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    files: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_LINE_NO.sub(")", f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames or frames[-1] in _IDLE:
            continue
        k = int(count)
        total += k
        own[frames[-1]] += k
        files[_source(frames[-1])] += k
        for f in set(frames):
            incl[f] += k
    pct = (lambda c: 100.0 * c / total) if total else (lambda c: 0.0)
    return {"samples": total,
            "own": [(round(pct(c), 1), f) for f, c in own.most_common(n)],
            "inclusive": [(round(pct(c), 1), f) for f, c in incl.most_common(n)],
            "files": {f: round(pct(c), 2) for f, c in files.most_common()}}


# a thread-pool thread waiting for work is not busy, whatever py-spy thinks
_IDLE = {"_worker (concurrent/futures/thread.py)"}


def _source(frame: str) -> str:
    """'fn (aiohttp/web_protocol.py)' -> 'aiohttp/web_protocol.py'."""
    return frame.rpartition("(")[2].rstrip(")").rpartition("site-packages/")[2]


def profile_compare(gw: dict, gw_cpu_us: float, ref: dict, ref_cpu_us: float, n: int = 25) -> str:
    """Own time per source file in microseconds of CPU per request, gateway next to reference."""
    lines = [f"{'gw us/req':>10} {'ref us/req':>10}  source file (own samples)"]
    for f, p in list(gw["files"].items())[:n]:
        r = ref.get("files", {}).get(f)
        lines.append(f"{p * gw_cpu_us / 100:10.1f} {'' if r is None else f'{r * ref_cpu_us / 100:10.1f}':>10}  {f}")
    lines.append(f"{gw_cpu_us:10.1f} {ref_cpu_us:10.1f}  total CPU per request (measured runs)")
    return "\n".join(lines)


def profile_text(key: str, prof: dict) -> str:
    lines = [f"profile {key}: {prof['samples']} samples of the gateway while busy"]
    lines += ["  own %  function"] + [f"  {p:5.1f}  {f}" for p, f in prof["own"]]
    lines += ["  incl % function"] + [f"  {p:5.1f}  {f}" for p, f in prof["inclusive"]]
    return "\n".join(lines)


def smoke_problems(results: dict) -> list[str]:
    """What makes a smoke run fail: the harness or the gateway not working, never a missed target."""
    if not results.get("gateway_measured"):
        return ["the gateway was not measured: " + "; ".join(results.get("notes") or [])]
    out = []
    for key, r in results["scenarios"].items():
        for t in ("direct", "ref", "gw"):
            if r.get(f"{t}_check"):
                out.append(f"{key}: {t} answered wrong: {r[f'{t}_check']}")
            if t in r and (r[t]["errors"] or not r[t]["requests"]):
                out.append(f"{key}: {t}: {r[t]['requests']} requests, {r[t]['errors']} errors")
    for t, s in (results.get("slow") or {}).items():
        if s["hold"]["completed"] != s["hold"]["n"]:
            out.append(f"slow: {t}: {s['hold']['completed']}/{s['hold']['n']} streams completed "
                       f"{s['hold']['errors_sample']}")
    if "gw" not in (results.get("slow") or {"gw": 1}):
        out.append("slow: the gateway did not restart")
    return out
