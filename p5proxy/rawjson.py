"""Tool schemas kept as JSON bytes instead of Python objects.

A Claude Code turn carries ~24 tool schemas: ~90 KB of nested objects that the gateway only
forwards (as Anthropic `input_schema` or OpenAI `parameters`). Parsed by orjson they are
~3000 dicts, lists and strings per request, and allocating and freeing those, with cold
caches under load, costs more than the rest of the request's work on the body (bench/README,
ninth round). Here a large body is parsed by simdjson instead: everything but the schemas
becomes Python objects as before, and each schema becomes its minified JSON (one C call), which
encoders put into the upstream body verbatim with `orjson.Fragment`.

What a client sends is checked as before: simdjson validates the whole document (syntax and
UTF-8), the nesting limit covers each schema (inputs.py), and a body simdjson refuses is parsed
again by orjson, so that errors read the same whatever the path. Code that needs a schema's
contents (tool-use emulation, a `$schema` that is not first) calls `schema_dict`, which parses
it once.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import Any

import orjson
import simdjson

__all__ = ["RawJSON", "nests_deeper", "schema_dict", "schema_json", "without_meta_schema",
           "split_body", "json_default", "LAZY_FROM"]

# Below this size a body is parsed whole by orjson: too few objects to be worth a second path.
LAZY_FROM = 8 * 1024

_META = "$schema"
_META_PREFIX = b'{"$schema":'


class RawJSON:
    """A JSON object as minified bytes (valid JSON and UTF-8: simdjson wrote it). It reads like
    a read-only mapping, parsed on first use, so that a plugin's filter that looks into
    `Tool.input_schema` works on large requests too (only `isinstance(x, dict)` tells them
    apart). `meta_end`: where the object goes on after a leading `"$schema": ...,` (0 when it
    has no top-level `$schema`, -1 when it has one elsewhere or twice)."""

    __slots__ = ("data", "meta_end", "_value")

    def __init__(self, data: bytes, meta_end: int = 0) -> None:
        self.data = data
        self.meta_end = meta_end
        self._value: dict[str, Any] | None = None

    def value(self) -> dict[str, Any]:
        if self._value is None:
            self._value = orjson.loads(self.data)
        return self._value

    def fragment(self) -> orjson.Fragment:
        return orjson.Fragment(self.data)

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
        if schema.meta_end == 0:
            return schema.fragment()
        if schema.meta_end > 0:
            return orjson.Fragment(b"{" + memoryview(schema.data)[schema.meta_end:])
        schema = schema.value()
    if _META in schema:
        return {k: v for k, v in schema.items() if k != _META}
    return schema


_parser = simdjson.Parser()
# A parser keeps buffers as large as the largest document it has read: bodies past this size get
# a parser of their own, freed with the request, so one huge request does not stay in the RSS.
_SHARED_UP_TO = 1 << 20


def _parse(raw: bytes) -> Any:
    global _parser
    if len(raw) > _SHARED_UP_TO:
        return simdjson.Parser().parse(raw)
    try:
        return _parser.parse(raw)
    except RuntimeError as exc:
        if "re-use" not in str(exc):
            raise   # DEPTH_ERROR, BIGINT_ERROR...
        _parser = simdjson.Parser()   # a proxy of the last document outlived its split
        return _parser.parse(raw)


def _value(node: Any) -> Any:
    if isinstance(node, simdjson.Object):
        return node.as_dict()
    if isinstance(node, simdjson.Array):
        return node.as_list()
    return node


def split_body(raw: bytes, schema_path: tuple[str, ...],
               depth: int) -> tuple[dict[str, Any], list[tuple[RawJSON, int]]] | None:
    """`raw` (a JSON object) parsed, with each `tools[i].<schema_path>` that is an object left
    as RawJSON. Also returns the raw schemas that may nest deeper than `depth` allows, each with
    the number of levels above it: an object nests at most as deep as it has brackets, so a
    count clears most schemas and only the rest need parsing to be measured.

    None when simdjson refuses the body (invalid JSON or UTF-8, not an object, an integer past
    64 bits, nesting past 1024): the caller parses it with orjson, which takes the big integer
    and words the errors as on every other path."""
    try:
        doc = _parse(raw)
        keys = _unique_keys(doc) if isinstance(doc, simdjson.Object) else None
        if keys is None:
            return None
        body: dict[str, Any] = {}
        suspects: list[tuple[RawJSON, int]] = []
        for key in keys:
            value = doc[key]
            if key == "tools" and isinstance(value, simdjson.Array):
                tools: list[Any] = []
                for tool in value:
                    if not isinstance(tool, simdjson.Object):
                        tools.append(_value(tool))
                        continue
                    node = _split_tool(tool, schema_path, 3, depth, suspects)
                    if node is None:
                        return None
                    tools.append(node)
                body[key] = tools
            else:
                body[key] = _value(value)
        return body, suspects
    except (ValueError, UnicodeDecodeError, RuntimeError):   # simdjson's for invalid input
        return None


def _unique_keys(obj: Any) -> list[str] | None:
    """The object's keys; None when one is given twice: simdjson's lookup finds the first,
    orjson keeps the last, so such a body takes orjson's whole parse and the last wins on
    every path."""
    keys = list(obj.keys())
    return keys if len(set(keys)) == len(keys) else None


def _split_tool(fields: Any, path: tuple[str, ...], above: int, depth: int,
                suspects: list[tuple[RawJSON, int]]) -> dict[str, Any] | None:
    """One object on the way to a schema, `above` levels deep; `path` leads on to the schema.
    None when it gives a key twice (see _unique_keys)."""
    keys = _unique_keys(fields)
    if keys is None:
        return None
    node: dict[str, Any] = {}
    for key in keys:
        item = fields[key]
        if key != path[0] or not isinstance(item, simdjson.Object):
            node[key] = _value(item)
        elif len(path) > 1:
            inner = _split_tool(item, path[1:], above + 1, depth, suspects)
            if inner is None:
                return None
            node[key] = inner
        else:
            schema = _schema(item)
            if _brackets(schema.data) + above > depth:
                suspects.append((schema, above))
            node[key] = schema
    return node


# Schemas seen lately and their bracket counts. A client sends the same tools on every turn
# (Claude Code's 24 schemas are 65 KB): a dict lookup, which hashes and compares the bytes, takes
# about 40% of the time of counting them again (~20 against ~50 us for those 65 KB).
_COUNTED: dict[bytes, int] = {}
_COUNTED_BYTES = 4 << 20   # held at most; then it starts afresh
_COUNTED_ONE = 64 << 10    # a larger schema is counted each time
_counted_size = 0


def _brackets(data: bytes) -> int:
    """How many `{` and `[` a schema holds: an upper bound of its nesting."""
    global _counted_size
    count = _COUNTED.get(data)
    if count is None:
        count = data.count(b"{") + data.count(b"[")
        if len(data) <= _COUNTED_ONE:
            if _counted_size + len(data) > _COUNTED_BYTES:
                _COUNTED.clear()
                _counted_size = 0
            _COUNTED[data] = count
            _counted_size += len(data)
    return count


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether the dicts and lists of `value` nest more than `limit` levels (`value` itself
    is level 1; a RawJSON counts as a leaf, its schema is measured apart). A walk of the
    containers only: once the schemas are RawJSON, a large body's other parts hold few of
    them, and no string is looked at."""
    if type(value) is dict:
        items: Any = value.values()
    elif type(value) is list:
        items = value
    else:
        return False
    for item in items:
        kind = type(item)
        if (kind is dict or kind is list) and (limit <= 1 or nests_deeper(item, limit - 1)):
            return True
    return False


def _schema(item: Any) -> RawJSON:
    data: bytes = getattr(item, "mini")   # minified JSON bytes (the stubs say str)
    if _META not in item:
        return RawJSON(data)
    keys = list(item.keys())
    meta = item[_META]
    if isinstance(meta, str) and keys[0] == _META and keys.count(_META) == 1:
        prefix = _META_PREFIX + orjson.dumps(meta) + (b"," if len(keys) > 1 else b"")
        if data.startswith(prefix):   # simdjson and orjson escape a string alike
            return RawJSON(data, len(prefix))
    return RawJSON(data, -1)
