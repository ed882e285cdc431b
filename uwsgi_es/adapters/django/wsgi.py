"""Moved to ``uwsgi_es.integrations.django.wsgi``; this name still works from here."""

from __future__ import annotations

from uwsgi_es.integrations.django.wsgi import get_wsgi_application

__all__ = ["get_wsgi_application"]
