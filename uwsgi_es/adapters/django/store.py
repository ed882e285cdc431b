"""Moved to ``uwsgi_es.integrations.django.store``; this name still works from here."""

from __future__ import annotations

from uwsgi_es.integrations.django.store import DjangoRecordStore

__all__ = ["DjangoRecordStore"]
