"""The package's import graph, read from the source with the standard library's ``ast``: no cycle,
and nothing outside the command line imports the command line.

Every ``import`` and ``from ... import`` counts, also those inside functions (the lazy imports of
the command line and of optional extras); blocks under ``if TYPE_CHECKING:`` do not, since they
never run. ``from package import name`` leads to the module ``package.name`` when there is one,
else to the module a package's lazy-export map (``_EXPORTS`` / ``_MODULES`` in its
``__init__``) names, else to the package itself. Imports made from strings at run time
(``importlib.import_module`` of a registry entry) are not seen.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = "captum_gscorecam"
SOURCE = ROOT / PACKAGE
# The command line: its modules may import each other; nothing else may import them, except the
# ``python -m`` entry point above it.
CLI = f"{PACKAGE}.cli"
ENTRY_POINTS = {f"{PACKAGE}.__main__"}


def module_files(source: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package at ``source``."""
    modules = {}
    for path in sorted(source.rglob("*.py")):
        parts = path.relative_to(source.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def executed_nodes(node: ast.AST) -> list[ast.AST]:
    """Every node under ``node`` except the bodies of ``if TYPE_CHECKING:``."""
    found = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                found += [other, *executed_nodes(other)]
            continue
        found += [child, *executed_nodes(child)]
    return found


def lazy_exports(name: str, modules: dict[str, Path]) -> dict[str, str]:
    """A package's lazy-export map: public name -> the module that defines it.

    Module-level dicts of string to string in the package's ``__init__``: a value that names a
    module of the package is taken as it is, any other as a submodule of the package.
    """
    path = modules.get(name)
    if path is None or path.name != "__init__.py":
        return {}
    exports = {}
    for node in ast.parse(path.read_text()).body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if not isinstance(value, ast.Dict):
            continue
        for key, target in zip(value.keys, value.values, strict=True):
            key, target = getattr(key, "value", None), getattr(target, "value", None)
            if isinstance(key, str) and isinstance(target, str):
                exports[key] = target if target in modules else f"{name}.{target}"
    return exports


def import_graph(source: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (itself left out)."""
    modules = module_files(source)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in executed_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        edges.add(f"{base}.{alias.name}")
                    elif base in modules:
                        edges.add(lazy_exports(base, modules).get(alias.name, base))
        graph[name] = {edge for edge in edges if edge != name and edge in modules}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cli_importers(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, command-line module) for every import of the command line from outside it."""

    def in_cli(name: str) -> bool:
        return name == CLI or name.startswith(f"{CLI}.")

    return sorted(
        (name, target)
        for name, targets in graph.items()
        if not in_cli(name) and name not in ENTRY_POINTS
        for target in targets
        if in_cli(target)
    )


@pytest.fixture(scope="module")
def graph():
    return import_graph(SOURCE)


def test_the_graph_sees_top_level_function_level_and_lazy_imports(graph):
    assert f"{PACKAGE}.engine" in graph[f"{PACKAGE}.attribution"]  # top level
    assert f"{PACKAGE}.clip" in graph[f"{PACKAGE}.app"]  # inside a function
    assert f"{PACKAGE}.cli" in graph[f"{PACKAGE}.__main__"]
    assert f"{PACKAGE}.precision" not in graph[f"{PACKAGE}.scorers"]  # TYPE_CHECKING only
    assert len(graph) >= 40


def test_the_package_has_no_import_cycle(graph):
    assert cycles(graph) == []


def test_nothing_below_the_command_line_imports_it(graph):
    assert cli_importers(graph) == []


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "pkg"


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    source = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg.b import f\n",
            "b.py": "def f():\n    from . import c\n",
            "c.py": "import pkg.a\n",
            "d.py": "from pkg import a\n",
        },
    )
    assert cycles(import_graph(source)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_a_cycle_through_a_lazy_export_is_found_and_type_checking_is_not(tmp_path):
    source = write_package(
        tmp_path,
        {
            "__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
            '_EXPORTS = {"Thing": "pkg.a"}\n',
            "a.py": "from pkg.sub.b import g\n",
            "sub/__init__.py": '_MODULES = {"g": "b"}\n',
            "sub/b.py": "def g():\n    from pkg import Thing\n",
            "e.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg import e2\n",
            "e2.py": "import pkg.e\n",
        },
    )
    graph = import_graph(source)
    assert graph["pkg"] == set()
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_an_import_of_the_command_line_from_below_is_named(tmp_path):
    graph = {
        f"{CLI}": {f"{CLI}.explain", f"{PACKAGE}.engine"},
        f"{CLI}.explain": {f"{PACKAGE}.engine"},
        f"{PACKAGE}.__main__": {CLI},
        f"{PACKAGE}.app": {f"{CLI}.explain"},
        f"{PACKAGE}.engine": set(),
        f"{PACKAGE}.clipper": {f"{PACKAGE}.cli_tools"},  # a name that only starts alike
        f"{PACKAGE}.cli_tools": set(),
    }
    assert cli_importers(graph) == [(f"{PACKAGE}.app", f"{CLI}.explain")]
