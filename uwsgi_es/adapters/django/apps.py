"""The app config Django finds under the former path: it installs the app that lives in
``uwsgi_es.integrations.django`` (same label, same migrations, same table)."""

from __future__ import annotations

from uwsgi_es.integrations.django import apps as _moved


class UwsgiEsConfig(_moved.UwsgiEsConfig):
    default = True
