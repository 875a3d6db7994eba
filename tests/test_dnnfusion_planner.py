"""The DNNFusion planner: kernel counts first, then numbers against jax.jit, and the profiling
database behind YELLOW decisions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from dnnfusion_jax.dnnfusion_planner import DnnFusionPlanner
from dnnfusion_jax.profitability import MeasuredProfitability, ProfilingDatabase
from dnnfusion_jax.trace import trace_function
from codegen.c_backend import CBackend


def layer_norm(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) * jax.lax.rsqrt(v + 1e-5) * g + b


def rms_norm(x, g):
    return x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + 1e-6) * g


def group_norm(x):
    n, h, w, c = x.shape
    xr = x.reshape(n, h, w, 4, c // 4)
    m = xr.mean((1, 2, 4), keepdims=True)
    v = ((xr - m) ** 2).mean((1, 2, 4), keepdims=True)
    return ((xr - m) * jax.lax.rsqrt(v + 1e-5)).reshape(x.shape)


RNG = np.random.default_rng(0)
X = RNG.standard_normal((32, 64)).astype(np.float32)
NORMS = {
    "softmax": (jax.nn.softmax, (X,)),
    "layer_norm": (layer_norm, (X, RNG.standard_normal(64).astype(np.float32),
                                RNG.standard_normal(64).astype(np.float32))),
    "rms_norm": (rms_norm, (X, RNG.standard_normal(64).astype(np.float32))),
    "group_norm": (group_norm, (RNG.standard_normal((2, 4, 4, 16)).astype(np.float32),)),
}


@pytest.mark.parametrize("name", NORMS)
def test_normalisations_are_one_c_kernel(name):
    fn, args = NORMS[name]
    fused = dnnfusion.jit(fn, backend="c", fallback=False)
    summary = fused.explain(*args).summary()
    assert summary["blocks"] == 1 and summary["fallback_blocks"] == []
    np.testing.assert_allclose(fused(*args), jax.jit(fn)(*args), rtol=1e-5, atol=1e-5)


def test_gemm_stays_alone_for_the_c_backend_and_its_epilogue_is_one_kernel():
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
