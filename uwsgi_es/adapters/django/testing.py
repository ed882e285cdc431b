"""Moved to ``uwsgi_es.integrations.django.testing``; this name still works from here."""

from __future__ import annotations

from uwsgi_es.integrations.django.testing import EventSourcedTestCase

__all__ = ["EventSourcedTestCase"]
