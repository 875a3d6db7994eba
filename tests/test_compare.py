"""Comparing with stock XLA: HLO kernel counting (hand-counted), compare_xla, the CLI.

The expected kernel counts are what XLA:CPU of jax/jaxlib 0.10.2 emits with default flags,
read off ``jax.jit(f).lower(*args).compile().as_text()`` by hand; a newer XLA that fuses
differently will move them, and then the comments say what used to be there.
"""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from dnnfusion_jax.tools.cli import main, zoo_targets
from dnnfusion_jax.tools.compare import ROW_KEYS, output_errors
from dnnfusion_jax.options import make_options
from dnnfusion_jax.tools.xla_hlo import count_kernels, shape_bytes, xla_kernels

X = jnp.linspace(-2.0, 2.0, 8 * 128, dtype=jnp.float32).reshape(8, 128)
W = jnp.linspace(-0.1, 0.1, 128 * 256, dtype=jnp.float32).reshape(128, 256)


def test_elementwise_chain_is_one_loop_fusion():
    k = xla_kernels(lambda x: jnp.tanh(jnp.exp(x) * 2.0 + 1.0) - x, X)
    assert (k.count, k.by_kind, k.intermediate_bytes) == (1, {"fusion:kLoop": 1}, 0)


def test_softmax_kernels_as_xla_cpu_emits_them():
    # ENTRY holds six kLoop fusions: reduce-window (8x128 -> 8x4 partial maxima), reduce
    # (-> 8 row maxima), subtract+exp (8x128), reduce-window (8x4 partial sums),
    # reduce+divide (8 reciprocals of the sums), broadcast+multiply (the result, ROOT).
    k = xla_kernels(lambda x: jax.nn.softmax(x, axis=-1), X)
    assert k.count == 6 and k.by_kind == {"fusion:kLoop": 6}
    # Every kernel but the last writes a buffer the next reads:
    # 8*4*4 + 8*4 + 8*128*4 + 8*4*4 + 8*4 bytes.
    assert k.intermediate_bytes == 128 + 32 + 4096 + 128 + 32


def test_dot_then_elementwise_is_a_custom_fusion_and_a_loop_fusion():
    # The dot is a kCustom "__ynn_fusion" (XNNPACK); gelu's tanh approximation is one kLoop
    # fusion reading the dot's f32[8,256] result: 8*256*4 intermediate bytes.
    k = xla_kernels(lambda x, w: jax.nn.gelu(x @ w), X, W)
    assert k.count == 2
    assert k.by_kind == {"fusion:__ynn_fusion": 1, "fusion:kLoop": 1}
    assert k.intermediate_bytes == 8 * 256 * 4
    assert k.custom_fusion_ops == 1  # the __ynn_fusion's computation holds just the dot


def test_while_loop_counts_one_plus_the_copies_that_feed_it_and_its_bodies():
    # ENTRY: copy of x (f32[8,128]), copy of the counter's constant 0 (s32[]), a tuple (free),
    # the while (one kernel), get-tuple-element (free, ROOT); then the kernels of the while's
    # condition and body (the compare, the counter's add, the c * 2 + 1 fusion).
    k = xla_kernels(lambda x: jax.lax.fori_loop(0, 10, lambda i, c: c * 2.0 + 1.0, x), X)
    assert k.by_kind == {"copy": 2, "while": 1} and k.loop_kernels >= 2
    assert k.count == 3 + k.loop_kernels
    assert k.intermediate_bytes == 8 * 128 * 4 + 4  # both copies are read by the while


def test_conv_net_keeps_convolutions_unfused():
    # conv -> relu+maxpool (__ynn_fusion) -> conv -> relu+mean's sum (__ynn_fusion) -> divide.
    def net(x, w1, w2):
        dn = ("NHWC", "HWIO", "NHWC")
        y = jax.nn.relu(jax.lax.conv_general_dilated(x, w1, (1, 1), "SAME",
                                                     dimension_numbers=dn))
        y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        y = jax.nn.relu(jax.lax.conv_general_dilated(y, w2, (1, 1), "SAME",
                                                     dimension_numbers=dn))
        return y.mean(axis=(1, 2))

    k = xla_kernels(net, jnp.ones((2, 32, 32, 3)), jnp.ones((3, 3, 3, 16)),
                    jnp.ones((3, 3, 16, 16)))
    assert k.by_kind == {"convolution": 2, "fusion:__ynn_fusion": 2, "fusion:kLoop": 1}
    # Inside the XNNPACK fusions: broadcast, maximum, reduce-window (relu + max pool) and
    # broadcast, maximum, reduce (relu + the mean's sum).
    assert k.custom_fusion_ops == 6
    assert k.intermediate_bytes == 4 * (2 * 32 * 32 * 16 + 2 * 16 * 16 * 16 * 2 + 2 * 16)


HAND_WRITTEN = """\
HloModule m, entry_computation_layout={(f32[4,8]{1,0})->(f32[32]{0}, f32[4]{0})}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

ENTRY %main (x: f32[4,8]) -> (f32[32], f32[4]) {
  %x = f32[4,8]{1,0} parameter(0), metadata={op_name="x"}
  %zero = f32[] constant(0)
  %e = f32[4,8]{1,0} exponential(%x)
  %flat = f32[32]{0} bitcast(%e)
  %same = f32[32]{0} reshape(%e)
  %colmajor = f32[8,4]{0,1} reshape(%x)
  %pair = (f32[4]{0}, f32[8,4]{0,1}) fusion(%e, %zero, %colmajor), kind=kInput, calls=%add
  %sum = f32[4]{0} get-tuple-element(%pair), index=0
  %n = f32[4]{0} negate(%sum)
  ROOT %out = (f32[32]{0}, f32[4]{0}) tuple(%flat, %n)
}
"""


