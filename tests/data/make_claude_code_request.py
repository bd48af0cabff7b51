"""Writes claude_code_request.json: a request shaped like Claude Code 2.1.x sends (system blocks
with cache_control and the billing line, a role:system message inside messages, 20 tools with
large JSON Schema 2020-12 schemas, adaptive thinking, metadata.user_id as a JSON string,
max_tokens 32000, a history with thinking, parallel tool calls and an image tool result).
Run it again only to change the fixture on purpose."""

import json
from pathlib import Path

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def schema(i: int) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object", "additionalProperties": False,
        "properties": {
            "command": {"type": "string", "description": f"The command to run (tool {i}). " * 6},
            "timeout": {"type": "number", "description": "Optional timeout in milliseconds"},
            "mode": {"anyOf": [{"const": "fast"}, {"const": "safe"}, {"type": "null"}]},
            "paths": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "env": {"type": "object", "propertyNames": {"pattern": "^[A-Z_]+$"},
                    "additionalProperties": {"type": "string"}},
        },
        "required": ["command"],
    }


TOOLS = [{"name": name, "description": f"{name}: " + "Long tool description line. " * 30,
          "input_schema": schema(i)}
         for i, name in enumerate(["Bash", "Read", "Edit", "Write", "Glob", "Grep", "Task",
                                   "TodoWrite", "WebFetch", "WebSearch", "NotebookEdit",
                                   "BashOutput", "KillShell", "ExitPlanMode", "SlashCommand",
                                   "mcp__github__create_issue", "mcp__github__list_prs",
                                   "mcp__fs__read", "mcp__fs__write", "Agent"])]
TOOLS[-1]["cache_control"] = {"type": "ephemeral"}

REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.80.a1b; cc_entrypoint=cli; cch=00000;"},
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
         "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "You are an interactive CLI tool. " * 60,
         "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {"role": "system", "content": "The user prefers short answers."},
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>Context loaded.</system-reminder>"},
            {"type": "text", "text": "List the files and show me the logo.",
             "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should list files and read the logo.",
             "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxVGmaaNOTQEJ9UBVciMKcaCWQJFL0XBBDt"},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "Bash",
             "input": {"command": "ls"}},
            {"type": "tool_use", "id": "toolu_01B19q90qw90lq917835lq9", "name": "Read",
             "input": {"command": "cat logo.png", "paths": ["logo.png"]}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
             "content": "README.md\nlogo.png"},
            {"type": "tool_result", "tool_use_id": "toolu_01B19q90qw90lq917835lq9", "is_error": False,
             "content": [{"type": "text", "text": "Image:"},
                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                      "data": PNG}}]},
            {"type": "text", "text": "Thanks, now describe it.", "cache_control": {"type": "ephemeral"}}]},
    ],
    "tools": TOOLS,
    "thinking": {"type": "adaptive"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "account_uuid": "",
                                        "session_id": "5a0b6e2c-1f7e-4c1e-9c43-3e8f2b7d9a10"})},
}

if __name__ == "__main__":
    out = Path(__file__).with_name("claude_code_request.json")
    out.write_text(json.dumps(REQUEST, indent=1, ensure_ascii=False) + "\n")
    print(out, out.stat().st_size, "bytes")
