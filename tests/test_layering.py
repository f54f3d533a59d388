"""Dependencies point one way (design.md): the imports of every module of ours, read with ``ast``
(those inside functions and ``TYPE_CHECKING`` blocks too: they are dependencies all the same).

The rules:

* no import cycle between our modules;
* ``architectures/`` and ``datasets/`` import nothing of ``runner/`` or ``analysis/``;
* ``analysis/`` reads the store only: of ``runner/`` it imports ``ALLOWED_IN_ANALYSIS``;
* ``runner/`` reaches ``analysis/`` through ``runner/commands.py`` alone (and ``runner/cli/``, on top);
* nothing imports ``runner.cli`` but ``runner/__main__.py`` (and ``runner/cli/`` itself).

An import names the most specific module of ours it reaches: ``from runner.plan import stages``
is an arrow to ``runner.plan.stages``, ``from runner.plan.stages import depths`` too, and
``import architectures`` one to the package's ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runner", "analysis", "architectures", "datasets")

# what analysis/ may import of runner/: errors and states, the study's specs and selectors, the
# store's read side (runner.records.provenance gathers, it does not read: runner/commands.py calls it)
ALLOWED_IN_ANALYSIS = ("runner.errors", "runner.states", "runner.study", "runner.records")
NOT_ALLOWED_IN_ANALYSIS = ("runner.records.provenance",)

# (importer, imported) arrows that break a rule today and are being fixed elsewhere: empty now
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


# ---------------------------------------------------------------- the checker


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, for every ``.py`` file under ``root/<package>``."""
    files = {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    return {name: _imports(name, path, set(files), packages) for name, path in files.items()}


def _imports(name: str, path: Path, known: set[str], packages: tuple[str, ...]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known and t.split(".")[0] in packages:  # a name inside a module: the module
                t = t.rpartition(".")[0]
            if t in known and t != name:
                out.add(t)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(_cycle_in(graph, c) for c in components)


def _cycle_in(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest way from the component's first module back to itself, inside the component."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component always has one


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def back_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks one of the module docstring's rules, as ``importer -> imported: why``."""
    out = []
    for importer in sorted(graph):
        for imported in sorted(graph[importer]):
            why = _rule_broken(importer, imported)
            if why and (importer, imported) not in KNOWN_EXCEPTIONS:
                out.append(f"{importer} -> {imported}: {why}")
    return out


def _rule_broken(importer: str, imported: str) -> str | None:
    if _in(importer, "architectures", "datasets") and _in(imported, "runner", "analysis"):
        return "architectures/ and datasets/ import nothing of runner/ or analysis/"
    if _in(importer, "analysis") and _in(imported, "runner") and (
            not _in(imported, *ALLOWED_IN_ANALYSIS) or _in(imported, *NOT_ALLOWED_IN_ANALYSIS)):
        return (f"analysis/ imports of runner/ only {', '.join(ALLOWED_IN_ANALYSIS)} "
                f"(not {', '.join(NOT_ALLOWED_IN_ANALYSIS)}); gather in runner/commands.py and pass the data")
    if _in(importer, "runner") and not _in(importer, "runner.cli", "runner.commands") and _in(imported, "analysis"):
        return "runner/ reaches analysis/ only through runner/commands.py (or runner/cli/)"
    if _in(imported, "runner.cli") and not _in(importer, "runner.cli", "runner.__main__"):
        return "runner.cli sits on top: only runner/__main__.py imports it"
    return None


# ---------------------------------------------------------------- the tree of this project


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_the_graph_sees_every_module_and_imports_inside_functions(graph):
    assert "runner.commands" in graph and "analysis.report" in graph and "architectures" in graph
    assert "runner.plan.stages" in graph["runner.plan.expand"]  # from runner.plan import stages
    assert "analysis.report" in graph["runner.commands"]  # imported inside report()


def test_no_import_cycle_between_our_modules(graph):
    found = [" -> ".join(c) for c in cycles(graph)
             if not all((a, b) in KNOWN_EXCEPTIONS for a, b in zip(c, c[1:]))]
    assert not found, "import cycles:\n" + "\n".join(found)


def test_dependencies_point_one_way(graph):
    found = back_arrows(graph)
    assert not found, "imports against the layering (tests/test_layering.py):\n" + "\n".join(found)


def test_known_exceptions_are_still_needed(graph):
    """An exception whose import is gone must leave the list, so it cannot hide a new one later."""
    gone = [f"{a} -> {b}" for a, b in KNOWN_EXCEPTIONS if b not in graph.get(a, set())]
    assert not gone, "remove from KNOWN_EXCEPTIONS: " + ", ".join(gone)


# ---------------------------------------------------------------- the checker on fake graphs


def test_a_cycle_is_found_and_named_in_order():
    fake = {"runner.a": {"runner.b"}, "runner.b": {"runner.c"}, "runner.c": {"runner.a", "runner.d"},
            "runner.d": set(), "runner.e": {"runner.f"}, "runner.f": {"runner.e"}}
    assert cycles(fake) == [["runner.a", "runner.b", "runner.c", "runner.a"], ["runner.e", "runner.f", "runner.e"]]
    assert cycles({"runner.a": {"runner.b"}, "runner.b": set()}) == []


def test_each_rule_catches_its_back_arrow():
    fake = {
        "architectures.vit": {"runner.plan.runs", "architectures.layers"},
        "architectures.layers": set(),
        "datasets": {"analysis.data"},
        "analysis.data": {"runner.states", "runner.study.selectors", "runner.records.store"},
        "analysis.report": {"runner.plan.expand", "runner.records.provenance", "runner.errors"},
        "runner.plan.expand": {"analysis.tables"},
        "runner.commands": {"analysis.report"},
        "runner.cli.app": {"analysis.report", "runner.cli.render"},
        "runner.cli.render": set(),
        "runner.__main__": {"runner.cli.app"},
        "runner.launch.scheduler": {"runner.cli.render"},
    }
    found = [line.split(":")[0] for line in back_arrows(fake)]
    assert found == ["analysis.report -> runner.plan.expand", "analysis.report -> runner.records.provenance",
                     "architectures.vit -> runner.plan.runs", "datasets -> analysis.data",
                     "runner.launch.scheduler -> runner.cli.render", "runner.plan.expand -> analysis.tables"]


def test_imports_are_read_from_source_relative_and_inside_functions(tmp_path):
    files = {
        "runner/__init__.py": "",
        "runner/a.py": "from runner import b\nfrom runner.c import thing\n",
        "runner/b.py": "def f():\n    import runner.a\n",
        "runner/c.py": "import os\nthing = 1\n",
        "analysis/__init__.py": "",
        "analysis/x.py": "from . import y\nfrom .y import z\nfrom runner.a import name_in_a\n",
        "analysis/y.py": "z = 1\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    g = import_graph(tmp_path, ("runner", "analysis"))
    assert g["runner.a"] == {"runner.b", "runner.c"} and g["runner.b"] == {"runner.a"} and g["runner.c"] == set()
    assert g["analysis.x"] == {"analysis.y", "runner.a"}
    assert cycles(g) == [["runner.a", "runner.b", "runner.a"]]
    assert back_arrows(g) == ["analysis.x -> runner.a: " + _rule_broken("analysis.x", "runner.a")]
