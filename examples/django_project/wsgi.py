"""`module = examples.django_project.wsgi:application`: Django, with the application built after the fork."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")
os.environ.setdefault("UWSGI_ES_STORE", "django")
# The application: uwsgi_es's example bank unless UWSGI_ES_APPLICATION names another (the tests
# also serve the eventsourcing library's bank, examples.eventsourcing_bank, through these views).
os.environ.setdefault("UWSGI_ES_APPLICATION", "uwsgi_es.example.domain:BankAccounts")

from uwsgi_es.integrations.django.wsgi import get_wsgi_application

application = get_wsgi_application()
