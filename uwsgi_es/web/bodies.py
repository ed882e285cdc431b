"""Request bodies: refused on what the headers declare before a byte is read, then parsed strictly.

- A body whose declared ``Content-Length`` exceeds the limit gets 413 at once: nothing is read or
  spooled (a 1 GiB upload costs the worker nothing). A chunked body, which declares no length, gets
  411; a compressed one (``Content-Encoding: gzip``) 415, since parsing it as plain text would be
  wrong and inflating it is a decompression bomb.
- The JSON is parsed with the standard library because it can refuse duplicate keys and
  NaN/Infinity (msgspec, like orjson, silently keeps the last duplicate).
- Client text quoted back in an error goes through ``client_text``: always encodable, never long.

An answer given without reading the body (a 413, a 404 on a POST) is followed by a lingering close
(``discard_unread_body``): after the answer is written, up to ``LINGER_BYTES`` of the body are read and
thrown away, so a client still sending gets the answer instead of a connection reset.

``BufferedBody`` applies the same rules in front of another framework (Flask, Django) and hands it
the body already read. Under uWSGI's async mode (uwsgi.ini) reading the body is where a request
waits for a slow client; done here, before the framework sets up its request context, no other
request can run in between and see that context.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from uwsgi_es.errors import UwsgiEsError
from uwsgi_es.lifecycle import registry
from uwsgi_es.runtime import process
from uwsgi_es.settings import Settings
from uwsgi_es.web.http import ClosingIterator, Request
from uwsgi_es.web.responses import error_response
from uwsgi_es.web.text import client_text, quoted

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class BadRequestError(UwsgiEsError):
    """The request is malformed; ``status`` says which 4xx (400 unless given)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def declared_length(environ: WSGIEnvironment, max_bytes: int) -> int:
    """The body's length as the headers declare it, refused (411/413/415) before reading."""
    encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding not in ("", "identity"):
        raise BadRequestError(
            f"request bodies must not be compressed (Content-Encoding: {client_text(encoding, 40)}); "
            "send the JSON as it is",
            415,
        )
    raw = environ.get("CONTENT_LENGTH", "").strip()
    if not raw:
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            raise BadRequestError("chunked request bodies are not supported: send a Content-Length", 411)
        return 0
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequestError(f"Content-Length {quoted(raw, 40)} is not a number of bytes")
    if len(raw) > 19 or int(raw) > max_bytes:
        raise BadRequestError(f"the body is {client_text(raw, 40)} bytes; the limit is {max_bytes}", 413)
    return int(raw)


LINGER_BYTES = 1 << 20
LINGER_SECONDS = 2.0
# While UWSGI_ES_BODY_READERS requests of a worker are receiving a body, a new one gets this long
# for its whole body: a client that sent it with its headers is served at once, a slow one is shed.
CROWDED_SECONDS = 0.05
_READ = "uwsgi_es.body_read"
_BODY = "uwsgi_es.body"
_receiving = 0  # requests of this process receiving a body now (greenlets under gevent)
_receiving_lock = threading.Lock()


def read_body(environ: WSGIEnvironment, max_bytes: int) -> bytes:
    """The whole body, read only once its declared length passed ``declared_length``; kept, so a
    second reader (the handler after the idempotency digest) gets the same bytes.

    Slow senders are shed, not waited for: a body must arrive whole within ``UWSGI_ES_BODY_TIMEOUT``
    (408, or the connection closed), and while ``UWSGI_ES_BODY_READERS`` requests of the worker are
    receiving one, a new request gets ``CROWDED_SECONDS`` for its body: one sent with its headers is
    served, a slow one shed at once. A client dribbling a byte a second otherwise holds a request
    slot for as long as it likes, and a few hundred of them hold every slot."""
    kept = environ.get(_BODY)
    if kept is not None:
        return bytes(kept)
    length = declared_length(environ, max_bytes)
    environ[_READ] = True
    if length == 0:
        environ[_BODY] = b""
        return b""
    timeout, readers = _body_policy()
    with _receiving_slot(readers) as crowded:
        data = _read_within(
            environ["wsgi.input"], length, min(timeout, CROWDED_SECONDS) if crowded else timeout
        )
    environ[_BODY] = data
    return data


