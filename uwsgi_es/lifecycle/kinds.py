"""The kinds of application the registry can build and host, and how.

- Our own ``Application`` subclasses: built by ``from_settings``; they host themselves (they have
  ``ping``, ``check_ready``, ``describe`` and ``close``).
- A callable taking ``Settings`` (an app factory of yours): called; what it returns must host
  itself, or be of a kind below.
- Applications of other libraries, adapted by an integration. They are named here by the dotted
  path of their base class and of the integration module, as strings, so the core never imports an
  integration: it is imported only when an application of its kind is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from uwsgi_es.application import Application
from uwsgi_es.errors import ConfigurationError
from uwsgi_es.lifecycle.hosting import Hosting
from uwsgi_es.settings import Settings

# base class (module.QualName) -> the integration module that builds and hosts its subclasses,
# through its functions ``construct(cls)``, ``hosting(app)``, ``validate(cls)``,
# ``migrate(cls, settings)``, and for its read side ``projection_names(settings)`` and
# ``projection_runner(app, name, settings)``.
ADAPTED_KINDS: dict[str, str] = {
    "eventsourcing.application.Application": "uwsgi_es.integrations.eventsourcing",
    "eventsourcing.dcb.application.DCBApplication": "uwsgi_es.integrations.eventsourcing",
}


@dataclass(frozen=True)
class Kind:
    """How to make one application, the object that hosts it, and its deployment steps."""

    make: Callable[[Settings], Any]
    adapter: Callable[[Any], Hosting] | None = None  # None: the application hosts itself
    check: Callable[[], None] | None = None  # validates its configuration, connecting to nothing
    migrate: Callable[[Settings], str] | None = None  # None: uwsgi_es's own store's schema
    # The read side of an adapted kind: the names of the projections the settings declare, and
    # the runner of one of them (``run(stop)``) for an application built in this process.
    projections: Callable[[Settings], list[str]] | None = None
    runner: Callable[[Any, str, Settings], Any] | None = None

    def construct(self, settings: Settings) -> tuple[Any, Hosting]:
        app = self.make(settings)
        return app, self.adapter(app) if self.adapter is not None else hosting_for(app)


def kind_of(factory: Any) -> Kind:
    """The kind of application ``factory`` makes."""
    if isinstance(factory, type) and issubclass(factory, Application):
        return Kind(factory.from_settings)
    integration = _integration_for(factory)
    if integration is not None:
        return Kind(
            lambda settings: integration.construct(factory),
            integration.hosting,
            lambda: integration.validate(factory),
            lambda settings: integration.migrate(factory, settings),
            integration.projection_names,
            integration.projection_runner,
        )
    if callable(factory):
        return Kind(factory)
    raise ConfigurationError(f"{factory!r} cannot build an application: pass a class or a callable.")


def hosting_for(app: Any) -> Hosting:
    """``app`` itself when it hosts itself; else the adapter of its kind."""
    if isinstance(app, Hosting):
        return app
    integration = _integration_for(type(app))
    if integration is not None:
        return cast(Hosting, integration.hosting(app))
    raise ConfigurationError(
        f"{type(app).__qualname__} cannot be hosted: it needs ping(), check_ready(), describe() and "
        "close() (uwsgi_es.lifecycle.registry.Hosting), or an integration for its kind."
    )


def _integration_for(factory: Any) -> Any:
    """The integration module for a class whose base is named in ``ADAPTED_KINDS``, or None."""
    if not isinstance(factory, type):
        return None
    for base in factory.__mro__:
        module = ADAPTED_KINDS.get(f"{base.__module__}.{base.__qualname__}")
        if module is not None:
            return importlib.import_module(module)
    return None


def load_factory(import_string: str) -> Any:
    """Import ``package.module:Name`` (the ``UWSGI_ES_APPLICATION`` setting)."""
    if not import_string:
        raise ConfigurationError(
            "UWSGI_ES_APPLICATION is not set, and no factory was passed in code: name your "
            "application class, e.g. UWSGI_ES_APPLICATION=myapp.domain:Carts (the bank example is "
            "uwsgi_es.example.domain:BankAccounts), or pass it: uwsgi_es.install(Carts)."
        )
    module_name, _, attribute = import_string.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"UWSGI_ES_APPLICATION={import_string!r}: cannot import {module_name!r} ({exc})."
        ) from exc
    factory = getattr(module, attribute, None)
    if factory is None:
        raise ConfigurationError(
            f"UWSGI_ES_APPLICATION={import_string!r}: {module_name} has no attribute {attribute!r}."
        )
    if not callable(factory):
        raise ConfigurationError(f"UWSGI_ES_APPLICATION={import_string!r} is neither a class nor a callable.")
    if isinstance(factory, type) and not (
        issubclass(factory, Application) or _integration_for(factory) or _hosts_itself(factory)
    ):
        raise ConfigurationError(
            f"UWSGI_ES_APPLICATION={import_string!r} is a class but not an Application subclass "
            "(nor a class with ping, check_ready, describe and close, nor a kind an integration hosts)."
        )
    return factory


def agreeing(declared: Any | None, setting: str, where: str) -> Any | None:
    """The one factory to build: the one code declared (``install(Carts)``, by ``where``) and the
    one ``UWSGI_ES_APPLICATION`` names (``setting``), which must then be the same. Never serve
    another application than the one named: a module that installs the example while the setting
    names yours would build the example into your database."""
    if not setting:
        return declared
    named = load_factory(setting)
    if declared is None or named is declared:
        return named
    raise ConfigurationError(
        f"UWSGI_ES_APPLICATION={setting!r} names {_name_of(named)}, but {where} installs "
        f"{_name_of(declared)}; a server builds one application, the one named. Unset "
        f"UWSGI_ES_APPLICATION (the module names its application), or serve a module that installs "
        f"{_name_of(named)} (module = yourapp.wsgi:application in the ini)."
    )


def _name_of(factory: Any) -> str:
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', repr(factory))}"


def _hosts_itself(cls: type) -> bool:
    return all(
        callable(getattr(cls, method, None)) for method in ("ping", "check_ready", "describe", "close")
    )
