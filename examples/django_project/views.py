"""Views over this worker's application (``get_application()``: built after the fork by wsgi.py)."""

from __future__ import annotations

import json
from uuid import UUID

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from uwsgi_es import UwsgiEsError, get_application_lazily
from uwsgi_es.bank import BankAccounts
from uwsgi_es.web import ready_report, worker_report


def bank() -> BankAccounts:
    app = get_application_lazily(BankAccounts)
    assert isinstance(app, BankAccounts)
    return app


@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    try:
        return JsonResponse(ready_report(bank()))
    except UwsgiEsError as exc:
        return JsonResponse({"error": str(exc)}, status=503)


@require_GET
def worker(request: HttpRequest) -> JsonResponse:
    return JsonResponse(worker_report(bank()))


@csrf_exempt
@require_POST
def open_account(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    return JsonResponse(bank().open_account(str(body["owner"])).as_dict(), status=201)


@csrf_exempt
@require_POST
def deposit(request: HttpRequest, account_id: UUID) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    return JsonResponse(bank().deposit(account_id, int(body["amount"])).as_dict())
