"""jaxpr import: nested calls inlined, identities dropped, constants and pytrees handled."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dnnfusion_jax.frontend.evaluate import evaluate_graph
from dnnfusion_jax.frontend.trace import trace_function

X = jnp.linspace(-2.0, 2.0, 12, dtype=jnp.float32).reshape(3, 4)


def ops(fn, *args):
    return [node.op for node in trace_function(fn, args).graph.nodes]


def test_nested_jit_relu_silu_and_checkpoint_are_inlined():
    fn = lambda x: jax.jit(jnp.sin)(jax.nn.relu(x)) + jax.checkpoint(jax.nn.silu)(x)  # noqa: E731
    assert ops(fn, X) == ["max", "sin", "logistic", "mul", "add"]


def test_custom_vjp_and_closed_call_are_inlined():
    @jax.custom_vjp
    def clip_gradient(x):
        return jnp.tanh(x)
    clip_gradient.defvjp(lambda x: (jnp.tanh(x), None), lambda _, g: (g,))
    fn = lambda x: clip_gradient(x) * 2.0  # noqa: E731
    assert ops(fn, X) == ["tanh", "mul"]


def test_stop_gradient_is_dropped_but_counted():
    traced = trace_function(lambda x: lax.stop_gradient(x) * x, (X,))
    assert [n.op for n in traced.graph.nodes] == ["mul"]
    assert traced.jaxpr_ops == 2
    mul = traced.graph.nodes[0]
    assert mul.inputs[0] is mul.inputs[1] is traced.graph.inputs[0]


def test_literals_become_constants_and_closures_become_leading_inputs():
    weight = np.full((4,), 3.0, np.float32)
    traced = trace_function(lambda x: x * weight + 1.0, (X,))
    graph = traced.graph
    assert graph.num_consts == 1 and len(graph.inputs) == 2
    np.testing.assert_array_equal(traced.consts[0], weight)
    assert [float(v) for v in graph.constants.values()] == [1.0]


def test_pytrees_in_and_out():
    def fn(params, x, *, scale):
        return {"y": x @ params["w"] + params["b"], "aux": (x.sum(), scale * 2)}
    params = {"w": jnp.ones((4, 2)), "b": jnp.zeros(2)}
    traced = trace_function(fn, (params, X), {"scale": jnp.float32(3.0)})
    assert len(traced.graph.inputs) == 4
    leaves = jax.tree_util.tree_leaves(((params, X), {"scale": jnp.float32(3.0)}))
    out = jax.tree_util.tree_unflatten(traced.out_tree, evaluate_graph(traced.graph, *leaves))
    np.testing.assert_allclose(out["y"], X @ params["w"])
    assert float(out["aux"][1]) == 6.0


def test_multiple_outputs_and_shared_values():
    traced = trace_function(lambda x: (jnp.split(x, 2, axis=1), jnp.exp(x)), (X,))
    graph = traced.graph
    assert [n.op for n in graph.nodes] == ["split", "exp"]
    assert len(graph.nodes[0].outputs) == 2 and len(graph.outputs) == 3
    graph.validate()


def test_replaying_the_graph_gives_the_jaxpr_results():
    def fn(x):
        y = jax.nn.gelu(x, approximate=False)
        return jax.nn.softmax(y, axis=-1), lax.cumsum(y, 1), jnp.argmax(y, 1)
    traced = trace_function(fn, (X,))
    got = evaluate_graph(traced.graph, X)
    want = jax.tree_util.tree_leaves(fn(X))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_user_errors_propagate_unchanged():
    def bad(x):
        return x @ jnp.ones((5, 5))
    try:
        trace_function(bad, (X,))
    except TypeError as error:
        assert "dot_general requires contracting dimensions" in str(error)
    else:
        raise AssertionError("shape error was swallowed")


def test_partial_and_callable_objects_trace():
    class Scale:
        def __call__(self, x, factor):
            return x * factor
    assert ops(functools.partial(Scale(), factor=2.0), X) == ["mul"]
