"""Run a function in a real forked child and bring back what it returned or raised."""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable
from typing import Any


def in_child(function: Callable[[], Any]) -> tuple[str, Any]:
    """('ok', result) or ('error', 'ExceptionName: message') from a forked child."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        os.close(read_end)
        try:
            outcome: tuple[str, Any] = ("ok", function())
        except BaseException as exc:
            outcome = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        with os.fdopen(write_end, "wb") as pipe:
            pickle.dump(outcome, pipe)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result: tuple[str, Any] = pickle.loads(data)  # noqa: S301 (our own child's bytes)
    return result
