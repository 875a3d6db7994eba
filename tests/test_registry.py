"""The registry of primitives (``dnnfusion_jax/ops/registry.py``): every row is consistent with
the stages that read it, and the elementwise primitives it gives a kernel IR operation run in
fused C and Pallas kernels (interpret mode on CPU) as ``jax.jit`` runs them."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import dnnfusion_jax as dnnfusion
from codegen.c.spelling import spell
from codegen.kernel.expressions import ELEMENTWISE_LOWERING
from codegen.kernel.kernel_ir import Expr
from codegen.kernel.lowering import LOWERABLE
from codegen.pallas.spelling import PALLAS_OPS
from conftest import assert_tree_allclose
from dnnfusion_jax import rules_api
from dnnfusion_jax.ops import registry
from dnnfusion_jax.ops.mapping_types import ELEMENTWISE_PRIMITIVES, PRIMITIVE_MAPPING_TYPES
from dnnfusion_jax.ops.registry import PRIMITIVES, MappingType, lookup, names
from dnnfusion_jax.rewrite import egraph_translate
from dnnfusion_jax.rewrite.egraph_extract import TRANSCENDENTAL_WEIGHT, ENode, node_cost

KERNEL_ROWS = sorted(name for name, row in PRIMITIVES.items() if row.kernel)
NEW_UNARY = "sinh cosh asinh acosh atanh asin acos atan erf_inv is_finite".split()
OLD_UNARY = "logistic tanh exp log1p erf rsqrt sign".split()
EXPONENTS = (-3, -1, 0, 1, 2, 5, 17, 64)

# ±inf, NaN, ±0, the domain edges (acosh below 1, atanh and erf_inv at and past ±1, asin
# outside [-1, 1]), tiny and huge values, then a sweep
EDGES = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1.0, -1.0, 0.999, -0.999, 1.0000001, -1.0000001,
         0.5, -0.5, 2.0, -2.0, 1e-30, -1e-30, 1e-38, 88.0, 89.5, -89.5, 1e20, -3e38]


def _inputs(rows: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    sweep = np.concatenate([np.linspace(-3.0, 3.0, 256), np.linspace(-1.1, 1.1, 256),
                            rng.standard_normal(rows * 128) * 10.0])
    return np.concatenate([EDGES, sweep])[:rows * 128].astype(np.float32).reshape(rows, 128)


def _check_fused(fn, args, backend: str) -> None:
    """``fn`` runs as one fused kernel of ``backend`` and agrees with ``jax.jit``."""
    fused = dnnfusion.jit(fn, backend=backend)
    assert_tree_allclose(fused(*args), jax.jit(fn)(*args))
    summary = fused.explain(*args).summary()
    assert summary["fallback_blocks"] == [], summary["fallback_blocks"]
    assert summary["blocks"] == 1 and summary["fused_kernels"] == 1, summary


# ----------------------------------------------------------------------------- numbers

@pytest.mark.parametrize("backend", ["c", "pallas"])
@pytest.mark.parametrize("name", NEW_UNARY + OLD_UNARY)
def test_unary_primitive_runs_fused_as_jax_jit(name, backend):
    _check_fused(getattr(lax, name), (_inputs(),), backend)


@pytest.mark.parametrize("backend", ["c", "pallas"])
def test_nextafter_runs_fused_as_jax_jit(backend):
    x = _inputs()
    y = np.concatenate([np.roll(x[:4], 3), np.full((4, 128), np.inf, np.float32)])
    y[0, :8] = [np.nan, 0.0, -0.0, -np.inf, 1.0, -1.0, 0.0, 1e-30]
    _check_fused(lax.nextafter, (x, y), backend)


@pytest.mark.parametrize("backend", ["c", "pallas"])
@pytest.mark.parametrize("y", EXPONENTS)
def test_integer_pow_of_any_exponent_runs_fused_as_jax_jit(y, backend):
    x = _inputs() / 8.0  # |x|**64 stays finite for most values, overflows for the rest
    _check_fused(lambda v: lax.integer_pow(v, y), (x,), backend)


@pytest.mark.parametrize("backend", ["c", "pallas"])
def test_new_primitives_fuse_with_their_neighbours(backend):
    """One kernel for a chain that mixes old and new rows (the planner treats them alike)."""
    def chain(x, y):
        t = jnp.tanh(x)
        return lax.erf_inv(t * 0.5) + lax.atan(jnp.sinh(y) * 2.0) - lax.integer_pow(t, -3)

    x = _inputs()
    _check_fused(chain, (x, np.roll(x, 5, axis=1)), backend)


def test_the_lowering_refused_these_before_the_rows():
    """The rows for sinh ... nextafter are what made them lowerable (their kernel column)."""
    for name in NEW_UNARY + ["nextafter"]:
        assert ELEMENTWISE_LOWERING[name] == name and name in LOWERABLE


# ----------------------------------------------------------------------------- consistency

@pytest.mark.parametrize("name", KERNEL_ROWS)
def test_every_kernel_operation_has_a_spelling_in_both_renderers(name):
    row = PRIMITIVES[name]
    for dtype in ("f32", "f64"):
        operands = tuple(Expr("load", (), dtype) for _ in range(row.operands))
        text = spell(Expr(row.kernel, operands, dtype), ["a", "b"][:row.operands])
        assert "a" in text, text
    assert row.kernel in PALLAS_OPS
    assert PALLAS_OPS[row.kernel].count("{") == row.operands


def test_renderer_tables_name_no_operation_the_lowering_cannot_produce():
    """Every Pallas spelling is a kernel IR operation: a registry row's, or one the lowering
    builds itself (select, conversions, rounding)."""
    produced = {row.kernel for row in PRIMITIVES.values() if row.kernel}
    own = {"select", "round_even", "round_away"}
    assert set(PALLAS_OPS) <= produced | own, sorted(set(PALLAS_OPS) - produced - own)


def test_mapping_types_table_is_the_registry_column():
    assert PRIMITIVE_MAPPING_TYPES == {name: row.mapping for name, row in PRIMITIVES.items()}
    assert ELEMENTWISE_PRIMITIVES == set(names(refine=registry.BROADCASTING))
    assert lookup("broadcast_in_dim").refine == registry.UNIT_DIMS
    assert lookup("no_such_primitive").mapping is MappingType.OPAQUE


def test_rows_use_known_kinds():
    terms = {None, "un", "bin", "ipow", "reduce", "dot", "conv", "transpose", "reshape", "bcast"}
    flops = {registry.NO_FLOPS, registry.PER_OUTPUT, registry.PER_INPUT, registry.DOT,
             registry.CONV, registry.WINDOW}
    for row in PRIMITIVES.values():
        assert row.term in terms and row.flops in flops, row
        assert set(row.facts) <= registry.FACTS, row
        assert row.kernel is None or row.refine == registry.BROADCASTING, row
        assert row.rule is None or row.term == "un", row
        assert row.term not in ("un", "bin") or row.operands == (2 if row.term == "bin" else 1)


def test_e_graph_terms_and_rule_builders_come_from_the_registry():
    assert egraph_translate.UNARY == set(names(term="un"))
    assert egraph_translate.BINARY == set(names(term="bin"))
    assert set(rules_api.BINARY_OPS) == set(names(term="bin"))
    for row in PRIMITIVES.values():
        if row.rule:  # importable by name, as rule files do
            assert row.rule in rules_api.__all__
            assert str(getattr(rules_api, row.rule)(rules_api.V("a"))) == f"{row.name}(a)"
    from dnnfusion_jax.rules_api import abs_, exp, log, logistic, sqrt, square
    assert [str(f(rules_api.V("x"))) for f in (abs_, exp, log, logistic, sqrt, square)] == [
        "abs(x)", "exp(x)", "log(x)", "logistic(x)", "sqrt(x)", "square(x)"]


def test_one_set_of_transcendental_weights():
    """Extraction, the cost model and row caching read the one ``cost`` column."""
    ten = ((10,), "float32")
    cost = {op: node_cost(ENode("un", op, (0,)), ten, [ten]) for op in ("exp", "neg", "sqrt")}
    assert cost["exp"] == cost["sqrt"] == 1 + 10 * TRANSCENDENTAL_WEIGHT
    assert cost["neg"] == 1 + 10
    transcendental = {name for name, row in PRIMITIVES.items() if row.transcendental}
    assert {"exp", "logistic", "erf_inv", "sqrt", "rsqrt", "sinh"} <= transcendental
    assert not {"div", "add", "neg", "square", "integer_pow"} & transcendental
    assert all(row.cost == 0 for name, row in PRIMITIVES.items()
               if name in ("reshape", "transpose", "broadcast_in_dim", "convert_element_type"))
