"""``get_wsgi_application(factory)``: Django's WSGI handler, with the application built after the fork.

# myproject/wsgi.py
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")
from uwsgi_es.adapters.django.wsgi import get_wsgi_application
application = get_wsgi_application(factory=Carts)
"""

from __future__ import annotations

from typing import Any

from django.core.wsgi import get_wsgi_application as django_wsgi_application

from uwsgi_es import hooks
from uwsgi_es.registry import ApplicationFactory


def get_wsgi_application(factory: ApplicationFactory | None = None) -> Any:
    handler = django_wsgi_application()  # django.setup(): settings and apps, no connection
    hooks.install(factory)  # under uWSGI: built in each worker after the fork
    return handler
