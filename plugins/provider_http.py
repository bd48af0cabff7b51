"""Provider `http`: an endpoint with its own JSON chat format, configured without Python.

The request is a JSON `body` template whose placeholders (`"{{model}}"`, `"{{messages}}"`...)
are filled per request; the answer (`response_format`: sse, ndjson or json) is read through
dotted JSON paths (`message.content`, `choices.0.delta.content`) to the text, the finish
signal, the error and the usage. The options are listed in README "Declarative HTTP provider";
`config/ollama-native.example.yaml` is a worked example. Text only: tool calls go through
`tools: emulate`, which is this provider's default.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import orjson

from p5proxy import hookimpl
from p5proxy.canonical import (ChatRequest, ErrorEvent, ImagePart, MessageDelta, MessageStart,
                               MessageStop, StreamEvent, TextDelta, TextPart, ThinkingDelta,
                               ToolCallPart, ToolResultPart, Usage)
from p5proxy.config import Config, ProviderConfig
from p5proxy.errors import (ConfigError, UpstreamError, UpstreamProtocolError,
                            UpstreamStatusError, kind_for_status)
from p5proxy.ids import request_id
from p5proxy.ndjson import NDJSONDecoder
from p5proxy.protocols.anthropic.encode import encode_request as anthropic_request
from p5proxy.protocols.blocks import DeltaBlocks
from p5proxy.protocols.openai.encode import encode_request as openai_request
from p5proxy.protocols.openai.encode import system_text
from p5proxy.provider import Provider, Route, StreamDecoder, StreamParser, UpstreamRequest

__all__ = ["HTTPProvider", "HTTPStreamParser", "JSONPath", "render_template"]

log = logging.getLogger("p5proxy.provider_http")

MESSAGE_FORMATS = ("openai", "anthropic", "text")
RESPONSE_FORMATS = ("sse", "ndjson", "json")
PATH_KEYS = ("text", "thinking", "finish", "finish_value", "stop_reason", "error",
             "input_tokens", "output_tokens")
VARIABLES = ("model", "messages", "system", "max_tokens", "stream", "temperature", "top_p",
             "top_k", "stop", "request_id", "uuid")
DEFAULT_PATHS = {"text": "choices.0.delta.content", "finish": "choices.0.finish_reason",
                 "error": "error", "input_tokens": "usage.prompt_tokens",
                 "output_tokens": "usage.completion_tokens"}
DEFAULT_JSON_PATHS = {"text": "choices.0.message.content"}
_WHOLE = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_HEADER_VAR = re.compile(r"\{\{?\s*(request_id|uuid|model)\s*\}?\}")
# Finish values in the vocabularies upstreams use -> Anthropic stop reasons.
_STOPS = {"stop": "end_turn", "end_turn": "end_turn", "eos": "end_turn", "complete": "end_turn",
          "length": "max_tokens", "max_tokens": "max_tokens", "max_length": "max_tokens",
          "stop_sequence": "stop_sequence", "content_filter": "refusal", "refusal": "refusal"}


class JSONPath:
    """A dotted path with list indexes (`choices.0.delta.content`, `-1` for the last item)."""
    __slots__ = ("text", "keys")

    def __init__(self, text: str) -> None:
        self.text = text
        self.keys = tuple(int(k) if k.lstrip("-").isdigit() else k for k in text.split("."))

    def get(self, obj: Any) -> Any:
        for key in self.keys:
            if isinstance(obj, dict):
                obj = obj.get(key if isinstance(key, str) else str(key))
            elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
                obj = obj[key]
            else:
                return None
        return obj


def render_template(template: Any, values: dict[str, Any]) -> Any:
    """Fill a JSON template. A string that is one whole placeholder becomes the value itself
    (types kept; a None value removes the key, or the list item); placeholders inside longer
    strings are replaced by the value's text."""
    if isinstance(template, str):
        whole = _WHOLE.fullmatch(template)
        if whole:
            return values.get(whole.group(1))
        return _WHOLE.sub(lambda m: _text(values.get(m.group(1))), template)
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            filled = render_template(value, values)
            if filled is not None or value is None:
                out[key] = filled
        return out
    if isinstance(template, list):
        return [f for f in (render_template(v, values) for v in template) if f is not None]
    return template


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _placeholders(template: Any) -> set[str]:
    if isinstance(template, str):
        return set(_WHOLE.findall(template))
    if isinstance(template, dict):
        return set().union(*(_placeholders(v) for v in template.values()))
    if isinstance(template, list):
        return set().union(*(_placeholders(v) for v in template))
    return set()




