"""Running the application: one process, or N pre-forked workers sharing one port.

Workers each bind the port with SO_REUSEPORT, so the kernel spreads connections over them; the
parent only supervises. SIGTERM or SIGINT starts a graceful stop: listeners close at once,
in-flight requests (streams included) get `grace` seconds to finish, then they are cancelled.
SIGHUP reloads the configuration file (reload.py); the supervisor forwards it to every worker.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .appkeys import CLIENT_IP, STATE
from .compiled import compiled_modules, stale_modules
from .reload import reload_app

__all__ = ["serve", "tune_malloc", "DEFAULT_GRACE_SECS"]

log = logging.getLogger("p5proxy.server")
DEFAULT_GRACE_SECS = 30.0
AppFactory = Callable[[], web.Application]


class ClientAccessLogger(AbstractAccessLogger):
    """`--access-log` lines with the client's address as the middleware resolved it (the
    X-Forwarded-For client behind a trusted proxy, see p5proxy/forwarded.py)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        client = request.get(CLIENT_IP) or request.remote or "-"
        self.logger.info('%s "%s %s HTTP/%d.%d" %d %d %.3fs "%s"', client, request.method,
                         request.path_qs, request.version.major, request.version.minor,
                         response.status, response.body_length, time,
                         request.headers.get("User-Agent", "-"))


# glibc's malloc returns freed memory at the top of its heap to the system once more than 128 KiB
# is free there, and serves blocks of 128 KiB and up with fresh mmaps (its threshold then moves
# with what is freed). A gateway allocates and frees ~100 KiB buffers per large request (bodies,
# encoded upstream bodies), so under load the heap shrank and grew again all the time: ~7 page
# faults per Claude Code-sized request, 3% of its CPU time (bench/README, eleventh round). Fixed
# thresholds keep up to 4 MiB free at the top and mmap only blocks of 1 MiB and up.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_BYTES, _MMAP_BYTES = 4 << 20, 1 << 20
_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")   # glibc's own settings


def tune_malloc() -> bool:
    """Set glibc's malloc thresholds (above), unless the environment already sets them or the
    C library is not glibc. Whether they were set."""
    if "malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
            k in os.environ for k in _MALLOC_ENV):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):   # not glibc (musl, macOS): their allocators differ
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES) and mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:   # pragma: no cover - uvloop is a dependency on POSIX
        return None
    return uvloop.new_event_loop


async def _run(make_app: AppFactory, host: str, port: int, *, access_log: bool,
               reuse_port: bool, grace: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = make_app()
    state = app[STATE]
    if reuse_port:   # a worker: an admin reload asks the supervisor to reload every worker
        state.supervisor_pid = os.getppid()
    loop.add_signal_handler(signal.SIGHUP,
                            lambda: state.background(reload_app(app, trigger="SIGHUP")))
    runner = web.AppRunner(app,
                           handler_cancellation=True,   # a client that leaves cancels its upstream call
                           # headers must arrive within this long of connecting (or of the last
                           # response on a kept-alive connection): slow-header clients are cut
                           keepalive_timeout=state.config.server.client_read_timeout,
                           shutdown_timeout=grace,
                           access_log=logging.getLogger("aiohttp.access") if access_log else None,
                           access_log_class=ClientAccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_port=reuse_port or None)
    await site.start()
    # Everything built so far (modules, plugins, the app) lives as long as the process: move it
    # out of the collector's view, so full collections triggered by per-request garbage stay
    # cheap. The young generation is collected after 50,000 net allocations (Python's default
    # is 700): a request's objects (a Claude Code body parses into ~3,000) are freed by their
    # reference counts long before that, so the collector no longer walks them while they are
    # in use (it took 4% of the CPU time of 120 KB requests at 7,000; cycles wait a little
    # longer).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    tune_malloc()
    try:
        await stop.wait()
        log.info("stopping: in-flight requests get up to %gs", grace)
    finally:
        await runner.cleanup()


def _serve_one(make_app: AppFactory, host: str, port: int, *, access_log: bool,
               reuse_port: bool, grace: float) -> None:
    # until the application exists and installs its own handler, a SIGHUP is ignored (its
    # default action would end the process; a worker inherits the supervisor's forwarder)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_run(make_app, host, port, access_log=access_log, reuse_port=reuse_port,
                        grace=grace))


def _serve_worker(make_app: AppFactory, host: str, port: int, *, access_log: bool,
                  reuse_port: bool, grace: float) -> None:
    """A worker process: multiprocessing ends it with os._exit(), which skips atexit and with
    it logging.shutdown(), so the log lines still waiting in the batching handler (the last
    requests' access lines) are written here."""
    try:
        _serve_one(make_app, host, port, access_log=access_log, reuse_port=reuse_port,
                   grace=grace)
    finally:
        logging.shutdown()


def _say_how_compiled() -> None:
    compiled, stale = compiled_modules(), stale_modules()
    if stale:
        log.warning("compiled modules older than their source run instead of it: %s; build "
                    "again (pip install -e .) or remove their .so files", ", ".join(stale))
    log.info("%s", f"{len(compiled)} hot-path modules compiled" if compiled else
             "pure Python (the compiled build was not made: see setup.py)")


def serve(make_app: AppFactory, host: str, port: int, *, workers: int = 1,
          access_log: bool = False, grace: float = DEFAULT_GRACE_SECS) -> int:
    """Serve until SIGTERM/SIGINT. `make_app` runs in each worker (after the fork), so every
    worker has its own event loop, upstream session and plugin objects."""
    _say_how_compiled()
    if workers <= 1:
        _serve_one(make_app, host, port, access_log=access_log, reuse_port=False, grace=grace)
        return 0
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_serve_worker, args=(make_app, host, port),
                         kwargs={"access_log": access_log, "reuse_port": True, "grace": grace},
                         name=f"p5proxy-worker-{i}") for i in range(workers)]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    def forward_hup(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGHUP)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, forward_hup)
    try:
        for proc in procs:
            proc.start()
        log.info("%d workers: %s", workers, ", ".join(str(p.pid) for p in procs))
        # A worker that dies on its own (not asked to stop) takes the service down with it:
        # supervisors (systemd, Docker) restart the whole gateway, which is easier to reason about.
        while any(p.is_alive() for p in procs):
            for proc in procs:
                proc.join(timeout=0.5)
                if not stopping and proc.exitcode not in (None, 0):
                    log.error("worker %s exited with %s; stopping the others", proc.pid,
                              proc.exitcode)
                    forward(signal.SIGTERM, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if all(p.exitcode == 0 for p in procs) else 1
