"""Loops and branches: bodies of scan, while and cond optimised by the pipeline
(``dnnfusion_jax/loops.py``), loop-invariant work hoisted (``frontend/loop_invariants.py``),
and the reports (``explain``, ``summary()["loops"]``, ``compare``'s kernels inside loops).

The models (``tests/loop_models.py``) are Flax's own ``nn.scan``, ``nnx.scan`` and ``nn.RNN``
and ``lax`` control flow; each is checked against ``jax.jit``, with inf/NaN inputs too, and
the compiled program must call our kernels inside XLA's loop and branch bodies.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import dnnfusion_jax as dnnfusion
from codegen.c.ffi_runtime import TARGET_NAME
from dnnfusion_jax.tools.compare import as_accurate, compare_xla
from dnnfusion_jax.tools.xla_hlo import loop_bodies, parse_computations
from conftest import paired_leaves
from loop_models import LIBRARIES, LOOP_MODELS
from test_models import assert_trees_match, inject_nonfinite

LOOPS = ("scan", "while", "cond")


def _build(name: str, unrolled: bool = False):
    for library in LIBRARIES[name]:
        pytest.importorskip(library)
    return LOOP_MODELS[name](unrolled)


def kernels_inside_loops(hlo_text: str) -> int:
    """Our kernels' custom calls inside the loop and branch bodies of compiled HLO."""
    computations = parse_computations(hlo_text)

    def inside(names: list[str]) -> int:
        total = 0
        for name in names:
            for inst in computations.get(name, []):
                total += inst.opcode == "custom-call" and TARGET_NAME in inst.attributes
                total += inside(loop_bodies(inst))
        return total
    return sum(inside(loop_bodies(inst)) for inst in computations["ENTRY"])


@pytest.mark.parametrize("name", sorted(LOOP_MODELS))
def test_loop_models_match_jax_jit_with_kernels_inside_the_loops(name):
    fn, args = _build(name)
    fused = dnnfusion.jit(fn, fallback=False)
    assert_trees_match(fused(*args), jax.jit(fn)(*args), what=name)
    summary = fused.explain(*args).summary()
    assert not set(summary["opaque_primitives"]) & set(LOOPS), summary["opaque_primitives"]
    # a body whose only work is an in-place update of the loop's state (the while's Newton
    # step) is XLA's: it runs as traced, with the reason
    assert any(body["runs"] == "optimised" for body in summary["loops"])
    assert all(body["runs"] in ("optimised", "as traced: no fused kernel in it: XLA runs it "
                                "as traced") for body in summary["loops"]), summary["loops"]
    assert kernels_inside_loops(fused.lower(*args).compile().as_text()) >= 1


@pytest.mark.parametrize("name", ["fori_with_cond", "switch_branches", "while_converges",
                                  "linen_lstm"])
def test_nonfinite_inputs_inside_loops_match_jax_jit(name):
    fn, args = _build(name)
    args = inject_nonfinite(args)
    assert_trees_match(dnnfusion.jit(fn, fallback=False)(*args), jax.jit(fn)(*args),
                       equal_nan=True, what=name)


@pytest.mark.parametrize("name", ["nnx_scan_encoder", "linen_lstm"])
def test_gradient_of_a_scanned_model_runs_fused_bodies_both_ways(name):
    fn, args = _build(name)
    fused = dnnfusion.jit(fn, fallback=False)

    def loss(f):
        return lambda params, x: jnp.sum(jnp.tanh(f(params, x)))
    got = jax.jit(jax.grad(loss(fused)))(*args)
    want = jax.jit(jax.grad(loss(fn)))(*args)
    for path, g, w in paired_leaves(got, want):  # summation order: scaled like the libraries
        scale = max(1.0, float(np.max(np.abs(w))))
        assert float(np.max(np.abs(np.asarray(g) - np.asarray(w)))) <= 1e-4 * scale, path
    derivatives = fused.explain(*args).optimized.vjp()
    for direction in (derivatives.forward, derivatives.backward):
        kernels = [body.summary()["fused_kernels"] for body in direction.loop_bodies]
        assert kernels and all(k >= 1 for k in kernels), (direction.name, kernels)


def test_loop_invariant_weight_work_leaves_the_body_and_broadcasts_stay():
    def f(x, w, b):
        def body(c, _):  # the bias broadcast to the carry's shape: 16 -> 8x16 floats
            return jnp.tanh(c @ w.T + jnp.broadcast_to(b, c.shape)), None
        return lax.scan(body, x, None, length=4)[0]
    args = (jnp.ones((8, 16)), jnp.eye(16) * 0.5, jnp.arange(16.0) / 16)
    opt = dnnfusion.jit(f, fallback=False).explain(*args).optimized
    outer_ops = [node.op for node in opt.traced.graph.nodes]
    assert outer_ops.index("transpose") < outer_ops.index("scan")
    body = opt.loop_bodies[0].optimized.traced.graph
    body_ops = [node.op for node in body.nodes]
    assert "transpose" not in body_ops and "broadcast_in_dim" in body_ops
    np.testing.assert_allclose(dnnfusion.jit(f)(*args), jax.jit(f)(*args), rtol=1e-5, atol=1e-5)


