"""Matrix-chain order: a chain of 2-D dot_generals evaluated in the cheapest order, found by
dynamic programming over the whole chain, under a guard.

``(A@B)@v`` with A, B n×n and v n×k costs 2n³ + 2n²k FLOPs; ``A@(B@v)`` costs 4n²k (about
60× fewer at n = 1024, k = 16). Reassociation is exact for finite values as long as no
intermediate overflows, and only then: ``(A@B)@v`` with an inf in B can be NaN where
``A@(B@v)`` is inf, or the other way. So the reordered chain runs under ``guarded.py``'s check:
every leaf finite with ``|v| <= bound``, where ``bound`` is small enough that no partial sum of
either order can overflow (each entry of a product of L leaves through inner dimensions
d1..d(L-1) is at most d1·...·d(L-1)·bound^L, kept under half the dtype's maximum). Other
inputs take the original chain and get exactly its result. The check reads each distinct leaf
once; the rewrite is used only where ``algebra_cost.guard_pays`` says the FLOPs saved pay for
it.

A chain is a tree of 2-D dot_generals (one contracting dimension each, no batch dimensions;
a contracting dimension that makes an operand a transpose is a transposed leaf) whose inner
products are read only by the next dot, with one dtype (float32 or float64) and one precision.

Example:
    >>> chain_order([4, 4, 4, 1])[0]    # (A@B)@v = 2·(64 + 16) = 160; A@(B@v) = 2·(16 + 16)
    64
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> n = 256
    >>> args = [jnp.ones((n, n)), jnp.ones((n, n)), jnp.ones((n, 4))]
    >>> g = trace_function(lambda a, b, v: (a @ b) @ v, args).graph
    >>> g2, rewrites = reorder_chains(g)
    >>> [r.rule for r in rewrites], rewrites[0].flops_saved
    (['matrix-chain-order'], 33030144)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from jax import lax

from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.ops.cost import node_flops
from dnnfusion_jax.rewrite.algebra_cost import GuardPays, guard_pays
from dnnfusion_jax.rewrite.guarded import GuardedRewrite, splice_guarded

MATMUL = (((1,), (0,)), ((), ()))


def chain_order(dims: list[int]) -> tuple[int, dict[tuple[int, int], int]]:
    """The cheapest FLOPs of multiplying matrices of shapes (dims[i], dims[i+1]) in a row, and
    the split per sub-chain (i, j) → k: multiply leaves i..k, k+1..j, then the two.

    >>> cost, split = chain_order([10, 100, 5, 50])
    >>> cost, split[(0, 2)]
    (15000, 1)
    """
    n = len(dims) - 1
    best = {(i, i): 0 for i in range(n)}
    split: dict[tuple[int, int], int] = {}
    for length in range(2, n + 1):
        for i in range(n - length + 1):
            j = i + length - 1
            best[(i, j)], split[(i, j)] = min(
                (best[(i, k)] + best[(k + 1, j)] + 2 * dims[i] * dims[k + 1] * dims[j + 1], k)
                for k in range(i, j))
    return best[(0, n - 1)], split


@dataclass(frozen=True)
class _Leaf:
    var: Var
    transposed: bool

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.var.shape
        return (cols, rows) if self.transposed else (rows, cols)


def _matmul_dims(node: Node) -> tuple[bool, bool] | None:
    """(lhs transposed, rhs transposed) of a 2-D dot_general, None if it is not one."""
    if node.op != "dot_general" or node.effects or len(node.inputs) != 2:
        return None
    lhs, rhs = node.inputs
    if lhs.ndim != 2 or rhs.ndim != 2 or lhs.dtype != rhs.dtype:
        return None
    if np.dtype(lhs.dtype) not in (np.dtype("float32"), np.dtype("float64")):
        return None
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    if lb or rb or len(lc) != 1 or len(rc) != 1:
        return None
    return int(lc[0]) == 0, int(rc[0]) == 1


def _key(node: Node) -> tuple:
    """What dots of one chain share (no preferred type means the operands' own)."""
    preferred = node.params.get("preferred_element_type") or node.out.dtype
    return (node.out.dtype, str(node.params.get("precision")), str(np.dtype(preferred)))


def _expand(root: Node, producers: dict[Var, Node], readers: dict[Var, int]
            ) -> tuple[list[_Leaf], list[Node]]:
    """The leaves of the chain under ``root`` in order, and the dots of the chain."""
    nodes = [root]
    lhs_t, rhs_t = _matmul_dims(root)

    def side(var: Var, transposed: bool) -> list[_Leaf]:
        inner = producers.get(var)
        if (not transposed and inner is not None and readers.get(var, 0) == 1
                and _matmul_dims(inner) is not None and _key(inner) == _key(root)):
            leaves, inner_nodes = _expand(inner, producers, readers)
            nodes.extend(inner_nodes)
            return leaves
        return [_Leaf(var, transposed)]

    leaves = side(root.inputs[0], lhs_t) + side(root.inputs[1], rhs_t)
    return leaves, nodes


def _chain_fn(leaves: list[_Leaf], operands: list[Var], split: dict, params: dict):
    """The chain multiplied in ``split``'s order, as a function of the distinct operands."""
    position = {var: i for i, var in enumerate(operands)}

    def fn(*values):
        def product(i: int, j: int):
            if i == j:
                value = values[position[leaves[i].var]]
                return lax.transpose(value, (1, 0)) if leaves[i].transposed else value
            k = split[(i, j)]
            return lax.dot_general(product(i, k), product(k + 1, j), MATMUL,
                                   precision=params.get("precision"),
                                   preferred_element_type=params.get("preferred_element_type"))
        return product(0, len(leaves) - 1)
    return fn


def reorder_chains(graph: Graph, finite_math: bool = False, pays: GuardPays = guard_pays
                   ) -> tuple[Graph, list[GuardedRewrite]]:
    """Every chain of 2-D dots whose best order saves enough FLOPs (``pays``), reordered under
    a guard (none with ``finite_math``); returns the graph and the rewrites."""
    rewrites: list[GuardedRewrite] = []
    # one chain at a time: a splice rebuilds the nodes that read the chain's result
    while (plan := _next_plan(graph, finite_math, pays)) is not None:
        root, leaves, nodes, dims, split, operands, saved = plan
        # every partial sum of every order is at most prod(inner dims) * bound^L
        fmax = float(np.finfo(root.out.dtype).max)
        log_bound = (math.log(fmax / 2) - sum(math.log(d) for d in dims[1:-1])) / len(leaves)
        bound = float(min(math.exp(log_bound), fmax))
        fast = _chain_fn(leaves, operands, split, dict(root.params))
        spliced = splice_guarded(graph, nodes, operands, root.out, fast, bound, finite_math)
        assert spliced is not None, "a chain's leaves are computed before its dots"
        graph, predicate = spliced
        law = f"{_show(leaves, None)} -> {_show(leaves, split)}"
        rewrites.append(GuardedRewrite.made("matrix-chain-order", law, graph, operands, bound,
                                            saved, finite_math, predicate))
    return graph, rewrites


def _next_plan(graph: Graph, finite_math: bool, pays: GuardPays) -> tuple | None:
    """The last chain in the graph whose best order pays, or None."""
    readers = graph.read_counts()
    producers = graph.producers()
    inside: set[int] = set()  # dots already part of a chain found from a later root
    for root in reversed(graph.nodes):
        if id(root) in inside or _matmul_dims(root) is None:
            continue
        leaves, nodes = _expand(root, producers, readers)
        inside.update(map(id, nodes))
        if len(leaves) < 3:
            continue
        dims = [leaves[0].shape[0]] + [leaf.shape[1] for leaf in leaves]
        best, split = chain_order(dims)
        saved = sum(node_flops(n) for n in nodes) - best
        operands = list(dict.fromkeys(leaf.var for leaf in leaves))
        elements = sum(v.size for v in operands)
        itemsize = np.dtype(root.out.dtype).itemsize
        if saved > 0 and (finite_math or pays(saved, elements, itemsize)):
            return root, leaves, nodes, dims, split, operands, saved
    return None


def _show(leaves: list[_Leaf], split: dict | None) -> str:
    """The chain as text: leaves named M1..ML (with .T), grouped by ``split`` (None: flat)."""
    names = [f"M{i + 1}{'.T' if leaf.transposed else ''}" for i, leaf in enumerate(leaves)]
    if split is None:
        return "@".join(names)

    def show(i: int, j: int) -> str:
        if i == j:
            return names[i]
        k = split[(i, j)]
        text = f"{show(i, k)}@{show(k + 1, j)}"
        return text if (i, j) == (0, len(leaves) - 1) else f"({text})"
    return show(0, len(leaves) - 1)
