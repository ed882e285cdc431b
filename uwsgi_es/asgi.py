"""``uwsgi_es.asgi:application`` — the bank example's JSON API for ASGI servers, the launch target of
uvicorn, granian and gunicorn's ASGI worker (the README's section on them has the command lines).

The same routes, input rules and answers as ``uwsgi_es.wsgi:application`` (it is the same WSGI
application, served on a pool of threads); the application is built once in each worker's
lifespan startup (``uwsgi_es.servers.asgi``). Importing this module connects to nothing.
"""

from __future__ import annotations

from uwsgi_es.example.api import api
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.servers.asgi import asgi

application = asgi(api, BankAccounts)

__all__ = ["application"]
