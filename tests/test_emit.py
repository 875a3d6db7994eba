"""``python -m dnnfusion_jax emit``: C kernels with their data and a harness, built and run
natively (x86-64) and under qemu (aarch64); a corrupted expected output must be caught."""
import json

import numpy as np
import pytest

import codegen.emit.program as emit_module
from codegen.emit.toolchain import build_and_run, host_arch, missing_tools, toolchain
from dnnfusion_jax.tools.cli import main

TRANSFORMER = '''
import jax, jax.numpy as jnp

def example():
    """softmax, layer norm and gelu on (8, 64); one inf and one NaN in the input."""
    def block(x, gamma, beta):
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean((x - mean) ** 2, -1, keepdims=True)
        norm = (x - mean) * jax.lax.rsqrt(var + 1e-5) * gamma + beta
        return jax.nn.gelu(norm + jax.nn.softmax(x, axis=-1))
    x = jax.random.normal(jax.random.key(0), (8, 64))
    x = x.at[1, 3].set(jnp.inf).at[2, 5].set(jnp.nan).at[4, 0].set(-jnp.inf)
    return block, (x, jnp.linspace(0.5, 1.5, 64), jnp.linspace(-0.1, 0.1, 64))
'''

CNN = '''
import jax, jax.numpy as jnp

def example():
    """NHWC batch-norm-like affine, relu, mean and a count of positives over H, W."""
    def block(x, mean, var, gamma, beta):
        y = jax.nn.relu((x - mean) * jax.lax.rsqrt(var + 1e-5) * gamma + beta)
        return jnp.mean(y, axis=(1, 2)), jnp.sum(y > 0, axis=(1, 2))
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 8))
    c = jnp.linspace(-1.0, 1.0, 8)
    return block, (x, 0.1 * c, 1.0 + c * c, 1.0 - 0.5 * c, 0.2 * c)
'''

PARALLEL = '''
import jax, jax.numpy as jnp

def example():
    """Big enough for parallel loops (c_abi.h): a rows kernel, a reduction to one value in
    chunks, and a column reduction, so the harness's threads run the kernels' bodies."""
    def block(x):
        return jax.nn.softmax(x, axis=-1), jnp.sum(jnp.tanh(x)), jnp.max(x * 2.0, axis=0)
    return block, (jax.random.normal(jax.random.key(2), (64, 1024)),)
'''

MOBILE = '''
import jax, jax.numpy as jnp

def example():
    """A depthwise convolution with its epilogue, a pad read through predicated loads, a
    stored concatenate (a joined loop) and a layout transpose; inf and NaN in the input."""
    def block(x, w, s, b, y):
        z = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=16,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        z = jax.nn.silu(z * s + b)
        padded = jax.nn.relu(jnp.pad(z, ((0, 0), (1, 1), (1, 1), (0, 0))))
        joined = jnp.concatenate([padded.reshape(-1, 16), y], 0)
        return joined, jnp.tanh(x.transpose(0, 3, 1, 2)) * 2.0, z.mean((1, 2))
    k = jax.random.split(jax.random.key(3), 5)
    x = jax.random.normal(k[0], (2, 12, 12, 16)).at[0, 0, 0, 0].set(jnp.nan)
    x = x.at[1, 5, 5, 3].set(jnp.inf)
    return block, (x, jax.random.normal(k[1], (3, 3, 1, 16)), jax.random.normal(k[2], (16,)),
                   jax.random.normal(k[3], (16,)), jax.random.normal(k[4], (40, 16)))
'''

MODELS = {"transformer": TRANSFORMER, "cnn": CNN, "parallel": PARALLEL, "mobile": MOBILE}


def _skip_reason(arch):
    if arch == "x86_64" and host_arch() != "x86_64":
        return f"x86-64 kernels run natively only on an x86-64 host (this is {host_arch()})"
    missing = missing_tools(toolchain(arch))
    if missing:
        return (f"{' and '.join(missing)} not installed (Debian/Ubuntu: apt-get install "
                f"{' '.join(toolchain(arch).packages)})")
    return None


def _needs(arch):
    reason = _skip_reason(arch)
    if reason:
        pytest.skip(reason)


