"""explain(): the summary's keys and figures, the text table and the DOT picture."""
import jax
import jax.numpy as jnp

import dnnfusion_jax as dnnfusion
from dnnfusion_jax.options import make_options
from dnnfusion_jax.report import SUMMARY_KEYS

X = jnp.ones((8, 16), jnp.float32)
W = jnp.ones((16, 32), jnp.float32)


def mlp(x, w):
    h = jax.nn.gelu(x @ w)
    return jax.nn.softmax(h, axis=-1), jnp.sort(h, axis=-1)


def test_summary_has_every_key_with_sane_values():
    s = dnnfusion.explain(mlp, X, W).summary()
    assert set(SUMMARY_KEYS) <= set(s)
    assert s["jaxpr_ops"] >= s["ops_after_rewrite"] >= s["blocks"] >= 1
    assert s["flops_before"] >= 2 * 8 * 16 * 32 and s["flops_after"] <= s["flops_before"]
    assert s["opaque_primitives"] == ["sort"]
    assert sum(s["block_types"].values()) == s["blocks"] and s["block_types"]["Opaque"] == 1
    assert s["backend"] == make_options().resolved_backend() and isinstance(s["rules_fired"], dict)
    assert s["intermediate_bytes"] > 0


def test_flops_count_matmul_exactly():
    s = dnnfusion.explain(lambda x, w: x @ w, X, W).summary()
    assert s["flops_before"] == 2 * 8 * 16 * 32
    assert s["blocks"] == 1 and s["intermediate_bytes"] == 0


def test_rules_fired_are_counted():
    s = dnnfusion.explain(lambda x: jnp.exp(x) * jnp.exp(x), X).summary()
    # CSE first; then the e-graph matches exp(a)*exp(a) -> exp(a+a), which costs the same,
    # so extraction keeps two operators either way
    assert s["rules_fired"]["cse"] == 1 and s["rules_fired"]["exp-mul"] >= 1
    assert s["ops_after_rewrite"] == 2 and s["saturation_stop"] == "saturated"


def test_explain_accepts_shape_dtype_structs_and_jitted_functions():
    spec = jax.ShapeDtypeStruct((8, 16), jnp.float32)
    fused = dnnfusion.jit(mlp, planner="none")
    s = fused.explain(spec, jax.ShapeDtypeStruct((16, 32), jnp.float32)).summary()
    assert s["blocks"] == s["ops_after_rewrite"]
    assert dnnfusion.explain(fused, X, W).summary()["planner"] == "none"


def test_text_table_lists_every_block():
    report = dnnfusion.explain(mlp, X, W)
    text = str(report)
    assert "unknown primitives (opaque): sort" in text
    assert "1 block: primitive sort is unknown to dnnfusion (opaque)" in text
    assert "fell back" not in text and "left to XLA: primitive sort" not in text
    assert "left to XLA: primitive sort" in report.format(verbose=True)
    assert sum(1 for line in text.splitlines() if line.strip()[:1].isdigit()) == report.summary()["blocks"]


def test_dot_has_a_cluster_per_block_and_every_edge():
    report = dnnfusion.explain(mlp, X, W)
    dot = report.to_dot()
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert dot.count("subgraph cluster_") == report.summary()["blocks"]
    assert "Many-to-Many" in dot and "Opaque" in dot
    assert dot.count("->") >= report.summary()["ops_after_rewrite"]
