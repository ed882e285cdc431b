"""The front door: what a user calls comes from ``uwsgi_es`` itself, and the names are the very
objects the parts below define (one object, not a copy)."""

from __future__ import annotations

import importlib

import pytest

import uwsgi_es
from uwsgi_es.lifecycle import registry
from uwsgi_es.servers import uwsgi
from uwsgi_es.web import JsonApi


def test_what_a_user_calls_is_exported_by_uwsgi_es() -> None:
    assert uwsgi_es.install is uwsgi.install
    assert uwsgi_es.init_application is registry.init_application
    assert uwsgi_es.get_application is registry.get_application
    assert uwsgi_es.get_application_lazily is registry.get_application_lazily
    assert uwsgi_es.close_application is registry.close_application
    assert uwsgi_es.JsonApi is JsonApi
    for name in uwsgi_es.__all__:
        assert getattr(uwsgi_es, name) is not None, name


def test_every_error_is_exported_and_derives_from_the_one_base() -> None:
    from uwsgi_es import errors

    exported = {getattr(uwsgi_es, name) for name in uwsgi_es.__all__}
    public = [
        value
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == errors.__name__
    ]
    assert len(public) > 20
    assert all(issubclass(error, uwsgi_es.UwsgiEsError) for error in public)
    assert {e.__name__ for e in public if e not in exported} == set()


@pytest.mark.parametrize("old", ["uwsgi_es.hooks", "uwsgi_es.registry", "uwsgi_es.bank", "uwsgi_es.adapters"])
def test_the_shims_are_gone(old: str) -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)
