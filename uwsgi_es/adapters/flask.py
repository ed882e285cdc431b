"""Flask: an extension for app factories, over the same one-application-per-process registry.

    from flask import Flask
    from uwsgi_es.adapters.flask import UwsgiEs

    es = UwsgiEs()

    def create_app() -> Flask:
        app = Flask(__name__)
        es.init_app(app, factory=BankAccounts)   # under uWSGI: built after each fork
        return app

    @bp.post("/accounts")
    def open_account():
        account = es.application.open_account(request.json["owner"])

``init_app`` calls ``uwsgi_es.hooks.install`` (a post-fork build under uWSGI, nothing elsewhere)
and registers a teardown that ends the request's store session, also after errors. There is no
``before_first_request`` (Flask removed it): the application is this process's, built after the
fork or on first use, never in the master.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, g

from uwsgi_es import hooks, registry
from uwsgi_es.application import Application
from uwsgi_es.registry import ApplicationFactory

_G_KEY = "uwsgi_es_application"


class UwsgiEs:
    """The Flask extension. ``UwsgiEs(app)`` or, with a factory, ``es.init_app(app)``."""

    def __init__(self, app: Flask | None = None, *, factory: ApplicationFactory | None = None) -> None:
        self.factory = factory
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, factory: ApplicationFactory | None = None) -> None:
        self.factory = factory or self.factory
        app.extensions["uwsgi_es"] = self
        app.teardown_appcontext(self._end_request)
        hooks.install(self.factory)

    @property
    def application(self) -> Application:
        """This process's application (built on first use if no post-fork hook built it)."""
        app = registry.get_application_lazily(self.factory)
        setattr(g, _G_KEY, app)
        return app

    @staticmethod
    def _end_request(exception: BaseException | None) -> None:
        app: Any = g.pop(_G_KEY, None)
        if app is not None:
            app.records.end_request()
