"""Reductions in memory order (``codegen/kernel/reduce_order.py``): reduced axes keep one loop
each (merged only where contiguous, so indices need no division), and a reduction whose kept
loop has a smaller stride than a reduced one runs with the kept loop innermost. Checked on the
kernel IR (no timing), then against jax.jit with inf and NaN inputs."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from codegen.kernel.index import Div, Mod
from codegen.kernel.kernel_ir import expr_nodes
from codegen.kernel.lowering import lower_block
from dnnfusion_jax.fusion.plan import whole_graph_block
from codegen.kernel.reduce_order import loop_strides
from dnnfusion_jax.frontend.trace import trace_function
from examples.norms import group_norm, layer_norm

group_norm_4 = functools.partial(group_norm, groups=4)


def channel_center(x):  # batch-norm style: per-channel mean over N, H, W of NHWC
    return x - x.mean((0, 1, 2))


def channel_max(x):
    return x.max((0, 1, 2))


def kernel_of(fn, *shapes):
    g = trace_function(fn, [jnp.ones(s, jnp.float32) for s in shapes]).graph
    return lower_block(whole_graph_block(g), g.constants)


def loads(stage):
    return [e for e in expr_nodes([stage.value]) if e.op == "load"]


def has_division(index):
    return any(isinstance(atom, (Div, Mod)) for atom, _ in index.terms)


def in_memory_order(kernel, stage):
    """Each loop of the nest has a stride no larger than the loop outside it, and the innermost
    loop reads the input contiguously."""
    strides = loop_strides(stage, {b.name for b in kernel.inputs})
    nest = [strides[v] for v in stage.nest]
    return nest == sorted(nest, reverse=True) and nest[-1] == 1


def test_group_norm_reductions_have_affine_indices_and_run_in_memory_order():
    kernel = kernel_of(group_norm_4, (2, 8, 8, 32), (32,), (32,))
    reading_input = [s for s in kernel.stages if s.kind == "reduce"
                     and any(e.attrs[0] == "in0" for e in loads(s))]
    assert len(reading_input) == 2  # mean and variance
    for stage in reading_input:
        assert not any(has_division(e.attrs[1]) for e in loads(stage))
        assert not stage.kept_outside  # the group loop is inside the h·w loop
        assert in_memory_order(kernel, stage)
        assert {v.extent for v in stage.reduce_loops} == {64}  # h and w merged, c kept as lanes


def test_per_channel_reduction_of_nhwc_runs_in_memory_order_in_parallel_chunks():
    kernel = kernel_of(channel_center, (8, 16, 16, 64))
    first = kernel.stages[0]
    assert not first.kept_outside and in_memory_order(kernel, first)
    assert first.nest[0] in first.loops  # the chunk loop: kept, outermost, parallel
    assert kernel.stages[1].kind == "reduce" and kernel.stages[1].kept_outside


def test_innermost_axis_reductions_keep_their_order():
    kernel = kernel_of(layer_norm, (16, 256))
    reduces = [s for s in kernel.stages if s.kind == "reduce"]
    assert len(reduces) == 2 and all(s.kept_outside and not s.order for s in reduces)
    assert [v.extent for s in reduces for v in s.reduce_loops] == [256, 256]


def test_contiguous_reduced_axes_merge_and_transposed_ones_stay_apart():
    merged = kernel_of(lambda x: x.sum((1, 2)), (4, 8, 16)).stages[0]
    assert [v.extent for v in merged.reduce_loops] == [128]
    # a transposed operand is reduced in the input's order, so its axes merge as well
    transposed = kernel_of(lambda x: x.transpose(0, 2, 1).sum((1, 2)), (4, 8, 16)).stages[0]
    assert [v.extent for v in transposed.reduce_loops] == [128]
    (load,) = loads(transposed)
    assert not has_division(load.attrs[1]) and (transposed.reduce_loops[0], 1) in \
        load.attrs[1].terms
    apart = kernel_of(lambda x: x[:, ::2, :].sum((1, 2)), (4, 8, 16)).stages[0]
    assert sorted(v.extent for v in apart.reduce_loops) == [4, 16]
    assert not any(has_division(e.attrs[1]) for e in loads(apart))


@pytest.mark.parametrize("fn,shapes", [
    (group_norm_4, [(2, 8, 8, 32), (32,), (32,)]),
    (channel_center, [(8, 16, 16, 64)]),
    (lambda x: x.transpose(0, 2, 1).sum((1, 2)), [(4, 8, 16)]),
])
def test_memory_order_reductions_match_jax_jit_with_inf_and_nan(fn, shapes):
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    x = args[0].reshape(-1)
    x[3], x[100], x[333] = np.inf, -np.inf, np.nan
    x[40] = np.inf  # a second inf in another group/channel: inf - inf gives NaN there
    x[41] = -np.inf
    got = dnnfusion.jit(fn, backend="c", fallback=False)(*args)
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(fn)(*args)), rtol=1e-5,
                               atol=1e-5, equal_nan=True)
    finite = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    got = dnnfusion.jit(fn, backend="c", fallback=False)(*finite)
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(fn)(*finite)), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("fn,shape", [
    (channel_max, (8, 16, 16, 64)),
    (lambda x: x[:, ::2, :].max((1, 2)), (4, 8, 16)),
])
def test_memory_order_max_propagates_nan_and_keeps_inf(fn, shape):
    """NaN against numpy: XLA:CPU (jax 0.10.2) drops NaN in reduce_max on this machine, our
    kernels propagate it, as they did before memory order (kernel IR max is NaN-propagating).
    With inf but no NaN, against jax.jit."""
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[5], flat[70], flat[71], flat[-1] = np.nan, np.inf, -np.inf, -np.inf
    got = np.asarray(dnnfusion.jit(fn, backend="c", fallback=False)(x))
    np.testing.assert_array_equal(got, fn(x))  # numpy's max propagates NaN
    assert np.isnan(got).any()
    flat[5] = 0.0
    got = np.asarray(dnnfusion.jit(fn, backend="c", fallback=False)(x))
    np.testing.assert_array_equal(got, np.asarray(jax.jit(fn)(x)))
