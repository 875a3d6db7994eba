"""Loop-invariant hoisting (``codegen/kernel/hoist.py``): a value a store stage computes from
only some of its loops gets a stage of its own over those loops. Checked on the kernel IR (no
timing), then against jax.jit with inf and NaN inputs."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import dnnfusion_jax as dnnfusion
from codegen.kernel.index import Div, Mod
from codegen.kernel.kernel_ir import expr_nodes
from codegen.kernel.lowering import lower_block
from dnnfusion_jax.fusion.plan import whole_graph_block
from dnnfusion_jax.frontend.trace import trace_function
from tests.test_reduce_order import group_norm


def kernel_of(fn, *shapes):
    g = trace_function(fn, [jnp.ones(s, jnp.float32) for s in shapes]).graph
    return lower_block(whole_graph_block(g), g.constants)


def ops(stage):
    return {e.op for e in expr_nodes([stage.value])}


def test_group_norm_normalises_with_per_channel_statistics_computed_once():
    kernel = kernel_of(group_norm, (8, 8, 8, 32), (32,), (32,))
    *hoisted, last = [s for s in kernel.stages if s.kind == "store"]
    assert kernel.rows and last.target == "out0" and len(last.loops) == 3  # rows: n
    assert "rsqrt" not in ops(last) and "div" not in ops(last)
    for e in expr_nodes([last.value]):
        if e.op == "load":
            assert not any(isinstance(a, (Div, Mod)) for a, _ in e.attrs[1].terms)
    assert any("rsqrt" in ops(s) for s in hoisted)
    assert all(len(s.loops) == 1 and s.loops[0].extent == 32 for s in hoisted)


def channel_scale(x):
    return jnp.tanh(x) * jnp.exp(x.mean((0, 1, 2)))


def test_values_of_every_loop_and_single_loop_stages_stay_inline():
    kernel = kernel_of(channel_scale, (4, 8, 8, 16))
    *hoisted, store = kernel.stages
    assert "tanh" in ops(store) and "exp" not in ops(store)  # exp(mean) depends on c only
    assert hoisted[-1].kind == "store" and "exp" in ops(hoisted[-1])
    row = kernel_of(lambda x: x * jnp.exp(x.sum(-1, keepdims=True)), (64, 16))
    assert "exp" in ops(row.stages[-1])  # inside a rows loop the store has one loop


def test_hoisted_kernels_match_jax_jit_with_inf_and_nan():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 8, 16)).astype(np.float32)
    x[0, 0, 0, 2], x[1, 2, 3, 3], x[2, 1, 1, 4], x[3, 3, 3, 4] = np.inf, np.nan, 80.0, 90.0
    gn = [rng.standard_normal(s).astype(np.float32) for s in [(8, 8, 8, 32), (32,), (32,)]]
    gn[0][1, 2, 3, 5], gn[0][2, 2, 2, 20] = np.inf, np.nan
    for fn, args in [(channel_scale, (x,)), (group_norm, gn)]:
        got = dnnfusion.jit(fn, backend="c", fallback=False)(*args)
        np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(fn)(*args)),
                                   rtol=1e-5, atol=1e-5, equal_nan=True)
