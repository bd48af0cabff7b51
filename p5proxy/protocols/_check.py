"""Light type checks for request decoding: one isinstance per field, errors name the field."""

from __future__ import annotations

from typing import Any, NoReturn

from ..errors import InvalidRequest
from ..rawjson import RawJSON

__all__ = ["fail", "type_name", "opt_number", "opt_str", "opt_dict", "need_str", "need_int",
           "need_number", "need_list", "need_dict", "opt_bool", "tool_fields"]


def fail(param: str, message: str) -> NoReturn:
    raise InvalidRequest(f"{param}: {message}", param=param)


def type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def need_str(value: Any, param: str, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        fail(param, f"Input should be a valid string, got {type_name(value)}")
    if not value and not empty_ok:
        fail(param, "must not be empty")
    return value


def need_int(value: Any, param: str, *, minimum: int = 0, maximum: int = 2 ** 53 - 1) -> int:
    """An integer in [minimum, maximum]; the default maximum keeps arithmetic on it (budget +
    1024...) within what JSON encoders write (orjson stops at 64 bits)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            fail(param, f"Input should be a valid integer, got {type_name(value)}")
    if value < minimum:
        fail(param, f"must be greater than or equal to {minimum}")
    if value > maximum:
        fail(param, f"must be less than or equal to {maximum}")
    return int(value)


def need_number(value: Any, param: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(param, f"Input should be a valid number, got {type_name(value)}")
    return value


def need_list(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        fail(param, f"Input should be a valid array, got {type_name(value)}")
    return value


def need_dict(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(param, f"Input should be a valid object, got {type_name(value)}")
    return value


def tool_fields(fields: dict[str, Any], i: int, inner: str, schema_key: str,
                ) -> tuple[str, str | None, dict[str, Any] | RawJSON]:
    """Tool `i`'s name, description and schema (`fields` is the tool, or its `function`
    when `inner` is ".function"). A field is named (`tools.3.name`) only when its check fails:
    naming every field of every tool was ~2% of a Claude Code-sized request (24 tools)."""
    name: Any = fields.get("name")
    if not isinstance(name, str) or not name:
        need_str(name, f"tools.{i}{inner}.name")
    description: Any = fields.get("description")
    if description is not None and not isinstance(description, str):
        opt_str(description, f"tools.{i}{inner}.description")
    schema: Any = fields.get(schema_key)
    if schema is None:
        schema = {"type": "object", "properties": {}}
    elif not isinstance(schema, (dict, RawJSON)):   # a RawJSON is known to be an object
        need_dict(schema, f"tools.{i}{inner}.{schema_key}")
    return name, description, schema


def opt_bool(value: Any, param: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        fail(param, f"Input should be a valid boolean, got {type_name(value)}")
    return value


def opt_number(value: Any, param: str, *, minimum: float | None = None,
               maximum: float | None = None) -> float | int | None:
    """An optional number within [minimum, maximum]."""
    if value is None:
        return None
    number = need_number(value, param)
    if minimum is not None and number < minimum:
        fail(param, f"must be greater than or equal to {minimum:g}")
    if maximum is not None and number > maximum:
        fail(param, f"must be less than or equal to {maximum:g}")
    return number


def opt_str(value: Any, param: str) -> str | None:
    return None if value is None else need_str(value, param, empty_ok=True)


def opt_dict(value: Any, param: str) -> dict[str, Any] | None:
    return None if value is None else need_dict(value, param)
