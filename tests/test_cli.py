"""``python -m dnnfusion_jax explain``: the report, the check against jax.jit, DOT and SVG."""
import json
import shutil
import subprocess
import sys

import pytest

from dnnfusion_jax.tools.cli import main

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


SHAPES_OF_MISTAKES = '''
import jax.numpy as jnp

def takes_args(n):
    return (lambda x: x * n), (jnp.ones(3),)

def args_not_tuple():
    return (lambda x: x * 2), jnp.ones(3)

def overflow():  # XLA simplifies log(exp(x)) to x; the kernels compute it (inf at 100)
    return (lambda x: jnp.log(jnp.exp(x)) * 2), (jnp.array([-1.0, 100.0, -200.0]),)
'''


@pytest.mark.parametrize("attr, message", [
    ("takes_args", "must be callable with no arguments"),
    ("args_not_tuple", "args a tuple of the arguments, got ArrayImpl"),
])
def test_factory_mistakes_are_named(tmp_path, capsys, attr, message):
    path = tmp_path / "mistakes.py"
    path.write_text(SHAPES_OF_MISTAKES)
    assert main(["explain", f"{path}:{attr}"]) == 2
    assert message in capsys.readouterr().err


def test_nonfinite_mismatches_are_reported_and_json_stays_json(tmp_path, capsys):
    path = tmp_path / "mistakes.py"
    path.write_text(SHAPES_OF_MISTAKES)
    assert main(["explain", f"{path}:overflow"]) == 1
    assert "DOES NOT MATCH jax.jit (inf or NaN where" in capsys.readouterr().out
    out = tmp_path / "c.json"
    assert main(["compare", f"{path}:overflow", "--repeats", "1", "--json", str(out)]) == 1
    row = json.loads(out.read_text(), parse_constant=pytest.fail)["models"][0]  # no Infinity
    assert row["max_abs_err"] == "inf" and row["matches"] is False


def test_unwritable_outputs_fail_before_any_work(model_file, tmp_path, capsys):
    missing = tmp_path / "no" / "such"
    assert main(["compare", str(model_file), "--json", str(missing / "x.json")]) == 2
    assert main(["explain", str(model_file), "--dot", str(missing / "x.dot")]) == 2
    err = capsys.readouterr().err
    assert err.count("cannot write") == 2 and "[1/1]" not in err
