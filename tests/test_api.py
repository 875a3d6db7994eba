"""dnnfusion.jit behaves like jax.jit: calling convention, caching, transformations, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from dnnfusion_jax import options as options_module
from conftest import assert_tree_allclose

X = jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4)
W = jnp.linspace(0.5, -0.5, 16, dtype=jnp.float32).reshape(4, 4)


def layer(x, w):
    return jax.nn.gelu(x @ w) + jnp.tanh(x)


def test_bare_and_configured_decorators():
    bare = dnnfusion.jit(layer)
    configured = dnnfusion.jit(backend="xla", fallback=False)(layer)
    assert_tree_allclose(bare(X, W), jax.jit(layer)(X, W))
    assert_tree_allclose(configured(X, W), jax.jit(layer)(X, W))
    assert bare.__name__ == "layer" and bare.fun is layer


def test_pytrees_static_args_and_kwargs():
    def fn(params, x, *, mode, repeat=1):
        y = x @ params["w"]
        for _ in range(repeat):
            y = jnp.tanh(y) if mode == "tanh" else jax.nn.relu(y)
        return {"y": y, "stats": (y.sum(), y.max())}
    params = {"w": W}
    for kwargs in ({"mode": "tanh", "repeat": 2}, {"mode": "relu"}):
        got = dnnfusion.jit(fn, static_argnames=("mode", "repeat"), fallback=False)(params, X, **kwargs)
        assert_tree_allclose(got, jax.jit(fn, static_argnames=("mode", "repeat"))(params, X, **kwargs))


def test_static_argnums_including_negative():
    f = dnnfusion.jit(lambda x, n: x * n, static_argnums=-1)
    assert f(X, 3).tolist() == (X * 3).tolist()
    g = dnnfusion.jit(lambda n, x: jnp.tile(x, (n, 1)), static_argnums=0)
    assert g(2, X).shape == (6, 4)


def test_second_call_with_same_signature_does_not_retrace():
    traces = []

    def fn(x):
        traces.append(1)
        return jnp.exp(x) * 2
    f = dnnfusion.jit(fn)
    f(X)
    f(X + 1)
    assert len(traces) == 1
    f(jnp.ones((5, 4)))
    assert len(traces) == 2
    f.explain(X)  # the plan for this signature is cached too
    assert len(traces) == 2


def test_inside_jit_vmap_and_grad():
    f = dnnfusion.jit(layer, fallback=False)
    assert_tree_allclose(jax.jit(lambda x, w: f(x, w) * 2)(X, W), jax.jit(lambda x, w: layer(x, w) * 2)(X, W))
    batch = jnp.stack([X, X * 2, -X])
    assert_tree_allclose(jax.vmap(f, in_axes=(0, None))(batch, W), jax.vmap(layer, in_axes=(0, None))(batch, W))
    loss = lambda fn: lambda w: jnp.sum(fn(X, w) ** 2)  # noqa: E731
    assert_tree_allclose(jax.grad(loss(f))(W), jax.grad(loss(layer))(W), rtol=1e-5, atol=1e-6)
    assert_tree_allclose(jax.jvp(f, (X, W), (X, W)), jax.jvp(layer, (X, W), (X, W)))


def test_grad_with_respect_to_a_closed_over_tracer():
    def loss(w):
        return dnnfusion.jit(lambda x: jnp.sin(x * w))(X).sum()
    assert_tree_allclose(jax.grad(loss)(1.5), jax.grad(lambda w: jnp.sin(X * w).sum())(1.5))


def test_donated_arguments_are_accepted():
    f = dnnfusion.jit(lambda x: x + 1.0, donate_argnums=0)
    assert f(jnp.zeros(3)).tolist() == [1.0, 1.0, 1.0]


def test_python_scalars_and_integer_outputs():
    f = dnnfusion.jit(lambda x, s: (jnp.argmax(x * s, axis=1), x.shape[0] * s))
    got, want = f(X, 2.0), jax.jit(lambda x, s: (jnp.argmax(x * s, axis=1), x.shape[0] * s))(X, 2.0)
    assert_tree_allclose(got, want)


def test_methods_bind_self_like_functions():
    class Model:
        scale = 3.0

        @dnnfusion.jit(static_argnums=0)
        def apply(self, x):
            return x * self.scale

        def __hash__(self):
            return 0

        def __eq__(self, other):
            return isinstance(other, Model)
    assert Model().apply(X).tolist() == (X * 3.0).tolist()
    bound = Model().apply  # keeps what the function has: explain, lower, trace
    assert bound.explain(X).summary()["blocks"] == 1
    assert "custom_call" in bound.lower(X).as_text() and bound.trace(X).jaxpr is not None


def test_donate_argnames_and_argument_kinds_are_checked():
    f = dnnfusion.jit(lambda x, y: x * 2 + y, donate_argnames="y")
    np.testing.assert_allclose(f(X, jnp.ones_like(X)), X * 2 + 1)
    with pytest.raises(TypeError, match="static_argnums takes ints, got 'x'"):
        dnnfusion.jit(lambda x: x, static_argnums="x")


def test_non_array_argument_error_names_the_argument():
    with pytest.raises(TypeError, match=r"path x"):
        dnnfusion.jit(layer)("not an array", W)


def test_shape_errors_are_jaxs_own():
    with pytest.raises(TypeError, match="dot_general requires contracting dimensions"):
        dnnfusion.jit(layer)(X, jnp.ones((5, 4)))


def test_untraceable_function_gives_jaxs_error():
    def branchy(x):
        return x if x.sum() > 0 else -x
    with pytest.raises(jax.errors.TracerBoolConversionError, match="branchy"):
        dnnfusion.jit(branchy)(X)


def test_unknown_backend_and_option_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'; valid backends: 'auto', 'xla'"):
        dnnfusion.jit(layer, backend="cuda")
    with pytest.raises(TypeError, match=r"unknown option 'fusion_level'; valid options: backend"):
        dnnfusion.jit(layer, fusion_level=3)
    with pytest.raises(ValueError, match="valid planners"):
        dnnfusion.jit(planner="magic")
    with pytest.raises(TypeError, match="must be True or False"):
        dnnfusion.jit(layer, rewrite="yes")


def test_internal_errors_fall_back_to_xla_with_a_warning(monkeypatch):
    class BrokenPlanner:
        name = "broken"

        def plan(self, graph):
            raise RuntimeError("planner bug")
    monkeypatch.setitem(options_module.PLANNERS, "broken", lambda backend, options: BrokenPlanner())
    with pytest.warns(RuntimeWarning, match="planner bug"):
        got = dnnfusion.jit(layer, planner="broken")(X, W)
    assert_tree_allclose(got, jax.jit(layer)(X, W))
    with pytest.raises(RuntimeError, match="planner bug"):
        dnnfusion.jit(layer, planner="broken", fallback=False)(X, W)


def test_debug_prints_every_stage(capsys):
    dnnfusion.jit(layer, debug=True)(X, W)
    out = capsys.readouterr().out
    for stage in ("jaxpr of layer", "IR after rewriting", "fusion blocks", "generated code"):
        assert f"==== dnnfusion: {stage}" in out
    assert "dot_general" in out


def test_effects_run_in_order(capsys):
    def fn(x):
        jax.debug.print("one {}", x[0])
        jax.debug.print("two {}", x[1])
        return x * 2
    dnnfusion.jit(fn, fallback=False)(jnp.arange(2.0)).block_until_ready()
    jax.effects_barrier()
    out = capsys.readouterr().out
    assert out.index("one") < out.index("two")


def test_lower_gives_one_executable():
    text = dnnfusion.jit(layer).lower(X, W).as_text()
    assert text.count("func.func public @main") == 1
    assert "custom_call" in text  # the fused kernel (here with its small GEMM) inside it


def test_numpy_and_inf_nan_inputs_match_jax_jit():
    x = np.array([[0.0, np.inf, -np.inf, np.nan], [1.0, -1.0, 1e30, -1e-30], [3, 4, 5, 6]], np.float32)
    fn = lambda x: (jax.nn.softmax(x, axis=1), jnp.log(jnp.abs(x)) * x, jnp.maximum(x, 0.0))  # noqa: E731
    assert_tree_allclose(dnnfusion.jit(fn, fallback=False)(x), jax.jit(fn)(x))


def test_explain_reports_the_signature_asked_for():
    f = dnnfusion.jit(lambda x: jnp.exp(x).sum() if x.ndim == 1 else jnp.exp(x) * 2 + 1)
    f(jnp.ones(3))
    f(jnp.ones((2, 2)))  # jax.jit's trace cache now holds both signatures
    assert f.explain(jnp.ones(3)).summary()["jaxpr_ops"] == 2
    assert f.explain(jnp.ones((2, 2))).summary()["jaxpr_ops"] == 3
    assert f.explain(jax.ShapeDtypeStruct((4,), jnp.float32)).summary()["jaxpr_ops"] == 2


def test_explain_rejects_non_array_arguments():
    with pytest.raises(TypeError, match="not a valid JAX type"):
        dnnfusion.explain(layer, "text", W)


EMPTY = {
    "sum over an empty axis": (lambda a: jnp.exp(a).sum(0), (0, 4)),
    "max over an empty axis": (lambda a: jnp.max(a * 2, axis=1, initial=-jnp.inf), (3, 0)),
    "elementwise on nothing": (lambda a: jnp.tanh(a) + 1, (2, 0, 5)),
    "concatenated to something": (lambda a: jnp.concatenate([a, a + 1], 0).sum(1), (0, 3)),
}


@pytest.mark.parametrize("backend", ["c", "pallas"])
@pytest.mark.parametrize("name", EMPTY)
def test_empty_arrays_match_jax_jit(backend, name):
    """An operation on an array with no elements runs through XLA (a reduction over nothing
    is its identity, not a read of a missing element)."""
    fn, shape = EMPTY[name]
    x = np.zeros(shape, np.float32)
    fused = dnnfusion.jit(fn, backend=backend, fallback=False)
    assert_tree_allclose(fused(x), jax.jit(fn)(x))
    reasons = [f["reason"] for f in fused.explain(x).summary()["fallback_blocks"]]
    assert any("empty array" in reason for reason in reasons), reasons


SIGNED_ZEROS = {
    "-0.0 and 0.0 literals": lambda x: 1.0 / (x * -0.0) + 1.0 / (x * 0.0),
    "folded to a zero": lambda x: (1.0 / (0.0 * (-2.0 * x)), 1.0 / ((x * -3.0) * 0.0)),
    "added and subtracted": lambda x: (1 / (x + 0.0), 1 / (x + -0.0), 1 / (-0.0 - x)),
    # XLA orders -0 below +0 in max and min; so must the kernels (and their reductions' lanes)
    "max and min of zeros": lambda x: (1 / jnp.maximum(x, -x), 1 / jnp.minimum(x, -x),
                                       1 / jnp.maximum(0.0, x * 1.0), 1 / jnp.minimum(-x, 0.0)),
    "reduced over zeros": lambda x: (
        1 / jnp.max(jnp.tile(x[:2], (3, 40)) * 1.0, axis=1),
        1 / jnp.min(jnp.tile(x[:2], (3, 40)) * 1.0, axis=1),
        1 / jnp.max(jnp.tile(x[1:2], (3, 40)) * -1.0, axis=1),
        1 / jnp.min(jnp.tile(x[1:2], (2, 9)) * 1.0)),
    "constants whose ties are wrong": lambda x: (1 / jnp.maximum(x * 1.0, -0.0),
                                                 1 / jnp.minimum(x * 1.0, 0.0)),
}


@pytest.mark.parametrize("backend", ["c", "pallas", "xla"])
@pytest.mark.parametrize("name", SIGNED_ZEROS)
def test_negative_zero_is_not_zero(backend, name):
    """-0.0 == 0.0 in Python and in egglog's f64, but 1/(x * -0.0) and 1/(x * 0.0) are
    infinities of opposite signs: neither CSE nor the e-graph may make them one value."""
    fn = SIGNED_ZEROS[name]
    x = np.array([-0.0, 0.0, 1.0, -2.0], np.float32)
    got, want = dnnfusion.jit(fn, backend=backend, fallback=False)(x), jax.jit(fn)(x)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


@pytest.mark.parametrize("backend", ["c", "pallas", "xla"])
def test_weak_typed_outputs_stay_weak(backend):
    """jax.jit's s * 2.0 of a Python float is weakly typed: added to bfloat16 it stays
    bfloat16. A kernel's result is strongly typed; the output must not be."""
    f = lambda s, x: (s * 2.0, x * 3.0)  # noqa: E731 - one weak output, one strong
    h = jnp.ones((), jnp.bfloat16)
    fused, reference = dnnfusion.jit(f, backend=backend), jax.jit(f)
    for got, want in zip(fused(3.0, X), reference(3.0, X)):
        assert (got + h).dtype == (want + h).dtype
    assert jax.jit(lambda s: fused(s, X)[0] + h)(3.0).dtype == jnp.bfloat16


