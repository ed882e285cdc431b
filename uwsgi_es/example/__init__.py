"""The bank-accounts example, built on uwsgi_es as a user would: ``domain`` (the aggregate and its
application), ``api`` (its JSON routes). The library never imports it; ``uwsgi_es.wsgi`` serves it.

The rule: it imports the public parts a user would (the core, the web layer, the read side); the
package imports it only from ``uwsgi_es.wsgi`` (the launch target) and never from the core.
"""
