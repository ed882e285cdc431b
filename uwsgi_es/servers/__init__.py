"""Server hooks, one module per server: ``uwsgi`` (``install``), ``gunicorn`` (``post_fork``,
``worker_exit``), ``celery`` (``connect``). Each calls the one build of ``lifecycle.build``."""
