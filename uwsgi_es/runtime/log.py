"""One structured log event per step of an application's life in a process: ``build``,
``build_failed``, ``close`` (and ``forgot_inherited``), with stable key=value fields that people
read and tests and the benchmark parse, instead of regular expressions over prose::

    uwsgi_es [pid 4242] INFO event=build worker=1 pid=4242 name=default application=BankAccounts \
        store="SQLAlchemy store at sqlite:////srv/var/app.sqlite3" ms=23.5

Values are written logfmt-style: bare when they are printable and hold no space, quote, equals sign
or backslash, else in double quotes with backslash escapes, every unprintable character included
(``\r``, ``\x1b``, ``\u2028``): a value, often a client's path, can neither end the line nor drive
the terminal. With ``UWSGI_ES_LOG_FORMAT=json`` every uwsgi_es log line is one JSON object instead
(``JsonLines``): time, level, logger, pid, worker, the request id of the request being served, and
the event's fields (or the message), for a log pipeline.

``parse`` and ``events_in`` read both forms back, and only what an event line says: a text line's
``event=`` must open its message (after a prefix with no quote or equals sign, which client text
quoted in other messages would have) and the fields must run to the end of the line; a JSON line
must be one of ours (it names its logger). Neither kind of line can be forged from a value, and
``TextLines`` keeps every record's continuation lines (a traceback) indented and escaped, so none
of them opens a line either.
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

from uwsgi_es.runtime import process

log = logging.getLogger("uwsgi_es.lifecycle")
# The id of the request this context (thread, greenlet) is serving, set by the web layer.
request_id: ContextVar[str | None] = ContextVar("uwsgi_es_request_id", default=None)
_BARE = re.compile(r"[^\s\"=\\]+")
_VALUE = r'"(?:[^"\\]|\\.)*"|[^\s"=\\]+'
_FIELD = re.compile(rf"(\w+)=({_VALUE})")
_MESSAGE = re.compile(rf"event=(?:{_VALUE})(?: \w+=(?:{_VALUE}))*")
_EVENT_AT = re.compile(r"(?:^|(?<=\s))event=")
_ESCAPED = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}
_UNESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
# Characters that end a line for some reader (str.splitlines, a terminal) or drive a terminal.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def render(fields: dict[str, Any]) -> str:
    """``key=value key="a value"`` in the order given; None values are left out."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        if not (_BARE.fullmatch(text) and text.isprintable()):
            text = '"' + "".join(_escape(c) for c in text) + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _escape(character: str) -> str:
    """One character of a quoted value: itself when printable, else a backslash escape."""
    short = _SHORT_ESCAPES.get(character)
    if short is not None:
        return short
    if character.isprintable() or character == " ":
        return character
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def emit(
    event: str, level: int = logging.INFO, *, exc_info: bool | BaseException = False, **fields: Any
) -> None:
    """Log one lifecycle event. The fields also travel on the record (``record.uwsgi_es``).
    ``exc_info``: True for the exception being handled, or an exception (its traceback is logged)."""
    everything = {"event": event, **fields}
    log.log(level, "%s", render(everything), exc_info=exc_info, extra={"uwsgi_es": everything})


def parse(line: str) -> dict[str, str] | None:
    """The fields of a lifecycle event's log line; None for any other line (a uWSGI request line
    whose path says ``event=build``, a message quoting a client, a traceback's line)."""
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("event"), str)
            and isinstance(entry.get("logger"), str)  # ours; uWSGI's request lines name none
        ):
            return None
        return {k: f"{v:.1f}" if isinstance(v, float) else str(v) for k, v in entry.items() if v is not None}
    found = _EVENT_AT.search(line)
    if found is None:
        return None
    prefix, message = line[: found.start()], line[found.start() :].rstrip("\r")
    if any(c in prefix for c in "\"'=") or (prefix and prefix.isspace()):
        return None  # inside quoted text, or a continuation line (TextLines indents them)
    if not _MESSAGE.fullmatch(message):
        return None
    fields = {}
    for key, raw in _FIELD.findall(message):
        fields[key] = _ESCAPED.sub(_unescape, raw[1:-1]) if raw.startswith('"') else raw
    return fields


def _unescape(match: re.Match[str]) -> str:
    escaped = match.group(1)
    if len(escaped) > 1:
        return chr(int(escaped[1:], 16))
    return _UNESCAPES.get(escaped, escaped)


def events_in(text: str, event: str | None = None) -> Iterator[dict[str, str]]:
    """Every lifecycle event in a log (of ``event`` only, when given), in order. Lines end at
    ``\n`` only: what else some readers take for a line break is never one here."""
    for line in text.split("\n"):
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
        line = msgspec.json.encode(entry, enc_hook=str).decode()
        # Valid JSON, but line breaks to str.splitlines and to JavaScript before ES2019.
        return line.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


class TextLines(logging.Formatter):
    """``uwsgi_es [pid N] LEVEL message`` (``UWSGI_ES_LOG_FORMAT=text``). Whatever a message or a
    traceback holds, control characters are escaped and continuation lines are indented: no record
    writes a line that another could be read as."""

    def __init__(self) -> None:
        super().__init__("uwsgi_es [pid %(process)d] %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = _UNSAFE.sub(lambda found: _escape(found.group()), super().format(record))
        return text.replace("\n", "\n    ")


def configure_logging(log_format: str | None = None) -> None:
    """Send uwsgi_es's INFO logs to stderr (uWSGI's log) unless logging is already configured, as
    key=value text or JSON lines (``log_format``; default: ``UWSGI_ES_LOG_FORMAT``)."""
    root = logging.getLogger("uwsgi_es")
    if root.handlers or logging.getLogger().handlers:
        return
    if log_format is None:
        from uwsgi_es.settings import resolve  # runtime/ imports nothing of ours at import time

        log_format = resolve()[0].log_format
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(TextLines())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
