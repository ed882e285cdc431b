"""A library application's notification log over HTTP, so that a follower in another service can
follow it (the library's "remote notification log").

The server side mounts two routes on a ``JsonApi`` serving the application (``mount``), each
answering what the library's own ``NotificationLogJSONService`` writes:

- ``GET /notifications/<first>,<last>``: a section (at most the library's section size, 10). A full
  section never changes (the log is append-only and has no gaps), so it is answered with
  ``Cache-Control: public, max-age=31536000, immutable`` and nginx or any cache may keep it; the
  last, partial section with ``no-cache``.
- ``GET /notifications?start=N&limit=M&topics=a,b&inclusive_of_start=false``: a selection of at
  most a section's size, as a follower pulls (``NotificationLogJSONClient.select``).

The client side is ``HttpNotificationLog``, the library's ``NotificationLogInterface`` over HTTP:
give it to the library's ``NotificationLogJSONClient`` and that to a follower's ``follow``. The
stored state travels as stored (base64): a follower needs the same cipher and compressor settings.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.interface import NotificationLogInterface, NotificationLogJSONService
from eventsourcing.persistence import PersistenceError

from uwsgi_es.errors import StoreUnavailableError
from uwsgi_es.integrations.eventsourcing.building import secrets, translate
from uwsgi_es.web.api import JsonApi
from uwsgi_es.web.bodies import BadRequestError, int_param
from uwsgi_es.web.http import Request, Response

IMMUTABLE = "public, max-age=31536000, immutable"
_SECTION = re.compile(r"(\d{1,18}),(\d{1,18})")
_TOPIC = re.compile(r"[\w.:-]{1,300}")


def mount(api: JsonApi, prefix: str = "/notifications") -> None:
    """Serve the notification log of ``api``'s application under ``prefix``."""

    @api.route(f"{prefix}/<section_id>", "GET")
    def notification_log_section(request: Request, section_id: str) -> Response:
        app = api.application(request)
        first, last = _section(section_id)
        body = _served(app, lambda service: service.get_log_section(f"{first},{last}"))
        full = json.loads(body)["next_id"] is not None
        return Response(body.encode(), 200, {"Cache-Control": IMMUTABLE if full else "no-cache"})

    @api.route(prefix, "GET")
    def notification_log_selection(request: Request) -> Response:
        app = api.application(request)
        raw_start = request.args.get("start")
        start = None if raw_start is None else int_param(request, "start", 0, 0, 2**63 - 1)
        most = int(getattr(app.notification_log, "section_size", 10))  # the library refuses more
        limit = int_param(request, "limit", most, 1, most)
        inclusive = _boolean(request.args.get("inclusive_of_start"), "inclusive_of_start", default=True)
        topics = _topics(request.args.get("topics"))
        body = _served(
            app,
            lambda service: service.get_notifications(start, limit, topics, inclusive_of_start=inclusive),
        )
        return Response(body.encode(), 200, {"Cache-Control": "no-cache"})


def _section(section_id: str) -> tuple[int, int]:
    match = _SECTION.fullmatch(section_id)
    first, last = (int(match[1]), int(match[2])) if match else (0, -1)
    if first < 1 or last < first:
        raise BadRequestError(
            f"a section of the notification log is 'first,last', two positions from 1 with "
            f"first <= last (e.g. 1,10), not {section_id[:40]!r}"
        )
    return first, last


def _boolean(raw: str | None, name: str, *, default: bool) -> bool:
    if raw is None:
        return default
    if raw in ("true", "false"):
        return raw == "true"
    raise BadRequestError(f"query parameter {name} must be true or false")


def _topics(raw: str | None) -> Sequence[str]:
    topics = [topic for topic in (raw or "").split(",") if topic]
    if len(topics) > 100 or not all(_TOPIC.fullmatch(topic) for topic in topics):
        raise BadRequestError(
            "query parameter topics must be at most 100 topics (module:Class), comma-separated"
        )
    return topics


def _served(app: Any, answer: Callable[[NotificationLogJSONService[Any]], str]) -> str:
    """The service's answer for ``app``; the library's persistence errors as ours (503)."""
    try:
        return answer(NotificationLogJSONService(app))
    except PersistenceError as exc:
        raise translate(exc, f"{app.name}'s notification log", secrets(app.env)) from exc


class HttpNotificationLog(NotificationLogInterface):
    """The library's ``NotificationLogInterface`` for a log another service serves (``mount``):
    ``NotificationLogJSONClient(HttpNotificationLog("http://bank/notifications"))``."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def get_log_section(self, section_id: str) -> str:
        return self._get(f"{self.url}/{urllib.parse.quote(section_id, safe=',')}")

    def get_notifications(
        self,
        start: int | None,
        limit: int,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> str:
        query: dict[str, Any] = {"limit": limit, "inclusive_of_start": str(inclusive_of_start).lower()}
        if start is not None:
            query["start"] = start
        if topics:
            query["topics"] = ",".join(topics)
        return self._get(f"{self.url}?{urllib.parse.urlencode(query)}")

    def _get(self, url: str) -> str:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310 (the operator's URL)
                return str(response.read().decode())
        except (urllib.error.URLError, OSError) as exc:
            raise StoreUnavailableError(f"the notification log at {self.url} did not answer: {exc}") from exc
