"""Crashes every worker in its post-fork hook, as a broken C extension would."""

import ctypes

from uwsgidecorators import postfork


@postfork
def crash() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def application(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
