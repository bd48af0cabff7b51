"""The request side of tool-use emulation: tool definitions and `tool_choice` as system-prompt
instructions, and earlier tool calls and results in the history as the same XML the model is
asked to write (`<function_calls>`) and a `<function_results>` block."""

from __future__ import annotations

from typing import Any

import orjson

from .canonical import ImagePart, Message, Part, TextPart, Tool, ToolCallPart, ToolChoice, ToolResultPart
from .toolxml import CLOSE, OPEN
from .rawjson import schema_dict

__all__ = ["render_instructions", "render_call", "render_results", "rewrite_history"]

_INTRO = f"""In this environment you have access to a set of tools you can use to answer the \
user's question. You call them by writing a {OPEN} block like the following as part of your reply:
{OPEN}
<invoke name="$FUNCTION_NAME">
<parameter name="$PARAMETER_NAME">$PARAMETER_VALUE</parameter>
...
</invoke>
<invoke name="$FUNCTION_NAME2">
...
</invoke>
{CLOSE}

String and scalar parameter values are written as is, without quotes or escaping; lists and \
objects are written as JSON. Any text you want the user to see goes before the block. End your \
reply right after {CLOSE}: the results come back to you in a <function_results> block in the \
next message. Never write <function_results> yourself and never guess a result.

Here are the functions available, in JSON Schema format:
<functions>
"""


def _schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "$schema"}


def render_instructions(tools: list[Tool], choice: ToolChoice | None) -> str:
    lines = [_INTRO]
    for tool in tools:
        spec: dict[str, Any] = {"name": tool.name}
        if tool.description:
            spec["description"] = tool.description
        spec["parameters"] = _schema(schema_dict(tool.input_schema) or {})
        lines.append("<function>" + orjson.dumps(spec).decode() + "</function>\n")
    lines.append("</functions>")
    kind = choice.type if choice is not None else "auto"
    if kind == "any":
        lines.append(f"\n\nIn this reply you must call at least one function: answer with a "
                     f"{OPEN} block.")
    elif kind == "tool" and choice is not None and choice.name:
        lines.append(f"\n\nIn this reply you must call the function \"{choice.name}\": answer "
                     f"with a {OPEN} block that invokes it.")
    elif kind == "none":
        lines.append("\n\nIn this reply do not call any function: answer in plain text only.")
    if choice is not None and choice.disable_parallel and kind != "none":
        lines.append("\n\nCall at most one function per reply: a single <invoke> in the block.")
    return "".join(lines)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def render_call(calls: list[ToolCallPart]) -> str:
    out = [OPEN, "\n"]
    for call in calls:
        out.append(f'<invoke name="{call.name}">\n')
        for key, value in (call.input or {}).items():
            out.append(f'<parameter name="{key}">{_value(value)}</parameter>\n')
        out.append("</invoke>\n")
    out.append(CLOSE)
    return "".join(out)


def _result_text(part: ToolResultPart) -> str:
    texts = []
    for inner in part.content:
        if isinstance(inner, TextPart):
            texts.append(inner.text)
        elif isinstance(inner, ImagePart):
            texts.append("[image attached below]")
    return "\n".join(texts)


def render_results(results: list[ToolResultPart], names: dict[str, str]) -> str:
    out = ["<function_results>\n"]
    for part in results:
        tag = "error" if part.is_error else "stdout"
        out.append(f"<result>\n<tool_name>{names.get(part.tool_call_id, 'unknown')}</tool_name>\n"
                   f"<{tag}>\n{_result_text(part)}\n</{tag}>\n</result>\n")
    out.append("</function_results>")
    return "".join(out)


def _assistant(msg: Message) -> Message:
    kept: list[Part] = []
    texts: list[str] = []
    calls: list[ToolCallPart] = []
    for part in msg.parts:
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ToolCallPart):
            calls.append(part)
        else:
            kept.append(part)
    text = "".join(texts).rstrip()
    if calls:
        text = (text + "\n\n" if text else "") + render_call(calls)
    return Message("assistant", [*kept, TextPart(text)] if text else kept)


def _user(msg: Message, names: dict[str, str]) -> Message:
    results = [p for p in msg.parts if isinstance(p, ToolResultPart)]
    if not results:
        return msg
    images = [inner for r in results for inner in r.content if isinstance(inner, ImagePart)]
    rest = [p for p in msg.parts if not isinstance(p, ToolResultPart)]
    return Message("user", [TextPart(render_results(results, names)), *images, *rest])


def rewrite_history(messages: list[Message]) -> list[Message]:
    """Tool calls -> `<function_calls>` text, tool results -> `<function_results>` text."""
    names: dict[str, str] = {}
    out = []
    for msg in messages:
        if msg.role == "assistant":
            for part in msg.parts:
                if isinstance(part, ToolCallPart):
                    names[part.id] = part.name
            out.append(_assistant(msg))
        elif msg.role == "user":
            out.append(_user(msg, names))
        else:
            out.append(msg)
    return out
