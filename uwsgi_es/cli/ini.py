"""``uwsgi-es init MODULE``: an ini for your application, every option commented with its reason.

It is the project's own ``uwsgi.ini`` (which is this command's output for the example,
``uwsgi_es.wsgi:application``; a test keeps the two equal) with your WSGI module and one
projection mule per projection your application declares. The template ships in the package
(``uwsgi.ini.template``), so the command works from an installed wheel, anywhere.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from uwsgi_es.errors import ConfigurationError
from uwsgi_es.lifecycle import registry
from uwsgi_es.readside.status import projection_classes
from uwsgi_es.servers.uwsgi import installed_by

MULE_LINE = "mule = %b-es-mule.py"
_MULES_EXPLAINED = """\
; The read side: one mule per projection of the application, in the order it declares them
; ({names}). A mule is a process the master forks and respawns (a killed one resumes from its
; tracking record) and that serves no HTTP; it builds its own application after its fork, as a
; worker does. `%b` is the path of the uwsgi binary (.../bin/uwsgi): pip installs the script
; uwsgi-es-mule.py beside it. The same runner runs outside uWSGI: `uwsgi-es project NAME`."""
_NO_MULES = """\
; The read side: the application declares no projection, so no mule runs here. Add one line
; `mule = %b-es-mule.py` per projection it declares (`uwsgi-es init` writes them)."""


def render(module: str, projections: Sequence[str], application: str, file_name: str = "uwsgi.ini") -> str:
    """The ini serving ``module`` (whose application ``application`` declares ``projections``)."""
    template = resources.files("uwsgi_es.cli").joinpath("uwsgi.ini.template").read_text()
    if projections:
        mules = "\n".join(
            [_MULES_EXPLAINED.format(names=", ".join(projections))] + [MULE_LINE] * len(projections)
        )
    else:
        mules = _NO_MULES
    title = f"uWSGI for {module} (its application: {application}), written by `uwsgi-es init`."
    return (
        template.replace("@TITLE@", title)
        .replace("@FILE@", file_name)
        .replace("@MODULE@", module)
        .replace("@MULES@", mules)
    )


def init(module: str, output: str, *, force: bool = False) -> str:
    """Write the ini for ``module`` to ``output`` ("-": standard output); one line saying what."""
    if ":" not in module:
        raise ConfigurationError(
            f"{module!r} is not a WSGI callable: give it as package.module:callable, "
            "e.g. myapp.wsgi:application."
        )
    module_name = module.split(":", 1)[0]
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: your package, from where you are
    try:
        importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import {module_name!r} from {os.getcwd()} ({exc}): run uwsgi-es init in your "
            "project's directory, in the virtualenv uWSGI will run in."
        ) from exc
    factory = installed_by(module_name) or registry.declared()
    if factory is None:
        raise ConfigurationError(
            f"{module_name} does not name its application: call uwsgi_es.install(YourApp) in it "
            "(it builds one application per worker, after the fork)."
        )
    projections = [cls.name for cls in projection_classes(factory)]
    file_name = Path(output).name if output != "-" else "uwsgi.ini"
    text = render(module, projections, factory.__qualname__, file_name)
    if output == "-":
        sys.stdout.write(text)
        return f"{module}: {len(projections)} projection mule(s)"
    target = Path(output)
    if target.exists() and not force:
        raise ConfigurationError(f"{target} exists: choose another --output, or add --force to replace it.")
    target.write_text(text)
    return f"wrote {target} for {module} ({factory.__qualname__}, {len(projections)} projection mule(s))"