def test_hand_written_hlo_free_ops_tuples_and_outputs():
    k = count_kernels(HAND_WRITTEN)
    # Kernels: exponential, the column-major reshape (a real transpose), the fusion, negate.
    # The bitcast and the row-major reshape are free.
    assert k.count == 4
    assert k.by_kind == {"exponential": 1, "fusion:kInput": 1, "negate": 1, "reshape": 1}
    # %e is read by the fusion but is also returned (through %flat): not intermediate.
    # Intermediate: %colmajor (32*4 B, read by the fusion) and the fusion's first element
    # (4*4 B, read by negate); its second element is read by nobody.
    assert k.intermediate_bytes == 32 * 4 + 4 * 4


def test_shape_bytes():
    assert shape_bytes("f32[8,128]{1,0}") == 4096
    assert shape_bytes("(s32[], f32[8,128]{1,0}, pred[3])") == 4 + 4096 + 3
    assert shape_bytes("bf16[2,3,4]{2,1,0}") == 48 and shape_bytes("f32[]") == 4


def test_compare_xla_returns_every_figure_consistently():
    def layer(x, w):
        return jax.nn.softmax(jax.nn.gelu(x @ w), axis=-1)

    row = dnnfusion.compare_xla(layer, X, W, repeats=5, name="layer")
    assert list(row) == list(ROW_KEYS) and row["name"] == "layer"
    assert row["repeats"] == 5 and row["backend"] == make_options().resolved_backend()
    assert row["xla_kernels"] == xla_kernels(layer, X, W).count
    assert row["xla_fusion_rate"] == row["jaxpr_ops"] / row["xla_kernels"]
    assert row["dnnfusion_fusion_rate"] == row["jaxpr_ops"] / row["blocks"]
    assert row["jaxpr_ops"] >= row["blocks"] >= 1 and row["xla_kernels"] >= 1
    assert row["flops_before"] >= 2 * 8 * 128 * 256 >= 0 and row["flops_after"] > 0
    assert row["ms_xla"] > 0 and row["ms_dnnfusion"] > 0
    assert row["speedup"] == row["ms_xla"] / row["ms_dnnfusion"]
    assert row["max_abs_err"] <= 1e-6 and row["max_rel_err"] <= 1e-5 and row["matches"]
    assert row["optimize_s"] > 0 and row["xla_compile_s"] > 0


def test_default_repeats_adapt_to_run_time():
    row = dnnfusion.compare_xla(lambda x: x + 1.0, X)
    assert 5 <= row["repeats"] <= 1000 and row["repeats"] > 5  # a microsecond call fits many


def test_output_errors_catch_disagreement_and_nan():
    ok = output_errors({"a": np.ones(3), "b": np.zeros(2)}, {"a": np.ones(3), "b": np.zeros(2)})
    assert ok == (0.0, 0.0, True)
    abs_err, rel_err, matches = output_errors([np.array([1.0, 2.0])], [np.array([1.0, 2.1])])
    assert abs_err == pytest.approx(0.1) and rel_err == pytest.approx(0.1 / 2.1)
    assert not matches
    assert output_errors([np.array([np.nan])], [np.array([np.nan])]) == (0.0, 0.0, True)
    assert output_errors([np.array([np.nan])], [np.array([1.0])]) == (np.inf, np.inf, False)


def test_cli_compare_writes_json_and_markdown(tmp_path, capsys):
    out, md = tmp_path / "bert.json", tmp_path / "bert.md"
    status = main(["compare", "examples/bert.py:example_small", "--repeats", "3",
                   "--json", str(out), "--markdown", str(md)])
    assert status == 0
    table = capsys.readouterr().out
    assert "XLA kernels" in table and "bert:example_small" in table
    data = json.loads(out.read_text())
    assert {"platform", "cpu_count", "jax", "date"} <= set(data["machine"])
    (row,) = data["models"]
    assert set(ROW_KEYS) <= set(row) and row["matches"] and row["repeats"] == 3
    assert row["xla_kernels"] > 0 and row["blocks"] > 0 and data["skipped"] == data["failed"] == []
    assert md.read_text().startswith("| model |") and "bert:example_small" in md.read_text()


def test_cli_compare_reports_a_broken_target_and_fails(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "missing.py")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_zoo_targets_skip_models_not_written_yet():
    found, missing = zoo_targets(["bert", "no_such_model"])
    assert [p.rsplit("/", 1)[-1] for p in found] == ["bert.py"]
    assert missing == [{"target": "examples/no_such_model.py", "reason": "does not exist yet"}]


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from dnnfusion_jax.tools.compare_report import plot

    rows = [{"name": "a", "jaxpr_ops": 10, "xla_kernels": 4, "blocks": 3, "speedup": 1.2},
            {"name": "b", "jaxpr_ops": 40, "xla_kernels": 9, "blocks": 7, "speedup": 0.9}]
    plot(rows, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_plot_without_matplotlib_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert main(["compare", "examples/bert.py:example_small", "--plot", "x.png"]) == 2
    assert 'pip install -e ".[plot]"' in capsys.readouterr().err
