"""``uwsgi_es.wsgi:application`` — the launch target of uwsgi.ini: the bank example's JSON API.

``install(BankAccounts)`` names the application and arranges for it to be built after the fork in
each uWSGI worker (or right away under lazy-apps); outside uWSGI it is built on the first request.
Importing this module connects to nothing. Launch it by module name
(``module = uwsgi_es.wsgi:application``), never with ``wsgi-file``, which imports it a second time
under another name.
"""

from __future__ import annotations

from uwsgi_es.example.api import api
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.servers.uwsgi import install

install(BankAccounts)
application = api

__all__ = ["api", "application"]
