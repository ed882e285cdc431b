"""Users' code keeps working after the layout change: every import path the README showed before
(and the Django app path in INSTALLED_APPS) still gives the same objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import uwsgi_es
from uwsgi_es.integrations.flask import UwsgiEs
from uwsgi_es.lifecycle import registry
from uwsgi_es.servers import celery, gunicorn, uwsgi


def test_moved_names_are_importable_from_their_old_places() -> None:
    from uwsgi_es import hooks
    from uwsgi_es import registry as old_registry
    from uwsgi_es.adapters import celery as old_celery
    from uwsgi_es.adapters import flask as old_flask
    from uwsgi_es.adapters import gunicorn as old_gunicorn
    from uwsgi_es.bank import BankAccounts
    from uwsgi_es.example.domain import BankAccounts as Moved
    from uwsgi_es.testing import UwsgiServer, free_port
    from uwsgi_es.web import JsonApi, ready_report, worker_report
    from uwsgi_es.wsgi import application

    assert hooks.install is uwsgi.install
    assert old_registry.init_application is registry.init_application is uwsgi_es.init_application
    assert uwsgi_es.get_application is registry.get_application
    assert uwsgi_es.get_application_lazily is registry.get_application_lazily
    assert uwsgi_es.close_application is registry.close_application
    assert (old_gunicorn.post_fork, old_gunicorn.worker_exit) == (gunicorn.post_fork, gunicorn.worker_exit)
    assert (old_celery.connect, old_celery.get_application) == (celery.connect, celery.get_application)
    assert old_flask.UwsgiEs is UwsgiEs
    assert BankAccounts is Moved
    assert isinstance(application, JsonApi)
    assert callable(ready_report) and callable(worker_report) and callable(free_port)  # noqa: PT018
    assert UwsgiServer.__module__ == "uwsgi_es.testing.uwsgi_server"


def test_the_old_django_app_path_installs_the_moved_app(tmp_path: Path) -> None:
    """INSTALLED_APPS = ["uwsgi_es.adapters.django"]: the same app (label, models, migrations)."""
    (tmp_path / "old_settings.py").write_text(
        "SECRET_KEY = 'x'\nINSTALLED_APPS = ['uwsgi_es.adapters.django']\nUSE_TZ = True\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}}\n"
    )
    code = (
        "import django; django.setup(); from django.apps import apps; "
        "c = apps.get_app_config('uwsgi_es_django'); "
        "from uwsgi_es.adapters.django.store import DjangoRecordStore; "
        "from uwsgi_es.integrations.django.models import StoredEvent; "
        "print(c.name, c.label, StoredEvent._meta.db_table, DjangoRecordStore.__module__)"
    )
    env = {"DJANGO_SETTINGS_MODULE": "old_settings", "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "uwsgi_es.integrations.django",
        "uwsgi_es_django",
        "integer_sequenced_items",
        "uwsgi_es.integrations.django.store",
    ]
