"""End-to-end correctness of ``dnnfusion.jit`` on realistic model families (see ``models.py``).

For every model: the fused function matches ``jax.jit`` leaf by leaf, also when the input holds
NaN and infinities; ``explain`` reports a consistent plan; derivatives (``jax.grad``) and
batching (``jax.vmap``) through a ``dnnfusion.jit`` function match ``jax.jit``; a second call at
the same signature does not trace the Python function again.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from conftest import paired_leaves
from dnnfusion_jax.ops.mapping_types import MappingType, node_mapping_type
from dnnfusion_jax.options import BACKENDS
from dnnfusion_jax.report import SUMMARY_KEYS

try:  # tests/ imported as a package
    from . import models as zoo
except ImportError:  # tests/ on sys.path (pytest's default rootdir-relative import)
    import models as zoo

MODELS, EXPECTED_OPAQUE = zoo.MODELS, zoo.EXPECTED_OPAQUE

RTOL, ATOL = 1e-5, 1e-5
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-5


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

class _Model:
    """One model built once per session, with its reference and fused functions."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fn, self.args = MODELS[name]()
        self.reference = jax.jit(self.fn)
        self.fused = dnnfusion.jit(self.fn, fallback=False)


@functools.cache
def model(name: str) -> _Model:
    return _Model(name)


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def assert_trees_match(actual, expected, rtol: float = RTOL, atol: float = ATOL,
                       equal_nan: bool = False, what: str = "") -> None:
    """Same pytree structure; per leaf same shape and dtype; floats close, the rest exact."""
    for where, got, want in paired_leaves(actual, expected, what):
        if _is_key(want):
            np.testing.assert_array_equal(np.asarray(jax.random.key_data(got)),
                                          np.asarray(jax.random.key_data(want)), err_msg=where)
            continue
        got, want = np.asarray(got), np.asarray(want)
        if np.issubdtype(want.dtype, np.inexact):
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want),
                                          err_msg=f"{where}: NaN positions differ")
            np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want),
                                          err_msg=f"{where}: +inf positions differ")
            np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want),
                                          err_msg=f"{where}: -inf positions differ")
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=equal_nan,
                                       err_msg=where)
        else:
            np.testing.assert_array_equal(got, want, err_msg=where)


def _is_float_array(x) -> bool:
    return (hasattr(x, "dtype") and not _is_key(x) and jnp.issubdtype(x.dtype, jnp.floating)
            and np.size(x) >= 4)


def inject_nonfinite(args: tuple) -> tuple:
    """Puts NaN, +inf and -inf into the first floating array input: a top-level array argument
    when there is one, otherwise the first floating leaf (of rank >= 2 if any) of the parameter
    pytrees. They go into the first slice along axis 0 (the first example of a batch), so that
    the other examples stay finite and the comparison also covers finite results."""
    target = next((i for i, a in enumerate(args) if _is_float_array(a)), None)
    if target is not None:
        leaves, treedef = [args[target]], None
    else:
        leaves, treedef = jax.tree_util.tree_flatten(args)
    candidates = [i for i, leaf in enumerate(leaves) if _is_float_array(leaf)]
    index = next((i for i in candidates if leaves[i].ndim >= 2), candidates[0])
    value = np.array(leaves[index])
    first = value.reshape(value.shape[0], -1)[0] if value.ndim >= 2 and value[0].size >= 4 \
        else value.reshape(-1)
    first[[1, 2, 3]] = [np.nan, np.inf, -np.inf]      # a view: writes into ``value``
    leaves[index] = jnp.asarray(value, leaves[index].dtype)
    if treedef is None:
        return (*args[:target], leaves[0], *args[target + 1:])
    return jax.tree_util.tree_unflatten(treedef, leaves)


MODEL_NAMES = sorted(MODELS)


# --------------------------------------------------------------------------------------------
# (a) forward results match jax.jit
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_matches_jax_jit(name):
    m = model(name)
    expected = m.reference(*m.args)
    actual = m.fused(*m.args)
    assert_trees_match(actual, expected, what=name)
    # the inputs give finite results, so the comparison above is not vacuous
    for leaf in jax.tree_util.tree_leaves(expected):
        if not _is_key(leaf) and jnp.issubdtype(leaf.dtype, jnp.inexact):
            assert np.all(np.isfinite(np.asarray(leaf))), f"{name}: reference is not finite"


# --------------------------------------------------------------------------------------------
# (b) NaN and infinities propagate exactly as under jax.jit
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_nonfinite_inputs_match_jax_jit(name):
    m = model(name)
    args = inject_nonfinite(m.args)
    injected = [a for a in jax.tree_util.tree_leaves(args)
                if not _is_key(a) and jnp.issubdtype(a.dtype, jnp.floating)]
    assert any(np.isnan(np.asarray(a)).any() and np.isinf(np.asarray(a)).any() for a in injected)
    expected = m.reference(*args)
    actual = m.fused(*args)
    assert_trees_match(actual, expected, equal_nan=True, what=f"{name} (NaN/inf input)")