def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class HTTPStreamParser(DeltaBlocks):
    """(event, data) pairs -> canonical events, reading each JSON event through the paths.
    Content comes before the finish signal within an event; the stream ends at `[DONE]`, at
    end of body after a finish signal, or right at the finish signal when it carries the usage
    (or no usage is configured). A body that ends before a finish signal is a truncation."""

    def __init__(self, paths: dict[str, JSONPath], *, finish_value: str | None,
                 stops: dict[str, str], provider: str) -> None:
        super().__init__()
        self.provider = provider
        self._stops = stops
        self._reason: Any = None
        self.done = False
        self._p = paths
        self._finish_value = finish_value
        self._started = False
        self._stop: str | None = None
        self._usage: Usage | None = None
        self._chars = 0

    def feed(self, event: str, data: str) -> list[StreamEvent]:
        if self.done or not data:
            return []
        if data == "[DONE]":
            return self._end() if self._stop is not None else []
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"invalid JSON in upstream event: {data[:200]!r}",
                                        provider=self.provider) from None
        return self.feed_obj(obj)

    def feed_obj(self, obj: Any) -> list[StreamEvent]:
        p = self._p
        error = p["error"].get(obj) if "error" in p else None
        if error:
            self.done = True
            return [ErrorEvent(_error(200, error, self.provider, None))]
        out: list[StreamEvent] = []
        if "thinking" in p:
            thinking = p["thinking"].get(obj)
            if isinstance(thinking, str) and thinking:
                self._thinking.append(thinking)
                out.append(ThinkingDelta(self._ensure("thinking", out), thinking))
        text = p["text"].get(obj)
        if isinstance(text, str) and text:
            self._chars += len(text)
            out.append(TextDelta(self._ensure("text", out), text))
        usage_in = _int(p["input_tokens"].get(obj)) if "input_tokens" in p else None
        usage_out = _int(p["output_tokens"].get(obj)) if "output_tokens" in p else None
        if usage_in is not None or usage_out is not None:
            self._usage = Usage(input_tokens=usage_in or 0, output_tokens=usage_out or 0)
        finish = p["finish"].get(obj) if "finish" in p else None
        finished = (str(finish) == self._finish_value if self._finish_value is not None
                    else bool(finish))
        if "stop_reason" in p:
            reason = p["stop_reason"].get(obj)
            if reason is not None:
                self._reason = reason
        if finished and self._stop is None:
            self._stop = self._stop_reason(self._reason if "stop_reason" in p else finish)
            if self._usage is not None or not ("input_tokens" in p or "output_tokens" in p):
                out.extend(self._end())
        return out

    def _stop_reason(self, value: Any) -> str:
        if isinstance(value, str) and value:
            return self._stops.get(value.lower(), "end_turn")
        return "end_turn"

    def _ensure(self, kind: str, out: list[StreamEvent]) -> int:
        if not self._started:   # this format has no start event: the first delta starts it
            self._started = True
            out.append(MessageStart())
        return super()._ensure(kind, out)

    def _end(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(MessageStart())
        self._close(out)
        usage = self._usage or Usage(output_tokens=(self._chars + 3) // 4)
        out.append(MessageDelta(self._stop or self._stop_reason(self._reason), None, usage))
        out.append(MessageStop())
        self.done = True
        return out

    def close(self) -> list[StreamEvent]:
        if self.done:
            return []
        if self._stop is not None or "finish" not in self._p:   # no signal to wait for
            return self._end()
        raise UpstreamProtocolError("upstream stream ended without a finish signal (truncated)",
                                    provider=self.provider)


def _error(status: int, error: Any, provider: str, retry_after: str | None) -> UpstreamError:
    message: Any = error
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or error.get("error") or error
        code = _int(error.get("code")) or _int(error.get("status"))
        if status == 200 and code and 400 <= code < 600:
            status = code
    if status == 200:   # an in-stream error without a status
        status = 500
    if not isinstance(message, str):
        message = orjson.dumps(message).decode() if message else f"upstream error {status}"
    return UpstreamStatusError(message, provider=provider, status=status,
                               kind=kind_for_status(status), retry_after=retry_after)


def _text_transcript(req: ChatRequest, with_system: bool) -> str:
    """The conversation as plain text, ending with the assistant's cue."""
    lines = []
    system = system_text(req.system)
    if with_system and system:
        lines.append(f"System: {system}")
    for msg in req.messages:
        texts = []
        for part in msg.parts:
            if isinstance(part, TextPart):
                texts.append(part.text)
            elif isinstance(part, ToolCallPart):
                texts.append(f"[tool call {part.name} {orjson.dumps(part.input).decode()}]")
            elif isinstance(part, ToolResultPart):
                inner = " ".join(p.text for p in part.content if isinstance(p, TextPart))
                texts.append(f"[tool result] {inner}")
            elif isinstance(part, ImagePart):
                texts.append("[image]")
        if texts:
            lines.append(f"{msg.role.capitalize()}: " + "\n".join(texts))
    lines.append("Assistant:")
    return "\n\n".join(lines)


class HTTPProvider(Provider):
    protocol = "http"          # never a same-protocol passthrough
    default_tools = "emulate"  # the format has no tool calls of its own

    def __init__(self, config: ProviderConfig, settings: Config) -> None:
        super().__init__(config, settings)
        opts = config.options
        where = f"providers.{config.name}"
        problems: list[str] = []
        url = str(opts.get("url") or config.base_url)
        self.url = config.base_url + url if url.startswith("/") else url
        self.method = str(opts.get("method") or "POST").upper()
        self.headers = {"Content-Type": "application/json", **dict(config.headers)}
        self.messages_format = str(opts.get("messages_format") or "openai")
        if self.messages_format not in MESSAGE_FORMATS:
            problems.append(f"{where}.messages_format: must be one of "
                            f"{', '.join(MESSAGE_FORMATS)}, got {self.messages_format!r}")
        self.response_format = str(opts.get("response_format") or "sse")
        if self.response_format not in RESPONSE_FORMATS:
            problems.append(f"{where}.response_format: must be one of "
                            f"{', '.join(RESPONSE_FORMATS)}, got {self.response_format!r}")
        self.body = opts.get("body") or {"model": "{{model}}", "messages": "{{messages}}",
                                         "max_tokens": "{{max_tokens}}", "stream": "{{stream}}"}
        if not isinstance(self.body, (dict, list)):
            problems.append(f"{where}.body: must be a JSON object (a mapping)")
        used = _placeholders(self.body)
        for name in sorted(used - set(VARIABLES)):
            problems.append(f"{where}.body: unknown placeholder {{{{{name}}}}} "
                            f"(known: {', '.join(VARIABLES)})")
        self.system_apart = "system" in used   # else the system prompt goes into the messages
        user_paths = self._mapping(opts, "paths", where, problems)
        user_json = self._mapping(opts, "json_paths", where, problems)
        # Without `paths`: an OpenAI-shaped answer. With them: exactly what is given.
        given = bool(opts.get("paths"))
        stream_paths = {**(DEFAULT_PATHS if not given else {"error": "error"}), **user_paths}
        json_paths = {**stream_paths, **(DEFAULT_JSON_PATHS if not given else {}), **user_json}
        stops = opts.get("stop_reasons") or {}
        if not isinstance(stops, dict):
            problems.append(f"{where}.stop_reasons: must be a mapping of upstream value -> "
                            "end_turn | max_tokens | stop_sequence | refusal")
            stops = {}
        self.stops = {**_STOPS, **{str(k).lower(): str(v) for k, v in stops.items()}}
        self.finish_value = _opt_str(stream_paths.pop("finish_value", None))
        self.json_finish_value = _opt_str(json_paths.pop("finish_value", None))
        self.paths = {k: JSONPath(str(v)) for k, v in stream_paths.items() if v}
        self.json_paths = {k: JSONPath(str(v)) for k, v in json_paths.items() if v}
        if "text" not in self.paths:
            problems.append(f"{where}.paths.text: is required")
        if problems:
            raise ConfigError(problems)

    @staticmethod
    def _mapping(opts: dict[str, Any], key: str, where: str, problems: list[str]) -> dict[str, Any]:
        raw = opts.get(key) or {}
        if not isinstance(raw, dict):
            problems.append(f"{where}.{key}: must be a mapping")
            return {}
        for name in raw:
            if name not in PATH_KEYS:
                problems.append(f"{where}.{key}.{name}: unknown path (known: "
                                f"{', '.join(PATH_KEYS)})")
        return {k: v for k, v in raw.items() if k in PATH_KEYS}

    def _values(self, req: ChatRequest, route: Route) -> dict[str, Any]:
        fmt = self.messages_format
        with_system = not self.system_apart
        max_tokens = route.clamp_max_tokens(req.max_tokens, None)
        if fmt == "anthropic":
            encoded = anthropic_request(req, model=route.upstream_model, stream=False,
                                        max_tokens=max_tokens or self.settings.default_max_tokens)
            messages: Any = encoded["messages"]
            if with_system and encoded.get("system"):
                messages = [{"role": "system", "content": system_text(req.system)}, *messages]
        elif fmt == "openai":
            messages = openai_request(req, model=route.upstream_model, max_tokens=None,
                                      stream=False)["messages"]
            if not with_system and messages and messages[0].get("role") == "system" \
                    and req.system:
                messages = messages[1:]
        else:
            messages = _text_transcript(req, with_system)
        rid = request_id()
        return {"model": route.upstream_model, "messages": messages,
                "system": system_text(req.system) or None, "max_tokens": max_tokens,
                "stream": req.stream and self.response_format != "json",
                "temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k,
                "stop": list(req.stop) or None, "request_id": rid, "uuid": str(uuid.uuid4())}

    def build_request(self, req: ChatRequest, route: Route) -> UpstreamRequest:
        values = self._values(req, route)
        headers = {k: _HEADER_VAR.sub(lambda m: str(values[m.group(1)]), v)
                   for k, v in self.headers.items()}
        body = orjson.dumps(render_template(self.body, values))
        return UpstreamRequest(self.url, body, headers, values["stream"], self.method)

    def auth_headers(self, key: str) -> dict[str, str]:
        """Bearer, unless the configured headers carry their own Authorization."""
        if any(k.lower() == "authorization" for k in self.headers):
            return {}
        return super().auth_headers(key)

    def stream_decoder(self) -> StreamDecoder:
        if self.response_format == "ndjson":
            return NDJSONDecoder()
        return super().stream_decoder()

    def stream_parser(self) -> StreamParser:
        return HTTPStreamParser(self.paths, finish_value=self.finish_value, stops=self.stops,
                                provider=self.name)

    def parse_response(self, body: dict[str, Any]) -> list[StreamEvent]:
        """A whole JSON answer: complete by definition, finish signal or not."""
        parser = HTTPStreamParser(self.json_paths, finish_value=self.json_finish_value,
                                  stops=self.stops, provider=self.name)
        events = parser.feed_obj(body)
        if not parser.done:
            events.extend(parser._end())
        return events

    def map_error(self, status: int, body: Any, headers: Any) -> UpstreamError:
        error = self.json_paths["error"].get(body) if "error" in self.json_paths else None
        if not error and isinstance(body, dict):
            error = body.get("error") or body
        return _error(status, error or body, self.name, headers.get("retry-after"))

    def describe(self) -> dict[str, Any]:
        return {"type": self.config.type, "url": self.url, "method": self.method,
                "response_format": self.response_format, **self.describe_access()}


@hookimpl(trylast=True)
def p5proxy_register_providers(register: Any, config: Config) -> None:
    register("http", HTTPProvider)
