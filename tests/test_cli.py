"""``python -m dnnfusion_jax explain``: the report, the check against jax.jit, DOT and SVG."""
import shutil
import subprocess
import sys

import pytest

from dnnfusion_jax.cli import main

MODEL = '''
import jax, jax.numpy as jnp

def example():
    return (lambda x, w: jax.nn.softmax(jnp.tanh(x @ w), axis=-1),
            (jnp.ones((4, 8)), jnp.ones((8, 8)) / 8))
'''


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "tiny_model.py"
    path.write_text(MODEL)
    return path


def test_explain_prints_the_report_and_the_check(model_file, tmp_path, capsys):
    dot = tmp_path / "plan.dot"
    assert main(["explain", str(model_file), "--dot", str(dot)]) == 0
    out = capsys.readouterr().out
    assert "dnnfusion report for" in out and "matches jax.jit" in out
    assert dot.read_text().startswith("digraph")


def test_bad_targets_exit_2_with_a_message(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "missing.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["explain", "json:dumps_example"]) == 2
    assert "no callable 'dumps_example'" in capsys.readouterr().err


def test_svg_without_graphviz_says_how_to_install(model_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on this PATH
    assert main(["explain", str(model_file), "--no-check", "--svg", str(tmp_path / "p.svg")]) == 2
    assert "apt-get install graphviz" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_is_rendered_by_graphviz(model_file, tmp_path):
    svg = tmp_path / "plan.svg"
    assert main(["explain", str(model_file), "--no-check", "--svg", str(svg)]) == 0
    assert "<svg" in svg.read_text()


def test_module_entry_point_runs(model_file):
    result = subprocess.run([sys.executable, "-m", "dnnfusion_jax", "explain", str(model_file)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "matches jax.jit" in result.stdout
