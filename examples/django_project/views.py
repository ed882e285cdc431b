"""Views over this worker's application (``get_application()``: built after the fork by wsgi.py).

Our errors are answered with the statuses of the JSON API (``uwsgi_es.web.answer_for``): a refused
command is 409 here too, and a 5xx says only a stable reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any
from uuid import UUID

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from uwsgi_es import Settings, UwsgiEsError, get_application_lazily
from uwsgi_es.lifecycle.registry import settings_in_use
from uwsgi_es.web.ops import is_operator, ready_report, worker_report
from uwsgi_es.web.status import answer_for, log_refusal


def bank() -> Any:
    """This worker's application, the one ``UWSGI_ES_APPLICATION`` names: uwsgi_es's example bank
    or the eventsourcing library's (examples.eventsourcing_bank), which have the same commands."""
    return get_application_lazily()


def operator(request: HttpRequest) -> bool:
    return is_operator(request.META, (settings_in_use() or Settings()).operator_networks)


def answers_errors(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    """Answer our errors as the JSON API does."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        try:
            return view(request, *args, **kwargs)
        except UwsgiEsError as exc:
            answer = answer_for(exc)
            if answer is None:
                raise
            if answer.status >= 500:
                log_refusal(request.method or "", request.path, answer.status, exc)
            response = JsonResponse({"error": answer.message}, status=answer.status)
            if answer.retry_after:
                response["Retry-After"] = "1"
            return response

    return wrapper


@require_GET
@answers_errors
def ready(request: HttpRequest) -> JsonResponse:
    return JsonResponse(ready_report(bank(), operator(request)))


@require_GET
@answers_errors
def worker(request: HttpRequest) -> JsonResponse:
    if not operator(request):
        return JsonResponse({"error": f"no route for '{request.path}'"}, status=404)
    return JsonResponse(worker_report(bank()))


@csrf_exempt
@require_POST
@answers_errors
def open_account(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    return JsonResponse(bank().open_account(str(body["owner"])).as_dict(), status=201)


@csrf_exempt
@require_POST
@answers_errors
def deposit(request: HttpRequest, account_id: UUID) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    return JsonResponse(bank().deposit(account_id, int(body["amount"])).as_dict())