def _body_policy() -> tuple[float, int]:
    """(UWSGI_ES_BODY_TIMEOUT, UWSGI_ES_BODY_READERS) as this process's application was built."""
    settings = registry.settings_in_use()
    if settings is None:
        return Settings.body_timeout, Settings.body_readers
    return settings.body_timeout, settings.body_readers


@contextlib.contextmanager
def _receiving_slot(readers: int) -> Iterator[bool]:
    """Count this request among those receiving a body; say whether ``readers`` were already."""
    global _receiving
    with _receiving_lock:
        crowded = _receiving >= readers
        _receiving += 1
    try:
        yield crowded
    finally:
        with _receiving_lock:
            _receiving -= 1


def _read_within(stream: Any, length: int, seconds: float) -> bytes:
    """``length`` bytes of ``stream`` within ``seconds`` (408 past them), or 400 if it ends early."""
    try:
        with _deadline(stream, seconds) as passed:
            data: bytes = stream.read(length)
    except OSError:  # the client went away, or the deadline shut the connection for reading
        if passed:
            raise BadRequestError(
                f"the body did not arrive within {seconds:g}s (UWSGI_ES_BODY_TIMEOUT)", 408
            ) from None
        raise BadRequestError("the client sent fewer bytes than its Content-Length", 400) from None
    if len(data) != length:
        raise BadRequestError("the client sent fewer bytes than its Content-Length", 400)
    return data


@contextlib.contextmanager
def _deadline(stream: Any, seconds: float) -> Iterator[list[bool]]:
    """Past ``seconds``, shut the client's connection for reading: a read waiting in uWSGI for the
    next byte then ends with an error, while the answer can still be written (unless the router
    already sent the next byte into the shut side: the client then sees its connection closed).
    Raising a timeout into the waiting greenlet instead leaves uWSGI 2.0's gevent watcher on a
    closed socket, and libev aborts the worker. The timer is stopped before the request ends, so
    it never touches the next connection that gets the same file descriptor. Yields a list that
    holds ``True`` once the deadline passed. Under uWSGI's gevent loop only (uwsgi.ini)."""
    passed: list[bool] = []
    try:
        fd = stream.fileno()  # uWSGI's wsgi.input: the client's connection
    except (AttributeError, OSError, ValueError):  # a file-like body (tests, other servers)
        fd = -1
    if not isinstance(fd, int) or fd < 0:
        yield passed
        return

    def shut_for_reading() -> None:
        passed.append(True)
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as connection:
            connection.shutdown(socket.SHUT_RD)

    if process.option("gevent"):
        import gevent  # loaded already under uWSGI's gevent loop

        timer = gevent.get_hub().loop.timer(seconds)
        timer.start(shut_for_reading)
        try:
            yield passed
        finally:
            timer.stop()
            timer.close()
        return
    # Without gevent (threads, or behind nginx, which buffers bodies) a timer thread per request
    # would cost more than it saves: each read is bounded by uWSGI's socket-timeout there.
    yield passed


def discard_unread_body(environ: WSGIEnvironment) -> None:
    """After an answer given without reading the body: read and drop up to ``LINGER_BYTES`` of it,
    so the client, still sending, is not reset before it reads the answer. Bounded in bytes, and
    in time (``LINGER_SECONDS``); never raises."""
    if environ.get(_READ):
        return
    environ[_READ] = True
    raw = str(environ.get("CONTENT_LENGTH", "")).strip()
    remaining = min(int(raw), LINGER_BYTES) if raw.isascii() and raw.isdigit() and len(raw) < 19 else 0
    stream = environ.get("wsgi.input")
    try:
        with _deadline(stream, LINGER_SECONDS):  # a client sending at 1 byte/s is not waited for
            while remaining > 0 and stream is not None:
                chunk = stream.read(min(remaining, 65536))
                if not chunk:
                    return
                remaining -= len(chunk)
    except Exception:  # the client went away, stopped sending, or took too long: nothing left to do
        return


