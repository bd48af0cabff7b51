"""Tool schemas kept as JSON bytes instead of Python objects.

A Claude Code turn carries ~24 tool schemas: ~65 KB of nested objects that the gateway only
forwards (as Anthropic `input_schema` or OpenAI `parameters`). Parsed by orjson they are
~3000 dicts, lists and strings per request, and allocating and freeing those, with cold
caches under load, costs more than the rest of the request's work on the body (bench/README,
ninth round). Here a large body is decoded by msgspec in one pass instead, into the fields of
its protocol's request (`Splitter`): every value but the schemas becomes Python objects as
before, and each schema stays the slice of the body it was sent as, which encoders put into
the upstream body verbatim with `orjson.Fragment`.

What a client sends is checked as before: msgspec checks the syntax of the whole document and
the text of what it decodes, a schema's bytes are checked to be UTF-8 (msgspec does not look at
the text it passes over), the nesting limit covers the body and each schema (inputs.py), and a
body that any of these refuse, that has a field its protocol does not define, or an integer
past 64 bits (which orjson reads as a float), is parsed again by orjson, so that values and
errors are the same whatever the path. Code that needs a schema's contents
(tool-use emulation, a `$schema` that is not first) calls `schema_dict`, which parses it once.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import Any

import msgspec
import orjson

__all__ = ["RawJSON", "Splitter", "schema_dict", "schema_json",
           "without_meta_schema", "json_default", "LAZY_FROM"]

# Below this size a body is parsed whole by orjson: too few objects to be worth a second path.
LAZY_FROM = 8 * 1024

_META = "$schema"
_META_KEY = b'"$schema"'
_META_FIRST = b'{"$schema":"'


class _Known:
    """A schema's bytes and what the split learnt from them, shared by every request that sends
    them (see _SEEN). `meta_end`: where the object goes on after a leading `"$schema": ...,`
    (0 when it has no `"$schema"`, -1 when it has one elsewhere or twice); `whole` and `cut`
    (without that leading `$schema`) are ready for orjson.dumps; `held`: the bytes it keeps."""

    __slots__ = ("data", "brackets", "meta_end", "whole", "cut", "held")

    def __init__(self, data: bytes) -> None:
        if not data.isascii():
            data.decode()   # UTF-8, which msgspec does not check in what it passes over
        self.data = data
        self.brackets = data.count(b"{") + data.count(b"[")   # an upper bound of its nesting
        self.meta_end = meta_end = _meta_end(data)
        self.whole = orjson.Fragment(data)
        self.cut = orjson.Fragment(b"{" + data[meta_end:]) if meta_end > 0 else None
        self.held = len(data) * (2 if meta_end > 0 else 1)


class RawJSON:
    """A JSON object as bytes (valid JSON and UTF-8: checked when it was split). It reads like
    a read-only mapping, parsed on first use, so that a plugin's filter that looks into
    `Tool.input_schema` works on large requests too (only `isinstance(x, dict)` tells them
    apart)."""

    __slots__ = ("known", "_value")

    def __init__(self, known: _Known) -> None:
        self.known = known
        self._value: dict[str, Any] | None = None

    @property
    def data(self) -> bytes:
        return self.known.data

    def value(self) -> dict[str, Any]:
        if self._value is None:
            self._value = orjson.loads(self.known.data)
        return self._value

    def fragment(self) -> orjson.Fragment:
        return self.known.whole

    def __getitem__(self, key: str) -> Any:
        return self.value()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.value().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.value()

    def __iter__(self) -> Iterator[str]:
        return iter(self.value())

    def __len__(self) -> int:
        return len(self.value())

    def keys(self) -> KeysView[str]:
        return self.value().keys()

    def values(self) -> ValuesView[Any]:
        return self.value().values()

    def items(self) -> ItemsView[str, Any]:
        return self.value().items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RawJSON):
            return self.value() == other.value()
        return isinstance(other, dict) and self.value() == other

    __hash__ = None   # type: ignore[assignment]   # equal to dicts, which are unhashable

    def __repr__(self) -> str:
        return f"RawJSON({self.data[:60]!r}{'...' if len(self.data) > 60 else ''})"


def schema_dict(schema: dict[str, Any] | RawJSON) -> dict[str, Any]:
    """A schema's contents, parsed on first use."""
    return schema.value() if isinstance(schema, RawJSON) else schema


