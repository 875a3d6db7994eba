"""The DNNFusion planner: kernel counts first, then numbers against jax.jit, and the profiling
database behind YELLOW decisions."""
import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from dnnfusion_jax.fusion.dnnfusion_planner import DnnFusionPlanner
from dnnfusion_jax.fusion.legality import Constraints
from dnnfusion_jax.fusion.profitability import MeasuredProfitability, ProfilingDatabase
from dnnfusion_jax.frontend.simplify import simplify
from dnnfusion_jax.frontend.trace import trace_function
from codegen.kernel import kernel_blocks
from codegen.c.backend import CBackend
from examples.norms import group_norm, layer_norm, rms_norm


RNG = np.random.default_rng(0)
X = RNG.standard_normal((32, 64)).astype(np.float32)
NORMS = {
    "softmax": (jax.nn.softmax, (X,)),
    "layer_norm": (layer_norm, (X, RNG.standard_normal(64).astype(np.float32),
                                RNG.standard_normal(64).astype(np.float32))),
    "rms_norm": (rms_norm, (X, RNG.standard_normal(64).astype(np.float32))),
    "group_norm": (functools.partial(group_norm, groups=4), (RNG.standard_normal((2, 4, 4, 16)).astype(np.float32),)),
}


@pytest.mark.parametrize("name", NORMS)
def test_normalisations_are_one_c_kernel(name):
    fn, args = NORMS[name]
    fused = dnnfusion.jit(fn, backend="c", fallback=False)
    summary = fused.explain(*args).summary()
    assert summary["blocks"] == 1 and summary["fallback_blocks"] == []
    np.testing.assert_allclose(fused(*args), jax.jit(fn)(*args), rtol=1e-5, atol=1e-5)


@pytest.fixture
def gemms_to_xla(monkeypatch):
    """Every GEMM left to XLA by the C backend, as GEMMs above ``C_GEMM_FLOPS`` are."""
    monkeypatch.setattr(kernel_blocks, "C_GEMM_FLOPS", 0)


def test_gemm_stays_alone_for_the_c_backend_and_its_epilogue_is_one_kernel(gemms_to_xla):
    fn = lambda x, w, b: jax.nn.gelu(x @ w + b)  # noqa: E731
    args = (X, RNG.standard_normal((64, 16)).astype(np.float32),
            RNG.standard_normal(16).astype(np.float32))
    fused = dnnfusion.jit(fn, backend="c", fallback=False)
    report = fused.explain(*args)
    assert [b.ops[0] for b in report.plan.blocks][0] == "dot_general"
    assert report.summary()["blocks"] == 2
    reasons = [f["reason"] for f in report.summary()["fallback_blocks"]]
    assert len(reasons) == 1 and "GEMM" in reasons[0]
    np.testing.assert_allclose(fused(*args), jax.jit(fn)(*args), rtol=1e-5, atol=1e-5)


def test_measured_yellow_decisions_are_kept_and_reused(tmp_path):
    graph = trace_function(jax.nn.softmax, [jnp.ones((64, 256))]).graph
    database = ProfilingDatabase(tmp_path / "profile.json")
    profits = []

    def measured(g):
        profits.append(MeasuredProfitability(g, CBackend(cache_dir=tmp_path), database))
        return profits[-1]

    planner = DnnFusionPlanner(fusible=CBackend().fusible, profitability=measured)
    first = planner.plan(graph)
    assert profits[0].measured > 0 and int(first.notes["yellow_fused"]) > 0
    assert len(ProfilingDatabase(tmp_path / "profile.json").entries) == profits[0].measured
    second = planner.plan(graph)  # same shapes: every latency comes from the database
    assert profits[1].measured == 0
    assert [b.ops for b in second.blocks] == [b.ops for b in first.blocks]


# Sibling producer blocks merge with their common consumer (legal, acyclic, within constraints).

def c_plan(fn, *args, **planner_options):
    """The plan for the C backend, of the graph as the pipeline plans it (simplified)."""
    graph, _ = simplify(trace_function(fn, [jnp.asarray(a) for a in args]).graph)
    return DnnFusionPlanner(fusible=CBackend().fusible, **planner_options).plan(graph)


def gelu_exact(x):
    return jax.nn.gelu(x, approximate=False)


def test_gelu_exact_merges_its_two_branches_into_one_c_kernel():
    # 0.5 * x and erfc(-x / sqrt 2) start as two blocks; their product merges them.
    fused = dnnfusion.jit(gelu_exact, backend="c", fallback=False)
    summary = fused.explain(X).summary()
    assert summary["blocks"] == 1 and summary["fallback_blocks"] == []
    np.testing.assert_allclose(fused(X), jax.jit(gelu_exact)(X), rtol=1e-5, atol=1e-5)


W = RNG.standard_normal((64, 64)).astype(np.float32)


