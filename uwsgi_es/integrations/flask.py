"""Flask: an extension for app factories, over the same one-application-per-process registry.

    from flask import Flask
    from uwsgi_es.integrations.flask import UwsgiEs

    es = UwsgiEs()

    def create_app() -> Flask:
        app = Flask(__name__)
        es.init_app(app, factory=BankAccounts)   # under uWSGI: built after each fork
        return app

    @bp.post("/accounts")
    def open_account():
        account = es.application.open_account(request.json["owner"])

``init_app`` calls ``uwsgi_es.servers.uwsgi.install`` (a post-fork build under uWSGI, nothing elsewhere),
registers a teardown that ends the request's store session, also after errors, and answers our
errors with the statuses of the JSON API (one table: a refused command is 409 here too, a 5xx
says only a stable reason). It also reads each request body before Flask sees the request
(``BufferedBody``): a declared length over ``UWSGI_ES_MAX_BODY_BYTES`` is refused with 413
unread, and under uWSGI's async mode a slow client is waited for before Flask pushes its
request context, so no other request can run in between and see it.

There is no ``before_first_request`` (Flask removed it): the application is this process's, built
after the fork or on first use, never in the master.
"""

from __future__ import annotations

from typing import Any, Protocol

from flask import Flask, g, jsonify, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, scoped_session

from uwsgi_es.application import Application
from uwsgi_es.errors import ConfigurationError, UwsgiEsError
from uwsgi_es.lifecycle import registry
from uwsgi_es.lifecycle.registry import ApplicationFactory
from uwsgi_es.servers.uwsgi import install
from uwsgi_es.settings import Settings
from uwsgi_es.stores.base import RequestScope
from uwsgi_es.stores.sqlalchemy import SQLAlchemyRecordStore
from uwsgi_es.web.bodies import BufferedBody, max_body_bytes_of
from uwsgi_es.web.ops import is_operator, ready_report, worker_report
from uwsgi_es.web.status import answer_for, log_refusal

_G_KEY = "uwsgi_es_application"


class FlaskSQLAlchemyLike(Protocol):
    """What we use of Flask-SQLAlchemy's ``SQLAlchemy`` object."""

    @property
    def engine(self) -> Engine: ...

    @property
    def session(self) -> scoped_session[Session]: ...


def _on_flask_sqlalchemy(
    app: Flask, db: FlaskSQLAlchemyLike, factory: ApplicationFactory | None
) -> ApplicationFactory:
    if not (isinstance(factory, type) and issubclass(factory, Application)):
        raise ConfigurationError(
            "With db=..., give factory= an Application subclass (it is built on db's engine)."
        )
    application_class = factory

    def build(settings: Settings) -> Application:
        with app.app_context():
            engine = db.engine
        # Flask-SQLAlchemy made the engine in init_app, maybe in the uWSGI master: forget any pooled
        # connection inherited from there (never close it: it is the parent's) before using it here.
        engine.dispose(close=False)
        store = SQLAlchemyRecordStore(engine, sessions=db.session, owns_engine=False)
        return application_class(store, settings=settings)

    return build


class UwsgiEs:
    """The Flask extension. ``UwsgiEs(app)`` or, with a factory, ``es.init_app(app)``."""

    def __init__(self, app: Flask | None = None, *, factory: ApplicationFactory | None = None) -> None:
        self.factory = factory
        if app is not None:
            self.init_app(app)

    def init_app(
        self,
        app: Flask,
        *,
        factory: ApplicationFactory | None = None,
        db: FlaskSQLAlchemyLike | None = None,
        ops_routes: bool = True,
    ) -> None:
        """``db``: a Flask-SQLAlchemy ``SQLAlchemy`` whose engine and ``db.session`` the store uses
        (``factory`` must then be an ``Application`` subclass). ``ops_routes`` adds ``/ready`` and
        ``/worker`` (what the test harness and load balancers ask)."""
        self.factory = factory or self.factory
        if db is not None:
            self.factory = _on_flask_sqlalchemy(app, db, self.factory)
        app.extensions["uwsgi_es"] = self
        app.teardown_appcontext(self._end_request)
        app.register_error_handler(UwsgiEsError, self._answer_error)
        app.wsgi_app = BufferedBody(app.wsgi_app, max_body_bytes_of(self.factory))  # type: ignore[method-assign]
        if ops_routes:
            app.add_url_rule("/ready", "uwsgi_es_ready", self._ready)
            app.add_url_rule("/worker", "uwsgi_es_worker", self._worker)
        install(self.factory)

    @staticmethod
    def is_operator() -> bool:
        """Whether this request comes from an operator's address (``UWSGI_ES_OPERATOR_NETWORKS``)."""
        settings = registry.settings_in_use() or Settings()
        return is_operator(request.environ, settings.operator_networks)

    def _ready(self) -> Any:
        return jsonify(ready_report(self.application, self.is_operator()))

    def _worker(self) -> Any:
        if not self.is_operator():
            return jsonify(error=f"no route for '{request.path}'"), 404
        return jsonify(worker_report(self.application))

    @staticmethod
    def _answer_error(error: UwsgiEsError) -> Any:
        answer = answer_for(error)
        if answer is None:
            raise error  # not one we map: Flask's own handling (a 500, logged)
        if answer.status >= 500:
            log_refusal(request.method, request.path, answer.status, error)
        headers = {"Retry-After": "1"} if answer.retry_after else {}
        return jsonify(error=answer.message), answer.status, headers

    @property
    def application(self) -> Application:
        """This process's application (built on first use if no post-fork hook built it)."""
        app: Application = registry.get_application_lazily(self.factory)
        setattr(g, _G_KEY, app)
        return app

    @staticmethod
    def _end_request(exception: BaseException | None) -> None:
        app: Any = g.pop(_G_KEY, None)
        if isinstance(app, RequestScope):
            app.end_request()
