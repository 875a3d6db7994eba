"""Import cycles among the modules of dnnfusion_jax, codegen and egraph_rules, and among
their stage folders.

Every import counts: at the top of a file, inside a function, or under ``TYPE_CHECKING``,
because a cycle that only a late import hides is still a cycle in the design. A stage is a
module's folder (``dnnfusion_jax.fusion``, ``codegen.c``); modules at the top of a package
(``dnnfusion_jax.api``) are stages of their own.

    >>> graph = import_graph()
    >>> "dnnfusion_jax.frontend.ir" in graph["dnnfusion_jax.fusion.plan"]
    True
    >>> cycles(graph)
    []

Run: python3 tests/import_cycles.py   (prints the cycles; exits 1 if there is one)
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dnnfusion_jax", "codegen", "egraph_rules")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of our packages it imports (any import, anywhere in the file)."""
    files = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # ``from pkg import module`` imports the module, ``from module import name`` not
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


SPLIT_PACKAGES = ("dnnfusion_jax", "codegen")
"""Packages whose top-level modules are stages of their own (``egraph_rules`` is one stage)."""


def stage_of(module: str) -> str:
    """A module's folder below its package; a top-level module of ``SPLIT_PACKAGES`` itself."""
    parts = module.split(".")
    if parts[0] not in SPLIT_PACKAGES:
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else module


def stage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    stages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        here = stage_of(module)
        stages.setdefault(here, set()).update(t for t in map(stage_of, targets) if t != here)
    return stages


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
    return sorted(found)


def main() -> int:
    graph = import_graph()
    bad = 0
    for what, g in (("modules", graph), ("stages", stage_graph(graph))):
        found = cycles(g)
        print(f"{what}: {len(found)} import cycle(s)")
        for component in found:
            print("  " + " <-> ".join(component))
        bad += len(found)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
