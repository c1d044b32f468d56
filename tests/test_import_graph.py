"""The layering, read from the source (AST, no import): ``cca`` imports nothing from ``experiments``, the
modules of ``cca`` and those of ``experiments`` each import one another without a cycle (imports inside
functions counted), and no module edits ``sys.path`` or changes directory (everything in ``experiments/``
runs as ``python -m experiments.<name>`` from the repository root).

An edge is the module an import names: ``from cca.engine import checkpoint`` is an edge to
``cca.engine.checkpoint`` (a module), ``from cca.engine.config import save_config`` one to
``cca.engine.config``. A package's ``__init__`` is not implied by importing one of its modules (a package
re-exporting its modules is not a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str = "cca") -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> list[tuple[str, int, bool]]:
    """``(module, line, inside a function)`` of every import in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                for alias in child.names:
                    target = f"{base}.{alias.name}"
                    found.append((target if target in known else base, child.lineno, nested))
            visit(child, inner)

    visit(tree, False)
    return found


def graph(package: str = "cca") -> tuple[dict[str, set[str]], list[str]]:
    """``{module: modules of the package it imports}`` and, for ``cca``, the imports of ``experiments`` in it."""
    known = set(modules(package))
    edges: dict[str, set[str]] = {m: set() for m in known}
    wrong: list[str] = []
    for name, path in modules(package).items():
        for target, line, _ in imported(path, name, known):
            if package == "cca" and (target == "experiments" or target.startswith("experiments.")):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
            if target in known and target != name:
                edges[name].add(target)
    return edges, wrong


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
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

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def test_the_walker_sees_imports_inside_functions_and_finds_a_cycle(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from cca.engine import checkpoint\n    return checkpoint\n")
    assert imported(source, "cca.m", {"cca.engine", "cca.engine.checkpoint"}) == [
        ("os", 1, False), ("cca.engine.checkpoint", 4, True)]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_cca_never_imports_experiments():
    _, wrong = graph()
    assert wrong == [], "cca/ must not read experiments/:\n" + "\n".join(wrong)


# Where a cca module may import another cca module inside a function, and why (everywhere else such an
# import is at the top of the module, where the dependency graph shows it):
LAZY_CCA_IMPORTS = {
    "cca/__main__.py": "the command line loads only what the chosen subcommand runs",
    "cca/profiling/__main__.py": "the command line loads only what the chosen subcommand runs",
    "cca/ops/_extension.py": "the compiler discovery (_toolkit) only when the kernels are built",
    "cca/reports/attention.py": "plots and render import matplotlib, a heavy optional dependency",
    "cca/ops/triton_kernels.py": "Triton decorates the kernels at import (reading TRITON_INTERPRET): loaded on first use",
    "cca/profiling/gpu_model.py": "the report writer (render, pandas) only when writing the report; the model needs neither",
}


def test_imports_of_cca_inside_functions_only_where_a_reason_is_stated():
    known = set(modules())
    lazy = []
    for name, path in modules().items():
        where = path.relative_to(ROOT).as_posix()
        for target, line, nested in imported(path, name, known):
            if nested and target.startswith("cca") and where not in LAZY_CCA_IMPORTS:
                lazy.append(f"{where}:{line} imports {target} inside a function")
    assert lazy == [], "\n".join(lazy)


def test_cca_has_no_import_cycle():
    edges, _ = graph()
    assert len(edges) > 50  # every module of the package was read
    found = cycles(edges)
    assert found == [], "import cycles in cca/ (imports inside functions counted):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_experiments_have_no_import_cycle():
    edges, _ = graph("experiments")
    assert {"experiments.spec", "experiments.settings", "experiments.rows", "experiments.run"} <= set(edges)
    assert "experiments.spec" in edges["experiments.settings"]  # the walker reads experiments' imports
    found = cycles(edges)
    assert found == [], "import cycles in experiments/ (imports inside functions counted):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_the_experiments_driver_points_one_way():
    """declare (spec) <- resolve (settings) <- run one row (rows) <- run a table (run); report below run."""
    edges, _ = graph("experiments")
    below = {
        "experiments.spec": set(),
        "experiments.settings": {"experiments.spec", "experiments.cache"},
        "experiments.report": {"experiments.spec", "experiments.settings"},
        "experiments.rows": {"experiments.spec", "experiments.settings", "experiments.cache", "experiments.report"},
    }
    for module, allowed in below.items():
        driver = {m for m in edges[module] if m in below or m in {"experiments.cache", "experiments.run"}}
        assert driver <= allowed, f"{module} imports {sorted(driver - allowed)}"


PATH_EDITS = ("insert", "append", "extend", "remove", "pop", "clear")


def _path_or_directory_changes(path: Path) -> list[str]:
    """``line: what`` of each ``sys.path`` edit (a mutating call, an assignment) and ``os.chdir`` call in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            called = ast.unparse(node.func)
            if called == "os.chdir" or (called.startswith("sys.path.") and node.func.attr in PATH_EDITS):
                found.append(f"{node.lineno}: {called}")
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            for target in getattr(node, "targets", [getattr(node, "target", None)]):
                if ast.unparse(target).startswith("sys.path"):
                    found.append(f"{node.lineno}: {ast.unparse(target)}")
    return sorted(found, key=lambda hit: int(hit.split(":")[0]))


def test_the_walker_sees_sys_path_edits_and_chdir(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os, sys\nsys.path.insert(0, '.')\nsys.path = []\nos.chdir('/')\n"
                      "print(sys.path.index('.'))\n")
    assert _path_or_directory_changes(source) == ["2: sys.path.insert", "3: sys.path", "4: os.chdir"]


def test_no_sys_path_edits_or_chdir_in_experiments_or_tests():
    found = [f"{path.relative_to(ROOT)}:{hit}" for folder in ("experiments", "tests")
             for path in sorted((ROOT / folder).rglob("*.py")) for hit in _path_or_directory_changes(path)]
    assert found == [], "run from the repository root as python -m experiments.<name> instead:\n" + "\n".join(found)
