"""The layout keeps its promises: no import circle inside uwsgi_es, and the core never imports an
integration (``adapters``, ``integrations``); the library never imports its example."""

from __future__ import annotations

import ast
from pathlib import Path

import uwsgi_es

PACKAGE = Path(uwsgi_es.__file__).parent
INTEGRATIONS = ("uwsgi_es.adapters", "uwsgi_es.integrations")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours this one imports (also inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for target in targets:
            module = target
            while module and module not in known:
                module = module.rpartition(".")[0]
            if module and module not in (name, "uwsgi_es"):
                found.add(module)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, set(known)) for name, path in known.items()}


def test_no_import_circle() -> None:
    edges = graph()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, (
            f"import circle: {' -> '.join([*visiting[visiting.index(name) :], name])}"
        )
        visiting.append(name)
        for target in edges.get(name, ()):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in edges:
        visit(name)


def test_the_core_imports_no_integration_and_the_library_not_its_example() -> None:
    for name, targets in graph().items():
        if name.startswith(INTEGRATIONS):
            continue
        assert not {t for t in targets if t.startswith(INTEGRATIONS)}, f"{name} imports an integration"
        if name.startswith("uwsgi_es.example") or name in ("uwsgi_es.wsgi", "uwsgi_es.bank"):
            continue
        assert not {t for t in targets if t.startswith("uwsgi_es.example")}, f"{name} imports the example"
