"""The app config. ``ready()`` deliberately does nothing: it runs for every management command
(``check``, ``makemigrations``...), in the uWSGI master too, where no connection may be opened."""

from __future__ import annotations

from django.apps import AppConfig


class UwsgiEsConfig(AppConfig):
    name = "uwsgi_es.integrations.django"
    label = "uwsgi_es_django"
    verbose_name = "uwsgi_es event store"
    default_auto_field = "django.db.models.BigAutoField"
