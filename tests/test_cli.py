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


# -- no C compiler: one warning naming what to install, and a non-zero exit unless allowed ----

def _run_without_system_compilers(tmp_path, *args, hide_zig=False):
    """``python -m dnnfusion_jax explain`` in a subprocess whose PATH holds only python (and,
    with ``hide_zig``, a ziglang package without its zig binary shadowing the real one)."""
    from pathlib import Path
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python3").exists():
        (bin_dir / "python3").symlink_to(sys.executable)
    root = Path(__file__).resolve().parents[1]
    python_path = [str(root)]
    if hide_zig:
        (tmp_path / "stub" / "ziglang").mkdir(parents=True, exist_ok=True)
        (tmp_path / "stub" / "ziglang" / "__init__.py").write_text("")
        python_path.insert(0, str(tmp_path / "stub"))
    env = {"PATH": str(bin_dir), "HOME": str(Path.home()), "PYTHONPATH": ":".join(python_path),
           "DNNFUSION_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(["python3", "-m", "dnnfusion_jax", "explain", *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


def test_without_any_compiler_explain_fails_naming_what_to_install(model_file, tmp_path):
    result = _run_without_system_compilers(tmp_path, model_file, hide_zig=True)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("RuntimeWarning") == 1  # one warning per process
    assert "RuntimeWarning: dnnfusion: no C compiler found" in result.stderr
    assert "apt-get install gcc" in result.stderr and 'dnnfusion_jax[zig]' in result.stderr
    assert "ran unfused" in result.stderr and "--allow-unfused" in result.stderr
    assert "RAN UNFUSED" in result.stdout and "e-graph and rules: results discarded" in result.stdout
    allowed = _run_without_system_compilers(tmp_path, model_file, "--allow-unfused",
                                            hide_zig=True)
    assert allowed.returncode == 0 and "matches jax.jit" in allowed.stdout, allowed.stderr


@pytest.mark.skipif(__import__("codegen.compile_cache").compile_cache.zig_binary() is None,
                    reason="the ziglang package is not installed (pip install ziglang)")
def test_without_system_compilers_zig_builds_the_kernels(model_file, tmp_path):
    result = _run_without_system_compilers(tmp_path, model_file)
    assert result.returncode == 0, result.stderr
    assert "fused kernel (c)" in result.stdout and ", 0 left to XLA" in result.stdout
    assert "matches jax.jit" in result.stdout


def test_no_compiler_in_process_warns_once_and_exits_3(model_file, monkeypatch, capsys, recwarn):
    from codegen import compile_cache
    from dnnfusion_jax import files
    compile_cache.host_compiler.cache_clear()
    files.warn_once.cache_clear()
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    monkeypatch.setattr(compile_cache, "zig_binary", lambda: None)
    try:
        assert main(["explain", str(model_file)]) == 3
        assert main(["explain", str(model_file), "--allow-unfused", "--no-check"]) == 0
    finally:
        compile_cache.host_compiler.cache_clear()
    err = capsys.readouterr().err
    assert "ran unfused through XLA" in err and "pip install" in err
    warned = [w for w in recwarn if "no C compiler found" in str(w.message)]
    assert len(warned) == 1 and "DNNFUSION" not in str(warned[0].message)


def test_backend_and_planner_have_help_and_svg_fails_before_any_work(model_file, tmp_path,
                                                                    monkeypatch, capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert "c on CPU, pallas on GPU" in out and "mapping-type" in out and "--allow-unfused" in out
    import dnnfusion_jax.tools.cli as cli
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    monkeypatch.setattr(cli, "jit", lambda *a, **k: pytest.fail("the work ran before the check"))
    assert main(["explain", str(model_file), "--svg", str(tmp_path / "p.svg")]) == 2


def test_verbose_explain_says_why_each_block_is_left_to_xla(tmp_path, capsys):
    path = tmp_path / "sorted_model.py"
    path.write_text("import jax.numpy as jnp\n"
                    "def example():\n    return (lambda x: jnp.sort(jnp.exp(x)), (jnp.ones(8),))\n")
    assert main(["explain", str(path), "--no-check"]) == 0
    plain = capsys.readouterr().out
    assert "1 block: primitive sort is unknown to dnnfusion (opaque)" in plain
    assert main(["explain", str(path), "--no-check", "--verbose"]) == 0
    assert "left to XLA: primitive sort is unknown" in capsys.readouterr().out
