"""Which application a deployment step works on, found where uWSGI finds it.

``uwsgi-es migrate --ini uwsgi.ini`` reads the ini as uWSGI does (``servers.uwsgi_ini``), then
prepares this process as uWSGI prepares its own: the ini's ``env = NAME=value`` lines in the
environment, its ``chdir`` as the working directory (relative SQLite paths resolve from there),
its ``pythonpath`` and that directory on ``sys.path``. It imports the ini's WSGI module, whose
``install(...)`` names the application, and checks that ``UWSGI_ES_APPLICATION``, if set too,
names the same one. Without ``--ini`` the application is the one ``UWSGI_ES_APPLICATION`` names,
imported from the current directory as ``python -m`` would (a console script does not put it on
``sys.path`` by itself).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

from uwsgi_es.errors import ConfigurationError
from uwsgi_es.lifecycle import kinds, registry
from uwsgi_es.servers.uwsgi import installed_by
from uwsgi_es.servers.uwsgi_ini import Ini, read_ini
from uwsgi_es.settings import Settings


@dataclass(frozen=True)
class Target:
    """The application a step works on (None: none was named), and how it was named."""

    factory: Any | None
    named_by: str
    settings: Settings
    ini: Ini | None = None

    @property
    def name(self) -> str:
        factory = self.factory
        return getattr(factory, "__qualname__", repr(factory)) if factory is not None else "none"


def locate(ini_path: str | None) -> Target:
    """The application named by the ini at ``ini_path`` (and/or ``UWSGI_ES_APPLICATION``)."""
    ini = read_ini(ini_path) if ini_path else None
    if ini is not None:
        _prepare_like_uwsgi(ini)
    else:
        _put_first_on_path(os.getcwd())
    settings = Settings.from_environ()
    declared, where = None, ""
    if ini is not None:
        declared, where = _installed_by(ini)
    factory = kinds.agreeing(declared, settings.application, where)
    if factory is None:
        named_by = "no application named (give --ini FILE, or set UWSGI_ES_APPLICATION)"
    elif declared is not None:
        named_by = f"{where} ({ini.path if ini else ''})"
    else:
        named_by = f"UWSGI_ES_APPLICATION={settings.application}"
    return Target(factory, named_by, settings, ini)


def _prepare_like_uwsgi(ini: Ini) -> None:
    os.environ.update(ini.environment)
    directory = ini.chdir
    if not directory.is_dir():
        raise ConfigurationError(f"{ini.path}: chdir {directory} is not a directory.")
    os.chdir(directory)
    for entry in reversed([str(directory), *ini.pythonpath]):
        _put_first_on_path(entry)


def _put_first_on_path(entry: str) -> None:
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _installed_by(ini: Ini) -> tuple[Any | None, str]:
    """Import the ini's WSGI module as uWSGI would; the factory its ``install(...)`` declared."""
    module = ini.module
    if not module:
        wsgi_file = ini.last("wsgi-file") or ini.last("file")
        hint = f" (it loads {wsgi_file} with wsgi-file: use `module = package.module:application`)"
        raise ConfigurationError(f"{ini.path} names no WSGI module{hint if wsgi_file else ''}.")
    module_name = module.split(":", 1)[0]
    try:
        importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{ini.path}: cannot import its module {module_name!r} from {os.getcwd()} ({exc}); run "
            "this in the environment uWSGI runs in (the same virtualenv)."
        ) from exc
    return installed_by(module_name) or registry.declared(), f"the module {module_name}"
