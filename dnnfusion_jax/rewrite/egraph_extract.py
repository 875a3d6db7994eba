"""Extraction: read the saturated e-graph and pick the cheapest graph under a fusion-aware cost.

``decode`` turns ``EGraph.freeze()`` into plain Python (e-classes numbered 0..n-1, e-nodes as
``ENode`` with parameters decoded, each class's shape and dtype from the analysis).
``node_cost`` is compute plus materialisation: FLOPs (the registry's transcendentals weighted
``TRANSCENDENTAL_WEIGHT``) plus the bytes of outputs that must be written to memory. An
operator whose mapping type fuses with its neighbours by Table 3's green cells (One-to-One,
Reorganize, a broadcast of a parameter) pays no materialisation; Shuffle, Many-to-Many and
opaque operators pay their output bytes, so the extractor prefers graphs that fuse into fewer,
larger blocks.

``extract`` is a DAG-aware greedy extractor over the whole graph and all roots: a class
reachable along several paths is paid once. Each choice keeps a "local" cost (its own node and
the descendants only it can reach) and the set of shared classes below it (as a bit set);
the total is the local cost plus the local costs of the set. A worklist re-evaluates parents
when a class gets cheaper. Walks are iterative: deep graphs cannot overflow the stack.

Example:
    >>> from egglog import EGraph, Vec, i64, set_
    >>> from dnnfusion_jax.rewrite.egraph_terms import Term, shape, dtype, ANALYSIS
    >>> eg = EGraph()
    >>> x = eg.let("x", Term.leaf(0))
    >>> eg.register(set_(shape(x)).to(Vec(i64(4))), set_(dtype(x)).to("float32"))
    >>> y = eg.let("y", Term.un("exp", x))
    >>> _ = eg.run(ANALYSIS.saturate())
    >>> graph = decode(eg.freeze())
    >>> root = graph.lets["y"]
    >>> choice = extract(graph, [root])
    >>> choice[root].kind, graph.types[root]
    ('un', ((4,), 'float32'))
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dnnfusion_jax.ops.registry import lookup

TRANSCENDENTAL_WEIGHT = 4.0
"""Cost of one transcendental (``registry.Primitive.transcendental``) in FLOPs."""
BYTE_WEIGHT = 1.0
"""Cost of one materialised byte in FLOPs (a memory-bound elementwise op costs its bytes)."""
NODE_COST = 1.0
"""A small cost per operator: fewer operators win ties."""



@dataclass(frozen=True)
class ENode:
    """One e-node: ``kind`` as in ``Term``, its decoded parameter, child e-class numbers."""

    kind: str
    param: Any
    children: tuple[int, ...]


@dataclass
class Decoded:
    """The frozen e-graph in plain Python."""

    nodes: list[list[ENode]]                         # per e-class
    types: list[tuple[tuple[int, ...], str] | None]  # per e-class: (shape, dtype) or None
    lets: dict[str, int]                             # let binding name → e-class
    facts: dict[str, set[int]] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return sum(len(n) for n in self.nodes)


def _lit(expr: Any) -> Any:
    """A literal (number, string, bool) or a Vec of literals as a tuple."""
    from egglog.declarations import CallDecl, LitDecl
    if isinstance(expr, LitDecl):
        return expr.value
    if isinstance(expr, CallDecl):
        return tuple(_lit(a.expr) for a in expr.args)
    raise TypeError(f"not a literal: {expr!r}")


def decode(frozen: Any) -> Decoded:
    """Plain-Python view of ``EGraph.freeze()`` (Args lists are flattened into children)."""
    from egglog.declarations import ValueDecl
    decl = frozen.decl
    index: dict[Any, int] = {}
    args_lists: dict[Any, tuple] = {}
    term_classes = []
    for value, (tp, calls) in decl.e_classes.items():
        if tp.ident.name == "Term":
            index[value] = len(term_classes)
            term_classes.append((value, calls))
    # Args lists: cons cells, each in a class of its own (no rule unions them)
    args_decl = {v: calls for v, (tp, calls) in decl.e_classes.items() if tp.ident.name == "Args"}

    def args_of(value: Any) -> tuple:
        items = []
        while True:
            call = args_decl[value][0]
            if call.callable.method_name == "nil":
                return tuple(items)
            head, tail = call.args
            items.append(index[head.expr.value])
            value = tail.expr.value

    nodes: list[list[ENode]] = []
    for value, calls in term_classes:
        enodes = []
        for call in calls:
            kind = call.callable.method_name
            params, children = [], []
            for arg in call.args:
                if isinstance(arg.expr, ValueDecl):
                    if arg.expr.value in index:
                        children.append(index[arg.expr.value])
                    else:  # an Args list
                        if arg.expr.value not in args_lists:
                            args_lists[arg.expr.value] = args_of(arg.expr.value)
                        children.extend(args_lists[arg.expr.value])
                else:
                    params.append(_lit(arg.expr))
            param = params[0] if len(params) == 1 else tuple(params)
            enodes.append(ENode(kind, param, tuple(children)))
        nodes.append(enodes)

    shapes: dict[int, tuple] = {}
    dtypes: dict[int, str] = {}
    facts: dict[str, set[int]] = defaultdict(set)
    for call, value in decl.sets.items():
        name = call.callable.ident.name
        if name in ("shape", "dtype"):
            target = index.get(call.args[0].expr.value)
            if target is not None:
                (shapes if name == "shape" else dtypes)[target] = _lit(value.expr)
    for action in decl.expr_actions:
        call = action.expr
        name = getattr(getattr(call, "callable", None), "ident", None)
        if name is not None and name.name in ("nonneg", "finite", "moderate"):
            target = index.get(call.args[0].expr.value)
            if target is not None:
                facts[name.name].add(target)
    types = [(tuple(shapes[i]), dtypes[i]) if i in shapes and i in dtypes else None
             for i in range(len(nodes))]
    lets = {name.lstrip("$"): index[t.expr.value] for name, t in decl.let_bindings.items()
            if isinstance(t.expr, ValueDecl) and t.expr.value in index}
    return Decoded(nodes, types, lets, dict(facts))


# ----------------------------------------------------------------------------- costs

def _size(shape: tuple) -> int:
    return int(math.prod(shape))


def _bytes(t: tuple) -> int:
    shape, dt = t
    try:
        return _size(shape) * np.dtype(dt).itemsize
    except TypeError:
        return _size(shape) * 4


def node_cost(node: ENode, out: tuple | None, children: list[tuple | None],
              opaque_cost: Any = None) -> float | None:
    """Cost of one e-node given the types of its class and children (None: not costable)."""
    kind = node.kind
    if kind in ("leaf", "scalar"):
        return 0.0
    if kind == "out":
        return 0.0
    if kind == "app":
        return opaque_cost(node, children) if opaque_cost else NODE_COST
    if out is None or any(c is None for c in children):
        return None
    size = _size(out[0])
    if kind in ("un", "bin"):
        return NODE_COST + size * (TRANSCENDENTAL_WEIGHT if lookup(node.param).transcendental
                                   else 1)
    if kind == "ipow":
        return NODE_COST + size * max(1, abs(int(node.param)).bit_length())
    if kind in ("reshape", "bcast"):
        return NODE_COST
    if kind == "transpose":
        return NODE_COST + BYTE_WEIGHT * _bytes(out)
    if kind == "reduce":
        return NODE_COST + _size(children[0][0]) + BYTE_WEIGHT * _bytes(out)
    if kind == "dot":
        from dnnfusion_jax.rewrite.rules_api import parse_dims
        (contract, _), _ = parse_dims(node.param)
        depth = math.prod(children[0][0][d] for d in contract)
        return NODE_COST + 2.0 * size * depth + BYTE_WEIGHT * _bytes(out)
    if kind == "conv":
        from dnnfusion_jax.rewrite.rules_api import CONV_KEYS
        rhs_spec = CONV_KEYS[node.param]["dimension_numbers"].rhs_spec
        kernel = children[1][0]
        depth = kernel[rhs_spec[1]] * math.prod(kernel[d] for d in rhs_spec[2:])
        return NODE_COST + 2.0 * size * depth + BYTE_WEIGHT * _bytes(out)
    raise ValueError(f"unknown e-node kind {kind!r}")


# ----------------------------------------------------------------------------- extraction

def extract(graph: Decoded, roots: list[int], opaque_cost: Any = None) -> dict[int, ENode]:
    """The chosen e-node of every class reachable from ``roots`` (DAG-aware greedy).

    Raises ValueError if some root has no costable e-node.
    """
    n = len(graph.nodes)
    parents: list[list[tuple[int, ENode]]] = [[] for _ in range(n)]
    parent_classes: list[set[int]] = [set() for _ in range(n)]
    for c, enodes in enumerate(graph.nodes):
        for node in enodes:
            for child in set(node.children):
                parents[child].append((c, node))
                parent_classes[child].add(c)
    shared_ids = {c: i for i, c in enumerate(c for c in range(n) if len(parent_classes[c]) > 1)}
    shared_local = np.zeros(max(len(shared_ids), 1))
    nbytes = (len(shared_ids) + 7) // 8

    def weighted(bits: int) -> float:
        if not bits:
            return 0.0
        mask = np.unpackbits(np.frombuffer(bits.to_bytes(nbytes, "little"), np.uint8),
                             bitorder="little")[:len(shared_ids)]
        return float(np.dot(mask, shared_local[:len(mask)]))

    best_total = [math.inf] * n
    best_local = [0.0] * n
    best_bits = [0] * n
    choice: dict[int, ENode] = {}
    own_cost: dict[tuple[int, ENode], float | None] = {}

    def evaluate(c: int, node: ENode) -> tuple[float, float, int] | None:
        key = (c, node)
        if key not in own_cost:
            own_cost[key] = node_cost(node, graph.types[c], [graph.types[k] for k in node.children],
                                      opaque_cost)
        own = own_cost[key]
        if own is None:
            return None
        local, bits = own, 0
        for child in set(node.children):
            if best_total[child] == math.inf or child == c:
                return None
            bits |= best_bits[child]
            if child in shared_ids:
                bits |= 1 << shared_ids[child]
            else:
                local += best_local[child]
        if c in shared_ids and bits >> shared_ids[c] & 1:
            return None  # the class would depend on itself
        return local + weighted(bits), local, bits

    queue = [(c, node) for c, enodes in enumerate(graph.nodes) for node in enodes
             if not node.children]
    rounds = 0
    while queue and rounds < 50 * (n + 1):
        next_queue: dict[tuple[int, ENode], None] = {}
        for c, node in queue:
            rounds += 1
            result = evaluate(c, node)
            if result is None:
                continue
            total, local, bits = result
            if total < best_total[c] - 1e-9 * max(1.0, abs(total)):
                best_total[c], best_local[c], best_bits[c] = total, local, bits
                choice[c] = node
                if c in shared_ids:
                    shared_local[shared_ids[c]] = local
                for parent in parents[c]:
                    next_queue[parent] = None
        queue = list(next_queue)
    missing = [r for r in roots if r not in choice]
    if missing:
        raise ValueError(f"no costable term for e-classes {missing[:5]}")
    reachable: dict[int, ENode] = {}
    stack = list(roots)
    while stack:
        c = stack.pop()
        if c in reachable:
            continue
        reachable[c] = choice[c]
        stack.extend(choice[c].children)
    return reachable


def dag_cost(graph: Decoded, chosen: dict[int, ENode], opaque_cost: Any = None) -> float:
    """Total cost of a chosen DAG (each class paid once)."""
    return sum(node_cost(node, graph.types[c], [graph.types[k] for k in node.children],
                         opaque_cost) or 0.0 for c, node in chosen.items())
