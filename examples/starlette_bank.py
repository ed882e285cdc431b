"""The bank example as a Starlette app, for ASGI servers (`uvicorn examples.starlette_bank:app
--workers 4`, granian, gunicorn's ASGI worker). Starlette, not FastAPI: FastAPI is built on it and
takes the same ``lifespan=``, so this is the smaller dependency showing everything both need.

Starlette owns routing here; uwsgi_es owns the application's life: ``lifespan(BankAccounts)``
builds it once in each worker process (never in a parent) and bounds the thread pool the
synchronous endpoints run on (the commands are synchronous); errors get the JSON API's statuses
through ``uwsgi_es.web.status``: an unknown account is 404, a refused withdrawal 409, an outage 503.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from uwsgi_es import get_application
from uwsgi_es.errors import UwsgiEsError
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.servers.asgi import lifespan
from uwsgi_es.web.status import answer_for

MAX_AMOUNT = 10**11


def bank() -> BankAccounts:
    application: BankAccounts = get_application()
    return application


async def json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def open_account(request: Request) -> JSONResponse:
    body = await json_object(request)
    owner = body.get("owner") if body else None
    if not isinstance(owner, str) or not owner.strip() or len(owner) > 200:
        return JSONResponse(
            {"error": "send a JSON object with an owner: a string of 1 to 200 characters"}, 400
        )
    return JSONResponse(bank().open_account(owner.strip()).as_dict(), 201)


def account(request: Request) -> JSONResponse:  # synchronous: Starlette runs it on the bounded pool
    return JSONResponse(bank().get_account(request.path_params["account_id"]).as_dict())


async def move(request: Request) -> JSONResponse:
    body = await json_object(request)
    amount = body.get("amount") if body else None
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        return JSONResponse({"error": f"amount must be a whole number of cents from 1 to {MAX_AMOUNT}"}, 400)
    movement = request.path_params["movement"]
    if movement not in ("deposits", "withdrawals"):
        return JSONResponse({"error": "no such route: POST /accounts/{id}/deposits or /withdrawals"}, 404)
    account_id: UUID = request.path_params["account_id"]
    command = bank().deposit if movement == "deposits" else bank().withdraw
    return JSONResponse((await run_in_threadpool(command, account_id, amount)).as_dict())


def health(request: Request) -> JSONResponse:
    """Liveness: the process answers (nothing else is asked)."""
    return JSONResponse({"status": "ok"})


def ready(request: Request) -> JSONResponse:
    """Readiness: this worker built its application (else 503 naming why, through our_errors)."""
    bank()
    return JSONResponse({"status": "ready"})


async def our_errors(request: Request, error: Exception) -> JSONResponse:
    answer = answer_for(error)
    if answer is None:
        raise error
    headers = {"Retry-After": "1"} if answer.retry_after else None
    return JSONResponse({"error": answer.message}, answer.status, headers=headers)


app = Starlette(
    routes=[
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/accounts", open_account, methods=["POST"]),
        Route("/accounts/{account_id:uuid}", account, methods=["GET"]),
        Route("/accounts/{account_id:uuid}/{movement:str}", move, methods=["POST"]),
    ],
    exception_handlers={UwsgiEsError: our_errors},
    lifespan=lifespan(BankAccounts),
)
