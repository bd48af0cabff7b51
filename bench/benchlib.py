"""Helpers for bench/run.py: the processes it starts, RSS and CPU accounting, HTTP, answer checks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OA_HEADERS = {"Authorization": "Bearer x"}
AN_HEADERS = {"x-api-key": "x", "anthropic-version": "2023-06-01"}


# --- processes -------------------------------------------------------------------------------

class Procs:
    """The processes this run started; each is stopped by its own PID, never by name."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], *, cpu: str) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "ab")
        proc = subprocess.Popen(["taskset", "-c", cpu, *cmd], stdout=log, stderr=subprocess.STDOUT,
                                cwd=ROOT, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        kids = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for pid in kids:  # workers the gateway forked, if its parent left any behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for t in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
            except OSError:
                continue
            for k in kids:
                out.append(int(k))
                todo.append(int(k))
    return out


def rss_kib(pid: int) -> int:
    """VmRSS of the process and its descendants (workers), from /proc/PID/status."""
    total = 0
    for p in [pid, *_descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- HTTP helpers ----------------------------------------------------------------------------

def http(url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})},
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode()


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if http(url, timeout=1.0)[0] == 200:
            return True
        time.sleep(0.2)
    return False


def mock_stats(port: int) -> dict:
    status, body = http(f"http://127.0.0.1:{port}/stats", timeout=5)
    return json.loads(body) if status == 200 else {}


# --- response checks: a scenario only counts if the answer is right ----------------------------

def _sse_data(body: bytes) -> list[dict]:
    out = []
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            try:
                out.append(json.loads(line[5:]))
            except ValueError:
                return [{"_bad": line[:80]}]
    return out


def check_openai_json(body: bytes) -> str:
    try:
        d = json.loads(body)
        return "" if d["choices"][0]["message"]["content"] else "empty content"
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"not an OpenAI completion ({exc!r}): {body[:120]!r}"


def check_openai_sse(body: bytes) -> str:
    if b"data: [DONE]" not in body:
        return f"no [DONE]: {body[-120:]!r}"
    events = _sse_data(body)
    text = "".join((c.get("delta") or {}).get("content") or "" for e in events for c in e.get("choices") or [])
    usage = [e["usage"] for e in events if e.get("usage")]
    if not text:
        return "no content deltas"
    return "" if usage and usage[-1].get("completion_tokens") else "no usage chunk"


def check_anthropic_json(body: bytes) -> str:
    try:
        d = json.loads(body)
        ok = d["type"] == "message" and d["content"][0]["text"] and d["usage"]["output_tokens"]
        return "" if ok else "incomplete message"
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"not an Anthropic message ({exc!r}): {body[:120]!r}"


def check_anthropic_sse(body: bytes) -> str:
    for ev in (b"event: message_start", b"event: content_block_delta", b"event: message_delta",
               b"event: message_stop"):
        if ev not in body:
            return f"missing {ev.decode()}: {body[-120:]!r}"
    deltas = [e for e in _sse_data(body) if e.get("type") == "message_delta"]
    return "" if deltas and deltas[-1].get("usage", {}).get("output_tokens") else "no usage in message_delta"


# --- CPU accounting: how much of the machine other people's processes took ---------------------

_TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds spent busy on all cores since boot (/proc/stat)."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def cores_busy() -> dict[int, tuple[int, int]]:
    """Per core: (busy ticks, total ticks) since boot."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *f = line.split()
            v = [int(x) for x in f[:8]]
            out[int(name[3:])] = (sum(v) - v[3] - v[4], sum(v))
    return out


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process, in seconds; 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """Busy CPU on the machine minus what this run's own processes used, during one measurement.

    A figure well above zero means something else (a test suite, a build) ran meanwhile and the
    measurement is noisier than usual.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = [p for pid in pids for p in (pid, *_descendants(pid))]
        self.t0 = time.monotonic()
        self.busy0 = machine_busy_s()
        self.ours0 = self._ours()
        self.cores0 = cores_busy()

    def _ours(self) -> float:
        t = os.times()
        return sum(proc_cpu_s(p) for p in self.pids) + t.user + t.system + t.children_user + t.children_system

    def foreign_pct(self) -> float:
        """Other processes' CPU as a percentage of one core over the measured interval."""
        wall = time.monotonic() - self.t0
        foreign = (machine_busy_s() - self.busy0) - (self._ours() - self.ours0)
        return max(0.0, 100.0 * foreign / wall) if wall > 0 else 0.0

    def core_pct(self) -> dict[int, float]:
        """How busy each core was over the measured interval, in %."""
        now = cores_busy()
        return {c: round(100.0 * (b - self.cores0[c][0]) / max(1, t - self.cores0[c][1]), 1)
                for c, (b, t) in now.items() if c in self.cores0}
