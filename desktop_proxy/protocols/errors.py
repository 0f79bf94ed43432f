"""Protocol errors and error bodies in each client's dialect.

Status → type tables follow protocols.md §1.6 / §5.1 (Anthropic) and §2.6 / §5.2 (OpenAI).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "ProtocolError",
    "anthropic_error_body",
    "anthropic_error_type",
    "anthropic_status_for_upstream",
    "as_object",
    "extract_error_message",
    "is_quota_error",
    "openai_error_body",
    "openai_status_for_upstream",
    "optional_bool",
    "optional_dict",
    "optional_int",
    "optional_list",
    "optional_number",
    "optional_str",
    "require_dict",
    "require_int",
    "require_list",
    "require_str",
    "status_for_anthropic_error_type",
]


class ProtocolError(Exception):
    """A request or response that a codec cannot read or cannot express.

    `message` names the offending field path and what is wrong with it, e.g.
    "messages[2].content[0]: unknown block type 'foo'". Raised for client requests (status
    400) and for malformed upstream responses (status 502).
    """

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


_ANTHROPIC_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

ANTHROPIC_ERROR_TYPES: frozenset[str] = frozenset(_ANTHROPIC_TYPE_BY_STATUS.values())

_STATUS_BY_ANTHROPIC_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def anthropic_error_type(status: int) -> str:
    """The Anthropic `error.type` for an HTTP status (other 4xx → invalid_request_error,
    other 5xx → api_error)."""
    if status in _ANTHROPIC_TYPE_BY_STATUS:
        return _ANTHROPIC_TYPE_BY_STATUS[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def status_for_anthropic_error_type(error_type: str | None, default: int = 500) -> int:
    """The HTTP status an Anthropic error type stands for (e.g. overloaded_error → 529)."""
    if error_type is None:
        return default
    return _STATUS_BY_ANTHROPIC_TYPE.get(error_type, default)


def anthropic_error_body(status: int, message: str, type: str | None = None) -> dict[str, Any]:
    """`{"type":"error","error":{"type","message"}}`; `type` defaults from the status."""
    error_type = type if type in ANTHROPIC_ERROR_TYPES else anthropic_error_type(status)
    return {"type": "error", "error": {"type": error_type, "message": message}}


def anthropic_status_for_upstream(status: int, body: object = None) -> int:
    """The status to give an Anthropic client for an upstream error status (§5.1).

    - 503 becomes 529: the Anthropic SDKs raise `OverloadedError` only for 529, and Claude Code
      backs off on it; 502 stays 502 (`api_error`, retried like any 5xx).
    - 408 becomes 504 (`timeout_error`) so the client still retries it.
    - Other unlisted 4xx become 400: `invalid_request_error` "may also be used for other 4XX".
    - A quota error (OpenAI `insufficient_quota`, usually sent as 429) becomes 402
      `billing_error`, so the client does not retry something that cannot recover. Pass the
      upstream body to get this.
    """
    if body is not None and is_quota_error(body):
        return 402
    if status in (400, 401, 402, 403, 404, 413, 429, 500, 502, 504, 529):
        return status
    if status == 503:
        return 529
    if status == 408:
        return 504
    if 400 <= status < 500:
        return 400
    return 500 if status >= 500 else status


def openai_status_for_upstream(status: int) -> int:
    """The status to give an OpenAI client for an upstream error status (§5.2): 529 → 503."""
    return 503 if status == 529 else status


_OPENAI_TYPE_BY_STATUS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def openai_error_body(
    status: int,
    message: str,
    type: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """`{"error":{"message","type","param","code"}}`; type and code default from the status.

    OpenAI SDKs classify errors by HTTP status only; the strings follow what OpenAI itself sends
    where known (401 invalid_api_key, 429 rate_limit_exceeded, ≥500 server_error).
    """
    default_type, default_code = _OPENAI_TYPE_BY_STATUS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {
        "error": {
            "message": message,
            "type": type or default_type,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }


def is_quota_error(body: object) -> bool:
    """Whether an upstream error body says the account is out of credit (not a rate limit)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return False
    markers = (error.get("code"), error.get("type"))
    return any(m in ("insufficient_quota", "billing_error") for m in markers)


