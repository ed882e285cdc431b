"""Moved to ``uwsgi_es.integrations.django``. ``INSTALLED_APPS = ["uwsgi_es.adapters.django"]``
still installs it (see ``apps``), and its modules' names still work from here."""
