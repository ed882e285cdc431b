"""A module that builds its application at import, by mistake: under gunicorn --preload that is in
the arbiter, before the fork (the hazard uwsgi_es detects and undoes in each worker)."""

from __future__ import annotations

from uwsgi_es.example.api import api
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.lifecycle.registry import init_application
from uwsgi_es.servers.asgi import asgi

application = asgi(api, BankAccounts)
init_application(BankAccounts)  # the mistake: connects in the parent