def extract_error_message(body: object, fallback: str) -> str:
    """The human-readable message inside an upstream error body of any common shape.

    Reads OpenAI/Anthropic `{"error":{"message"}}`, `{"error":"text"}`, FastAPI/Bedrock
    `{"detail": ...}`, `{"message"}` / AWS `{"Message"}`, a list of those (Gemini), JSON text
    or plain text. Returns `fallback` when nothing usable is found.
    """
    message = _find_message(body, depth=0)
    return message if message else fallback


def _find_message(body: object, depth: int) -> str | None:
    if depth > 4:
        return None
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        return _message_from_text(body, depth)
    if isinstance(body, list):
        return _find_message(body[0], depth + 1) if body else None
    if not isinstance(body, dict):
        return None
    for key in ("error", "detail", "message", "Message", "error_message", "msg"):
        if key in body:
            found = _find_message(body[key], depth + 1)
            if found:
                return found
    return None


def _message_from_text(text: str, depth: int) -> str | None:
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            return stripped
        return _find_message(parsed, depth + 1)
    return stripped or None


# --- field readers for decoders -------------------------------------------------------------
# Each returns the typed value of `obj[key]` or raises ProtocolError naming the field path,
# e.g. "messages[2].content[0].text: required string". Decoders of upstream bodies pass paths
# starting with "upstream", so a malformed upstream answer is a 502, not blamed on the client.


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _status_for(path: str) -> int:
    return 502 if path.startswith("upstream") else 400


def _field_error(obj: dict[str, Any], key: str, path: str, kind: str) -> ProtocolError:
    name = f"{path}.{key}" if path else key
    value = obj.get(key)
    if value is None:
        return ProtocolError(f"{name}: required {kind}", name, _status_for(path))
    article = "an" if kind[0] in "aeiou" else "a"
    message = f"{name}: must be {article} {kind}, got {_type_name(value)}"
    return ProtocolError(message, name, _status_for(path))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def require_str(obj: dict[str, Any], key: str, path: str = "") -> str:
    value = obj.get(key)
    if isinstance(value, str):
        return value
    raise _field_error(obj, key, path, "string")


def optional_str(obj: dict[str, Any], key: str, path: str = "") -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _field_error(obj, key, path, "string")


def require_int(obj: dict[str, Any], key: str, path: str = "") -> int:
    value = obj.get(key)
    if isinstance(value, int) and _is_int(value):
        return value
    raise _field_error(obj, key, path, "integer")


def optional_int(obj: dict[str, Any], key: str, path: str = "") -> int | None:
    value = obj.get(key)
    if value is None or (isinstance(value, int) and _is_int(value)):
        return value
    raise _field_error(obj, key, path, "integer")


def optional_number(obj: dict[str, Any], key: str, path: str = "") -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _field_error(obj, key, path, "number")


def optional_bool(obj: dict[str, Any], key: str, path: str = "") -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise _field_error(obj, key, path, "boolean")


def require_list(obj: dict[str, Any], key: str, path: str = "") -> list[Any]:
    value = obj.get(key)
    if isinstance(value, list):
        return value
    raise _field_error(obj, key, path, "array")


def optional_list(obj: dict[str, Any], key: str, path: str = "") -> list[Any]:
    """The list at `key`; an empty list when absent or null."""
    value = obj.get(key)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise _field_error(obj, key, path, "array")


def require_dict(obj: dict[str, Any], key: str, path: str = "") -> dict[str, Any]:
    value = obj.get(key)
    if isinstance(value, dict):
        return value
    raise _field_error(obj, key, path, "object")


def optional_dict(obj: dict[str, Any], key: str, path: str = "") -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise _field_error(obj, key, path, "object")


def as_object(value: object, path: str) -> dict[str, Any]:
    """`value` itself as a JSON object, or ProtocolError "<path>: must be an object"."""
    if isinstance(value, dict):
        return value
    name = path or "body"
    raise ProtocolError(
        f"{name}: must be an object, got {_type_name(value)}", path or None, _status_for(path)
    )