def schema_json(schema: dict[str, Any] | RawJSON) -> Any:
    """A schema ready for orjson.dumps: raw bytes go in verbatim."""
    return schema.fragment() if isinstance(schema, RawJSON) else schema


def json_default(value: Any) -> Any:
    """`default=` for orjson.dumps of a parsed body that may hold raw schemas."""
    if isinstance(value, RawJSON):
        return value.fragment()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def without_meta_schema(schema: dict[str, Any] | RawJSON) -> Any:
    """The schema without its top-level `$schema` keyword (picky OpenAI-compatible servers
    reject it), for orjson.dumps. Raw bytes lose it by a cut when it comes first, as Claude
    Code writes it; otherwise the schema is parsed."""
    if isinstance(schema, RawJSON):
        known = schema.known
        if known.meta_end >= 0:
            return known.whole if known.cut is None else known.cut
        schema = schema.value()
    if _META in schema:
        return {k: v for k, v in schema.items() if k != _META}
    return schema


_Raw = msgspec.Raw
_UNSET = msgspec.UNSET
_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_STRING = msgspec.json.Decoder(str)
# what a body that the split does not take raises: invalid JSON, a value of the wrong shape, an
# unknown field (msgspec); a value orjson refuses; a schema that is not UTF-8; deep nesting
_REFUSED = (msgspec.DecodeError, orjson.JSONDecodeError, UnicodeDecodeError, RecursionError)


class Splitter:
    """Splits large request bodies of one client protocol: `fields` are its request's top-level
    fields, and `schema_path` leads from a tool object to its JSON schema."""

    def __init__(self, fields: tuple[str, ...], schema_path: tuple[str, ...]) -> None:
        shape: list[tuple[str, Any, Any]] = [(name, Any, _UNSET) for name in fields
                                             if name != "tools"]
        shape.append(("tools", list[dict[str, _Raw]] | None, _UNSET))
        body = msgspec.defstruct("Body", shape, forbid_unknown_fields=True)
        self.fields: tuple[str, ...] = body.__struct_fields__
        self.schema_path = schema_path
        self._decoder: Any = msgspec.json.Decoder(body)

    def split(self, raw: bytes,
              depth: int) -> tuple[dict[str, Any], list[tuple[RawJSON, int]], bool] | None:
        """`raw` (a JSON object) parsed, with each `tools[i].<schema_path>` that is an object
        left as RawJSON. Also returns the raw schemas that may nest deeper than `depth` allows,
        each with the number of levels above it (an object nests at most as deep as it has
        brackets, so a count clears most schemas and only the rest need parsing to be
        measured), and whether the rest of the body nests deeper than `depth`.

        None when the split does not take the body (see _REFUSED, and _BIG_INT): the caller
        parses it with orjson, which words the errors as on every other path."""
        try:
            values = msgspec.structs.astuple(self._decoder.decode(raw))
            body: dict[str, Any] = {}
            suspects: list[tuple[RawJSON, int]] = []
            for name, value in zip(self.fields, values):
                if value is _UNSET:
                    continue
                if name == "tools" and value is not None:
                    value = [_tool_part(tool, self.schema_path, 3, depth, suspects)
                             for tool in value]
                body[name] = value
        except _REFUSED:
            return None
        found = _walk(body, depth)
        return None if found == _BIG_INT else (body, suspects, found == _TOO_DEEP)


def _load(value: Any) -> Any:
    return orjson.loads(memoryview(value))


# msgspec reads any integer as one, where orjson reads those past 64 bits as floats, and the
# encoders (orjson) could not write them back: a body with one takes orjson's whole parse
_MIN_INT, _MAX_INT = -(2 ** 63), 2 ** 64 - 1
_TOO_DEEP, _BIG_INT = 1, 2


def _walk(value: Any, limit: int) -> int:
    """_TOO_DEEP when the dicts and lists of `value` nest more than `limit` levels (`value`
    itself is level 1; a RawJSON counts as a leaf, its schema is measured apart), _BIG_INT
    when an integer is past 64 bits, else 0. A walk of the containers: once the schemas are
    RawJSON, a large body's other parts hold few of them, and no string is looked at."""
    if type(value) is dict:
        items: Any = value.values()
    elif type(value) is list:
        items = value
    else:
        return 0
    for item in items:
        kind = type(item)
        if kind is dict or kind is list:
            found = _TOO_DEEP if limit <= 1 else _walk(item, limit - 1)
            if found:
                return found
        elif kind is int and not _MIN_INT <= item <= _MAX_INT:
            return _BIG_INT
    return 0


