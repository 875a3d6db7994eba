"""Clean-up rules: each fires where it should, and results stay bit for bit the same."""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dnnfusion_jax.frontend.evaluate import evaluate_graph
from dnnfusion_jax.frontend.simplify import simplify
from dnnfusion_jax.frontend.trace import trace_function

X = jnp.linspace(-1.0, 1.0, 24, dtype=jnp.float32).reshape(2, 3, 4)


def run_simplify(fn, *args):
    traced = trace_function(fn, args)
    graph, fired = simplify(traced.graph)
    graph.validate()
    for got, want in zip(evaluate_graph(graph, *traced.consts, *args),
                         evaluate_graph(traced.graph, *traced.consts, *args)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    return [n.op for n in graph.nodes], dict(fired)


def test_identities_are_removed():
    def fn(x):
        same_shape = lax.reshape_p.bind(x, new_sizes=(2, 3, 4), dimensions=None, sharding=None)
        return lax.copy_p.bind(same_shape) + 1.0
    assert run_simplify(fn, X) == (["add"], {"copy-elim": 1, "reshape-noop": 1})


def test_reductions_over_no_axes_are_their_operand():
    """``jnp.sum(x, axis=())`` keeps x as it is, a -0.0 included (as XLA does); the lowering
    has no loop for it, so it must not reach a kernel."""
    x = jnp.array([-0.0, 1.0, jnp.nan])
    fn = lambda x: jnp.sum(x, axis=()) * 2.0 + jnp.max(x, axis=())  # noqa: E731
    assert run_simplify(fn, x) == (["mul", "add"], {"reduce-no-axes": 2})


def test_transpose_pairs_compose_and_cancel():
    ops, fired = run_simplify(lambda x: jnp.transpose(jnp.transpose(x, (1, 2, 0)), (2, 0, 1)) * 2.0, X)
    assert ops == ["mul"] and fired == {"transpose-transpose": 1, "transpose-identity": 1}
    ops, fired = run_simplify(lambda x: jnp.transpose(jnp.transpose(x, (1, 2, 0)), (1, 0, 2)), X)
    assert ops == ["transpose"] and fired == {"transpose-transpose": 1}


def test_reshape_chains_collapse():
    ops, fired = run_simplify(lambda x: x.reshape(6, 4).reshape(24).reshape(4, 6), X)
    assert ops == ["reshape"] and fired == {"reshape-reshape": 2}


def test_common_subexpressions_are_shared_across_literals():
    ops, fired = run_simplify(lambda x: jnp.exp(x * 2.0) + jnp.exp(x * 2.0), X)
    assert ops == ["mul", "exp", "add"] and fired == {"cse": 2}


def test_dead_code_goes_but_effects_stay():
    def fn(x):
        jnp.sin(x)  # unused
        jax.debug.print("{}", x.sum())
        return x + 1.0
    ops, _ = run_simplify(fn, X)
    assert ops == ["reduce_sum", "debug_print", "add"]


def test_weak_type_changes_are_not_identities():
    fn = lambda x: lax.convert_element_type(x, jnp.float32) * 2  # noqa: E731
    traced = trace_function(fn, (3.0,))  # weak-typed f32 input
    graph, fired = simplify(traced.graph)
    assert "convert_element_type" in [n.op for n in graph.nodes] and not fired


def test_broadcast_of_broadcast_is_one_broadcast():
    def fn(x, v):
        row = lax.broadcast_in_dim(v, (1, 4), (1,))
        return x + lax.broadcast_in_dim(row, (2, 3, 4), (1, 2))
    ops, fired = run_simplify(fn, X, jnp.arange(4.0))
    assert ops == ["broadcast_in_dim", "add"] and fired == {"broadcast-broadcast": 1}


def test_a_converted_scalar_constant_is_a_constant():
    """jnp.var's ``where(n > 0, var, nan)``: the nan is converted, then broadcast; folded, the
    broadcast reads a constant and joins its consumer's kernel as a parameter adapter."""
    ops, fired = run_simplify(lambda x: jnp.var(x, axis=-1), X)
    assert "convert_element_type" not in ops and fired.get("convert-constant") == 2  # ddof, nan