# --------------------------------------------------------------------------------------------
# (c) explain: a consistent plan, control flow / sort / RNG kept Opaque
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_explain_summary(name):
    m = model(name)
    report = dnnfusion.explain(m.fused, *m.args)
    summary = report.summary()
    for key in SUMMARY_KEYS:
        assert key in summary, f"summary lacks {key!r}"
    assert summary["blocks"] >= 1
    # algebraic rewriting may add parameter-sized operators (batch-norm folding turns four
    # full-size ops into one plus a few per-channel ones), but never FLOPs
    assert summary["blocks"] <= summary["ops_after_rewrite"]
    assert summary["flops_after"] <= summary["flops_before"]
    assert sum(summary["block_types"].values()) == summary["blocks"]
    assert set(summary["block_types"]) <= {t.label for t in MappingType}
    assert summary["backend"] in BACKENDS
    assert summary["internal_error"] is None
    assert summary["intermediate_bytes"] >= 0
    assert summary["flops_before"] > 0 and summary["flops_after"] >= 0
    assert all(isinstance(v, int) and v > 0 for v in summary["rules_fired"].values())

    # the blocks partition the planned graph (the rewritten one, with parameter adapters
    # copied per consumer), and an Opaque node is alone in its block
    graph_nodes = report.plan.graph.nodes
    planned = [node for block in report.plan.blocks for node in block.nodes]
    assert len(planned) == len(graph_nodes) >= summary["ops_after_rewrite"]
    assert {id(n) for n in planned} == {id(n) for n in graph_nodes}
    for block in report.plan.blocks:
        if any(node_mapping_type(node) is MappingType.OPAQUE for node in block.nodes):
            assert len(block.nodes) == 1, f"Opaque node fused: {block!r}"
            assert block.mapping_type is MappingType.OPAQUE

    expected_opaque = EXPECTED_OPAQUE.get(name, set())
    loops = {body["loop"].split()[0] for body in summary["loops"]}  # reported as loops
    missing = expected_opaque - set(summary["opaque_primitives"]) - loops
    assert not missing, f"{name}: {sorted(missing)} not reported opaque: {summary['opaque_primitives']}"
    if expected_opaque:
        assert summary["block_types"].get("Opaque", 0) >= 1
    assert str(report)  # the readable table renders


def test_lstm_scan_is_one_opaque_block():
    m = model("lstm")
    report = m.fused.explain(*m.args)
    scan_blocks = [b for b in report.plan.blocks if "scan" in b.ops]
    assert len(scan_blocks) == 1
    assert scan_blocks[0].ops == ["scan"]
    assert scan_blocks[0].mapping_type is MappingType.OPAQUE


# --------------------------------------------------------------------------------------------
# (d) no retracing at an already seen signature
# --------------------------------------------------------------------------------------------

def test_second_call_does_not_retrace():
    base = model("transformer_encoder_erf")
    calls = []

    def counted(*args):
        calls.append(1)
        return base.fn(*args)

    fused = dnnfusion.jit(counted, fallback=False)
    first = fused(*base.args)
    x, mask, params = base.args
    second = fused(x * 0.5, mask, params)            # new values, same shapes and dtypes
    assert len(calls) == 1, f"traced {len(calls)} times for one signature"
    assert_trees_match(first, base.reference(*base.args), what="first call")
    assert_trees_match(second, base.reference(x * 0.5, mask, params), what="second call")
    fused.explain(*base.args)                        # the plan for this signature is reused
    assert len(calls) == 1
    fused(x[:1], mask[:1], params)                   # a new signature traces once more
    assert len(calls) == 2


def test_second_call_does_not_retrace_with_control_flow():
    base = model("control_flow")
    calls = []

    def counted(*args):
        calls.append(1)
        return base.fn(*args)

    fused = dnnfusion.jit(counted, fallback=False)
    x, w = base.args
    for scale in (1.0, -1.0):                       # both branches of the cond
        assert_trees_match(fused(x * scale, w), base.reference(x * scale, w), what=f"x*{scale}")
    assert len(calls) == 1


# --------------------------------------------------------------------------------------------
# (e) gradients through a dnnfusion.jit function
# --------------------------------------------------------------------------------------------

def _float_argnums(args: tuple) -> tuple[int, ...]:
    return tuple(i for i, a in enumerate(args)
                 if all(not _is_key(leaf) and jnp.issubdtype(leaf.dtype, jnp.floating)
                        for leaf in jax.tree_util.tree_leaves(a)))


