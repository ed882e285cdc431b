"""The web layer: JSON over WSGI for our own API, and what every framework's layer shares.

- ``api``: ``JsonApi``, the router with the operational routes;
- ``http``: the ``Request`` handlers get and the ``Response`` they return, and the router;
- ``request_ids``: each request's id (``X-Request-ID``) and the log line of a slow request;
- ``bodies``: request bodies refused on their declared size, strict JSON, ``BufferedBody``, query
  parameters that are whole numbers (``int_param``);
- ``status``: the one error → HTTP status table, and the log line a 5xx leaves;
- ``ops``: the bodies of ``/health``, ``/ready`` and ``/worker``, and who is an operator;
- ``responses`` and ``text``: answers that can always be written, client text that is safe to echo.

The rule: the web layer may import the core, the stores' contract, the read side's status, the
lifecycle's registry (this process's application) and ``runtime``; never a framework (the Flask and
Django layers live in ``integrations`` and reuse ``status`` and ``bodies``), and no request ever
answers 500 or a traceback: every error goes through ``status``.
"""

from __future__ import annotations

from uwsgi_es.web.api import JsonApi
from uwsgi_es.web.bodies import BadRequestError, BufferedBody, expect_fields, int_param, read_json_object
from uwsgi_es.web.http import Request, Response
from uwsgi_es.web.ops import health_report, is_operator, ready_report, worker_report
from uwsgi_es.web.responses import error_response, json_response
from uwsgi_es.web.status import answer_for

__all__ = [
    "BadRequestError",
    "BufferedBody",
    "JsonApi",
    "Request",
    "Response",
    "answer_for",
    "error_response",
    "expect_fields",
    "health_report",
    "int_param",
    "is_operator",
    "json_response",
    "read_json_object",
    "ready_report",
    "worker_report",
]
