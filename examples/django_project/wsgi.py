"""`module = examples.django_project.wsgi:application`: Django, with the application built after the fork."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")
os.environ.setdefault("UWSGI_ES_STORE", "django")

from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.integrations.django.wsgi import get_wsgi_application

application = get_wsgi_application(factory=BankAccounts)
