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


# --- PROTOCOLS.md §6.2 quirks ------------------------------------------------------------------

def decode_with(dec: SSEDecoder, chunks: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for chunk in chunks:
        out.extend(dec.feed(chunk))
    out.extend(dec.close())
    return out


CORRUPTED = b'ddata: {"a":1}\n\nata: {"b":2}\n\ndat: [DONE]\n\n'


def test_corrupted_data_field_names_are_repaired_only_when_enabled(caplog: pytest.LogCaptureFixture) -> None:
    assert decode_with(SSEDecoder(), [CORRUPTED]) == []   # the spec: unknown fields are ignored
    got = decode_with(SSEDecoder(repair=True), [CORRUPTED])
    assert got == [("", '{"a":1}'), ("", '{"b":2}'), ("", "[DONE]")]
    assert "sse_repair" in caplog.text and "repaired 3" in caplog.text


def test_repair_leaves_other_fields_alone() -> None:
    got = decode_with(SSEDecoder(repair=True), [b"id: 1\nretry: 5\nfoo: x\ndata: y\n\n"])
    assert got == [("", "y")]


def test_glued_events_resync_at_the_embedded_data_field(caplog: pytest.LogCaptureFixture) -> None:
    stream = b'data: {"a":"ch' + b'data: {"b":2}\n\n' + b'data: {"c":3}\n\n'
    for size in (1, 3, len(stream)):
        chunks = [stream[i:i + size] for i in range(0, len(stream), size)]
        assert decode(chunks) == [("", '{"b":2}'), ("", '{"c":3}')]
    assert "glued SSE events" in caplog.text


def test_text_that_mentions_data_is_not_resynced() -> None:
    stream = b'data: {"t":"data: {\\"x\\":1}"}\n\nevent: e\ndata: {"u":"ddata: 2"}\n\n'
    assert decode([stream]) == [("", '{"t":"data: {\\"x\\":1}"}'), ("e", '{"u":"ddata: 2"}')]


def test_glued_done_after_a_truncated_event() -> None:
    assert decode([b'data: {"a":"xdata: [DONE]\n\n']) == [("", "[DONE]")]


@pytest.mark.parametrize("size", [1000, 65536, 1 << 20])
def test_lines_longer_than_64_kib(size: int) -> None:
    value = '{"x":"' + "é" * (300 * 1024) + '"}'
    stream = b"data: " + value.encode() + b"\r\n\r\ndata: [DONE]\r\n\r\n"
    chunks = [stream[i:i + size] for i in range(0, len(stream), size)]
    assert decode(chunks) == [("", value), ("", "[DONE]")]


def test_keep_alives_come_out_as_skippable_events() -> None:
    got = decode([b': ping\n\ndata: {}\n\ndata:\n\nevent: ping\ndata: {"type":"ping"}\n\n'])
    assert got == [("", "{}"), ("", ""), ("ping", '{"type":"ping"}')]
