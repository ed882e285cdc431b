"""Moved to ``uwsgi_es.integrations.flask``; these names still work from here."""

from __future__ import annotations

from uwsgi_es.integrations.flask import FlaskSQLAlchemyLike, UwsgiEs

__all__ = ["FlaskSQLAlchemyLike", "UwsgiEs"]
