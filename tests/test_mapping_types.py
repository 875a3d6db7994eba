"""The mapping-type table: every listed primitive is real, traces as listed, and is typed right."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dnnfusion_jax.ops.mapping_types import (ELEMENTWISE_PRIMITIVES, PRIMITIVE_MAPPING_TYPES,
                                         MappingType, node_mapping_type, primitive_mapping_type)
from dnnfusion_jax.frontend.trace import trace_function

F = jnp.linspace(0.1, 0.9, 12, dtype=jnp.float32).reshape(3, 4)
I = jnp.arange(12, dtype=jnp.int32).reshape(3, 4)
C = lax.complex(F, F)
POOL = dict(window_dimensions=(1, 2), window_strides=(1, 1), padding="VALID")

# primitive name → (function, args) whose jaxpr contains that primitive.
SAMPLES = {
    **{name: (getattr(lax, name), (F,)) for name in """
        abs acos acosh asin asinh atan atanh bessel_i0e bessel_i1e cbrt ceil cos cosh digamma erf
        erf_inv erfc exp exp2 expm1 floor is_finite lgamma log log1p logistic neg round rsqrt
        sign sin sinh sqrt square tan tanh""".split()},
    **{name: (getattr(lax, name), (F, F)) for name in """
        add atan2 div max min mul nextafter pow rem sub eq ne lt le gt ge igamma igammac
        igamma_grad_a zeta""".split()},
    **{name: (getattr(lax, name), (I, I)) for name in
       "shift_left shift_right_arithmetic shift_right_logical".split()},
    **{name: (getattr(lax, f"bitwise_{name}"), (I, I)) for name in ("and", "or", "xor")},
    "not": (lax.bitwise_not, (I,)),
    "population_count": (lax.population_count, (I,)),
    "clz": (lax.clz, (I,)),
    "polygamma": (lambda x: lax.polygamma(jnp.ones_like(x), x), (F,)),
    "regularized_incomplete_beta": (lambda x: lax.betainc(x, x, x), (F,)),
    "integer_pow": (lambda x: lax.integer_pow(x, 3), (F,)),
    "convert_element_type": (lambda x: lax.convert_element_type(x, jnp.int32), (F,)),
    "copy": (lax.copy_p.bind, (F,)),
    "stop_gradient": (lax.stop_gradient, (F,)),
    "reduce_precision": (lambda x: lax.reduce_precision(x, 5, 10), (F,)),
    "select_n": (lambda x: lax.select_n(x > 0.5, x, -x), (F,)),
    "clamp": (lambda x: lax.clamp(0.2, x, 0.8), (F,)),
    "complex": (lax.complex, (F, F)),
    "conj": (lax.conj, (C,)),
    "real": (lax.real, (C,)),
    "imag": (lax.imag, (C,)),
    "concatenate": (lambda x: jnp.concatenate([x, x], 1), (F,)),
    "stack": (lambda x: jnp.stack([x, x]), (F,)),
    "slice": (lambda x: x[1:, :2], (F,)),
    "split": (lambda x: jnp.split(x, 2, axis=1)[0], (F,)),
    "unstack": (lambda x: lax.unstack_p.bind(x, axis=0)[0], (F,)),
    "pad": (lambda x: lax.pad(x, 0.0, [(1, 2, 0), (0, 0, 1)]), (F,)),
    "iota": (lambda x: x + lax.iota(jnp.float32, 4), (F,)),
    "reshape": (lambda x: x.reshape(4, 3), (F,)),
    "squeeze": (lambda x: lax.squeeze(x[:1], (0,)), (F,)),
    "transpose": (lambda x: x.T, (F,)),
    "rev": (lambda x: jnp.flip(x, 0), (F,)),
    "broadcast_in_dim": (lambda x: jnp.broadcast_to(x, (2, 3, 4)), (F,)),
    "gather": (lambda x: x[jnp.array([2, 0])], (F,)),
    "dynamic_slice": (lambda x: lax.dynamic_slice(x, (1, 1), (2, 2)), (F,)),
    "tile": (lambda x: jnp.tile(x, (2, 1)), (F,)),
    "dot_general": (lambda x: x @ x.T, (F,)),
    "conv_general_dilated": (lambda x: lax.conv(x[None, None], x[None, None, :2, :2],
                                                (1, 1), "SAME"), (F,)),
    **{f"reduce_{name}": (getattr(jnp, name if name != "prod" else "prod"), (F,))
       for name in ("max", "min", "prod")},
    "reduce_sum": (jnp.sum, (F,)),
    **{f"reduce_{name}": (lambda x, n=name: getattr(jnp, f"bitwise_{n}").reduce(x > 0.5, axis=0),
                          (F,)) for name in ("and", "or", "xor")},
    "argmax": (lambda x: jnp.argmax(x, 1), (F,)),
    "argmin": (lambda x: jnp.argmin(x, 1), (F,)),
    "reduce_window_sum": (lambda x: lax.reduce_window(x, 0.0, lax.add, **POOL), (F,)),
    "reduce_window_max": (lambda x: lax.reduce_window(x, -jnp.inf, lax.max, **POOL), (F,)),
    "reduce_window_min": (lambda x: lax.reduce_window(x, jnp.inf, lax.min, **POOL), (F,)),
    "reduce_window": (lambda x: lax.reduce_window(x, 1.0, lax.mul, **POOL), (F,)),
    "cumsum": (lambda x: jnp.cumsum(x, 1), (F,)),
    "cumprod": (lambda x: jnp.cumprod(x, 1), (F,)),
    "cummax": (lambda x: lax.cummax(x, 1), (F,)),
    "cummin": (lambda x: lax.cummin(x, 1), (F,)),
    "cumlogsumexp": (lambda x: lax.cumlogsumexp(x, 1), (F,)),
    "select_and_scatter_add": (jax.grad(lambda x: lax.reduce_window(
        x, -jnp.inf, lax.max, **POOL).sum()), (F,)),
    "select_and_gather_add": (lambda x: jax.jvp(lambda y: lax.reduce_window(
        y, -jnp.inf, lax.max, **POOL), (x,), (x,))[1], (F,)),
    "dynamic_update_slice": (lambda x: lax.dynamic_update_slice(x, x[:1], (1, 0)), (F,)),
    "scatter": (lambda x: x.at[0].set(1.0), (F,)),
    "scatter-add": (lambda x: x.at[0].add(1.0), (F,)),
    "scatter-sub": (lambda x: lax.scatter_sub(x, jnp.array([[0]]), x[:1],
                                              lax.ScatterDimensionNumbers((1,), (0,), (0,))), (F,)),
    "scatter-mul": (lambda x: x.at[0].multiply(2.0), (F,)),
    "scatter-min": (lambda x: x.at[0].min(0.5), (F,)),
    "scatter-max": (lambda x: x.at[0].max(0.5), (F,)),
    "fft": (lambda x: jnp.fft.fft(x).real, (F,)),
}


def _primitive_names(jaxpr) -> set[str]:
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            names |= _primitive_names(sub)
    return names


def _all_jax_primitive_names() -> set[str]:
    from jax._src import core
    names = set()
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("jax._src"):
            names.update(v.name for v in vars(module).values() if isinstance(v, core.Primitive))
    return names


def test_every_listed_primitive_exists_in_jax():
    unknown = set(PRIMITIVE_MAPPING_TYPES) - _all_jax_primitive_names()
    assert not unknown, f"table lists primitives jax does not have: {sorted(unknown)}"


def test_every_listed_primitive_has_a_sample():
    assert set(PRIMITIVE_MAPPING_TYPES) == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_traces_to_the_primitive_with_the_listed_type(name):
    fn, args = SAMPLES[name]
    assert name in _primitive_names(jax.make_jaxpr(fn)(*args).jaxpr)
    graph = trace_function(fn, args).graph
    typed = [node_mapping_type(n) for n in graph.nodes if n.op == name]
    if name == "stop_gradient":  # the identity on a forward pass: gone from the graph
        assert not typed
        return
    assert typed and all(t is not MappingType.OPAQUE for t in typed)
    listed = PRIMITIVE_MAPPING_TYPES[name]
    if name != "broadcast_in_dim":
        assert listed in typed


def test_unknown_primitives_are_opaque():
    for name in ("while", "scan", "cond", "sort", "random_bits", "ffi_call", "no_such_op"):
        assert primitive_mapping_type(name) is MappingType.OPAQUE


def _types(fn, *args):
    return {n.op: node_mapping_type(n).label for n in trace_function(fn, args).graph.nodes}


def test_size_one_broadcasting_makes_elementwise_ops_one_to_many():
    assert _types(lambda x, b: x + b, F, F[:1]) == {"add": "One-to-Many"}
    assert _types(lambda x, b: x * b, F, F[:, :1]) == {"mul": "One-to-Many"}


def test_scalar_operands_do_not_count_as_broadcasting():
    assert _types(lambda x: x * 2.0, F) == {"mul": "One-to-One"}
    assert _types(lambda x: lax.clamp(0.0, x, 1.0), F) == {"clamp": "One-to-One"}


def test_broadcast_that_only_adds_unit_dims_is_reorganize():
    assert _types(lambda x: x[None], F) == {"broadcast_in_dim": "Reorganize"}
    assert _types(lambda x: jnp.broadcast_to(x, (2, 3, 4)), F) == {
        "broadcast_in_dim": "One-to-Many"}


def test_effects_and_prng_keys_are_opaque():
    def fn(key, x):
        jax.debug.print("x={x}", x=x)
        return jax.random.normal(key, x.shape) + x
    graph = trace_function(fn, (jax.random.key(0), F)).graph
    kinds = {n.op: node_mapping_type(n) for n in graph.nodes}
    assert kinds["debug_print"] is MappingType.OPAQUE
    assert kinds["random_bits"] is MappingType.OPAQUE
    assert kinds["add"] is MappingType.ONE_TO_ONE


def test_elementwise_set_is_one_to_one_in_the_table():
    assert all(PRIMITIVE_MAPPING_TYPES[n] is MappingType.ONE_TO_ONE for n in ELEMENTWISE_PRIMITIVES)
    assert np.all([MappingType.ONE_TO_ONE < MappingType.REORGANIZE < MappingType.SHUFFLE
                   < MappingType.ONE_TO_MANY < MappingType.MANY_TO_MANY])
