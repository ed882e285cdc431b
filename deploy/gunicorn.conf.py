"""uwsgi_es under gunicorn: the bank example, one application per worker, built after the fork.

    gunicorn -c deploy/gunicorn.conf.py             # imports the app in each worker (the default)
    gunicorn -c deploy/gunicorn.conf.py --preload   # imports it once in the master; still built per worker

Configuration of the application itself: the same UWSGI_ES_* variables as under uWSGI.
"""

import os

from uwsgi_es.servers.gunicorn import post_fork, worker_exit

# post_fork runs before a (non-preloaded) worker imports the app, so it builds the application
# the setting names: the bank example, named here explicitly (uwsgi_es has no default).
os.environ.setdefault("UWSGI_ES_APPLICATION", "uwsgi_es.example.domain:BankAccounts")
wsgi_app = "uwsgi_es.wsgi:application"
bind = os.environ.get("UWSGI_ES_HTTP", "127.0.0.1:8080")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
# Stop within seconds on SIGTERM, like die-on-term under uWSGI.
graceful_timeout = 10
accesslog = None

__all__ = ["bind", "graceful_timeout", "post_fork", "worker_exit", "workers", "wsgi_app"]
