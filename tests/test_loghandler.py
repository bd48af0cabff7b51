"""The commands' log output (p5proxy/loghandler.py), in a fresh interpreter each: it configures
root logging, which pytest's own capture must not see changed."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) [\w.]+: .+$")


def run(script: str) -> list[str]:
    code = "from p5proxy.loghandler import configure, direct\nimport asyncio, logging, os\n"
    proc = subprocess.run([sys.executable, "-c", code + textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr.splitlines()


def test_direct_path_is_taken_under_intermediate_loggers_and_matches_the_record_path() -> None:
    lines = run("""
        configure("INFO")
        logging.getLogger("p5proxy")   # an intermediate logger, as the gateway's modules create
        access = logging.getLogger("p5proxy.access")
        handler = direct(access)
        assert handler is not None, "the fast path must survive intermediate loggers"
        handler.write_later(lambda item, formatter: formatter.stamp(1700000000.5)
                            + f" INFO p5proxy.access: {item}", "a=1")
        access.info("a=1")
        """)
    assert len(lines) == 2
    assert all(LINE.match(line) for line in lines), lines
    assert lines[0].split(" ", 2)[2] == lines[1].split(" ", 2)[2] == "INFO p5proxy.access: a=1"
    assert lines[0].split(" ")[1].endswith(",500")


def test_direct_path_steps_aside_for_any_other_handler_or_filter() -> None:
    run("""
        configure("INFO")
        access = logging.getLogger("p5proxy.access")
        parent = logging.getLogger("p5proxy")
        parent.addHandler(logging.NullHandler())
        assert direct(access) is None
        parent.handlers.clear()
        parent.addFilter(lambda record: True)
        assert direct(access) is None
        parent.filters.clear()
        parent.propagate = False
        assert direct(access) is None
        parent.propagate = True
        logging.getLogger().handlers[0].setFormatter(logging.Formatter("%(message)s"))
        assert direct(access) is None
        """)


def test_lines_of_one_loop_are_written_together_and_in_order() -> None:
    lines = run("""
        configure("INFO")
        writes = []
        handler = logging.getLogger().handlers[0]
        stream = handler.stream
        class Counting:
            def write(self, text):
                writes.append(text.count(chr(10)))
                stream.write(text)
            def flush(self):
                stream.flush()
        handler.stream = Counting()
        async def main():
            for i in range(5):
                logging.getLogger("p5proxy.x").info("line %d", i)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            logging.getLogger("p5proxy.x").warning("later")
            await asyncio.sleep(0.3)   # past WRITE_EVERY: written by then
            assert writes == [6], writes
            for i in range(600):   # WRITE_LINES do not wait for the timer
                logging.getLogger("p5proxy.y").info("bulk %d", i)
            assert writes == [6, 256, 256], writes
            await asyncio.sleep(0.3)
        asyncio.run(main())
        logging.getLogger("p5proxy.x").info("no loop")
        handler.stream = stream
        print(writes, file=stream)
        """)
    messages = [line.split(": ", 1)[1] for line in lines[:-1]]
    assert messages == ["line 0", "line 1", "line 2", "line 3", "line 4", "later",
                        *[f"bulk {i}" for i in range(600)], "no loop"]
    assert lines[-1] == "[6, 256, 256, 88, 1]"


def test_lines_left_by_an_ended_loop_go_out_with_the_next_loops_lines() -> None:
    lines = run("""
        configure("INFO")
        async def first():
            logging.getLogger("p5proxy.x").info("from the first loop")
        async def second():
            logging.getLogger("p5proxy.x").info("from the second loop")
            await asyncio.sleep(0.3)
            print("checkpoint", file=logging.getLogger().handlers[0].stream, flush=True)
        asyncio.run(first())
        asyncio.run(second())
        os._exit(0)   # no exit-time flush: only what the second loop wrote counts
        """)
    assert [line.split(": ", 1)[-1] for line in lines] == [
        "from the first loop", "from the second loop", "checkpoint"]


def test_lines_left_to_format_are_formatted_when_written_in_order() -> None:
    lines = run("""
        configure("INFO")
        handler = logging.getLogger().handlers[0]
        made = []
        def make(item, formatter):
            made.append(item)
            if item == "bad":
                raise ValueError("a formatting bug")
            return formatter.stamp(1700000000.25) + f" INFO p5proxy.access: n={item}"
        async def main():
            logging.getLogger("p5proxy.x").info("before")
            handler.write_later(make, 1)
            handler.write_later(make, "bad")
            handler.write_later(make, 2)
            logging.getLogger("p5proxy.x").info("after")
            assert made == [], "formatted before the batch was written"
            await asyncio.sleep(0.3)
            assert made == [1, "bad", 2], made
        asyncio.run(main())
        """)
    messages = [line.split(": ", 1)[1] for line in lines if LINE.match(line)]
    # the failing line is reported (with its traceback) and left out; the rest keep their order
    assert [m for m in messages if not m.startswith("formatting")] == [
        "before", "n=1", "n=2", "after"], lines
    assert any("formatting a log line failed" in line for line in lines)
    assert [line for line in lines if "n=1" in line][0].split(" ")[1].endswith(",250")
