"""Fusion blocks: the greedy planner follows Table 3's green cells and never creates cycles."""
import jax
import jax.numpy as jnp
import pytest
from jax import lax

from dnnfusion_jax.fusion.greedy_planner import GreedyPlanner
from dnnfusion_jax.fusion.plan import FusionPlan
from dnnfusion_jax.frontend.simplify import simplify
from dnnfusion_jax.frontend.trace import trace_function
from dnnfusion_jax.fusion.unfused_planner import UnfusedPlanner

X = jnp.ones((8, 16), jnp.float32)
W = jnp.ones((16, 16), jnp.float32)


def plan_of(fn, *args) -> FusionPlan:
    graph, _ = simplify(trace_function(fn, args).graph)
    return GreedyPlanner().plan(graph)


def check_well_formed(plan: FusionPlan) -> None:
    """Every node in exactly one block; blocks in an order where inputs exist before use."""
    nodes = [n for block in plan.blocks for n in block.nodes]
    assert sorted(map(id, nodes)) == sorted(map(id, plan.graph.nodes))
    available = set(plan.graph.inputs) | set(plan.graph.constants)
    for block in plan.blocks:
        assert set(block.inputs) <= available, f"{block} runs before its inputs exist"
        available |= set(block.outputs)
    assert set(plan.graph.outputs) <= available


def test_elementwise_chain_is_one_one_to_one_block():
    plan = plan_of(lambda x: jnp.tanh(jnp.exp(x) * 2.0 - 1.0), X)
    assert [b.mapping_type.label for b in plan.blocks] == ["One-to-One"]
    check_well_formed(plan)


def test_dense_layer_with_bias_and_gelu_is_one_many_to_many_block():
    plan = plan_of(lambda x, w, b: jax.nn.gelu(x @ w + b), X, W, X)
    assert len(plan.blocks) == 1 and plan.blocks[0].mapping_type.label == "Many-to-Many"
    assert plan.blocks[0].ops[0] == "dot_general"


def test_broadcast_bias_add_joins_the_matmul_block():
    # the add broadcasts the bias (One-to-Many along that edge) but reads x @ w one to one
    plan = plan_of(lambda x, w, b: jnp.tanh(x @ w + b), X, W, jnp.ones(16))
    matmul_block = next(b for b in plan.blocks if "dot_general" in b.ops)
    assert matmul_block.ops[-2:] == ["add", "tanh"]
    assert matmul_block.mapping_type.label == "Many-to-Many"


def test_a_node_that_reads_its_producer_broadcast_does_not_join_a_heavy_block():
    # (x @ w)[:, :1] broadcast against x @ w: the add reads the slice's block One-to-Many
    plan = plan_of(lambda x, w: jnp.sum(x @ w, axis=1, keepdims=True) * 2.0 + x, X, W)
    reduce_block = next(b for b in plan.blocks if "reduce_sum" in b.ops)
    assert "add" not in reduce_block.ops


def test_two_many_to_many_ops_never_share_a_block():
    plan = plan_of(lambda x, w: (x @ w) @ w, X, W)
    assert len(plan.blocks) == 2
    plan = plan_of(lambda x: jnp.sum(x @ x.T), X)
    assert all(sum(op in ("dot_general", "reduce_sum") for op in b.ops) <= 1 for b in plan.blocks)


def test_opaque_nodes_stand_alone():
    fn = lambda x: jnp.sort(jnp.exp(x), axis=1) + 1.0  # noqa: E731
    plan = plan_of(fn, X)
    sort_blocks = [b for b in plan.blocks if "sort" in b.ops]
    assert len(sort_blocks) == 1 and sort_blocks[0].ops == ["sort"]
    assert sort_blocks[0].mapping_type.label == "Opaque"
    check_well_formed(plan)


def test_join_that_would_create_a_cycle_is_refused():
    # a → heavy (separate block) → c, and c also reads a: c may not join a's block.
    def fn(x, w):
        a = jnp.exp(x)
        heavy = a @ w          # Many-to-Many: One-to-One → Many-to-Many would be green ...
        b = jnp.sort(heavy)    # ... but an Opaque sort breaks the chain
        return a * b
    plan = plan_of(fn, X, W)
    check_well_formed(plan)
    block_of = {id(n): b.id for b in plan.blocks for n in b.nodes}
    ops = {n.op: n for n in plan.graph.nodes}
    assert block_of[id(ops["mul"])] != block_of[id(ops["exp"])]


@pytest.mark.parametrize("fn", [
    lambda x: jax.nn.softmax(x, axis=-1),
    lambda x: (x - x.mean(1, keepdims=True)) / jnp.sqrt(x.var(1, keepdims=True) + 1e-5),
    lambda x: jnp.concatenate([jnp.exp(x[:, :8]), x[:, 8:].T.reshape(8, 8)], 1),
    lambda x: lax.reduce_window(jnp.tanh(x), -jnp.inf, lax.max, (2, 2), (2, 2), "VALID") * 2,
])
def test_plans_are_well_formed_and_not_larger_than_unfused(fn):
    graph, _ = simplify(trace_function(fn, (X,)).graph)
    plan = GreedyPlanner().plan(graph)
    check_well_formed(plan)
    assert len(plan.blocks) <= len(UnfusedPlanner().plan(graph).blocks)


def test_block_outputs_are_only_what_others_read():
    plan = plan_of(lambda x: jnp.exp(jnp.sin(x) * 2.0), X)
    (block,) = plan.blocks
    assert block.outputs == tuple(plan.graph.outputs)
    assert plan.intermediate_bytes() == 0


def test_effects_keep_program_order():
    def fn(x):
        jax.debug.print("first {}", x[0, 0])
        y = jnp.exp(x)
        jax.debug.print("second {}", y.sum())
        return y
    plan = plan_of(fn, X)
    prints = [b.id for b in plan.blocks if b.ops == ["debug_print"]]
    assert len(prints) == 2 and prints == sorted(prints)
    assert plan.blocks[prints[0]].nodes[0].params["fmt"].startswith("first")
