"""Client input quoted back in answers and logs: shortened, and always encodable.

A client can send anything, including a lone surrogate (``"\\ud800"`` in JSON) that no UTF-8
encoder accepts, or newlines that would forge log lines. Every piece of client text we repeat goes
through ``client_text``: non-printable characters are escaped, so the answer can always be written.
"""

from __future__ import annotations

LIMIT = 200


def client_text(text: str, limit: int = LIMIT) -> str:
    """``text`` cut to ``limit`` characters, with anything unprintable escaped (``\\ud800``, ``\\n``)."""
    shortened = text if len(text) <= limit else text[:limit] + "..."
    if shortened.isprintable():
        return shortened
    return shortened.encode("unicode_escape", "backslashreplace").decode("ascii")


def quoted(text: str, limit: int = LIMIT) -> str:
    """``client_text`` in single quotes, for naming a field or a path in a message."""
    return f"'{client_text(text, limit)}'"
