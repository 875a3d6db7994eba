"""The house's layering: no import cycles between modules or stage folders, and the layers of
the import-linter contract in pyproject.toml (core <- codegen <- pipeline and API <- tools)
hold and name every stage."""
from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import import_cycles

ROOT = Path(__file__).resolve().parents[1]


def test_no_import_cycles_between_modules_or_stages():
    graph = import_cycles.import_graph()
    assert import_cycles.cycles(graph) == []
    assert import_cycles.cycles(import_cycles.stage_graph(graph)) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a.x": {"a.y"}, "a.y": {"b.z"}, "b.z": {"a.x"}, "b.w": set()}
    assert import_cycles.cycles(graph) == [["a.x", "a.y", "b.z"]]


def _contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [contract] = config["contracts"]
    return [name.strip() for layer in contract["layers"] for name in layer.split("|")]


def test_the_layers_contract_names_every_stage():
    """A stage missing from the contract would be unchecked: every folder (and top-level
    module) of dnnfusion_jax and codegen, and egraph_rules, has its layer."""
    stages = set(import_cycles.stage_graph(import_cycles.import_graph()))
    stages -= {"dnnfusion_jax", "codegen", "dnnfusion_jax.__init__"}  # the packages' facades
    assert stages <= set(_contract_layers()), sorted(stages - set(_contract_layers()))


def test_lint_imports_keeps_the_layers_contract():
    command = shutil.which("lint-imports")
    assert command, "import-linter is a test dependency: pip install -e '.[test]'"
    run = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def test_the_readme_layout_table_lists_every_module():
    """README "How the pipeline is laid out" names every source file of the three packages
    by its path, so a newcomer can find each stage from the table."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## How the pipeline is laid out"):]
    table = table[:table.index("\n## ", 1)]
    files = [p.relative_to(ROOT).as_posix() for package in import_cycles.PACKAGES
             for pattern in ("*.py", "*.h", "*.cc", "*.c")
             for p in (ROOT / package).rglob(pattern) if p.name != "__init__.py"]
    missing = [f for f in files if f"`{f}`" not in table]
    assert not missing, missing
