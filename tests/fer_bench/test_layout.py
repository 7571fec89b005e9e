"""The installed packages' imports: one direction, no cycles.

``fer_bench`` may import ``fer_classic`` and ``fer_deep``; those two never
import each other, and from ``fer_bench`` only the shared core
``fer_bench._core``.  Every import counts, also those inside functions
(a cycle hidden in a function still ties the modules together), except the
body of a module's ``__getattr__``: a package's lazy attributes (PEP 562) are
how ``fer_deep.DeepModel`` is reachable without importing Keras, and they run
only when the attribute is asked for.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGES = ("fer_bench", "fer_classic", "fer_deep")


def project_modules() -> dict:
    """Module name -> source file, for every module of the installed packages."""
    modules = {}
    for package in PACKAGES:
        root = Path(importlib.import_module(package).__file__).parent
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root.parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict) -> set:
    """The project modules ``name`` imports (the most specific module each import statement names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    lazy = {id(node) for function in ast.walk(tree) if isinstance(function, ast.FunctionDef)
            and function.name == "__getattr__" for node in ast.walk(function)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
                break  # `from x import y`: y when it is a module, else x
    return found


@pytest.fixture(scope="module")
def graph():
    modules = project_modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_walk_sees_every_package_and_resolves_relative_imports(graph):
    assert {"fer_bench.cli", "fer_bench._core", "fer_bench.experiment.harness", "fer_bench.report",
            "fer_classic.model", "fer_classic.estimators", "fer_deep.model"} <= set(graph)
    assert "fer_classic.estimators" in graph["fer_classic.classifiers"]
    assert "fer_bench._core" in graph["fer_classic.model"]
    assert "fer_bench.metrics" in graph["fer_bench.experiment.harness"]


def test_no_import_cycle(graph):
    state, path, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_model_packages_import_only_the_core_of_the_application(graph):
    wrong = []
    for name, targets in graph.items():
        family = name.split(".")[0]
        if family == "fer_bench":
            continue
        other = "fer_deep" if family == "fer_classic" else "fer_classic"
        for target in targets:
            if target.split(".")[0] == other or (target.startswith("fer_bench") and target != "fer_bench._core"):
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_the_core_imports_nothing_of_the_project(graph):
    assert graph["fer_bench._core"] == set()


def test_the_installed_packages_are_the_three_and_not_benchmarks():
    import configparser

    from setuptools import find_packages

    root = Path(__file__).resolve().parents[2]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    include = config["options.packages.find"]["include"].split()
    packages = set(find_packages(str(root), include=include))
    assert {"fer_bench", "fer_bench.experiment", "fer_bench.report", "fer_classic", "fer_deep"} <= packages
    assert {name.split(".")[0] for name in packages} == set(PACKAGES)
    assert config["options.entry_points"]["console_scripts"].split() == ["fer-bench", "=", "fer_bench.cli:main"]
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("fer_classic.deploy")
