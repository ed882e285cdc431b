"""The benchmark's comparison apps, kept as lean as honest code allows; they share only ``respond``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any


def respond(start_response: Callable[..., Any], status: str, payload: Any) -> Iterable[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
