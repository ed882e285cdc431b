"""One structured log event per step of an application's life in a process: ``build``,
``build_failed``, ``close`` (and ``forgot_inherited``), with stable key=value fields that people
read and tests and the benchmark parse, instead of regular expressions over prose::

    uwsgi_es [pid 4242] INFO event=build worker=1 pid=4242 name=default application=BankAccounts \
        store="SQLAlchemy store at sqlite:////srv/var/app.sqlite3" ms=23.5

Values are written logfmt-style: bare when they hold no space, quote or equals sign, else in double
quotes with backslash escapes. ``parse`` and ``events_in`` read them back.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("uwsgi_es.lifecycle")
_BARE = re.compile(r"[^\s\"=\\]+")
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def render(fields: dict[str, Any]) -> str:
    """``key=value key="a value"`` in the order given; None values are left out."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        if not _BARE.fullmatch(text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def emit(
    event: str, level: int = logging.INFO, *, exc_info: bool | BaseException = False, **fields: Any
) -> None:
    """Log one lifecycle event. The fields also travel on the record (``record.uwsgi_es``).
    ``exc_info``: True for the exception being handled, or an exception (its traceback is logged)."""
    everything = {"event": event, **fields}
    log.log(level, "%s", render(everything), exc_info=exc_info, extra={"uwsgi_es": everything})


def parse(line: str) -> dict[str, str] | None:
    """The fields of a lifecycle event's log line; None for any other line."""
    start = line.find("event=")
    if start < 0:
        return None
    fields = {}
    for key, raw in _FIELD.findall(line[start:]):
        quoted = raw.startswith('"')
        fields[key] = re.sub(r"\\(.)", _unescape, raw[1:-1]) if quoted else raw
    return fields


def _unescape(match: re.Match[str]) -> str:
    return "\n" if match.group(1) == "n" else match.group(1)


def events_in(text: str, event: str | None = None) -> Iterator[dict[str, str]]:
    """Every lifecycle event in a log (of ``event`` only, when given), in order."""
    for line in text.splitlines():
        fields = parse(line)
        if fields is not None and (event is None or fields.get("event") == event):
            yield fields


def configure_logging() -> None:
    """Send uwsgi_es's INFO logs to stderr (uWSGI's log) unless logging is already configured."""
    root = logging.getLogger("uwsgi_es")
    if root.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("uwsgi_es [pid %(process)d] %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
