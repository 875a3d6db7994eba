"""The C renderer's memory safety: every load stays inside its buffer.

Concatenate and pad lower to predicated reads: a ``select`` whose branches load from different
inputs, all evaluated (branch-free, so loops vectorise). The unselected loads may point past
their buffer; their values are discarded, but the read itself can fault (it crashed Faster
R-CNN once), so the renderer clamps exactly the loads whose index bounds leave their buffer.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion

from codegen.c.backend import c_kernel_source
from codegen.c.render import PRELUDE
from dnnfusion_jax.fusion.plan import whole_graph_block
from dnnfusion_jax.frontend.trace import trace_function


def c_source(fn, *args):
    graph = trace_function(fn, list(args)).graph
    source = c_kernel_source(whole_graph_block(graph), graph.constants)[1]
    return source[len(PRELUDE):]  # the kernel's own code


def test_predicated_concatenate_reads_are_clamped_into_their_buffers():
    a, b = np.ones((20, 4), np.float32), np.ones((80, 4), np.float32)
    source = c_source(lambda a, b: jnp.maximum(jnp.concatenate([a, b], 0), 0.0) * 2, a, b)
    # the rows decide which operand is read, so only the row part is clamped, leaving room
    # for the row's 4 elements: a has 80 elements, b 320
    assert "in0[dnf_clamp_index(r0 * 4, 76) + i1_0]" in source
    assert "in1[dnf_clamp_index(r0 * 4 + -80, 316) + i1_0]" in source


def test_pad_reads_are_clamped_and_plain_reads_are_not():
    x = np.ones((8, 16), np.float32)
    assert "dnf_clamp_index(" in c_source(lambda x: jnp.pad(x, ((1, 1), (2, 0))) + 1.0, x)
    assert "dnf_clamp_index(" not in c_source(jax.nn.softmax, x)


def test_concatenated_reshapes_are_clamped_and_match_jax():
    """Faster R-CNN's FPN: levels reshaped to (positions, channels) and concatenated. Used by
    a later operation, the concatenate is a predicated read whose later levels divide a
    shifted (negative in unselected rows) flat index; stored, it is a joined loop."""
    rng = np.random.default_rng(0)
    levels = [rng.standard_normal((n, n, 8)).astype(np.float32) for n in (8, 4, 2)]
    bias = rng.standard_normal(8).astype(np.float32)

    def fpn(a, b, c, bias):
        return jnp.concatenate([(t + bias).reshape(-1, 8) for t in (a, b, c)], 0)

    def scaled_fpn(a, b, c, bias):
        return fpn(a, b, c, bias) * 2.0

    assert "dnf_clamp_index(" in c_source(scaled_fpn, *levels, bias)
    assert "dnf_clamp_index(" not in c_source(fpn, *levels, bias)
    for fn in (fpn, scaled_fpn):
        got = dnnfusion.jit(fn, backend="c", fallback=False)(*levels, bias)
        np.testing.assert_allclose(got, jax.jit(fn)(*levels, bias), rtol=1e-6)


def test_parallel_loops_go_to_the_runtime_only_when_the_work_pays_for_it():
    """Loops big enough (c_writer.PARALLEL_MIN_WORK) become bodies handed to the caller's
    ``rt->parallel_for``; small ones stay plain loops; no OpenMP threading is left."""
    big, small = np.ones((64, 1024), np.float32), np.ones((4, 64), np.float32)
    source = c_source(jax.nn.softmax, big)
    assert "rt->parallel_for(rt, 64, " in source and "(void *ctx_, long begin, long end)" in source
    assert "parallel_for(" not in c_source(jax.nn.softmax, small)
    assert "omp parallel" not in source


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_stored_concatenate_is_a_joined_loop_reading_each_operand_once(axis):
    """One store stage per operand over its part of the output: no predicated reads, no
    clamps, and the result of jax.jit (inf and NaN included)."""
    shapes = [(4, 6, 8), (4, 6, 8), (4, 6, 8)]
    shapes = [tuple(s if d != axis else s + k for d, s in enumerate(shape))
              for k, shape in enumerate(shapes)]
    fn = lambda a, b, c: jnp.concatenate([a + 1.0, jnp.tanh(b), c * c], axis)  # noqa: E731
    args = [np.random.default_rng(k).standard_normal(s).astype(np.float32)
            for k, s in enumerate(shapes)]
    args[1][0, 0, 0], args[2][-1, -1, -1] = np.nan, np.inf
    source = c_source(fn, *args)
    assert "dnf_clamp_index(" not in source and " ? " not in source
    got = dnnfusion.jit(fn, backend="c", fallback=False)(*args)
    np.testing.assert_allclose(got, jax.jit(fn)(*args), rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("pad_channels", [False, True])
def test_predicated_reads_stay_contiguous_unless_the_inner_loop_decides(pad_channels):
    """Padding H and W: a whole run of channels is inside or outside, so only the rest of the
    index is clamped and the channel read stays contiguous (a gather was 0.44x of XLA).
    Padding the channels: the channel loop decides per lane, so every lane's index is
    clamped. Both agree with jax.jit, inf and NaN included."""
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 16)).astype(np.float32)
    x[0, 0, 0, :3] = [np.inf, -np.inf, np.nan]
    widths = ((0, 0), (1, 2), (2, 1), (3, 1) if pad_channels else (0, 0))
    fn = lambda x: jax.nn.relu(jnp.pad(x, widths)) * 2.0  # noqa: E731
    source = c_source(fn, x)
    contiguous = re.search(r"\) \+ i\d+_\d+\]", source) is not None
    assert contiguous is not pad_channels and "dnf_clamp_index(" in source
    got = dnnfusion.jit(fn, backend="c", fallback=False)(x)
    np.testing.assert_allclose(got, jax.jit(fn)(x), rtol=1e-6, equal_nan=True)


def test_elementwise_rows_are_long_enough_to_pay_for_their_loop():
    """Without reductions, rows only split the work: a row of 64 channels made the row loop's
    overhead the cost, so rows stop where at least 1024 elements remain per row."""
    from codegen.kernel.lowering import lower_block
    g = trace_function(lambda x: jnp.tanh(x) + 1.0, [jnp.ones((8, 68, 68, 64))]).graph
    kernel = lower_block(whole_graph_block(g), g.constants)
    assert [v.extent for v in kernel.rows] == [8, 68]
    g = trace_function(jax.nn.softmax, [jnp.ones((8, 68, 64))]).graph  # a reduction: per row
    assert [v.extent for v in lower_block(whole_graph_block(g), g.constants).rows] == [8, 68]


@pytest.mark.parametrize("shape, perm", [((37, 50), (1, 0)), ((2, 20, 9, 17), (0, 2, 3, 1)),
                                         ((2, 9, 17, 20), (0, 3, 1, 2))])
def test_layout_transposes_walk_tiles(shape, perm):
    """A load that strides along the innermost loop (a transpose of the last axis) walks
    16 × 16 tiles, ragged edges included, and still gives jax.jit's result."""
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    x.flat[:3] = [np.nan, np.inf, -np.inf]
    fn = lambda x: jnp.tanh(jnp.transpose(x, perm)) * 2.0  # noqa: E731
    assert "_t * 16 + 16 <" in c_source(fn, x)
    got = dnnfusion.jit(fn, backend="c", fallback=False)(x)
    np.testing.assert_allclose(got, jax.jit(fn)(x), rtol=1e-6, equal_nan=True)
