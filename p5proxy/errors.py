"""One error tree; the routes render any of these in the caller's protocol shape.

    P5ProxyError(status, kind, message)
    ├── ConfigError            bad configuration: stops start-up
    ├── PluginError            a plugin failed to load or register: stops start-up
    ├── RequestError           the client's fault (4xx)
    │   ├── InvalidRequest     400, names the offending field in `param`
    │   ├── AuthError          401
    │   ├── UnknownModel       404
    │   └── PayloadTooLarge    413
    └── UpstreamError(status, provider)
        ├── UpstreamTimeout       504
        ├── UpstreamConnectError  502
        ├── UpstreamStatusError   the upstream's own status, mapped
        └── UpstreamProtocolError 502: the upstream broke its wire format or ended early

`kind` is protocol-neutral and equals Anthropic's error type; protocols/openai.py maps it.
"""

from __future__ import annotations

__all__ = [
    "P5ProxyError", "ConfigError", "PluginError", "RequestError", "InvalidRequest", "AuthError",
    "UnknownModel", "PayloadTooLarge", "UpstreamError", "UpstreamTimeout", "UpstreamConnectError",
    "UpstreamStatusError", "UpstreamProtocolError", "HTTPError", "kind_for_status",
]


class P5ProxyError(Exception):
    status = 500
    kind = "api_error"

    def __init__(self, message: str, *, status: int | None = None, kind: str | None = None,
                 param: str | None = None, code: str | None = None,
                 retry_after: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if kind is not None:
            self.kind = kind
        self.param = param
        self.code = code
        self.retry_after = retry_after


class ConfigError(P5ProxyError):
    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("invalid configuration:\n  " + "\n  ".join(self.problems))


class PluginError(P5ProxyError):
    pass


class RequestError(P5ProxyError):
    status = 400
    kind = "invalid_request_error"


class InvalidRequest(RequestError):
    pass


class AuthError(RequestError):
    status = 401
    kind = "authentication_error"


class UnknownModel(RequestError):
    status = 404
    kind = "not_found_error"
    code = "model_not_found"


class PayloadTooLarge(RequestError):
    status = 413
    kind = "request_too_large"


class UpstreamError(P5ProxyError):
    status = 502
    kind = "api_error"

    def __init__(self, message: str, *, provider: str = "", **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.provider = provider


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "timeout_error"


class UpstreamConnectError(UpstreamError):
    status = 502
    kind = "api_error"


class UpstreamStatusError(UpstreamError):
    pass


class UpstreamProtocolError(UpstreamError):
    status = 502
    kind = "api_error"


class HTTPError(Exception):
    """The upstream broke HTTP/1.1 (p5proxy/http1.py): a malformed answer, or the connection
    lost mid-answer. The upstream call turns it into one of the errors above. (Here, not in
    http1.py: that module is compiled, and its classes may derive only from compiled ones.)"""


_KIND_BY_STATUS = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 408: "timeout_error", 409: "conflict_error",
    413: "request_too_large", 422: "invalid_request_error", 429: "rate_limit_error",
    500: "api_error", 502: "api_error", 503: "overloaded_error", 504: "timeout_error",
    529: "overloaded_error",
}


def kind_for_status(status: int) -> str:
    """Anthropic's error type for an HTTP status (the neutral `kind`)."""
    if status in _KIND_BY_STATUS:
        return _KIND_BY_STATUS[status]
    return "invalid_request_error" if status < 500 else "api_error"
