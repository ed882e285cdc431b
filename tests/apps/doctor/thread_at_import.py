"""Starts a background thread when imported: it runs in the master only, never in a worker."""

import threading
import time


def heartbeat() -> None:
    while True:
        time.sleep(0.5)


threading.Thread(target=heartbeat, name="heartbeat", daemon=True).start()


def application(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
