"""The bank-accounts example, built on uwsgi_es as a user would: ``domain`` (the aggregate and its
application), ``api`` (its JSON routes). The library never imports it; ``uwsgi_es.wsgi`` serves it."""
