"""granian embedded, with an ``on_startup`` hook that builds the application, by mistake: granian
runs the hook in its main process before it starts the workers (the hazard `uwsgi-es doctor`
names). Run: python tests/apps/granian_on_startup.py PORT."""

from __future__ import annotations

import sys

from granian import Granian
from granian.constants import Interfaces

from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.lifecycle.registry import init_application

if __name__ == "__main__":
    server = Granian("uwsgi_es.asgi:application", interface=Interfaces.ASGI, port=int(sys.argv[1]), workers=2)

    @server.on_startup
    def warm_up() -> None:
        init_application(BankAccounts)  # the mistake: builds and connects in granian's main process

    server.serve()
