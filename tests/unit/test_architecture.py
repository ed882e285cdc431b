"""The layout keeps its promises: no import circle inside uwsgi_es, and the core never imports an
integration; the library never imports its example; the parts' arrows point down."""

from __future__ import annotations

import ast
from pathlib import Path

import uwsgi_es

PACKAGE = Path(uwsgi_es.__file__).parent
INTEGRATIONS = ("uwsgi_es.integrations",)


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


def first_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """An import circle of ``edges`` (a -> b -> ... -> a), or None."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> list[str] | None:
        if name in done:
            return None
        if name in visiting:
            return [*visiting[visiting.index(name) :], name]
        visiting.append(name)
        for target in sorted(edges.get(name, ())):
            circle = visit(target)
            if circle:
                return circle
        visiting.pop()
        done.add(name)
        return None

    for name in sorted(edges):
        circle = visit(name)
        if circle:
            return circle
    return None


def part_of(module: str) -> str:
    """The top-level part a module belongs to: its folder, or itself (uwsgi_es.stores.base ->
    uwsgi_es.stores; uwsgi_es.application -> uwsgi_es.application)."""
    return ".".join(module.split(".")[:2])


def test_no_import_circle() -> None:
    circle = first_circle(graph())
    assert circle is None, f"import circle: {' -> '.join(circle)}"


def test_parts_import_downwards() -> None:
    """Between top-level parts too: no part imports a part that imports it back, however far round
    (the arrows of the layers in uwsgi_es/__init__.py's docstring all point down)."""
    parts: dict[str, set[str]] = {}
    for name, targets in graph().items():
        parts.setdefault(part_of(name), set()).update(
            part_of(t) for t in targets if part_of(t) != part_of(name)
        )
    circle = first_circle(parts)
    assert circle is None, f"parts in a circle (an arrow runs back up): {' -> '.join(circle)}"


def test_the_runtime_leaves_import_nothing_of_ours_at_import_time() -> None:
    """``uwsgi_es.runtime`` is below every floor: at import time its modules import only each other
    and ``errors`` (itself a leaf)."""
    for name, path in modules().items():
        if part_of(name) != "uwsgi_es.runtime":
            continue
        top_level = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ImportFrom)]
        ours = [n.module for n in top_level if (n.module or "").startswith("uwsgi_es")]
        allowed = ("uwsgi_es.runtime", "uwsgi_es.errors")
        assert all(m.startswith(allowed) for m in ours if m), f"{name} imports {ours}"


def test_the_core_imports_no_integration_and_the_library_not_its_example() -> None:
    for name, targets in graph().items():
        if name.startswith(INTEGRATIONS):
            continue
        assert not {t for t in targets if t.startswith(INTEGRATIONS)}, f"{name} imports an integration"
        if name.startswith("uwsgi_es.example") or name in ("uwsgi_es.wsgi", "uwsgi_es.asgi"):
            continue
        assert not {t for t in targets if t.startswith("uwsgi_es.example")}, f"{name} imports the example"


# What the lower floors may import, as their ``__init__`` docstrings state it.
MAY_IMPORT = {
    "uwsgi_es.runtime": {"uwsgi_es.errors", "uwsgi_es.settings"},  # settings: only when logging starts
    "uwsgi_es.metrics": {"uwsgi_es.runtime"},
    "uwsgi_es.stores": {
        "uwsgi_es.errors",
        "uwsgi_es.metrics",
        "uwsgi_es.redaction",
        "uwsgi_es.runtime",
        "uwsgi_es.settings",
    },
    "uwsgi_es.testing": {"uwsgi_es.errors", "uwsgi_es.runtime"},
}


def test_the_lower_floors_import_only_what_their_rule_allows() -> None:
    for name, targets in graph().items():
        allowed = MAY_IMPORT.get(part_of(name))
        if allowed is None:
            continue
        beyond = {part_of(t) for t in targets} - allowed - {part_of(name)}
        assert not beyond, f"{name} imports {sorted(beyond)}: its part's rule allows {sorted(allowed)}"


def test_only_the_mule_entry_point_of_the_read_side_reaches_up_to_the_build() -> None:
    for name, targets in graph().items():
        if part_of(name) == "uwsgi_es.readside" and name != "uwsgi_es.readside.mule":
            up = {
                t for t in targets if part_of(t) in ("uwsgi_es.lifecycle", "uwsgi_es.servers", "uwsgi_es.web")
            }
            assert not up, f"{name} imports {sorted(up)}"
