"""Frameworks and libraries uwsgi_es works with: ``flask`` (the ``UwsgiEs`` extension), ``django``
(an app with an ORM record store, a WSGI helper, a test case). Each imports its framework only
when it is imported itself; the core never imports them.

The rule: an integration may import everything below it (the core, the stores, the web layer's
shared parts, the lifecycle); nothing in the core, the stores or the web layer imports an
integration, and none builds an application or connects at import time or in ``AppConfig.ready``.
"""
