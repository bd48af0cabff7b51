"""The NDJSON decoder: one JSON line per event, at any chunking."""

from __future__ import annotations

import pytest

from p5proxy.ndjson import NDJSONDecoder

STREAM = '\ufeff{"a":"é"}\r\n\n{"b":"中😀"}\n  \r\n{"c":3}'.encode()
EXPECTED = [("", '{"a":"é"}'), ("", '{"b":"中😀"}'), ("", '{"c":3}')]


def decode(chunks: list[bytes]) -> list[tuple[str, str]]:
    dec = NDJSONDecoder()
    out = []
    for chunk in chunks:
        out.extend(dec.feed(chunk))
    out.extend(dec.close())
    return out


def test_whole_stream_with_crlf_blank_lines_and_no_final_newline() -> None:
    assert decode([STREAM]) == EXPECTED


def test_every_split_position() -> None:
    for cut in range(len(STREAM) + 1):
        assert decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_small_chunks(size: int) -> None:
    assert decode([STREAM[i:i + size] for i in range(0, len(STREAM), size)]) == EXPECTED


def test_long_line_in_many_reads() -> None:
    line = '{"x":"' + "a" * 200_000 + '"}'
    raw = (line + "\n").encode()
    assert decode([raw[i:i + 1000] for i in range(0, len(raw), 1000)]) == [("", line)]
