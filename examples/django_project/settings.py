"""A minimal Django project serving the bank example with uwsgi_es (events in the Django ORM store)."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "examples.django_project.urls"
INSTALLED_APPS = ["uwsgi_es.integrations.django"]
MIDDLEWARE: list[str] = []
USE_TZ = True
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "DJANGO_DATABASE_PATH", str(BASE_DIR.parent.parent / "var" / "django.sqlite3")
        ),
        # Writers take the lock up front (Django >= 5.1), WAL lets readers and the writer overlap.
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 5,
            "init_command": "PRAGMA journal_mode=WAL;",
        },
    }
}
