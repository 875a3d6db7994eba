"""Block structures of real programs where the planner must not lose to jax.jit (issue 15):
each test states the blocks, then checks the numbers against jax.jit (rtol = atol = 1e-5).

* A: ``jax.vmap(lambda v: W @ v + b)`` traces to ``transpose(dot_general(W, X))``; the
  rule ``transpose-dot-swap`` makes it ``dot_general(X, W)`` and the epilogue a plain
  One-to-One kernel (no Shuffle block).
* B: an elementwise op that broadcasts only a parameter (a per-column scale) is One-to-One
  and fuses into the reduction after it: scaled softmax, layer norm, RMS norm are one kernel.
* C: layout operations next to a GEMM left to XLA go to XLA with it (no copy kernel).
* D: independent small elementwise blocks (an optimizer's per-parameter updates) share one
  kernel (``fusion/horizontal.py``); large ones and dependent ones do not.
"""
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from dnnfusion_jax.frontend.trace import trace_function
from dnnfusion_jax.fusion.dnnfusion_planner import DnnFusionPlanner
from dnnfusion_jax.fusion.legality import Legality
from dnnfusion_jax.ops.mapping_types import MappingType, node_mapping_type

RNG = np.random.default_rng(0)


def rand(*shape, scale=1.0):
    return jnp.asarray(RNG.standard_normal(shape) * scale, jnp.float32)


def check_numbers(fn, *args):
    ours, ref = dnnfusion.jit(fn)(*args), jax.jit(fn)(*args)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-5, atol=1e-5)


def plan_of(fn, *args):
    return dnnfusion.explain(fn, *args).plan


def kernel_blocks(plan):
    return [b for b in plan.blocks if "dot_general" not in b.ops]


# ----------------------------------------------------------------------- A: vmap of W @ v

W, B = rand(256, 256, scale=1 / 16), rand(256)


def linear_gelu(x):
    return jax.vmap(lambda v: jax.nn.gelu(W @ v + B))(x)


def test_vmapped_linear_has_no_transpose_and_a_one_to_one_epilogue():
    x = rand(256, 256)
    report = dnnfusion.explain(linear_gelu, x)
    fired = report.summary()["rules_fired"]  # the simplifier or the e-graph rule
    assert fired.get("transpose-dot", 0) + fired.get("transpose-dot-swap", 0) >= 1
    plan = report.plan
    assert "transpose" not in [op for b in plan.blocks for op in b.ops]
    assert len(plan.blocks) == 2
    gemm, epilogue = plan.blocks
    assert gemm.ops == ["dot_general"]
    assert epilogue.mapping_type is MappingType.ONE_TO_ONE
    assert "Shuffle" not in plan.block_types()
    check_numbers(linear_gelu, x)


@pytest.mark.parametrize("batch", [2, 3])  # batch 1: jnp.matmul squeezes it
def test_batched_matmul_transpose_is_absorbed(batch):
    fn = lambda a, b: jnp.matmul(a, b).transpose(0, 2, 1) * 2.0  # noqa: E731
    args = rand(batch, 16, 8), rand(batch, 8, 12)
    assert "transpose" not in [op for b in plan_of(fn, *args).blocks for op in b.ops]
    check_numbers(fn, *args)


def test_transpose_that_moves_the_batch_dim_is_kept():
    # vmap over a batched einsum puts the vmapped axis first: not a swap of the operands
    w = rand(3, 16, 8)
    fn = jax.vmap(lambda v: jnp.tanh(jnp.einsum("bij,bj->bi", w, v)))  # (n, b, 16)
    x = rand(12, 3, 8)
    report = dnnfusion.explain(fn, x)
    assert "transpose-dot-swap" not in report.summary()["rules_fired"]
    check_numbers(fn, x)


# ----------------------------------------------------------------------- B: parameter broadcasts

def layer_norm(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) * jax.lax.rsqrt(v + 1e-5) * g + b


def rms_norm(x, g):
    return x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + 1e-6) * g


