"""A scripted model for agent round trips: it asks for the first shell-like tool it finds in
the request, then answers from the tool result. Works for both wire formats.

Standalone, for trying real clients (Claude Code) by hand:
    python -m tests.fakes.scripted --format openai --port 18300
`--emulated` makes it a text-only model for tool-use emulation (`tools: emulate`): it reads the
tools from the `<functions>` list in the system prompt and answers with `<function_calls>` XML.
`--plain` never asks for a tool: it answers `You asked: <the last user text>`.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from aiohttp import web

from .anthropic_upstream import FakeAnthropic
from .openai_upstream import FakeOpenAI
from .replies import Reply

__all__ = ["agent_reply", "emulated_reply", "plain_reply", "last_user_text", "PROOF_COMMAND",
           "PROOF_TEXT"]

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


_FUNCTION = re.compile(r"<function>(.*?)</function>", re.S)
_STDOUT = re.compile(r"<(?:stdout|error)>\n?(.*?)\n?</(?:stdout|error)>", re.S)


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return str(content or "")


def emulated_reply(body: dict[str, Any]) -> Reply:
    """The same agent as `agent_reply`, as a model without native tools would answer."""
    messages = body.get("messages") or []
    system = _text(body.get("system")) + "".join(
        _text(m.get("content")) for m in messages if m.get("role") == "system")
    last = _text(messages[-1].get("content")) if messages else ""
    if "<function_results>" in last:
        found = _STDOUT.search(last)
        return Reply(text=f"The command printed: {(found[1] if found else last).strip()}")
    names = []
    for spec in _FUNCTION.findall(system):
        try:
            names.append(str(json.loads(spec).get("name", "")))
        except ValueError:
            continue
    shell = next((n for n in names if n.lower() in ("bash", "shell", "run_command")), None)
    if shell is None:
        return Reply(text="Hello from the scripted model.")
    return Reply(text=f'I will run it.\n\n<function_calls>\n<invoke name="{shell}">\n'
                      f'<parameter name="command">{PROOF_COMMAND}</parameter>\n'
                      '<parameter name="description">write proof</parameter>\n</invoke>\n',
                 stop_sequence="</function_calls>")


_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.S)


def last_user_text(body: dict[str, Any]) -> str:
    """The last user message's own text: Claude Code also puts <system-reminder> blocks there."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        blocks = [content] if isinstance(content, str) else [
            str(b.get("text", "")) for b in content or [] if isinstance(b, dict)]
        texts = [t for t in (_REMINDER.sub("", b).strip() for b in blocks) if t]
        if texts:
            return texts[-1]
    return ""


def plain_reply(body: dict[str, Any]) -> Reply:
    """A model that answers without tools, from the conversation: it repeats the question."""
    return Reply(text=f"You asked: {last_user_text(body)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", choices=("openai", "anthropic"), default="openai")
    parser.add_argument("--port", type=int, default=18300)
    parser.add_argument("--emulated", action="store_true",
                        help="text only: tool calls as <function_calls> XML")
    parser.add_argument("--plain", action="store_true", help="never ask for a tool")
    args = parser.parse_args()
    responder = plain_reply if args.plain else emulated_reply if args.emulated else agent_reply
    fake = (FakeOpenAI if args.format == "openai" else FakeAnthropic)(responder=responder)
    fake.require_key = False
    web.run_app(fake.app(), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
