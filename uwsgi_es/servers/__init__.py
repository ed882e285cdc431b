"""Server hooks, one module per server: ``uwsgi`` (``install``), ``gunicorn`` (``post_fork``,
``worker_exit``), ``celery`` (``connect``). Each calls the one build of ``lifecycle.build``.

The rule: a server module may import ``lifecycle``, ``runtime`` and the settings, and builds only
through ``lifecycle.build`` (never in the master, never twice in a process); only ``uwsgi`` (with
``runtime.process``) imports uWSGI's own modules, and nothing below the servers imports them
except the mule's entry point.
"""
