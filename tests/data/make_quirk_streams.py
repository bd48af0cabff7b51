"""Writes the quirky upstream recordings used by tests/test_stream_props.py: streams with the
deviations of shared PROTOCOLS.md §6.2 that the tolerant decoders accept, each with the
(event, data) list and the text a client must finally see. Run it again only to change the
fixtures on purpose."""

import json
from pathlib import Path

HERE = Path(__file__).parent
LONG = "x" * (70 * 1024)   # one data line longer than aiohttp's 64 KiB readline limit


def chunk(content=None, finish=None, **delta):
    if content is not None:
        delta["content"] = content
    return json.dumps({"id": "chatcmpl-q", "object": "chat.completion.chunk", "model": "glm",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]},
                      ensure_ascii=False, separators=(",", ":"))


def openai_quirks() -> tuple[bytes, list, str]:
    pieces = ["Hé", "llo ", "wörld 中文 😀 ", LONG, " data: inside text", " end"]
    c = [chunk(p) for p in pieces]
    raw = (
        "\ufeff: OPENROUTER PROCESSING\r\n\r\n"
        f"data: {chunk('', role='assistant')}\r\n\r\n"
        "data: {}\n\n"                                   # keep-alive
        "data:\n\n"                                      # empty data
        "event: ping\ndata: {\"type\":\"ping\"}\n\n"     # ping on an OpenAI upstream
        f"data: {c[0]}\ndata: {c[1]}\n\n"                # blank line lost between two events
        f"ddata: {c[2]}\n\n"                             # corrupted field names (sse_repair)
        f"data: {c[3]}\r\n\r\n"                          # > 64 KiB line
        f'data: {c[4][:25]}data: {c[4]}\n\n'             # two events glued without newline
        f"ata: {c[5]}\n\n"
        f"data: {chunk(finish='stop')}\r\r"              # lone CR line endings
        "dat: [DONE]\n\n"
        "data: [DONE]\n\n"                               # duplicated terminator
        f"data: {chunk('after the end')}\n\n"            # data after [DONE]
    )
    events = ([("", chunk("", role="assistant")), ("", "{}"), ("", ""), ("ping", '{"type":"ping"}')]
              + [("", x) for x in c] + [("", chunk(finish="stop")), ("", "[DONE]"),
                                        ("", "[DONE]"), ("", chunk("after the end"))])
    return raw.encode(), events, "".join(pieces)


def anthropic_quirks() -> tuple[bytes, list, str]:
    def ev(obj):
        return json.dumps(obj, separators=(",", ":"))
    objs = [
        {"type": "message_start", "message": {"id": "msg_q", "type": "message", "role": "assistant",
                                              "model": "kimi", "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "thére"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ]
    d = [ev(o) for o in objs]
    raw = (
        f"event: message_start\r\ndata: {d[0]}\r\n\r\n"
        f"data: {d[1]}\r\n\r\n"                          # no event: line
        f"event: ping\r\ndata: {d[2]}\r\n\r\n"
        ": keep-alive\r\n\r\n"
        f"event: content_block_delta\r\nddata: {d[3]}\r\n\r\n"
        f"data: {d[4]}\ndata: {d[5]}\n\n"
        f"event: message_delta\ndata: {{\ndata: {d[6][1:-1]}\ndata: }}\n\n"   # pretty-printed
        f"event: message_stop\ndata: {d[7]}"            # no blank line before EOF
    )
    events = [("message_start", d[0]), ("", d[1]), ("ping", d[2]), ("content_block_delta", d[3]),
              ("", d[4]), ("", d[5]), ("message_delta", "{\n" + d[6][1:-1] + "\n}"),
              ("message_stop", d[7])]
    return raw.encode(), events, "Hi thére"


def ollama_ndjson() -> tuple[bytes, list, str]:
    pieces = ["Bonjour", ", ", "le 😀 ", LONG[:1000], "!"]
    lines = [json.dumps({"model": "llama3.2", "created_at": "2025-01-01T00:00:00Z",
                         "message": {"role": "assistant", "content": p}, "done": False},
                        ensure_ascii=False, separators=(",", ":")) for p in pieces]
    lines.append(json.dumps({"model": "llama3.2", "created_at": "2025-01-01T00:00:01Z",
                             "message": {"role": "assistant", "content": ""}, "done": True,
                             "done_reason": "stop", "prompt_eval_count": 26, "eval_count": 9},
                            separators=(",", ":")))
    raw = ("\ufeff" + lines[0] + "\r\n" + lines[1] + "\n\n" + lines[2] + "\r\n\r\n"
           + "\n".join(lines[3:]))                       # no final newline
    return raw.encode(), [("", x) for x in lines], "".join(pieces)


def main() -> None:
    for name, (raw, events, text) in {"openai_quirks.sse": openai_quirks(),
                                      "anthropic_quirks.sse": anthropic_quirks(),
                                      "ollama_chat.ndjson": ollama_ndjson()}.items():
        (HERE / name).write_bytes(raw)
        expected = {"events": events, "text": text}
        (HERE / (name + ".json")).write_text(json.dumps(expected, ensure_ascii=False, indent=1) + "\n",
                                             encoding="utf-8")


if __name__ == "__main__":
    main()
