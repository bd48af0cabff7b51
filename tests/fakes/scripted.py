"""A scripted model for agent round trips: it asks for the first shell-like tool it finds in
the request, then answers from the tool result. Works for both wire formats.

Standalone, for trying real clients (Claude Code) by hand:
    python -m tests.fakes.scripted --format openai --port 18300
"""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web

from .anthropic_upstream import FakeAnthropic
from .openai_upstream import FakeOpenAI
from .replies import Reply

__all__ = ["agent_reply", "PROOF_COMMAND", "PROOF_TEXT"]

PROOF_TEXT = "p5proxy-round-trip-ok"
PROOF_COMMAND = f"echo {PROOF_TEXT} > proof.txt && cat proof.txt"


def _tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        names.append(str(fn.get("name", "")))
    return names


def _last_tool_result(body: dict[str, Any]) -> str | None:
    """The text of a tool result in the last message, in either format."""
    messages = body.get("messages") or []
    if not messages:
        return None
    last = messages[-1]
    if last.get("role") == "tool":
        return str(last.get("content"))
    content = last.get("content")
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                inner = block.get("content")
                if isinstance(inner, list):
                    return " ".join(str(b.get("text", "")) for b in inner if isinstance(b, dict))
                return str(inner)
    return None


def agent_reply(body: dict[str, Any]) -> Reply:
    result = _last_tool_result(body)
    if result is not None:
        return Reply(text=f"The command printed: {result.strip()}")
    names = _tool_names(body)
    shell = next((n for n in names if n.lower() in ("bash", "shell", "run_command")), None)
    if shell is None:
        return Reply(text="Hello from the scripted model.")
    return Reply(text="I will run it.", tool_calls=[(shell, {"command": PROOF_COMMAND,
                                                             "description": "write proof"})])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", choices=("openai", "anthropic"), default="openai")
    parser.add_argument("--port", type=int, default=18300)
    args = parser.parse_args()
    fake = (FakeOpenAI if args.format == "openai" else FakeAnthropic)(responder=agent_reply)
    fake.require_key = False
    web.run_app(fake.app(), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
