"""The incremental `<function_calls>` extractor behind tool-use emulation.

Text goes in as it streams from the upstream; out come `Text`, `CallStart`, `CallArgs` (JSON
fragments of the call's input object, one per finished parameter) and `CallEnd`. Text that could
still be the start of `<function_calls>` is held back only while it could (plus trailing
whitespace, dropped when a block follows). A block that turns out malformed before any call in it
was emitted comes back as the text the model wrote; everything after the closing tag (or after
the first call when parallel calls are disabled) is dropped: models that were not stopped there
tend to invent the tool results. Nothing here raises on model output.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Union

import orjson

__all__ = ["OPEN", "CLOSE", "Text", "CallStart", "CallArgs", "CallEnd", "Output",
           "ToolCallExtractor", "convert_value"]

log = logging.getLogger("p5proxy.tool_emulation")

OPEN = "<function_calls>"
CLOSE = "</function_calls>"
_INVOKE_END = "</invoke>"
_PARAM_END = "</parameter>"
_CDATA, _CDATA_END = "<![CDATA[", "]]>"
_INVOKE = re.compile(r"<invoke\s+name\s*=\s*(?:\"([^\"]*)\"|'([^']*)')\s*>")
_PARAM = re.compile(r"<parameter\s+name\s*=\s*(?:\"([^\"]*)\"|'([^']*)')\s*>")
_MAX_TAG = 512   # an opening tag longer than this is not one


@dataclass(slots=True)
class Text:
    text: str


@dataclass(slots=True)
class CallStart:
    name: str


@dataclass(slots=True)
class CallArgs:
    partial_json: str


@dataclass(slots=True)
class CallEnd:
    pass


Output = Union[Text, CallStart, CallArgs, CallEnd]


# --- parameter values --------------------------------------------------------------------

def _types(schema: Any) -> list[str]:
    if not isinstance(schema, dict):
        return []
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [str(k) for k in kind]
    out: list[str] = []
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            out += _types(sub)
    if not out and "enum" in schema:
        out = sorted({_JSON_TYPE.get(type(v), "string") for v in schema["enum"]})
    return out


_JSON_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean",
              type(None): "null", dict: "object", list: "array"}


def _as(kind: str, text: str) -> tuple[bool, Any]:
    s = text.strip()
    if kind == "boolean":
        low = s.lower()
        if low in ("true", "false"):
            return True, low == "true"
        return False, None
    if kind == "null":
        return (True, None) if s.lower() in ("null", "none", "") else (False, None)
    if kind == "string":
        return True, text
    try:
        value = orjson.loads(s)
    except orjson.JSONDecodeError:
        return False, None
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        value = int(value)
    ok = {"integer": isinstance(value, int) and not isinstance(value, bool),
          "number": isinstance(value, (int, float)) and not isinstance(value, bool),
          "object": isinstance(value, dict), "array": isinstance(value, list)}.get(kind, True)
    return ok, value


def convert_value(raw: str, schema: Any) -> Any:
    """A parameter's text -> a JSON value of the type its schema asks for. Strings are kept as
    written (one wrapping newline on each side removed); CDATA is unwrapped; a value that does
    not parse as its type is kept as the string rather than lost."""
    text = raw
    stripped = text.strip()
    if stripped.startswith(_CDATA) and stripped.endswith(_CDATA_END):
        text = stripped[len(_CDATA):-len(_CDATA_END)]
    elif len(text) > 1 and text.startswith("\n") and text.endswith("\n"):
        text = text[1:-1]
    kinds = _types(schema)
    if not kinds:   # no schema: JSON when it clearly is, else the string
        if stripped[:1] in ("{", "[") or stripped in ("true", "false", "null"):
            ok, value = _as("any", text)
            if ok:
                return value
        return text
    for kind in sorted(kinds, key=lambda k: k == "string"):   # string last: it takes anything
        ok, value = _as(kind, text)
        if ok:
            return value
    log.warning("tool parameter %r does not match its schema type %s; passing it as a string",
                text[:80], "/".join(kinds))
    return text


# --- the extractor -----------------------------------------------------------------------

def _could_be(buf: str, *tags: str) -> bool:
    """`buf` is a proper prefix of one of the tags (or of an opening tag with attributes)."""
    return any(tag.startswith(buf) for tag in tags)


def _held_suffix(buf: str) -> int:
    """Where the part of `buf` to hold back starts: a possible start of OPEN and the whitespace
    before it."""
    cut = len(buf)
    lt = buf.rfind("<")
    if lt >= 0 and OPEN.startswith(buf[lt:]):
        cut = lt
    while cut > 0 and buf[cut - 1].isspace():
        cut -= 1
    return cut


class ToolCallExtractor:
    """`feed(text)` and finally `close()`; both return outputs. `calls` counts emitted calls;
    `recovered` says a call was completed from an unterminated block."""

    def __init__(self, schemas: dict[str, dict[str, Any]], *, parallel: bool = True) -> None:
        self.schemas = schemas
        self.parallel = parallel
        self.calls = 0
        self.recovered = False
        self._mode = "text"          # text | block | invoke | param | done
        self._buf = ""
        self._raw: list[str] = []    # the block as written, for the fallback to text
        self._name = ""
        self._param = ""
        self._nparams = 0            # parameters emitted for the current call
        self._started = False        # CallStart emitted for the current call

    @property
    def done(self) -> bool:
        return self._mode == "done"

    def release_text(self) -> list[Output]:
        """The stream failed: text held back goes out, a block in progress is abandoned."""
        out: list[Output] = [Text(self._buf)] if self._mode == "text" and self._buf else []
        self._mode, self._buf = "done", ""
        return out

    def feed(self, text: str) -> list[Output]:
        if self._mode == "done" or not text:
            return []
        self._buf += text
        out: list[Output] = []
        while self._step(out):
            pass
        return out

    def close(self) -> list[Output]:
        """End of the upstream's text: flush what was held, complete or give back a block."""
        out: list[Output] = []
        mode, buf = self._mode, self._buf
        self._buf = ""
        if mode == "text":
            if buf:
                out.append(Text(buf))
        elif mode == "block":
            if self.calls == 0:
                self._fallback(out, buf, "a <function_calls> block without any <invoke>")
        elif mode in ("invoke", "param"):
            if mode == "param":
                value = buf
                for tag in (_PARAM_END, _INVOKE_END, CLOSE):   # a cut-off closing tag
                    for n in range(len(tag) - 1, 0, -1):
                        if value.endswith(tag[:n]):
                            value = value[:-n]
                            break
                if value.lstrip().startswith(_CDATA) and _CDATA_END not in value:
                    value = value + _CDATA_END
                log.warning("tool call %s: parameter %r was not closed; using its text as is",
                            self._name, self._param)
                self._emit_param(out, value)
            elif self.calls == 0 and not self._started and buf.strip():
                self._fallback(out, buf, "an unterminated <invoke>")
                self._mode = "done"
                return out
            self.recovered = True
            self._end_call(out)
        self._mode = "done"
        return out

    # One parsing step; True when it consumed something and may continue.
    def _step(self, out: list[Output]) -> bool:
        mode = self._mode
        if mode == "text":
            return self._step_text(out)
        if mode == "param":
            return self._step_param(out)
        if mode == "done":
            self._buf = ""
            return False
        buf = self._buf
        body = buf.lstrip()
        if not body:
            self._take(len(buf))
            return False
        skip = len(buf) - len(body)
        if mode == "block":
            if body.startswith(CLOSE):
                self._take(skip + len(CLOSE))
                self._finish(out)
                return self._mode == "text"
            match = _INVOKE.match(body)
            if match:
                self._take(skip + match.end())
                self._name, self._nparams, self._started = match[1] or match[2] or "", 0, False
                self._mode = "invoke"
                return True
            if _could_be(body, CLOSE) or (body.startswith("<invoke") or "<invoke".startswith(body)) \
                    and ">" not in body and len(body) < _MAX_TAG:
                return False
            return self._malformed(out, "unexpected text in <function_calls>")
        # invoke
        if body.startswith(CLOSE):   # </invoke> forgotten: the block end closes the call too
            self._take(skip + len(CLOSE))
            self._end_call(out)
            self._finish(out)
            return False
        if body.startswith(_INVOKE_END):
            self._take(skip + len(_INVOKE_END))
            self._end_call(out)
            if not self.parallel:
                self._finish(out)
                return False
            self._mode = "block"
            return True
        match = _PARAM.match(body)
        if match:
            self._take(skip + match.end())
            self._param = match[1] or match[2] or ""
            self._mode = "param"
            return True
        if _could_be(body, _INVOKE_END, CLOSE) or (body.startswith("<parameter")
                                                  or "<parameter".startswith(body)) \
                and ">" not in body and len(body) < _MAX_TAG:
            return False
        return self._malformed(out, f"unexpected text in <invoke name={self._name!r}>")

    def _step_text(self, out: list[Output]) -> bool:
        buf = self._buf
        at = buf.find(OPEN)
        if at >= 0:
            text = buf[:at].rstrip()
            if text:
                out.append(Text(text))
            self._buf = buf[at + len(OPEN):]
            self._raw = [buf[len(text):at + len(OPEN)]]
            self._mode = "block"
            return True
        cut = _held_suffix(buf)
        if cut:
            out.append(Text(buf[:cut]))
            self._buf = buf[cut:]
        return False

    def _step_param(self, out: list[Output]) -> bool:
        buf = self._buf
        start = 0
        body = buf.lstrip()
        if body.startswith(_CDATA):
            end = buf.find(_CDATA_END)
            if end < 0:
                return False
            start = end + len(_CDATA_END)
        elif _CDATA.startswith(body) and body:
            return False
        end = buf.find(_PARAM_END, start)
        if end < 0:
            return False
        self._take(end + len(_PARAM_END))
        self._emit_param(out, buf[:end])
        self._mode = "invoke"
        return True

    def _take(self, n: int) -> None:
        self._raw.append(self._buf[:n])
        self._buf = self._buf[n:]

    def _emit_param(self, out: list[Output], raw: str) -> None:
        if not self._started:
            out.append(CallStart(self._name))
            self._started = True
        schema = self.schemas.get(self._name) or {}
        props = schema.get("properties") if isinstance(schema, dict) else None
        value = convert_value(raw, (props or {}).get(self._param))
        head = "{" if self._nparams == 0 else ", "
        self._nparams += 1
        out.append(CallArgs(head + orjson.dumps(self._param).decode() + ": "
                            + orjson.dumps(value).decode()))

    def _end_call(self, out: list[Output]) -> None:
        if not self._started:
            out.append(CallStart(self._name))
        out.append(CallArgs("}" if self._nparams else "{}"))
        out.append(CallEnd())
        self.calls += 1
        self._started = False
        self._nparams = 0

    def _finish(self, out: list[Output]) -> None:
        if self.calls == 0:   # <function_calls></function_calls>: nothing was called
            self._fallback(out, "", "an empty <function_calls> block")
            return
        self._mode = "done"
        self._buf = ""

    def _malformed(self, out: list[Output], why: str) -> bool:
        if self.calls == 0 and not self._started:
            self._fallback(out, "", why)
            return True
        log.warning("tool emulation: %s after a call; ignoring the rest of the answer", why)
        if self._mode == "invoke":
            self.recovered = True
            self._end_call(out)
        self._mode = "done"
        self._buf = ""
        return False

    def _fallback(self, out: list[Output], tail: str, why: str) -> None:
        """The block was not a tool call: give the model's text back (and keep scanning)."""
        log.warning("tool emulation: %s; returning it as text", why)
        # the opening tag and what was consumed go out as text; the rest is scanned again
        out.append(Text("".join(self._raw) + tail))
        self._raw = []
        self._mode = "text"
