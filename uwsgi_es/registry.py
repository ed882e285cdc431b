"""Moved to ``uwsgi_es.lifecycle.registry``; these names still work from here."""

from __future__ import annotations

from uwsgi_es.lifecycle.kinds import load_factory
from uwsgi_es.lifecycle.registry import (
    ApplicationFactory,
    close_application,
    get_application,
    get_application_lazily,
    init_application,
    initialisation_failure,
    settings_in_use,
)

__all__ = [
    "ApplicationFactory",
    "close_application",
    "get_application",
    "get_application_lazily",
    "init_application",
    "initialisation_failure",
    "load_factory",
    "settings_in_use",
]