@pytest.fixture
def model(tmp_path):
    def write(kind):
        path = tmp_path / f"tiny_{kind}.py"
        path.write_text(MODELS[kind])
        return path
    return write


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("kind", ["transformer", "cnn", "parallel", "mobile"])
def test_emitted_kernels_match_the_reference(kind, arch, model, tmp_path, capsys):
    _needs(arch)
    out = tmp_path / "out"
    assert main(["emit", str(model(kind)), "--target", arch, "--out", str(out), "--run"]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    symbols = [k["symbol"] for k in manifest["kernels"]]
    lines = [line.split() for line in printed.splitlines() if line.startswith("KERNEL ")]
    assert symbols and [line[1] for line in lines] == symbols
    assert all(line[2] == "max_abs_err" and line[4] == "ok" for line in lines), printed
    assert f"{len(symbols)} of {len(symbols)} kernels match" in printed
    assert manifest["arch"] == arch and (out / "harness").is_file()
    for path in manifest["files"]:
        assert (out / path).is_file(), path
    if kind == "parallel":  # the harness's runtime really ran parallel loops
        sources = [(out / "kernels" / f"{symbol}.c").read_text() for symbol in symbols]
        assert sum(source.count("rt->parallel_for(") for source in sources) >= 3


def test_data_files_hold_the_inputs_and_the_manifest_describes_them(model, tmp_path):
    out = tmp_path / "out"
    assert main(["emit", str(model("transformer")), "--out", str(out)]) == 0  # no --run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["arch"] == "aarch64" and manifest["compiler"] == toolchain("aarch64").compiler
    namespace = {}
    exec(TRANSFORMER, namespace)
    x = np.asarray(namespace["example"]()[1][0])
    first = manifest["kernels"][0]
    x_file = next(b for b in first["inputs"] if b["shape"] == [8, 64])
    assert x_file["dtype"] == "f32" and x_file["bytes"] == x.nbytes
    data = np.fromfile(out / x_file["file"], dtype="<f4").reshape(8, 64)
    np.testing.assert_array_equal(data, x)  # inf and NaN written as they are
    assert " ".join(toolchain("aarch64").ldflags) in (out / "build.sh").read_text()
    source = (out / first["source"]).read_text()
    assert f"void {first['symbol']}(const void *const *in_, void *const *out_, " in source


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_a_corrupted_expected_output_is_a_mismatch(arch, model, tmp_path):
    _needs(arch)
    out = tmp_path / "out"
    assert main(["emit", str(model("cnn")), "--target", arch, "--out", str(out)]) == 0
    kernels = json.loads((out / "manifest.json").read_text())["kernels"]
    victim = next(k for k in kernels if k["outputs"][0]["dtype"] == "f32")
    path = out / victim["outputs"][0]["file"]
    want = np.fromfile(path, dtype="<f4")
    want[len(want) // 2] += 1e-3  # well beyond rtol = atol = 1e-5
    want.tofile(path)
    ok, lines = build_and_run(out, arch)
    assert not ok
    verdicts = {line.split()[1]: line.split()[-1] for line in lines}
    assert verdicts.pop(victim["symbol"]) == "MISMATCH"
    assert all(verdict == "ok" for verdict in verdicts.values())  # the others (if any) pass


def test_run_exits_1_on_a_mismatch(model, tmp_path, monkeypatch, capsys):
    arch = "x86_64" if _skip_reason("x86_64") is None else "aarch64"
    _needs(arch)

    real = emit_module.reference_values

    def corrupted(plan, inputs):  # every f32 value the blocks compute, 0.5 off
        env = real(plan, inputs)
        return {var: np.asarray(value) + np.float32(0.5)
                if var not in plan.graph.inputs and np.asarray(value).dtype == np.float32
                else value for var, value in env.items()}

    monkeypatch.setattr(emit_module, "reference_values", corrupted)
    out = tmp_path / "out"
    assert main(["emit", str(model("cnn")), "--target", arch, "--out", str(out), "--run"]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_missing_tools_exit_2_naming_the_packages(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler, no qemu
    code = main(["emit", str(model("cnn")), "--target", "aarch64", "--out", str(tmp_path / "o"),
                 "--run"])
    assert code == 2
    assert "apt-get install gcc-aarch64-linux-gnu qemu-user" in capsys.readouterr().err


def test_module_attr_targets_and_bad_targets(model, tmp_path, monkeypatch, capsys):
    model("cnn")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["emit", "tiny_cnn:example", "--out", str(tmp_path / "o")]) == 0
    assert "C kernels" in capsys.readouterr().out
    assert main(["emit", str(tmp_path / "missing.py"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
