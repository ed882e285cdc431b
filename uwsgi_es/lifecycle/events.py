"""One structured log event per step of an application's life in a process: ``build``,
``build_failed``, ``close`` (and ``forgot_inherited``), with stable key=value fields that people
read and tests and the benchmark parse, instead of regular expressions over prose::

    uwsgi_es [pid 4242] INFO event=build worker=1 pid=4242 name=default application=BankAccounts \
        store="SQLAlchemy store at sqlite:////srv/var/app.sqlite3" ms=23.5

Values are written logfmt-style: bare when they hold no space, quote or equals sign, else in double
quotes with backslash escapes. With ``UWSGI_ES_LOG_FORMAT=json`` every uwsgi_es log line is one
JSON object instead (``JsonLines``): time, level, logger, pid, worker, the request id of the request
being served, and the event's fields (or the message), for a log pipeline. ``parse`` and
``events_in`` read both forms back.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import msgspec

from uwsgi_es.lifecycle import process

log = logging.getLogger("uwsgi_es.lifecycle")
# The id of the request this context (thread, greenlet) is serving, set by the web layer.
request_id: ContextVar[str | None] = ContextVar("uwsgi_es_request_id", default=None)
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
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        if not isinstance(entry, dict) or "event" not in entry:
            return None
        return {k: f"{v:.1f}" if isinstance(v, float) else str(v) for k, v in entry.items() if v is not None}
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


class JsonLines(logging.Formatter):
    """One JSON object per log record (``UWSGI_ES_LOG_FORMAT=json``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "worker": process.worker_id(),
            "request_id": request_id.get(),
        }
        fields = getattr(record, "uwsgi_es", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()


def configure_logging(log_format: str | None = None) -> None:
    """Send uwsgi_es's INFO logs to stderr (uWSGI's log) unless logging is already configured, as
    key=value text or JSON lines (``log_format``; default: ``UWSGI_ES_LOG_FORMAT``)."""
    root = logging.getLogger("uwsgi_es")
    if root.handlers or logging.getLogger().handlers:
        return
    if log_format is None:
        from uwsgi_es.settings import resolve  # settings import the store layer: not at import time

        log_format = resolve()[0].log_format
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("uwsgi_es [pid %(process)d] %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
