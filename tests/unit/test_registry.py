"""One application per process: init/get/close, the lazy getter, fork awareness, failure back-off."""

from __future__ import annotations

import os
import threading
import time

import pytest

from uwsgi_es.application import Application, constructions_in_this_process
from uwsgi_es.errors import (
    ApplicationAlreadyInitialisedError,
    ApplicationNotInitialisedError,
    ConfigurationError,
    ForkedApplicationError,
    InitialisationFailedError,
    SchemaMissingError,
)
from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.lifecycle import kinds, registry
from uwsgi_es.settings import Settings
from uwsgi_es.stores import create_record_store

from ..support.forking import in_child

# Real forks: `make test` runs these on Python 3.12 and 3.13 too.
pytestmark = pytest.mark.interpreters


def test_get_before_init_says_how_to_fix_it() -> None:
    with pytest.raises(ApplicationNotInitialisedError, match=r"uwsgi_es\.install\(YourApp\)"):
        registry.get_application()


def test_init_then_get_returns_the_same_application(settings: Settings) -> None:
    app = registry.init_application(BankAccounts, settings=settings)
    assert registry.get_application() is app
    assert app.built_in_pid == os.getpid()


def test_init_twice_raises(settings: Settings) -> None:
    registry.init_application(BankAccounts, settings=settings)
    with pytest.raises(ApplicationAlreadyInitialisedError, match="store every event twice"):
        registry.init_application(BankAccounts, settings=settings)


def test_close_is_idempotent_and_allows_a_new_init(settings: Settings) -> None:
    app = registry.init_application(BankAccounts, settings=settings)
    registry.close_application()
    registry.close_application()
    assert app.closed
    with pytest.raises(ApplicationNotInitialisedError):
        registry.get_application()
    assert registry.init_application(BankAccounts, settings=settings) is not app


