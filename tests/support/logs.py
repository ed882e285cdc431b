"""What a healthy uWSGI log never holds: a crash, a respawn nobody asked for, a traceback."""

from __future__ import annotations

import re

CRASH = re.compile(
    r"Segmentation Fault|Fatal Python error|crippled|DAMN ! |Respawned uWSGI|respawning too fast"
    r"|Traceback \(most recent call last\)"
)


def crashes(log: str) -> list[str]:
    """The lines of ``log`` that show a process crashing or being respawned."""
    return [line for line in log.splitlines() if CRASH.search(line)]
