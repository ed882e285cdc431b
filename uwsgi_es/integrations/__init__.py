"""Frameworks and libraries uwsgi_es works with: ``flask`` (the ``UwsgiEs`` extension), ``django``
(an app with an ORM record store, a WSGI helper, a test case). Each imports its framework only
when it is imported itself; the core never imports them."""
