"""Moved to ``uwsgi_es.servers.gunicorn``; these names still work from here."""

from __future__ import annotations

from uwsgi_es.servers.gunicorn import post_fork, worker_exit

__all__ = ["post_fork", "worker_exit"]