def answered(environ: WSGIEnvironment, app_iter: Iterable[bytes]) -> Iterable[bytes]:
    """``app_iter``, closed with a lingering close of any unread body (see the module docstring)."""
    if environ.get(_READ) or not str(environ.get("CONTENT_LENGTH", "")).strip("0 "):
        return app_iter
    return ClosingIterator(app_iter, lambda: discard_unread_body(environ))


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequestError(f"the JSON body repeats the key {quoted(key, 60)}")
        result[key] = value
    return result


# Request bodies are small records; deeper nesting is refused, on every Python alike.
MAX_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise BadRequestError(f"the JSON body contains {name}, which is not valid JSON")


def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, or a ``BadRequestError`` (400, 411, 413 or 415) saying what is wrong."""
    if request.mimetype != "application/json":
        got = client_text(request.mimetype, 60) or "no Content-Type"
        raise BadRequestError(f"send the body as JSON with Content-Type: application/json (got {got})", 415)
    if request.charset not in (None, "utf-8", "utf8"):
        raise BadRequestError(
            f"JSON bodies are UTF-8 (RFC 8259), not {client_text(request.charset or '', 40)}: send the "
            "body encoded as UTF-8, with no charset or charset=utf-8",
            415,
        )
    raw = read_body(request.environ, max_bytes)
    if not raw:
        raise BadRequestError("the body is empty: send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        body = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BadRequestError("the JSON body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit conversion limit
        raise BadRequestError(f"the JSON body holds a value that cannot be read: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestError(f"the body must be a JSON object, not {_json_type(body)}")
    if _depth(body) > MAX_DEPTH:
        raise BadRequestError(f"the JSON body is nested too deeply (more than {MAX_DEPTH} levels)")
    return body


def _depth(value: Any) -> int:
    """How deeply ``value`` nests, counted without recursion (Python 3.11 and 3.12 refuse deep JSON
    with a RecursionError while parsing; 3.13 parses it: the same answer on every version)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        pending.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def expect_fields(body: Mapping[str, Any], required: Iterable[str]) -> None:
    """Refuse missing and unknown fields, naming them."""
    wanted = list(required)
    missing = [name for name in wanted if name not in body]
    if missing:
        raise BadRequestError(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(body) - set(wanted))
    if unknown:
        names = ", ".join(quoted(name, 60) for name in unknown[:10])
        raise BadRequestError(f"unknown field(s): {names}; expected: {', '.join(wanted)}")


class BufferedBody:
    """WSGI middleware: refuse or read the whole body (within ``max_bytes()``), then call ``app``
    with the body in memory. ``max_bytes`` is asked per request: it comes from the settings of the
    application built in this process, after the fork."""

    def __init__(self, app: WSGIApplication, max_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            body = read_body(environ, self.max_bytes())
        except BadRequestError as exc:
            return answered(environ, error_response(str(exc), exc.status)(environ, start_response))
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


def max_body_bytes_of(
    factory: registry.ApplicationFactory | None, name: str = registry.DEFAULT
) -> Callable[[], int]:
    """``max_bytes`` for ``BufferedBody``: ``UWSGI_ES_MAX_BODY_BYTES`` as this worker's application
    was built with it (built on first use, of any kind), the default until a build succeeds."""

    def limit() -> int:
        with contextlib.suppress(UwsgiEsError):  # no application: the view answers 503 saying why
            registry.get_application_lazily(factory, name=name)
        settings = registry.settings_in_use(name)
        return settings.max_body_bytes if settings is not None else Settings.max_body_bytes

    return limit


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """The query parameter ``name``, a whole number from ``low`` to ``high`` (``default`` when absent),
    or a 400 naming it and its range."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise BadRequestError(f"query parameter {name} must be a whole number from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise BadRequestError(f"query parameter {name} must be from {low} to {high}, got {value}")
    return value
