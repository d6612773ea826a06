"""No import cycles among our own modules, not even hidden inside functions.

The graph is read from the source with ``ast`` (nothing is imported): an edge A -> B for every ``import B`` or
``from B import x`` anywhere in A (module level, inside functions, under ``if TYPE_CHECKING``), where B is the
first-party module named (``from package import submodule`` points at the submodule, ``from module import name``
at the module). A package's __init__ is a node of its own; importing ``a.b`` is not counted as importing ``a``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmarks", "clipmodel", "config", "evaluator", "studyapp", "tests")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    modules = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """{module: the first-party modules it imports anywhere in its source}."""
    modules = module_files(root, packages)

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else known(base)
                           for alias in node.names]
            graph[name].update(t for t in targets if t and t != name)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_first_party_module_imports_itself_through_others():
    graph = import_graph(ROOT)

    # The graph really is the project's (a wrong root or parser would find no cycle in an empty graph).
    assert "evaluator.services.chunks" in graph["evaluator.tasks"]
    assert "evaluator.scoring" in graph["evaluator.services.chunks"]  # an import inside a function counts
    assert import_cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_hidden_inside_functions(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg.sub import b\n    return b\n")
    (package / "sub" / "b.py").write_text("def g():\n    from .. import a\n    return a\n")
    (package / "c.py").write_text("import pkg.a\n")

    graph = import_graph(tmp_path, packages=("pkg",))

    assert graph["pkg.c"] == {"pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.sub.b"]]
