"""Former home of the server and framework adapters, kept so that code written for it works.

They live now in ``uwsgi_es.servers`` (gunicorn, Celery, uWSGI) and ``uwsgi_es.integrations``
(Flask, Django); every module here re-exports the names it used to define.
"""