def _load_tool_value(value: Any) -> Any:
    """A tool's name, description...: mostly strings, which msgspec decodes at a quarter of the
    cost of an orjson call (checked alike: UTF-8, escapes); anything else goes to orjson, so
    that numbers read as on every other path."""
    try:
        return _STRING.decode(value)
    except msgspec.ValidationError:
        return _load(value)


def _tool_part(fields: dict[str, Any], path: tuple[str, ...], above: int, depth: int,
               suspects: list[tuple[RawJSON, int]]) -> dict[str, Any]:
    """One object on the way to a schema, `above` levels deep (its values still raw); `path`
    leads on to the schema."""
    node: dict[str, Any] = {}
    key = path[0]
    for name, value in fields.items():
        if name != key:
            node[name] = _load_tool_value(value)
        elif len(path) > 1:
            try:
                inner = _OBJECT.decode(value)
            except msgspec.ValidationError:   # not an object: the decoder names it
                node[name] = _load(value)
                continue
            node[name] = _tool_part(inner, path[1:], above + 1, depth, suspects)
        else:
            data = bytes(value)
            if data[:1] != b"{":   # not an object: the decoder names it
                node[name] = _load(value)
                continue
            known = _known(data)
            schema = RawJSON(known)
            if known.brackets + above > depth:
                suspects.append((schema, above))
            node[name] = schema
    return node


def _meta_end(data: bytes) -> int:
    """_Known.meta_end of a schema's bytes: where it goes on after a leading `"$schema":"...",`
    as Claude Code writes it, 0 when it has no `"$schema"` at all, else -1 (the schema is
    parsed when the keyword must go). Found by looking at each `$` (memchr): a multi-byte
    search for a needle starting with `"` is slow in JSON, where quotes are everywhere."""
    leading = data.startswith(_META_FIRST)
    at = data.find(b"$", len(_META_FIRST) if leading else 0)
    while at >= 0:
        if data[at - 1:at + 8] == _META_KEY:
            return -1   # elsewhere, or twice: parse
        at = data.find(b"$", at + 1)
    if not leading:
        return 0
    end = data.find(b'"', len(_META_FIRST))
    if end < 0 or data.find(b"\\", len(_META_FIRST), end) >= 0 or end + 1 >= len(data):
        return -1   # an escape in the URI: parse
    after = data[end + 1]
    return end + 2 if after == 44 else end + 1 if after == 125 else -1   # "," or "}"


# Schemas seen lately, by length. A client sends the same tools on every turn (Claude Code's 24
# schemas are 65 KB): comparing the bytes with those seen before (memcmp) takes a fraction of
# the time of checking and counting them again (~65 us for those 65 KB: the UTF-8 check, a
# scalar loop per bracket, the `$` search), or of hashing them for a dict (~20 us).
_SEEN: dict[int, list[_Known]] = {}
_SEEN_BYTES = 4 << 20   # held at most (with the cut copies); then it starts afresh
_SEEN_ONE = 64 << 10    # a larger schema is checked each time
_SEEN_SAME_LENGTH = 8   # schemas kept per length
_seen_size = 0


def _known(data: bytes) -> _Known:
    """What is known of a schema's bytes: from _SEEN, or learnt now (raises
    UnicodeDecodeError when they are not UTF-8)."""
    global _seen_size
    size = len(data)
    seen = _SEEN.get(size)
    if seen is not None:
        for known in seen:
            if known.data == data:
                return known
    known = _Known(data)
    if size <= _SEEN_ONE:
        if _seen_size + known.held > _SEEN_BYTES:
            _SEEN.clear()
            _seen_size = 0
            seen = None
        if seen is None:
            seen = _SEEN[size] = []
        elif len(seen) >= _SEEN_SAME_LENGTH:
            _seen_size -= seen.pop(0).held
        seen.append(known)
        _seen_size += known.held
    return known
