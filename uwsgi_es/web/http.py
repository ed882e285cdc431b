"""The HTTP layer ``JsonApi`` runs on: a request read from the WSGI environ, a JSON response, and a
router of path patterns. Small on purpose.

Why not Werkzeug's: importing Werkzeug imports its development server and test client (ssl,
http.server, email: about 11 MB in every worker), and its request, response and routing objects
cost about 40 µs of every request, far more than the WSGI server itself. What a JSON API needs of
them is here, with the same answers to odd input (kept by the hostile-input tests):

- The path is PATH_INFO as the server decoded it, its bytes read as UTF-8 (invalid bytes become
  U+FFFD), leading slashes collapsed to one. A pattern segment ``<name>`` matches one non-empty
  segment; other segments match exactly. One trailing slash is tolerated (``/accounts/`` is
  ``/accounts``); doubled slashes inside a path are not merged.
- GET routes answer HEAD (same headers, no body). A path served with other methods only answers
  405 with ``Allow``; an unknown path 404.
- Query parameters: the first value of each name, blank values kept, invalid UTF-8 replaced.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

JSON = "application/json"
UNMATCHED = "unmatched"  # the route of a request no pattern matched
# The reason phrase of each status, as uWSGI sends it (Werkzeug's upper-case form, kept).
_STATUS_LINES = {status.value: f"{status.value} {status.phrase.upper()}" for status in HTTPStatus}
_SPECIAL_HEADERS = {"CONTENT_TYPE", "CONTENT_LENGTH"}


class NotFound(Exception):
    """No route has this path."""


class MethodNotAllowed(Exception):
    """Routes have this path, for other methods (``valid_methods``)."""

    def __init__(self, valid_methods: Iterable[str]) -> None:
        super().__init__()
        self.valid_methods = sorted(valid_methods)


class RequestHeaders:
    """The request's headers, read from the environ on demand (names in any case)."""

    __slots__ = ("_environ",)

    def __init__(self, environ: WSGIEnvironment) -> None:
        self._environ = environ

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.upper().replace("-", "_")
        value = self._environ.get(key if key in _SPECIAL_HEADERS else f"HTTP_{key}")
        return default if value is None else str(value)


class Request:
    """What a handler needs of a request; the environ is there for the rest."""

    __slots__ = ("_args", "environ", "headers", "method", "path", "route")

    def __init__(self, environ: WSGIEnvironment) -> None:
        self.environ = environ
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        self.path = "/" + _text(environ.get("PATH_INFO", "")).lstrip("/")
        self.headers = RequestHeaders(environ)
        self.route = UNMATCHED  # the pattern that matched, once routed (a metrics label)
        self._args: dict[str, str] | None = None

    @property
    def query_string(self) -> str:
        return _text(self.environ.get("QUERY_STRING", ""))

    @property
    def full_path(self) -> str:
        return f"{self.path}?{self.query_string}"

    @property
    def args(self) -> Mapping[str, str]:
        """Each query parameter's first value."""
        if self._args is None:
            args: dict[str, str] = {}
            for name, value in parse_qsl(self.query_string, keep_blank_values=True, errors="replace"):
                args.setdefault(name, value)
            self._args = args
        return self._args

    @property
    def mimetype(self) -> str:
        return str(self.environ.get("CONTENT_TYPE", "")).split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        """The ``charset`` parameter of the Content-Type, lower case (None when it names none)."""
        for parameter in str(self.environ.get("CONTENT_TYPE", "")).split(";")[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "charset":
                return value.strip().strip('"').lower()
        return None


class Response:
    """A complete response: status, headers and the whole body (always built before it is sent)."""

    __slots__ = ("body", "headers", "status_code")

    def __init__(
        self,
        body: bytes = b"",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_type: str = JSON,
    ) -> None:
        self.body = body
        self.status_code = status
        self.headers = ResponseHeaders({"Content-Type": content_type})
        if headers:
            self.headers.update(headers)

    def get_data(self) -> bytes:
        return self.body

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        status = _STATUS_LINES.get(self.status_code) or f"{self.status_code} UNKNOWN"
        start_response(status, [*self.headers.items(), ("Content-Length", str(len(self.body)))])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [self.body]


class ResponseHeaders(dict[str, str]):
    """Response headers by name; ``get`` finds a name in any case."""

    def get(self, name: str, default: Any = None) -> Any:
        if name in self:
            return self[name]
        lowered = name.lower()
        return next((value for key, value in self.items() if key.lower() == lowered), default)


Handler = Callable[..., Response]
_PLACEHOLDER = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")


class Router:
    """Path patterns (``/accounts/<account_id>/deposits``) and methods to endpoints."""

    def __init__(self) -> None:
        self._static: dict[str, dict[str, str]] = {}  # path -> method -> endpoint
        self._patterns: list[tuple[re.Pattern[str], dict[str, str]]] = []

    def add(self, path: str, methods: Iterable[str], endpoint: str) -> None:
        allowed = {method.upper() for method in methods}
        if "GET" in allowed:
            allowed.add("HEAD")
        if not _PLACEHOLDER.search(path):
            self._static.setdefault(path, {}).update(dict.fromkeys(allowed, endpoint))
            return
        parts, last = [], 0
        for found in _PLACEHOLDER.finditer(path):
            parts += [re.escape(path[last : found.start()]), f"(?P<{found.group(1)}>[^/]+)"]
            last = found.end()
        pattern = re.compile("".join([*parts, re.escape(path[last:])]))
        for known, by_method in self._patterns:
            if known.pattern == pattern.pattern:
                by_method.update(dict.fromkeys(allowed, endpoint))
                return
        self._patterns.append((pattern, dict.fromkeys(allowed, endpoint)))

    def match(self, method: str, path: str) -> tuple[str, dict[str, str]]:
        """(endpoint, arguments); ``NotFound`` or ``MethodNotAllowed`` otherwise."""
        allowed: set[str] = set()
        for candidate in (path, path[:-1]) if len(path) > 1 and path.endswith("/") else (path,):
            for by_method, arguments in self._candidates(candidate):
                endpoint = by_method.get(method)
                if endpoint is not None:
                    return endpoint, arguments
                allowed.update(by_method)
            if allowed:
                raise MethodNotAllowed(allowed)
        raise NotFound

    def _candidates(self, path: str) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
        static = self._static.get(path)
        if static is not None:
            yield static, {}
        for pattern, by_method in self._patterns:
            matched = pattern.fullmatch(path)
            if matched is not None:
                yield by_method, matched.groupdict()


class ClosingIterator:
    """``app_iter``, with ``callback`` run when the server closes it (after it is sent)."""

    def __init__(self, app_iter: Iterable[bytes], callback: Callable[[], None]) -> None:
        self._app_iter = app_iter
        self._callback = callback

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._app_iter)

    def close(self) -> None:
        try:
            close = getattr(self._app_iter, "close", None)
            if close is not None:
                close()
        finally:
            self._callback()


def _text(value: object) -> str:
    """A WSGI string (bytes as latin-1) read as UTF-8, invalid bytes replaced."""
    text = str(value)
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # not a WSGI string after all: keep it
        return text