def _scalar_loss(f):
    def loss(*args):
        out = f(*args)
        leaves = [leaf for leaf in jax.tree_util.tree_leaves(out)
                  if jnp.issubdtype(leaf.dtype, jnp.floating)]
        # fixed, non-uniform cotangents so that e.g. a layer norm's output sum does not vanish
        return sum(jnp.sum(jnp.sin(leaf) * jnp.cos(jnp.arange(leaf.size, dtype=leaf.dtype)
                                                   ).reshape(leaf.shape)) for leaf in leaves)
    return loss


@pytest.mark.parametrize("name", ["transformer_encoder_erf", "transformer_encoder_tanh", "cnn",
                                  "gpt_block", "lstm", "mlp_mixer"])
def test_grad_matches_jax_jit(name):
    m = model(name)
    argnums = _float_argnums(m.args)
    assert argnums
    expected = jax.grad(_scalar_loss(m.reference), argnums=argnums)(*m.args)
    actual = jax.grad(_scalar_loss(m.fused), argnums=argnums)(*m.args)
    assert_trees_match(actual, expected, rtol=GRAD_RTOL, atol=GRAD_ATOL, what=f"grad {name}")
    assert any(np.abs(np.asarray(g)).max() > 1e-3 for g in jax.tree_util.tree_leaves(expected))


# --------------------------------------------------------------------------------------------
# (f) vmap over a batch of inputs
# --------------------------------------------------------------------------------------------

def _batched(x, scales=(1.0, 0.5, -1.5)):
    return jnp.stack([x * s for s in scales])


VMAP_CASES = {
    # model → (index of the batched argument, how to build its batch)
    "transformer_encoder_erf": (0, _batched),
    "cnn": (1, _batched),
    "lstm": (1, _batched),
    "mini_bert": (1, lambda ids: jnp.stack([ids, (ids + 3) % 50, ids[:, ::-1]])),
    "moe_router": (0, _batched),
}


@pytest.mark.parametrize("name", sorted(VMAP_CASES))
def test_vmap_matches_jax_jit(name):
    m = model(name)
    position, make_batch = VMAP_CASES[name]
    args = list(m.args)
    args[position] = make_batch(args[position])
    in_axes = tuple(0 if i == position else None for i in range(len(args)))
    expected = jax.vmap(m.reference, in_axes=in_axes)(*args)
    actual = jax.vmap(m.fused, in_axes=in_axes)(*args)
    assert_trees_match(actual, expected, what=f"vmap {name}")
    # and each batch element is what one unbatched call gives
    single = m.fused(*[a[1] if i == position else a for i, a in enumerate(args)])
    assert_trees_match(jax.tree_util.tree_map(lambda t: t[1], actual), single,
                       what=f"vmap {name} element 1")


# --------------------------------------------------------------------------------------------
# (g) user-defined derivative rules survive dnnfusion.jit (last, so that ``-x`` runs the rest)
# --------------------------------------------------------------------------------------------

def test_grad_respects_custom_derivatives_and_stop_gradient():
    """custom_vjp (gradient clipping), custom_jvp (safe norm) and stop_gradient (a
    straight-through estimator) define the derivative; the fused function must keep them."""
    m = model("transforms")
    argnums = _float_argnums(m.args)
    expected = jax.grad(_scalar_loss(m.reference), argnums=argnums)(*m.args)
    actual = jax.grad(_scalar_loss(m.fused), argnums=argnums)(*m.args)
    assert_trees_match(actual, expected, rtol=GRAD_RTOL, atol=GRAD_ATOL, what="grad transforms")


def _grads(f, *args):
    return jax.grad(jax.jit(f))(*args), jax.grad(dnnfusion.jit(f, fallback=False))(*args)


def test_grad_keeps_stop_gradient():
    # straight-through estimator: d/dx [x + stop_gradient(round(x) - x)] = 1
    expected, actual = _grads(lambda x: jnp.sum(x + jax.lax.stop_gradient(jnp.round(x) - x)),
                              jnp.array([0.3, 1.7, -2.2]))
    np.testing.assert_allclose(np.asarray(expected), [1.0, 1.0, 1.0])
    assert_trees_match(actual, expected, what="grad through stop_gradient")


def test_grad_keeps_custom_vjp():
    expected, actual = _grads(lambda x: jnp.sum(3.0 * zoo.clip_gradient(x, 0.1)), jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(np.asarray(expected), [0.1, 0.1])
    assert_trees_match(actual, expected, what="grad through custom_vjp")


@pytest.mark.parametrize("case", ["safe_norm", "relu"])
def test_grad_keeps_custom_jvp(case):
    f = {"safe_norm": lambda x: jnp.sum(zoo.safe_norm(x)),        # custom rule: 0 at the origin
         "relu": lambda x: jnp.sum(jax.nn.relu(x))}[case]          # jax.nn.relu: 0 at x == 0
    expected, actual = _grads(f, jnp.zeros((2, 3)))
    np.testing.assert_array_equal(np.asarray(expected), np.zeros((2, 3)))
    assert_trees_match(actual, expected, what=f"grad through custom_jvp {case}")
