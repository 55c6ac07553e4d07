"""The package's shape: no import cycle (function-level imports included), few modules at
the top, and ``from stochopt import ...`` keeping every name it has exported."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import stochopt

PACKAGE = Path(stochopt.__file__).resolve().parent


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Every module of the package -> the package's modules it imports, read off its source
    with ``ast``: every ``import`` and ``from ... import`` statement, at any depth (inside a
    function too). ``from .a import b`` points at the module ``a.b`` when there is one, else
    at ``a`` (its ``__init__``)."""
    top = root.name
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in paths else source
                           for a in node.names]
            else:
                continue
            for target in targets:
                # "import stochopt.a.b" loads stochopt.a.b; keep the longest known module
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target.split(".")[0] == top and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "stochopt.train" in graph["stochopt"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_function_level_cycle(tmp_path):
    """The walk sees an import inside a function, and a cycle through a package's
    ``__init__`` (the two that the old layout had: data <-> datasets, artefacts <-> optimum)."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n    return g()\n")
    (pkg / "b.py").write_text("from . import a\n\ndef g():\n    return 1\n")
    (pkg / "sub" / "__init__.py").write_text("from .c import h\n")
    (pkg / "sub" / "c.py").write_text("from .. import a\nh = 1\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    (pkg / "b.py").write_text("def g():\n    return 1\n")
    assert cycles(import_graph(pkg)) == []


def test_at_most_fifteen_modules_stay_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 15, top
    rooms = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert rooms == ["cli", "data", "optim", "study"]


def test_every_name_stochopt_exported_is_still_there():
    # the names of stochopt.__all__ before the package was given rooms (version 0.3.0)
    before = {"RULES", "Config", "RunRecord", "SettingError", "SoftmaxRegression",
              "SoftmaxRegressionCV", "Split", "StochoptError", "fit", "grid", "load_split",
              "make_optimizer", "open_out", "register", "run"}
    assert before <= set(stochopt.__all__)
    for name in stochopt.__all__:
        assert getattr(stochopt, name) is not None


LAZY_PACKAGES = ["stochopt", "stochopt.data", "stochopt.cli"]


def _lazy_names(package: str) -> dict[str, str]:
    """The names a package's ``if TYPE_CHECKING:`` block imports -> the module it names."""
    path = PACKAGE.parent / package.replace(".", "/") / "__init__.py"
    found = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in (n for n in ast.walk(node) if isinstance(n, ast.ImportFrom)):
                module = ".".join([package, *([imp.module] if imp.module else [])])
                found.update({a.name: module for a in imp.names})
    return found


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_each_name_loaded_when_first_used_is_the_one_its_module_defines(package):
    """The packages load their names on first use; each is the object its module (named in
    the package's TYPE_CHECKING block, which readers and the docs see) defines, and the
    block and ``__all__`` list the same names."""
    names = _lazy_names(package)
    module = importlib.import_module(package)
    assert set(names) <= set(module.__all__) and len(names) >= 4
    for name, home in names.items():
        assert getattr(module, name) is getattr(importlib.import_module(home), name), name
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        module.nothing_here  # noqa: B018


def test_the_command_and_the_mnist_reader_import_without_torch():
    """What ``stochopt`` runs before it reads MNIST ahead (the package, the command's module,
    the IDX reader) imports no torch, so the read runs while torch imports."""
    code = ("import sys, stochopt, stochopt.cli, stochopt.data.idx; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
