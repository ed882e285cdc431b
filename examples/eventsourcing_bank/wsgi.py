"""``module = examples.eventsourcing_bank.wsgi:application`` (deploy/uwsgi-eventsourcing.ini): the
library application, named here and built after the fork in each worker."""

from __future__ import annotations

from examples.eventsourcing_bank.api import api
from examples.eventsourcing_bank.application import BankAccounts
from uwsgi_es.servers.uwsgi import install

install(BankAccounts)
application = api
