"""Row-local caching (``codegen/kernel/row_cache.py``): an expensive value several stages read
is computed by the first of them, stored in a row-local temporary and loaded by the others;
a cheap one is recomputed. Checked on the kernel IR (no timing), then numerically."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from codegen.kernel.kernel_ir import expr_nodes
from codegen.kernel.lowering import lower_block
from dnnfusion_jax.fusion.plan import whole_graph_block
from dnnfusion_jax.frontend.trace import trace_function
from examples.norms import layer_norm


def kernel_of(fn, *shapes):
    g = trace_function(fn, [jnp.ones(s, jnp.float32) for s in shapes]).graph
    return lower_block(whole_graph_block(g), g.constants)


def evaluated(kernel, op):
    """How many times each element evaluates ``op``: once per stage whose expression has it."""
    return sum(any(e.op == op for e in expr_nodes([s.value])) for s in kernel.stages)


def test_softmax_evaluates_exp_once_per_element():
    kernel = kernel_of(jax.nn.softmax, (16, 64))
    assert [s.kind for s in kernel.stages] == ["reduce", "reduce", "store"]
    assert evaluated(kernel, "exp") == 1
    (temp, index, value), = kernel.stages[1].caches  # the sum stage caches exp(x - max)
    assert value.op == "exp" and kernel.buffer(temp).shape == (64,)
    loads = [e for e in expr_nodes([kernel.stages[2].value]) if e.op == "load"]
    assert temp in {e.attrs[0] for e in loads}


def test_cheap_values_are_recomputed_not_cached():
    kernel = kernel_of(layer_norm, (16, 64))
    assert all(not s.caches for s in kernel.stages)


def test_no_cache_without_rows_loop_or_when_the_row_is_too_long():
    assert all(not s.caches for s in kernel_of(jax.nn.softmax, (2, 64)).stages)  # no rows
    assert all(not s.caches for s in kernel_of(jax.nn.softmax, (8, 9000)).stages)


def test_the_cached_listing_names_the_temporary():
    assert "and cache t1[j2] = exp(" in str(kernel_of(jax.nn.softmax, (16, 64)))


def tanh_row_stats(x):
    t = jnp.tanh(x)
    return t * t.sum(-1, keepdims=True) + t.max(-1, keepdims=True)


def exp_groups(x):
    e = jnp.exp(x.reshape(8, 4, 32))
    return e.sum(2, keepdims=True) * e


def test_three_stages_share_one_cached_value_and_rows_may_be_nested():
    kernel = kernel_of(tanh_row_stats, (8, 128))
    assert evaluated(kernel, "tanh") == 1 and kernel.stages[0].caches
    kernel = kernel_of(exp_groups, (8, 128))
    assert len(kernel.rows) == 2 and evaluated(kernel, "exp") == 1


@pytest.mark.parametrize("fn", [jax.nn.softmax, jax.nn.log_softmax, tanh_row_stats, exp_groups])
def test_cached_kernels_match_jax_jit_with_inf_and_nan(fn):
    x = np.random.default_rng(0).standard_normal((8, 128)).astype(np.float32) * 20
    x[1, 3], x[2, 5], x[3, 7] = np.inf, -np.inf, np.nan
    x[4, :] = -np.inf
    got = dnnfusion.jit(fn, backend="c", fallback=False)(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(fn)(x)), rtol=1e-5,
                               atol=1e-5, equal_nan=True)
