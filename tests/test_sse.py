"""The tolerant SSE decoder: spec framing at any chunking, plus the upstream quirks we accept."""

from __future__ import annotations

import pytest

from p5proxy.sse import SSEDecoder

STREAM = (
    "\ufeffevent: message_start\r\ndata: {\"a\":1}\r\n\r\n"
    ": keep-alive comment\n\n"
    "data:{\"b\":\"\u00e9\u4e2d\U0001f600\"}\n\n"
    "event: multi\ndata: line1\ndata: line2\n\n"
    "id: 7\nretry: 100\ndata: [DONE]\n\n"
).encode()
EXPECTED = [("message_start", '{"a":1}'), ("", '{"b":"\u00e9\u4e2d\U0001f600"}'),
            ("multi", "line1\nline2"), ("", "[DONE]")]


def decode(chunks: list[bytes]) -> list[tuple[str, str]]:
    dec = SSEDecoder()
    out = []
    for chunk in chunks:
        out.extend(dec.feed(chunk))
    out.extend(dec.close())
    return out


def test_whole_stream() -> None:
    assert decode([STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_any_rechunking_gives_the_same_events(size: int) -> None:
    """Splits inside CRLF pairs, multi-byte characters and field names must not matter."""
    chunks = [STREAM[i:i + size] for i in range(0, len(STREAM), size)]
    assert decode(chunks) == EXPECTED


def test_every_split_position() -> None:
    for cut in range(1, len(STREAM)):
        assert decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_lone_cr_line_endings() -> None:
    assert decode([b"data: x\r\rdata: y\r\r"]) == [("", "x"), ("", "y")]


def test_missing_blank_line_between_json_events() -> None:
    assert decode([b'data: {"a":1}\ndata: {"b":2}\n\n']) == [("", '{"a":1}'), ("", '{"b":2}')]


def test_event_line_after_data_starts_a_new_event() -> None:
    got = decode([b"event: a\ndata: 1\nevent: b\ndata: 2\n\n"])
    assert got == [("a", "1"), ("b", "2")]


def test_last_event_without_blank_line_is_flushed_at_eof() -> None:
    assert decode([b'data: {"end":true}']) == [("", '{"end":true}')]


def test_pretty_printed_multiline_json_is_joined() -> None:
    assert decode([b'data: {\ndata:   "a": 1\ndata: }\n\n']) == [("", '{\n  "a": 1\n}')]
