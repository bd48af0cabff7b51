"""A stream's chunk envelope, learned once, so that later chunks are read without parsing them.

Servers write every text chunk of a stream alike: the same id, model and field order around a
different string (`..."delta":{"content":"` + text + `"},"logprobs":null...}`). `learn` takes
a chunk that was parsed, finds its text string in the raw data and keeps what surrounds it,
after proving the split: a probe text put in place of the string must parse to the same object
with the probe as its text. `Envelope.text` then reads a later chunk that starts and ends the
same way: its middle is that string, decoded only when it has escapes. Anything that could be
more than one string (a quote or a control character in the middle) returns None, and the
caller parses the chunk as usual: the envelope is a shortcut to the same events, never another
reading of them.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["Envelope", "learn", "LEARN_TRIES"]

PROBE = "p5proxy probe"   # any text without quotes, backslashes or control characters
# A parser tries to learn an envelope at most this many times per stream: a chunk whose text a
# server wrote otherwise than orjson does (ASCII escapes) teaches nothing, the next may
LEARN_TRIES = 4


class Envelope:
    __slots__ = ("head", "tail", "_least")

    def __init__(self, head: str, tail: str) -> None:
        self.head = head
        self.tail = tail
        self._least = len(head) + len(tail)

    def text(self, data: str) -> str | None:
        """The string this envelope holds in `data`, decoded; None when `data` is not this
        envelope around one JSON string."""
        head, tail = self.head, self.tail
        if len(data) < self._least or not data.startswith(head) or not data.endswith(tail):
            return None
        raw = data[len(head):len(data) - len(tail)]
        if '"' in raw:   # could close the string early: only a parse can tell
            return None
        if "\\" not in raw:
            return raw if raw.isprintable() else None   # raw control characters are not JSON
        try:
            text = orjson.loads('"' + raw + '"')
        except orjson.JSONDecodeError:
            return None
        return text if isinstance(text, str) else None


def learn(data: str, obj: Any, holder: dict[str, Any], key: str) -> Envelope | None:
    """The envelope of `data` around the string `holder[key]`, where `holder` is the object in
    `obj` (parsed from `data`) that has the text; None when the string is written otherwise
    than orjson writes it, or appears more than once. Leaves the probe in `holder[key]`:
    the caller has taken the text already and drops `obj`."""
    value = holder.get(key)
    if not isinstance(value, str):
        return None
    quoted = orjson.dumps(value).decode()
    at = data.find(quoted)
    if at < 0 or data.find(quoted, at + 1) >= 0:
        return None
    head, tail = data[:at + 1], data[at + len(quoted) - 1:]
    holder[key] = PROBE
    try:
        same = orjson.loads(head + PROBE + tail) == obj
    except orjson.JSONDecodeError:
        return None
    return Envelope(head, tail) if same else None
