"""Moved to ``uwsgi_es.servers.celery``; these names still work from here."""

from __future__ import annotations

from uwsgi_es.servers.celery import connect, get_application

__all__ = ["connect", "get_application"]
