"""``Hosting``: what uwsgi_es needs of an application object to host it in a process. Our own
``Application`` provides it; ``lifecycle.kinds`` adapts other kinds of application to it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Hosting(Protocol):
    def ping(self) -> None:
        """Raise unless the application's store answers (checked before it is registered)."""

    def check_ready(self) -> None:
        """Raise unless the application can serve now, writes included (``/ready``)."""

    def describe(self) -> str:
        """One line for logs and ``/worker``: which application, on which store (no secrets)."""

    def close(self) -> None:
        """Release its connections (in a forked child: forget them, never close them)."""