CASES = {
    "scaled_softmax": (lambda x, g: jax.nn.softmax(x * g, axis=-1), ((32, 64), (64,))),
    "layer_norm": (layer_norm, ((32, 64), (64,), (64,))),
    "scaled_layer_norm": (lambda x, s, g, b: layer_norm(x * s, g, b),
                          ((32, 64), (64,), (64,), (64,))),
    "rms_norm": (rms_norm, ((32, 64), (64,))),
    "shifted_rms_norm": (lambda x, s, g: rms_norm(x * s + s, g), ((32, 64), (64,), (64,))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_parameter_broadcast_then_reduction_is_one_block(name):
    fn, shapes = CASES[name]
    args = [rand(*s) for s in shapes]
    plan = plan_of(fn, *args)
    assert len(plan.blocks) == 1, plan.blocks
    assert plan.blocks[0].mapping_type is MappingType.MANY_TO_MANY
    check_numbers(fn, *args)


def test_parameter_broadcast_is_one_to_one_for_legality_only():
    g = trace_function(lambda x, s: x * s, [jnp.ones((4, 8)), jnp.ones(8)]).graph
    mul = g.nodes[-1]
    assert node_mapping_type(mul) is MappingType.ONE_TO_MANY      # Table 2's type stands
    assert Legality(g).node_type(mul) is MappingType.ONE_TO_ONE


def test_computed_broadcast_stays_one_to_many_and_apart_from_the_reduction():
    # a mask computed from iotas would be recomputed by every stage of the softmax
    def masked_softmax(x):
        mask = jnp.tril(jnp.ones((64, 64), bool))
        return jax.nn.softmax(jnp.where(mask, x, -1e9), axis=-1)
    x = rand(4, 64, 64)
    g = trace_function(masked_softmax, [x]).graph
    legal = Legality(g)
    expand = [n for n in g.nodes if n.op == "broadcast_in_dim" and n.inputs[0].shape][0]
    assert not legal.is_parameter(expand.inputs[0])
    assert legal.node_type(expand) is MappingType.ONE_TO_MANY
    assert len(DnnFusionPlanner().plan(g).blocks) == 2
    check_numbers(masked_softmax, x)


def test_outer_product_is_not_a_parameter_broadcast():
    g = trace_function(lambda a, b: a * b, [jnp.ones((4, 1)), jnp.ones((1, 8))]).graph
    assert Legality(g).node_type(g.nodes[-1]) is MappingType.ONE_TO_MANY


# ----------------------------------------------------------------------- C: layouts for XLA's GEMM

def xla_gemms(node):
    return "XLA's GEMM" if node.op == "dot_general" else None


def test_layout_block_between_gemms_goes_to_xla_with_the_gemm():
    def attention_output(a, v, w):
        context = jnp.matmul(a, v)                               # (heads, seq, dh)
        return context.transpose(1, 0, 2).reshape(128, 256) @ w  # merge heads, project
    args = rand(4, 128, 128), rand(4, 128, 64), rand(256, 256, scale=1 / 16)
    plan = DnnFusionPlanner(fusible=xla_gemms).plan(trace_function(attention_output,
                                                                   list(args)).graph)
    assert [b.ops for b in plan.blocks] == [["dot_general"],
                                            ["transpose", "reshape", "dot_general"]]
    assert plan.notes["layout_to_xla"] == "1"
    check_numbers(attention_output, *args)


def test_transpose_into_a_gemm_leaves_the_elementwise_kernel():
    fn = lambda x, w: jnp.tanh(x * 2.0).T @ w  # noqa: E731
    args = rand(256, 128), rand(256, 64)
    plan = DnnFusionPlanner(fusible=xla_gemms).plan(trace_function(fn, list(args)).graph)
    assert [b.ops for b in plan.blocks] == [["mul", "tanh"], ["transpose", "dot_general"]]
    assert plan.blocks[0].mapping_type is MappingType.ONE_TO_ONE
    check_numbers(fn, *args)


def test_transpose_that_moves_batch_dims_stays_in_the_kernel():
    fn = lambda x, w: jnp.matmul(jnp.tanh(x).transpose(1, 0, 2), w)  # noqa: E731
    args = rand(8, 4, 16), rand(4, 16, 8)
    plan = DnnFusionPlanner(fusible=xla_gemms).plan(trace_function(fn, list(args)).graph)
    assert [b.ops for b in plan.blocks] == [["tanh", "transpose"], ["dot_general"]]
    check_numbers(fn, *args)


def test_bert_has_no_layout_only_kernel():
    from examples import bert
    fn, args = bert.example(num_layers=1)
    report = dnnfusion.explain(fn, *args)
    layout = {"reshape", "squeeze", "expand_dims", "transpose", "broadcast_in_dim", "copy"}
    reasons = report.block_reasons()
    for block in report.plan.blocks:
        if set(block.ops) <= layout:
            assert block.id in reasons, f"layout-only block run as a kernel: {block}"
    seq, pooled = dnnfusion.jit(fn)(*args)
    ref_seq, ref_pooled = jax.jit(fn)(*args)
    np.testing.assert_allclose(np.asarray(seq), np.asarray(ref_seq), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(pooled), np.asarray(ref_pooled), rtol=1e-5, atol=1e-5)


# D: horizontal fusion ----------------------------------------------------------------------

def _adam_like(params, grads, moments):
    new_moments = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, moments, grads)
    new_params = jax.tree_util.tree_map(lambda p, m: p - 1e-3 * m / (jnp.abs(m) + 1e-8),
                                        params, new_moments)
    return new_params, new_moments


def test_independent_small_updates_share_a_kernel():
    shapes = [(64, 64), (64,), (16, 64), (64,), (8,)]
    params = [rand(*s) for s in shapes]
    grads = [rand(*s) for s in shapes]
    moments = [rand(*s) for s in shapes]
    plan = plan_of(_adam_like, params, grads, moments)
    assert len(plan.blocks) == 1, [b.ops for b in plan.blocks]
    ours = dnnfusion.jit(_adam_like)(params, grads, moments)
    for a, b in zip(jax.tree_util.tree_leaves(ours),
                    jax.tree_util.tree_leaves(jax.jit(_adam_like)(params, grads, moments))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_large_updates_keep_their_own_kernels():
    shapes = [(256, 256), (256, 128)]
    args = [[rand(*s) for s in shapes] for _ in range(3)]
    assert len(plan_of(_adam_like, *args).blocks) == 2


def test_blocks_on_either_side_of_a_gemm_stay_apart():
    """tanh(x) feeds a GEMM that XLA runs and exp(y) reads its result: one kernel holding
    both would have to run before and after the GEMM."""
    def fn(x, w):
        return jnp.exp(jnp.tanh(x) @ w), jnp.sin(x)
    x, w = rand(32, 64), rand(64, 64)
    plan = plan_of(fn, x, w)
    assert len(plan.blocks) == 3, [b.ops for b in plan.blocks]  # sin joins tanh's kernel
    ours, ref = dnnfusion.jit(fn)(x, w), jax.jit(fn)(x, w)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_a_transpose_two_xla_gemms_read_is_folded_into_each():
    """A gradient ``dy.T`` read by the GEMMs of ``dx`` and ``dW``: copied per GEMM and
    folded into its layout by XLA, never a copy kernel."""
    def fn(x, a, b):
        t = (jnp.tanh(x) * 2.0).T
        return t @ a, t @ b
    args = rand(64, 128), rand(64, 96), rand(64, 80)
    plan = plan_of(fn, *args)
    assert "Shuffle" not in plan.block_types(), [b.ops for b in plan.blocks]
    assert all(b.ops != ["transpose"] for b in plan.blocks)
    for ours, ref in zip(dnnfusion.jit(fn)(*args), jax.jit(fn)(*args)):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_a_cast_then_broadcast_parameter_joins_its_consumer():
    """A temperature cast to bfloat16 and broadcast (two data-movement operations on a
    parameter) is an index transform inside the softmax's kernel, not a block of its own."""
    def fn(x, t):
        scale = lax.broadcast_in_dim(t.astype(jnp.bfloat16), x.shape, ())
        return jax.nn.softmax(x * scale, axis=-1)
    x, t = rand(32, 64).astype(jnp.bfloat16), jnp.float32(0.7)
    plan = plan_of(fn, x, t)
    assert len(plan.blocks) == 1, [b.ops for b in plan.blocks]
    ours, ref = dnnfusion.jit(fn)(x, t), jax.jit(fn)(x.astype(jnp.float32), t)
    np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(ref), atol=1e-2)
