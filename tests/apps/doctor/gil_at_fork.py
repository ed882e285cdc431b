"""Keeps a thread of the master busy for 3 s after import, holding the GIL whenever the main thread
lets it go: uWSGI forks the workers meanwhile, each inherits the GIL held by a thread that does not
exist in it, and hangs before its first request. (A library's background thread does this now and
then; a busy one, every time.)"""

import threading
import time


def spin() -> None:
    until = time.monotonic() + 3
    while time.monotonic() < until:
        pass
    while True:
        time.sleep(60)


threading.Thread(target=spin, name="spinner", daemon=True).start()


def application(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
