"""JSON responses, built so that writing them can never fail.

msgspec (the one JSON library uwsgi_es uses, for events too) refuses strings that are not valid
Unicode (a lone surrogate from a client's JSON); a response that cannot be encoded would leave
uWSGI with nothing to send, and the client with no answer at all. ``json_response`` falls back to
escaping such strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec

from uwsgi_es.web.http import JSON, Response

_encode = msgspec.json.Encoder().encode


def json_body(payload: Any) -> bytes:
    try:
        return _encode(payload)
    except (TypeError, ValueError):  # e.g. UnicodeEncodeError: "surrogates not allowed"
        return json.dumps(payload, ensure_ascii=True, separators=(",", ":"), default=str).encode()


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json_body(payload), status, headers, JSON)


def error_response(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    """``{"error": message}``: every refusal of ours has this one shape."""
    return json_response({"error": message}, status, headers)
