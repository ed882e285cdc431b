"""Django: a Django app (``INSTALLED_APPS += ["uwsgi_es.integrations.django"]``) holding a record
store on the Django ORM, a WSGI helper that builds the application after the fork, and a test-case
base. (``"uwsgi_es.adapters.django"``, its former path, still works in ``INSTALLED_APPS``.)

- ``uwsgi_es.integrations.django.wsgi.get_wsgi_application(factory)``: Django's WSGI handler plus
  ``uwsgi_es.install`` — use it in your project's ``wsgi.py``.
- ``UWSGI_ES_STORE=django`` stores events in the ``integer_sequenced_items`` table through the ORM
  (migrate it with ``manage.py migrate``), on the project's own database and transactions.
- ``uwsgi_es.integrations.django.testing.EventSourcedTestCase`` builds the application in
  ``setUp`` and closes it in ``tearDown``.

Nothing here builds or connects in ``AppConfig.ready()``: it runs for every management command,
and ``manage.py check`` must not open a connection of ours.
"""
