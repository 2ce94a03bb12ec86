"""The package's shape: no import circle between its modules, no module over ~600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import tiering

ROOT = Path(tiering.__file__).parent
#: "no module over ~600 lines": the ~ leaves room for a docstring and a table, not for a second module
MAX_LINES = 650


def _module_name(path: Path) -> str:
    parts = ("tiering", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports, at any level, except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, modules) - {name} for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_init_of(parent: str, child: str) -> bool:
    return child.startswith(parent + ".")


def test_no_two_modules_of_the_package_import_each_other_even_through_others() -> None:
    graph = _graph()
    # a package's __init__ that imports its own submodules to expose them is not a circle of design
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not _is_package_init_of(d, name)}
    assert _cycles(graph) == []


def test_the_cycle_finder_sees_a_circle_through_a_third_module() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_module_is_over_the_line_limit() -> None:
    sizes = {_module_name(p): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_the_catalog_does_not_import_the_planner() -> None:
    graph = _graph()
    catalog = {m for m in graph if m.startswith("tiering.catalog")}
    assert all(not d.startswith("tiering.lifecycle") for m in catalog for d in graph[m])


def test_every_package_of_the_source_tree_is_installed() -> None:
    """``pyproject.toml`` lists the packages by hand (migrations and policies are mapped in from the top of the
    repository), so a new subpackage missing from the list would install a broken product."""
    import tomllib

    listed = set(tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {_module_name(p) for p in ROOT.rglob("__init__.py")}
    assert on_disk - listed == set()
