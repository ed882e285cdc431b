"""Adapters for servers and frameworks other than bare uWSGI, over the same per-process registry.

Each imports its framework only when used: ``uwsgi_es.adapters.gunicorn``, ``uwsgi_es.adapters.flask``.
"""
