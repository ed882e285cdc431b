"""JSON responses, built so that writing them can never fail.

orjson refuses strings that are not valid Unicode (a lone surrogate from a client's JSON); a
response that cannot be encoded would leave uWSGI with nothing to send, and the client with no
answer at all. ``json_response`` falls back to escaping such strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from werkzeug.wrappers import Response

JSON = "application/json"


def json_body(payload: Any) -> bytes:
    try:
        return orjson.dumps(payload)
    except TypeError:  # e.g. "str is not valid UTF-8: surrogates not allowed"
        return json.dumps(payload, ensure_ascii=True, separators=(",", ":"), default=str).encode()


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json_body(payload), status=status, headers=headers, mimetype=JSON)


def error_response(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    """``{"error": message}``: every refusal of ours has this one shape."""
    return json_response({"error": message}, status, headers)