def test_typed_prng_keys_pass_through():
    """Typed keys are opaque values (no kernel, no e-graph term): a function of nothing else
    still runs, with the rewriter on, and fallback off."""
    key = jax.random.key(1)
    f = lambda k, x: (jax.random.split(k), x * 2 + jax.random.normal(k, x.shape))  # noqa: E731
    got, want = dnnfusion.jit(f, fallback=False)(key, X), jax.jit(f)(key, X)
    np.testing.assert_array_equal(jax.random.key_data(got[0]), jax.random.key_data(want[0]))
    assert_tree_allclose(got[1], want[1])
    keys = dnnfusion.jit(lambda k: jax.random.split(k), fallback=False)(key)
    np.testing.assert_array_equal(jax.random.key_data(keys),
                                  jax.random.key_data(jax.random.split(key)))


def test_long_c_reductions_order_zeros_as_lax_says():
    """max over -0 and +0 is +0, min is -0 (lax.max/min), also over a row long enough for the C
    kernel's chunked lanes and their zero pass. Checked against the rule, not jax.jit: XLA's
    own long-row reductions pick either zero (8192 zeros: its min gave +0 here; the Pallas
    backend, whose interpret mode reduces with XLA, follows it)."""
    zeros = np.tile(np.array([-0.0, 0.0], np.float32), 4096)
    fn = lambda z: (1 / jnp.max(z * 1.0), 1 / jnp.min(z * 1.0))  # noqa: E731
    high, low = dnnfusion.jit(fn, backend="c", fallback=False)(zeros)
    assert float(high) == np.inf and float(low) == -np.inf
    rows = np.stack([np.full(256, -0.0, np.float32), np.zeros(256, np.float32)])
    columns = lambda z: (1 / jnp.max(z * 1.0, axis=0), 1 / jnp.min(z[::-1] * 1.0, axis=0))  # noqa: E731
    high, low = dnnfusion.jit(columns, backend="c", fallback=False)(rows)  # in memory order
    assert (np.asarray(high) == np.inf).all() and (np.asarray(low) == -np.inf).all()


def test_c_backend_where_programs_run_on_a_gpu_warns_and_runs_xla(monkeypatch):
    """backend="c" builds CPU kernels; where programs run on a GPU it says so once and its
    blocks run in XLA (before, the GPU program called a CPU FFI handler and failed)."""
    from dnnfusion_jax import pipeline
    monkeypatch.setattr(pipeline, "program_platform", lambda: "gpu")
    fn = lambda x: jnp.tanh(x) * 2.0 + 1.0  # noqa: E731
    x = jnp.linspace(-2.0, 2.0, 64, dtype=jnp.float32)
    fused = dnnfusion.jit(fn, backend="c", fallback=False)
    with pytest.warns(RuntimeWarning, match="backend='c' builds kernels for cpu, but programs "
                                            "here run on gpu"):
        result = fused(x)
    np.testing.assert_allclose(result, jax.jit(fn)(x), rtol=1e-6, atol=1e-6)
    assert fused.explain(x).summary()["backend"] == "xla"


def test_program_platform_follows_the_default_device():
    from dnnfusion_jax.options import program_platform
    with jax.default_device(jax.devices("cpu")[0]):
        assert program_platform() == "cpu"
    assert program_platform() == jax.default_backend()
