"""``uwsgi_es.__version__``: the installed distribution's version, and a fallback without one."""

from __future__ import annotations

import importlib.metadata

import pytest

import uwsgi_es


def test_version_is_the_installed_distribution_s() -> None:
    assert "__version__" in uwsgi_es.__all__
    assert uwsgi_es.__version__ == importlib.metadata.version("uwsgi_es")


def test_version_without_installed_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a source tree that was never installed: a PEP 440 version that says so."""

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert uwsgi_es._installed_version() == "0+unknown"