def test_invariant_work_the_body_optimisation_made_leaves_the_loop(monkeypatch):
    """An LSTM step's ``x@Wx + h@Wh`` merged in the body (forced: the cost rule wants a large
    batch) concatenates the weights; that kernel reads only the loop's constants, so it runs
    once, before the loop, and the body keeps the concatenation of x and h."""
    from dnnfusion_jax.loops import hoisted_kernel
    from dnnfusion_jax.rewrite import algebra_passes, gemm_merge
    monkeypatch.setattr(algebra_passes, "merge_gemms",
                        lambda g: gemm_merge.merge_gemms(g, pays=lambda *_: True))

    def f(xs, h, wx, wh):
        def step(h, x):
            h = jnp.tanh(x @ wx + h @ wh)
            return h, h
        return lax.scan(step, h, xs)[1]
    rng = np.random.default_rng(17)
    args = [rng.standard_normal(s).astype(np.float32) * 0.1  # a GEMM XLA runs: 4 MFLOP
            for s in ((3, 64, 128), (64, 128), (128, 128), (128, 128))]
    fused = dnnfusion.jit(f, fallback=False)
    report = fused.explain(*args)
    outer = report.graph.nodes
    assert any(map(hoisted_kernel, outer)), [n.op for n in outer]
    assert [n.op for n in outer].index("ffi_call") < [n.op for n in outer].index("scan")
    assert "gemm-merge-sum" in report.optimized.loop_bodies[0].optimized.rules_fired
    assert report.summary()["opaque_primitives"] == []
    [body] = [n for n in outer if n.op == "scan"]
    body_eqns = [e.primitive.name for e in body.params["jaxpr"].jaxpr.eqns]
    assert body_eqns.count("ffi_call") >= 1 and "dot_general" in body_eqns  # x, h joined
    ours, jit = fused(*args), jax.jit(f)(*args)
    assert as_accurate(f, tuple(args), ours, jit)


def test_a_body_without_a_kernel_runs_as_traced_with_the_reason():
    def f(x):
        return lax.scan(lambda c, _: (jnp.sort(c), None), x, None, length=3)[0]
    x = jnp.asarray([3.0, 1.0, 2.0])
    fused = dnnfusion.jit(f, fallback=False)
    np.testing.assert_array_equal(fused(x), jax.jit(f)(x))
    (body,) = fused.explain(x).summary()["loops"]
    assert body["runs"].startswith("as traced: no fused kernel")


def test_nested_loops_are_optimised_recursively():
    def f(x):
        def outer(c, _):
            return lax.fori_loop(0, 3, lambda i, d: jnp.sin(d) * 0.5 + d, c) * 2.0, None
        return lax.scan(outer, x, None, length=2)[0]
    x = jnp.linspace(-1.0, 1.0, 32)
    fused = dnnfusion.jit(f, fallback=False)
    np.testing.assert_allclose(fused(x), jax.jit(f)(x), rtol=1e-5, atol=1e-5)
    (outer,) = fused.explain(x).optimized.loop_bodies
    (inner,) = outer.optimized.loop_bodies
    assert inner.summary()["fused_kernels"] == 1 and inner.reason is None


def test_explain_shows_each_body_plan_under_its_loop():
    fn, args = _build("while_converges")
    report = dnnfusion.explain(fn, *args)
    text = report.format(verbose=True)
    lines = text.splitlines()
    loop_row = next(i for i, line in enumerate(lines) if " Loop " in line)
    assert "XLA runs the loop" in text and "unknown primitives (opaque): none" in text
    following = lines[loop_row + 1:]
    assert any(line.strip().startswith("while 1 cond:") for line in following)
    assert any(line.strip().startswith("while 1 body:") for line in following)
    assert report.summary()["jaxpr_ops"] > 2  # equations inside the bodies count


def test_compare_counts_kernels_inside_loops():
    fn, args = _build("switch_branches")
    row = compare_xla(fn, *args, repeats=3)
    assert row["matches"] and row["xla_loop_kernels"] >= 3 and row["loop_body_blocks"] == 3
    assert row["blocks"] >= row["loop_body_blocks"] + 1


def test_a_scan_of_length_zero_matches_jax_jit():
    def f(x, ys):
        return lax.scan(lambda c, y: (c + jnp.tanh(y), y * 2.0), x, ys)
    args = (jnp.ones(8), jnp.ones((0, 8)))
    assert_trees_match(dnnfusion.jit(f, fallback=False)(*args), jax.jit(f)(*args), what="empty")


@pytest.mark.parametrize("reverse", [False, True])
def test_small_scanned_inputs_are_indexed_inside_the_body(reverse):
    """A per-layer bias scanned over (``frontend/scan_slices.py``) becomes a loop constant that
    the body indexes with a counter, forwards and in reverse; the kernel reads it in place."""
    def f(x, biases, scales):
        def body(c, layer):
            bias, scale = layer
            return jnp.tanh(c * scale + bias), jnp.sum(c)
        return lax.scan(body, x, (biases, scales), reverse=reverse)
    rng = np.random.default_rng(3)
    args = (rng.standard_normal((4, 32), np.float32), rng.standard_normal((5, 32), np.float32),
            rng.standard_normal((5, 4, 32), np.float32))
    fused = dnnfusion.jit(f, fallback=False)
    assert_trees_match(fused(*args), jax.jit(f)(*args), what=f"reverse={reverse}")
    opt = fused.explain(*args).optimized
    (scan,) = [node for node in opt.traced.graph.nodes if node.op == "scan"]
    assert scan.params["num_consts"] == 2 and scan.params["num_carry"] == 2  # + the counter
    body_ops = [node.op for node in opt.loop_bodies[0].optimized.traced.graph.nodes]
    assert body_ops.count("dynamic_slice") == 2