def test_small_gemm_joins_its_prologue_and_epilogue_in_one_c_kernel():
    """A narrow GEMM (4 rows) under ``C_GEMM_FLOPS`` is a reduce stage of the kernel."""
    fn = lambda x, w, b: jax.nn.gelu((x * 2.0) @ w + b)  # noqa: E731
    args = (X[:4], RNG.standard_normal((64, 16)).astype(np.float32),
            RNG.standard_normal(16).astype(np.float32))
    fused = dnnfusion.jit(fn, backend="c", fallback=False)
    summary = fused.explain(*args).summary()
    assert summary["blocks"] == 1 and summary["fallback_blocks"] == []
    np.testing.assert_allclose(fused(*args), jax.jit(fn)(*args), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("epilogue", ["none", "exp"])
def test_a_diamond_through_a_gemm_is_not_merged_into_a_cycle(epilogue, gemms_to_xla):
    # a → dot → (exp) → c and a → c: a's block and c's block merged would be a cycle.
    def diamond(x, w):
        a = x * 2.0
        b = a @ w
        return a + (jnp.exp(b) if epilogue == "exp" else b)

    plan = c_plan(diamond, X, W)
    ops = [b.ops for b in plan.blocks]
    expected = [["mul"], ["dot_general"], ["add"]] if epilogue == "none" else \
        [["mul"], ["dot_general"], ["exp", "add"]]
    assert ops == expected
    fused = dnnfusion.jit(diamond, backend="c", fallback=False)
    assert fused.explain(X, W).summary()["blocks"] == 3
    np.testing.assert_allclose(fused(X, W), jax.jit(diamond)(X, W), rtol=1e-5, atol=1e-5)


def test_sibling_gemm_blocks_do_not_merge_many_to_many_with_many_to_many():
    # Each dot may take the add as an epilogue (Many-to-Many → One-to-One is GREEN), but the
    # grown block would hold two GEMMs: Table 3's Many-to-Many → Many-to-Many is RED.
    graph = trace_function(lambda x, u, v: x @ u + x @ v, [X, W, W]).graph
    plan = DnnFusionPlanner().plan(graph)  # no backend: GEMMs may fuse
    assert sorted(b.ops for b in plan.blocks) == [["dot_general"], ["dot_general", "add"]]


def test_sibling_merges_respect_the_node_limit():
    # gelu exact: [mul] takes the final mul, then [neg, mul, erfc] merges: 5 nodes in all.
    assert len(c_plan(gelu_exact, X, constraints=Constraints(max_nodes=5)).blocks) == 1
    plan = c_plan(gelu_exact, X, constraints=Constraints(max_nodes=4))
    assert sorted(b.ops for b in plan.blocks) == [["mul", "mul"], ["neg", "mul", "erfc"]]


def test_sibling_merges_respect_the_input_limit():
    def sum_of_products(*xs):  # exp(x1 * y1) + exp(x2 * y2) + exp(x3 * y3)
        terms = [jnp.exp(x * y) for x, y in zip(xs[::2], xs[1::2])]
        return terms[0] + terms[1] + terms[2]

    xs = [RNG.standard_normal((8, 8)).astype(np.float32) for _ in range(6)]
    assert len(c_plan(sum_of_products, *xs).blocks) == 1
    # The first add may join exp(x1 * y1)'s block (3 inputs), but merging exp(x2 * y2)'s block
    # as well would read 4; the second add likewise continues in exp(x3 * y3)'s block.
    plan = c_plan(sum_of_products, *xs, constraints=Constraints(max_inputs=3))
    assert sorted(len(b.inputs) for b in plan.blocks) == [2, 3, 3]
    fused = dnnfusion.jit(sum_of_products, backend="c", fallback=False)
    np.testing.assert_allclose(fused(*xs), jax.jit(sum_of_products)(*xs), rtol=1e-5, atol=1e-5)


def test_an_adapter_read_only_by_dead_code_is_not_copied():
    """With rewriting off dead code stays; a broadcast of an input read by two dead broadcasts
    gets no per-consumer copies, which would be blocks of their own (found by the differential
    campaign: 5 blocks for 4 operations, one more than the unfused plan)."""
    def fn(x0, x1):
        v2 = lax.broadcast_in_dim(x1, (2, 1, 2, 2), (1, 2, 3))
        jnp.broadcast_to(v2, (2, 2, 2, 2))  # dead
        jnp.broadcast_to(v2, (2, 2, 2, 2))  # dead
        return lax.broadcast_in_dim(x1, (2, 1, 2, 2), (1, 2, 3)), x0
    args = [np.ones((1, 2, 2), np.float32)] * 2
    blocks = {planner: dnnfusion.explain(dnnfusion.jit(fn, planner=planner, rewrite=False),
                                         *args).summary()["blocks"]
              for planner in ("dnnfusion", "none")}
    assert blocks["dnnfusion"] <= blocks["none"] == 4, blocks


def test_a_multi_output_operation_is_planned():
    """``split`` has several results: the planner's per-node questions must not assume one."""
    def fn(x):
        first, second = jnp.split(jnp.tanh(x), [3])
        return first * 2.0, second + 1.0
    x = np.linspace(-1.0, 1.0, 8, dtype=np.float32)
    for rewrite in (True, False):
        got = dnnfusion.jit(fn, fallback=False, rewrite=rewrite)(x)
        for g, w in zip(got, jax.jit(fn)(x)):
            np.testing.assert_allclose(g, w, rtol=1e-6)