def test_factory_defaults_to_the_configured_class(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    """With no factory the class comes from UWSGI_ES_APPLICATION, settings from the environment."""
    monkeypatch.setenv("UWSGI_ES_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("UWSGI_ES_APPLICATION", "uwsgi_es.example.domain:BankAccounts")
    assert isinstance(registry.init_application(), BankAccounts)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("no_such_module_xyz:App", "cannot import 'no_such_module_xyz'"),
        ("uwsgi_es.example.domain:Nothing", "has no attribute 'Nothing'"),
        ("uwsgi_es.example.domain:BankAccount", "not an Application subclass"),
    ],
)
def test_bad_application_setting_is_explained(value: str, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        kinds.load_factory(value)


def test_lazy_getter_builds_once_under_concurrent_threads(settings: Settings) -> None:
    """Many threads asking at once for the first time get one application, built once."""
    before = constructions_in_this_process()
    barrier = threading.Barrier(16)
    seen: list[Application] = []

    def ask() -> None:
        barrier.wait()
        seen.append(registry.get_application_lazily(BankAccounts, settings=settings))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 16
    assert len({id(app) for app in seen}) == 1
    assert constructions_in_this_process() == before + 1


def test_inherited_application_is_refused_by_get_and_replaced_by_init(settings: Settings) -> None:
    """After fork, get_application raises; building in the child makes the child's own."""
    parent_app = registry.init_application(BankAccounts, settings=settings)
    account = parent_app.open_account("ann")

    status, detail = in_child(registry.get_application)
    assert status == "error"
    assert detail.startswith(ForkedApplicationError.__name__)

    def build_in_child() -> tuple[bool, int, int, int]:
        child_app = registry.init_application(BankAccounts, settings=settings)
        return (
            child_app.built_in_pid == os.getpid(),
            child_app.bus.count_persistence_subscriptions(),
            constructions_in_this_process(),
            child_app.get_account(account.id).balance,
        )

    assert in_child(build_in_child) == ("ok", (True, 1, 1, 0))

    def lazily_in_child() -> bool:
        return registry.get_application_lazily(BankAccounts, settings=settings) is not parent_app

    assert in_child(lazily_in_child) == ("ok", True)
    # The parent's application and connections are untouched by what its children did.
    assert registry.get_application() is parent_app
    assert parent_app.get_account(account.id).owner == "ann"


def test_failed_build_is_remembered_and_retried_after_back_off(tmp_path: object, sqlite_url: str) -> None:
    """A build that fails (no schema yet) answers fast until the back-off passes, then retries."""
    unmigrated = Settings(
        database_url=f"sqlite:///{tmp_path}/fresh.sqlite3", init_retry_seconds=0.2, init_retry_max_seconds=0.4
    )
    with pytest.raises(SchemaMissingError, match="uwsgi-es migrate"):
        registry.get_application_lazily(BankAccounts, settings=unmigrated)
    assert isinstance(registry.initialisation_failure(), SchemaMissingError)
    with pytest.raises(InitialisationFailedError, match="attempt 1, next try in"):
        registry.get_application_lazily(BankAccounts, settings=unmigrated)
    with pytest.raises(InitialisationFailedError, match="could not build"):
        registry.get_application()

    store = create_record_store(unmigrated)
    store.create_schema()  # the operator runs the migration
    store.close()
    time.sleep(0.25)
    app = registry.get_application_lazily(BankAccounts, settings=unmigrated)
    assert registry.initialisation_failure() is None
    assert registry.get_application() is app


def test_memory_database_is_refused_only_with_several_processes() -> None:
    """In one process an in-memory database works (schema created with it)."""
    app = registry.init_application(BankAccounts, settings=Settings(database_url="sqlite:///:memory:"))
    assert isinstance(app, BankAccounts)
    assert app.get_account(app.open_account("ann").id).owner == "ann"


def test_no_application_without_a_factory_or_the_setting(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    """The library never falls back to its example: the build fails, naming the setting."""
    monkeypatch.setenv("UWSGI_ES_DATABASE_URL", sqlite_url)
    with pytest.raises(ConfigurationError, match="UWSGI_ES_APPLICATION is not set"):
        registry.init_application()


def test_a_lazy_get_never_returns_another_application_than_asked(settings: Settings) -> None:
    """get_application_lazily(MyApp) when the slot holds a BankAccounts: refused, not handed over."""

    class Carts(Application):
        pass

    registry.init_application(BankAccounts, settings=settings)
    with pytest.raises(ConfigurationError, match="is a BankAccounts, not the Carts asked for"):
        registry.get_application_lazily(Carts, settings=settings)


def test_several_named_applications_share_a_process_when_their_events_do_not_overlap(
    settings: Settings,
) -> None:
    """Two applications, each persisting its own event types, live side by side by name;
    get_application() without a name is the default one; a third persisting overlapping events is
    refused (it would store them twice)."""
    from uwsgi_es.domain import DomainEvent
    from uwsgi_es.errors import DuplicateSubscriptionError

    class Noted(DomainEvent):
        pass

    class Shipped(DomainEvent):
        pass

    class Audit(Application):
        persist_event_type = Noted

    class Shipping(Application):
        persist_event_type = Shipped

    class Everything(Application):
        persist_event_type = DomainEvent  # overlaps both

    audit = registry.init_application(Audit, settings=settings)
    shipping = registry.init_application(Shipping, settings=settings, name="shipping")
    assert registry.get_application() is audit
    assert registry.get_application("shipping") is shipping
    assert {h.name for h in registry.slots()} == {"default", "shipping"}
    with pytest.raises(DuplicateSubscriptionError):
        registry.init_application(Everything, settings=settings, name="everything")
    registry.close_application()
    assert audit.closed
    assert shipping.closed


def test_any_object_with_the_hosting_methods_can_be_hosted(settings: Settings) -> None:
    """The registry hosts what satisfies Hosting (ping, check_ready, describe, close), not only ours."""

    class Service:
        closed = False

        def __init__(self, settings: Settings) -> None:
            self.settings = settings

        def ping(self) -> None: ...

        def check_ready(self) -> None: ...

        def describe(self) -> str:
            return "a service without a store"

        def close(self) -> None:
            self.closed = True

    service = registry.init_application(Service, settings=settings, name="service")
    assert isinstance(service, Service)
    assert registry.get_application("service") is service
    registry.close_application("service")
    assert service.closed

    with pytest.raises(ConfigurationError, match="cannot be hosted"):
        registry.init_application(lambda settings: object(), settings=settings, name="nothing")
