"""``get_wsgi_application(factory)``: Django's WSGI handler, with the application built after the fork.

# myproject/wsgi.py
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")
from uwsgi_es.integrations.django.wsgi import get_wsgi_application
application = get_wsgi_application(factory=Carts)

The handler is wrapped in ``BufferedBody``: a body whose declared length exceeds
``UWSGI_ES_MAX_BODY_BYTES`` is refused with 413 before a byte is read, and the body is read (under
uWSGI's async mode: waited for) before Django sets up the request.
"""

from __future__ import annotations

from typing import Any

from django.core.wsgi import get_wsgi_application as django_wsgi_application

from uwsgi_es.lifecycle import registry
from uwsgi_es.servers.uwsgi import install
from uwsgi_es.web.bodies import BufferedBody, max_body_bytes_of


def get_wsgi_application(factory: registry.ApplicationFactory | None = None) -> Any:
    handler = django_wsgi_application()  # django.setup(): settings and apps, no connection
    install(factory)  # under uWSGI: built in each worker after the fork
    return BufferedBody(handler, max_body_bytes_of(factory))
