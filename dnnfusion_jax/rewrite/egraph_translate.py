"""Translation both ways between the IR and the e-graph.

``to_egraph`` registers every IR value as a let-bound term with its shape and dtype set
(conflicts are loud), plus the parameter facts rules need (inverse and composed
permutations, per-channel shapes of convs, broadcast/reduce axis complements). Float
elementwise ops, dots, convs and layout ops become ``Term`` operations; everything else
(integer arithmetic, control flow, effects, multi-output primitives) is an opaque ``app``
whose outputs are leaves of the rewrite but stay e-nodes, so extraction sees what they read.

``to_graph`` rebuilds an IR graph from the extractor's choice, walking from the roots (effects
first, in program order, then the outputs), emitting each class once: a node used twice is
computed once. Output types of new nodes come from the primitive's abstract evaluation.

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.rewrite.egraph_extract import decode, extract
    >>> g = trace_function(lambda x: jnp.exp(x) * 2.0, [jnp.ones(3)]).graph
    >>> t = to_egraph(g)
    >>> d = decode(t.egraph.freeze())
    >>> roots = t.roots(d)
    >>> g2 = t.to_graph(d, extract(d, roots), roots)
    >>> [n.op for n in g2.nodes]
    ['exp', 'mul']
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jax import lax

from dnnfusion_jax.rewrite.egraph_extract import Decoded, ENode
from dnnfusion_jax.rewrite.egraph_terms import (Args, Term, complement_axes, compose_perm, conv_channel,
                           dot_swap, dtype, inverse_perm, shape, swap_dot)
from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.ops.registry import lookup, names
from dnnfusion_jax.rewrite.rules_api import conv_channel_shapes, conv_key, parse_dims

FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
UNARY = frozenset(names(term="un"))
"""Primitives that become ``Term.un`` (the registry's ``term`` column); likewise below."""
BINARY = frozenset(names(term="bin"))
REDUCE = frozenset(names(term="reduce"))
MAX_PERMS_COMPOSED = 48


def _dtype(var: Var) -> str:
    return str(np.dtype(var.dtype)) if _numeric(var) else str(var.dtype)


def _numeric(var: Var) -> bool:
    try:
        np.dtype(var.dtype)
        return True
    except TypeError:
        return False


def _is_float(var: Var) -> bool:
    return _numeric(var) and np.dtype(var.dtype).name in FLOAT_DTYPES


def dims_key(dimension_numbers: Any) -> str:
    """Canonical string of dot_general dimension numbers."""
    (lc, rc), (lb, rb) = dimension_numbers
    return repr(((tuple(map(int, lc)), tuple(map(int, rc))), (tuple(map(int, lb)), tuple(map(int, rb)))))


def _vec(items) -> Any:
    from egglog import Vec, i64
    items = tuple(int(x) for x in items)
    return Vec(*[i64(x) for x in items]) if items else Vec[i64].empty()


@dataclass
class Translation:
    """An IR graph registered in an egglog e-graph, and what is needed to come back."""

    graph: Graph
    egraph: Any
    leaves: list[Var] = field(default_factory=list)
    apps: list[Node] = field(default_factory=list)    # opaque node per app key
    names: dict[Var, str] = field(default_factory=dict)  # value → let name
    effect_names: list[str] = field(default_factory=list)
    num_terms: int = 0

    # ------------------------------------------------------------------ IR → e-graph

    def build(self) -> None:
        from egglog import Bool, f64, set_
        graph = self.graph
        actions: list = []
        terms: dict[Var, Any] = {}
        counter = itertools.count()

        def let(var: Var, expr: Any) -> Any:
            name = f"v{next(counter)}"
            ref = self.egraph.let(name, expr)
            self.names[var] = name
            terms[var] = ref
            if _numeric(var) and var.ndim <= 6:
                actions.append(set_(shape(ref)).to(_vec(var.shape)))
                actions.append(set_(dtype(ref)).to(_dtype(var)))
            return ref

        def leaf(var: Var) -> Any:
            self.leaves.append(var)
            return let(var, Term.leaf(len(self.leaves) - 1))

        for var in graph.inputs:
            leaf(var)
        for var, value in graph.constants.items():
            scalar = np.ndim(value) == 0 and _is_float(var) and not var.shape
            # -0.0 stays a leaf: egglog's f64 holds -0.0 == 0.0, one term, and x * -0.0 is not
            # x * 0.0 (their reciprocals are infinities of opposite signs)
            if scalar and np.isfinite(float(np.asarray(value))) and not (
                    float(np.asarray(value)) == 0 and np.signbit(value)):
                let(var, Term.scalar(f64(float(np.asarray(value, np.float64))), _dtype(var),
                                     Bool(bool(var.weak_type))))
            else:
                leaf(var)
        for node in graph.nodes:
            expr = self._term(node, terms)
            if expr is None:  # opaque
                args = Args.nil()
                for var in reversed(node.inputs):
                    args = Args.cons(terms[var], args)
                self.apps.append(node)
                app_var = Var((), "tuple")
                app = let(app_var, Term.app(len(self.apps) - 1, args))
                if node.effects:
                    self.effect_names.append(self.names[app_var])
                for i, out in enumerate(node.outputs):
                    let(out, Term.out(app, i))
            else:
                let(node.out, expr)
        commands = [*actions, *self._param_facts()]
        if commands:  # a graph of only opaque values (PRNG keys) has none
            self.egraph.register(*commands)
        self.num_terms = next(counter)

    def _term(self, node: Node, terms: dict[Var, Any]) -> Any:
        """The Term of a node, or None for an opaque one."""
        from egglog import i64
        if node.effects or len(node.outputs) != 1 or not _is_float(node.out):
            return None
        ins = node.inputs
        if not all(_numeric(v) for v in ins):
            return None
        op, params = node.op, dict(node.params)
        kind = lookup(op).term
        same = all(_is_float(v) and v.dtype == node.out.dtype for v in ins)
        plain = all(value is None for value in params.values())
        if kind == "un" and same and plain:
            return Term.un(op, terms[ins[0]])
        if kind == "bin" and same and plain:
            return Term.bin(op, terms[ins[0]], terms[ins[1]])
        if kind == "ipow" and same:
            return Term.ipow(i64(int(params["y"])), terms[ins[0]])
        if kind == "dot" and same and params.get("precision") is None \
                and params.get("out_sharding") is None \
                and params.get("preferred_element_type") in (None, node.out.dtype):
            return Term.dot(dims_key(params["dimension_numbers"]), terms[ins[0]], terms[ins[1]])
        if kind == "conv" and same \
                and params.get("preferred_element_type") in (None, node.out.dtype):
            return Term.conv(conv_key(params), terms[ins[0]], terms[ins[1]])
        if kind == "transpose" and same:
            return Term.transpose(_vec(params["permutation"]), terms[ins[0]])
        if kind == "reshape" and same and params.get("dimensions") is None \
                and params.get("sharding") is None:
            return Term.reshape(_vec(params["new_sizes"]), terms[ins[0]])
        if kind == "bcast" and same and params.get("sharding") is None:
            return Term.bcast(_vec(params["shape"]), _vec(params["broadcast_dimensions"]),
                              terms[ins[0]])
        if kind == "reduce" and same and params.get("out_sharding") is None:
            return Term.reduce(op, _vec(sorted(params["axes"])), terms[ins[0]])
        return None

    def _param_facts(self) -> list:
        """Facts about the parameters present: they close the rules' parameter guards."""
        from egglog import set_
        perms, dims, axes = set(), set(), set()
        facts = []
        for node in self.graph.nodes:
            if node.op == "transpose":
                p = tuple(node.params["permutation"])
                perms.add(p)
                perms.add(tuple(int(i) for i in np.argsort(p)))
            elif node.op == "broadcast_in_dim":
                dims.add((tuple(node.params["broadcast_dimensions"]), node.out.ndim))
            elif node.op in REDUCE:
                axes.add(tuple(sorted(node.params["axes"])))
            elif node.op == "conv_general_dilated" and node.params.get("batch_group_count", 1) == 1:
                chan, kshape = conv_channel_shapes(node.params, node.out.shape)
                facts.append(conv_channel(conv_key(node.params), _vec(chan), _vec(kshape)))
            elif node.op == "dot_general":
                key = dims_key(node.params["dimension_numbers"])
                ranks = (node.inputs[0].ndim, node.inputs[1].ndim)
                perm, swapped = swap_dot(key, *ranks)
                if perm != tuple(range(len(perm))):
                    facts.append(dot_swap(key, *ranks, _vec(perm), swapped))
        for p in perms:
            facts.append(inverse_perm(_vec(p), _vec(np.argsort(p))))
        ordered = sorted(perms)[:MAX_PERMS_COMPOSED]
        for p in ordered:
            for q in ordered:
                if len(p) == len(q):
                    facts.append(set_(compose_perm(_vec(p), _vec(q))).to(_vec(p[i] for i in q)))
        for d, rank in dims:
            complement = tuple(i for i in range(rank) if i not in d)
            if complement in axes:
                facts.append(complement_axes(_vec(d), _vec(complement)))
        return facts

    def roots(self, decoded: Decoded) -> list[int]:
        """E-classes to extract: effectful opaque nodes in program order, then the outputs."""
        names = self.effect_names + [self.names[v] for v in self.graph.outputs]
        return [decoded.lets[name] for name in names]

    # ------------------------------------------------------------------ e-graph → IR

    def to_graph(self, decoded: Decoded, choice: dict[int, ENode], roots: list[int]) -> Graph:
        """The IR graph of the chosen e-nodes (raises ValueError on a cyclic choice)."""
        values: dict[int, list[Var]] = {}
        nodes: list[Node] = []
        constants = {}
        for root in roots:
            stack = [(root, False)]
            on_stack: set[int] = set()
            while stack:
                c, ready = stack.pop()
                if c in values:
                    continue
                node = choice[c]
                if not ready:
                    if c in on_stack:
                        raise ValueError(f"extracted graph has a cycle through e-class {c}")
                    on_stack.add(c)
                    stack.append((c, True))
                    stack.extend((k, False) for k in reversed(node.children) if k not in values)
                    continue
                on_stack.discard(c)
                values[c] = self._emit(node, [values[k] for k in node.children], decoded.types[c],
                                       nodes, constants)
        outputs = [values[c][0] for c in roots[len(self.effect_names):]]
        graph = self.graph.replace(nodes, outputs, {**self.graph.constants, **constants})
        graph.validate()
        return graph

    def _emit(self, node: ENode, args: list[list[Var]], out_type: Any, nodes: list[Node],
              constants: dict) -> list[Var]:
        kind, p = node.kind, node.param
        ins = [a[0] for a in args]
        if kind == "leaf":
            return [self.leaves[p]]
        if kind == "scalar":
            value, dt, weak = p
            import jax.numpy as jnp
            var = Var((), jnp.dtype(dt), bool(weak))
            constants[var] = np.asarray(value, jnp.dtype(dt))
            return [var]
        if kind == "app":
            original = self.apps[p]
            flat = [a[0] for a in args]
            outs = tuple(Var(v.shape, v.dtype, v.weak_type) for v in original.outputs)
            nodes.append(Node(original.primitive, tuple(flat), outs, original.params,
                              original.effects))
            return [outs]  # a tuple value: projected by "out"
        if kind == "out":
            return [args[0][0][p]]
        primitive, params = _primitive(kind, p)
        avals = [_aval(v) for v in ins]
        out_aval = primitive.abstract_eval(*avals, **params)
        if isinstance(out_aval, tuple) and not hasattr(out_aval, "shape"):
            out_aval = out_aval[0]
        out = Var(tuple(out_aval.shape), out_aval.dtype, bool(getattr(out_aval, "weak_type", False)))
        if out_type is not None and (tuple(out_type[0]) != out.shape
                                     or out_type[1] != str(np.dtype(out.dtype))):
            raise ValueError(f"shape analysis says {out_type} but {kind} {p} gives "
                             f"{out.shape} {out.dtype}")
        nodes.append(Node(primitive, tuple(ins), (out,), params))
        return [out]


def _aval(var: Var) -> Any:
    from jax.core import ShapedArray
    return ShapedArray(var.shape, var.dtype, weak_type=var.weak_type)


_UNARY_PARAMS: dict[str, tuple[Any, dict]] = {}


def _primitive(kind: str, p: Any) -> tuple[Any, dict]:
    """The lax primitive and params of a decoded Term operation."""
    if kind in ("un", "bin"):
        if (kind, p) not in _UNARY_PARAMS:  # the params lax itself binds (accuracy, out_dtype)
            import jax
            import jax.numpy as jnp
            args = [jnp.float32(0.5)] * (1 if kind == "un" else 2)
            eqn = jax.make_jaxpr(getattr(lax, p))(*args).eqns[-1]
            _UNARY_PARAMS[kind, p] = (eqn.primitive, dict(eqn.params))
        return _UNARY_PARAMS[kind, p]
    if kind == "ipow":
        return lax.integer_pow_p, {"y": int(p)}
    if kind == "dot":
        return lax.dot_general_p, {"dimension_numbers": parse_dims(p), "precision": None,
                                   "preferred_element_type": None, "out_sharding": None}
    if kind == "conv":
        from dnnfusion_jax.rewrite.rules_api import CONV_KEYS
        return lax.conv_general_dilated_p, dict(CONV_KEYS[p])
    if kind == "transpose":
        return lax.transpose_p, {"permutation": tuple(p)}
    if kind == "reshape":
        return lax.reshape_p, {"new_sizes": tuple(p), "dimensions": None, "sharding": None}
    if kind == "bcast":
        shape_, dims = p
        return lax.broadcast_in_dim_p, {"shape": tuple(shape_), "broadcast_dimensions": tuple(dims),
                                        "sharding": None}
    if kind == "reduce":
        op, axes = p
        params = {"axes": tuple(axes)}
        if op == "reduce_sum":
            params["out_sharding"] = None
        return getattr(lax, f"{op}_p"), params
    raise ValueError(f"no primitive for e-node kind {kind!r}")


def to_egraph(graph: Graph, egraph: Any = None) -> Translation:
    """Registers ``graph`` in a new (or the given) egglog EGraph."""
    from egglog import EGraph
    translation = Translation(graph, egraph if egraph is not None else EGraph())
    translation.build()
    return translation
