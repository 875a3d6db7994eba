"""Cheap graph clean-up before rewriting and planning: identities, CSE and dead code.

Each rewrite has a stable name, counted in the report's ``rules_fired``. Every one keeps
results bit for bit: an identity is removed only when its output has exactly the input's
shape, dtype and weak type.

Rules (law, then name):
  * ``copy(x) → x``                                         copy-elim
  * ``convert_element_type(x) → x`` (same dtype)            convert-noop
  * ``reshape(x) → x``, ``broadcast_in_dim(x) → x``, ``squeeze(x) → x`` (same shape)
                                                           reshape-noop, broadcast-noop, squeeze-noop
  * ``transpose(x, identity) → x``                          transpose-identity
  * ``reshape(reshape(x)) → reshape(x)``                    reshape-reshape
  * ``transpose(transpose(x, p), q) → transpose(x, p∘q)``   transpose-transpose
  * ``broadcast_in_dim(broadcast_in_dim(x)) → broadcast_in_dim(x)``  broadcast-broadcast
  * ``transpose(dot_general(a, b))`` → ``dot_general(b, a)`` when the permutation moves b's
    free dimensions in front of a's and the dot has no other reader (``jax.vmap`` of
    ``W @ v``, a weight gradient's ``dW.T``): XLA folds that transpose into the GEMM's
    layout, so it must not become a copy kernel here              transpose-dot
  * ``convert_element_type(c)`` of a scalar constant to a float type → the converted
    constant (numpy's conversion, rounding to nearest even as XLA's)  convert-constant
  * two nodes with equal primitive, inputs and params → one  cse
  * nodes whose results are unused and have no effects go   (dead code, not counted)

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda x: jnp.exp(x) + jnp.exp(x), [jnp.ones(3)]).graph
    >>> g2, fired = simplify(g)
    >>> [n.op for n in g2.nodes], dict(fired)
    (['exp', 'add'], {'cse': 1})
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from dnnfusion_jax.frontend.ir import Graph, Node, Var


def simplify(graph: Graph) -> tuple[Graph, Counter]:
    """Returns the simplified graph and how often each rule fired."""
    fired: Counter = Counter()
    graph = _intern_scalar_constants(graph)
    readers = {var: len(users) for var, users in graph.consumers().items()}
    readers.update((var, readers.get(var, 0) + 1) for var in graph.outputs)
    subst: dict[Var, Var] = {}
    producer: dict[Var, Node] = {}
    seen: dict[Any, Node] = {}
    kept: list[Node] = []

    constants = dict(graph.constants)
    for node in graph.nodes:
        inputs = tuple(subst.get(v, v) for v in node.inputs)
        if inputs != node.inputs:
            node = Node(node.primitive, inputs, node.outputs, node.params, node.effects)
        folded = _converted_constant(node, constants)
        if folded is not None:
            constants[node.out] = folded
            fired["convert-constant"] += 1
            continue
        node = _compose_with_producer(node, producer, fired)
        node = _absorb_transpose_into_dot(node, producer, readers, fired)
        rule = _identity_rule(node)
        if rule is not None:
            subst[node.out] = node.inputs[0]
            fired[rule] += 1
            continue
        key = _cse_key(node)
        if key is not None:
            if key in seen:
                subst.update(zip(node.outputs, seen[key].outputs))
                fired["cse"] += 1
                continue
            seen[key] = node
        kept.append(node)
        producer.update((out, node) for out in node.outputs)

    outputs = [subst.get(v, v) for v in graph.outputs]
    return eliminate_dead_code(graph.replace(kept, outputs, constants)), fired


def eliminate_dead_code(graph: Graph) -> Graph:
    """Drops nodes whose outputs are never used (unless they have effects) and unused constants."""
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if node.effects or any(out in live for out in node.outputs):
            kept.append(node)
            live.update(node.inputs)
    constants = {var: value for var, value in graph.constants.items() if var in live}
    return graph.replace(kept[::-1], constants=constants)


def _same_type(a: Var, b: Var) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.weak_type == b.weak_type


_IDENTITY_RULES: dict[str, tuple[str, Callable[[Node], bool]]] = {
    "copy": ("copy-elim", lambda n: True),
    "convert_element_type": ("convert-noop", lambda n: True),
    "reshape": ("reshape-noop", lambda n: n.params.get("dimensions") is None),
    "broadcast_in_dim": ("broadcast-noop",
                         lambda n: tuple(n.params["broadcast_dimensions"]) == tuple(range(n.out.ndim))),
    "squeeze": ("squeeze-noop", lambda n: True),
    "transpose": ("transpose-identity",
                  lambda n: tuple(n.params["permutation"]) == tuple(range(n.out.ndim))),
    # a reduction over no axes returns its operand (XLA keeps even a -0.0 of reduce_sum)
    **{op: ("reduce-no-axes", lambda n: not n.params["axes"])
       for op in ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
                  "reduce_or")},
}


def _identity_rule(node: Node) -> str | None:
    entry = _IDENTITY_RULES.get(node.op)
    if entry is None or node.effects or len(node.outputs) != 1:
        return None
    name, applies = entry
    return name if _same_type(node.out, node.inputs[0]) and applies(node) else None


def _converted_constant(node: Node, constants: dict[Var, Any]) -> np.ndarray | None:
    """The value of a float conversion of a scalar constant (None: not one). A broadcast of
    it is then a parameter adapter, which joins its consumer's kernel (jnp.var's ``nan``)."""
    if node.op != "convert_element_type" or node.effects or node.inputs[0] not in constants:
        return None
    value, target = constants[node.inputs[0]], np.dtype(node.out.dtype)
    if np.ndim(value) != 0 or not np.issubdtype(target, np.floating) or target.itemsize < 4:
        return None
    try:
        return np.asarray(value).astype(target)
    except (TypeError, ValueError):
        return None


def dot_transpose_swap(dimension_numbers, lhs_rank: int, rhs_rank: int) -> tuple[tuple, tuple]:
    """``(perm, swapped)``: ``transpose(dot_general(a, b, dims), perm)`` is
    ``dot_general(b, a, swapped)``. dot_general lays its result out as batch, lhs free, rhs
    free dimensions; with the operands swapped it is batch, rhs free, lhs free.

    >>> dot_transpose_swap((((1,), (1,)), ((), ())), 2, 2)
    ((1, 0), (((1,), (1,)), ((), ())))
    >>> dot_transpose_swap((((2,), (1,)), ((0,), (0,))), 3, 3)
    ((0, 2, 1), (((1,), (2,)), ((0,), (0,))))
    """
    (lc, rc), (lb, rb) = dimension_numbers
    batch = len(lb)
    lhs_free, rhs_free = lhs_rank - batch - len(lc), rhs_rank - batch - len(rc)
    perm = (*range(batch), *range(batch + lhs_free, batch + lhs_free + rhs_free),
            *range(batch, batch + lhs_free))
    swapped = ((tuple(int(d) for d in rc), tuple(int(d) for d in lc)),
               (tuple(int(d) for d in rb), tuple(int(d) for d in lb)))
    return tuple(int(i) for i in perm), swapped


def _absorb_transpose_into_dot(node: Node, producer: dict[Var, Node], readers: dict[Var, int],
                               fired: Counter) -> Node:
    """transpose(dot_general(a, b)) → dot_general(b, a) (the module docstring's rule)."""
    if node.op != "transpose" or node.effects:
        return node
    dot = producer.get(node.inputs[0])
    if dot is None or dot.op != "dot_general" or readers.get(dot.out, 0) != 1:
        return node
    lhs, rhs = dot.inputs
    perm, swapped = dot_transpose_swap(dot.params["dimension_numbers"], lhs.ndim, rhs.ndim)
    if tuple(node.params["permutation"]) != perm:
        return node
    params = {**dot.params, "dimension_numbers": swapped}
    precision = params.get("precision")
    if isinstance(precision, tuple) and len(precision) == 2:
        params["precision"] = precision[::-1]
    fired["transpose-dot"] += 1
    return Node(dot.primitive, (rhs, lhs), node.outputs, params, dot.effects)


def _compose_with_producer(node: Node, producer: dict[Var, Node], fired: Counter) -> Node:
    """reshape∘reshape, transpose∘transpose and broadcast∘broadcast become one node reading
    the inner input."""
    if node.op not in ("reshape", "transpose", "broadcast_in_dim"):
        return node
    inner = producer.get(node.inputs[0])
    if inner is None or inner.op != node.op or inner.effects:
        return node
    if node.op == "broadcast_in_dim":
        if len(inner.inputs) != 1 or len(node.inputs) != 1:  # dynamic shapes: leave them
            return node
        outer_dims = node.params["broadcast_dimensions"]
        dims = tuple(int(outer_dims[d]) for d in inner.params["broadcast_dimensions"])
        fired["broadcast-broadcast"] += 1
        return Node(node.primitive, inner.inputs, node.outputs,
                    {**node.params, "broadcast_dimensions": dims}, node.effects)
    if node.op == "reshape":
        if node.params.get("dimensions") is not None or inner.params.get("dimensions") is not None:
            return node
        fired["reshape-reshape"] += 1
        return Node(node.primitive, inner.inputs, node.outputs, node.params, node.effects)
    inner_perm, outer_perm = inner.params["permutation"], node.params["permutation"]
    fired["transpose-transpose"] += 1
    params = {**node.params, "permutation": tuple(int(inner_perm[i]) for i in outer_perm)}
    return Node(node.primitive, inner.inputs, node.outputs, params, node.effects)


def _cse_key(node: Node) -> Any:
    if node.effects:
        return None
    try:
        key = (node.primitive, node.inputs, tuple(sorted(node.params.items())))
        hash(key)
    except TypeError:  # unhashable params (arrays): leave the node alone
        return None
    return key


def _intern_scalar_constants(graph: Graph) -> Graph:
    """Makes equal scalar literals one value, so that CSE can see through them."""
    canonical: dict[Any, Var] = {}
    subst: dict[Var, Var] = {}
    for var, value in graph.constants.items():
        if np.ndim(value) != 0 or not isinstance(value, (np.ndarray, np.generic, int, float, bool)):
            continue
        key = (var.dtype, var.weak_type, np.asarray(value, dtype=var.dtype).tobytes())
        subst[var] = canonical.setdefault(key, var)
    if all(a is b for a, b in subst.items()):
        return graph
    nodes = [Node(n.primitive, tuple(subst.get(v, v) for v in n.inputs), n.outputs, n.params, n.effects)
             for n in graph.nodes]
    outputs = [subst.get(v, v) for v in graph.outputs]
    constants = {v: c for v, c in graph.constants.items() if subst.get(v, v) is v}
    return graph.replace(nodes, outputs, constants)
