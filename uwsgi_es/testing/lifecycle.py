"""The context-manager protocol shared by the test servers: ``with Server() as s`` starts it,
leaving the block stops it, whatever happened inside."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StartStop:
    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
