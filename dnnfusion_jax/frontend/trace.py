"""Trace a JAX function to a jaxpr and import it into the IR, inlining nested calls.

Nested call primitives (``jit``, ``closed_call``, ``remat2``, ``custom_jvp_call``,
``custom_vjp_call`` ...) are inlined: for a forward pass their body is the computation, and
the fusion planner must see through them. ``stop_gradient`` is the identity going forward.
Literals and constants of nested jaxprs become graph constants; closed-over constants of the
top-level function become leading graph inputs whose values the caller passes at run time
(they may be tracers of an enclosing transformation).

Example:
    >>> import jax, jax.numpy as jnp
    >>> traced = trace_function(lambda x: jax.nn.relu(x) * 2.0, [jnp.ones((2, 2))])
    >>> [node.op for node in traced.graph.nodes], traced.jaxpr_ops
    (['max', 'mul'], 2)
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax import lax
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal, jaxpr_as_fun

from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.frontend.loop_invariants import split_invariants
from dnnfusion_jax.frontend.scan_slices import index_small_slices

# Call-like primitive → the parameter holding the jaxpr of its body.
INLINED_CALLS: dict[str, str] = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}

# Primitives that are the identity on a forward pass and vanish on import.
FORWARD_IDENTITIES = frozenset({"stop_gradient"})

# Primitives imported as another with the same meaning: ``add_any`` is the add that JAX's
# autodiff accumulates fan-out cotangents with (``add`` on arrays), so that gradients fuse.
CANONICAL = {"add_any": lax.add_p}


@dataclass
class TracedFunction:
    """A function traced at one input signature.

    ``graph`` is the imported IR; ``consts`` the values of its leading ``graph.num_consts``
    inputs; ``jaxpr_ops`` the number of equations once nested calls are flattened;
    ``in_tree``/``out_tree`` the pytree structures of ``(args, kwargs)`` and of the result.
    """

    graph: Graph
    closed_jaxpr: ClosedJaxpr
    consts: list[Any]
    jaxpr_ops: int
    in_tree: Any
    out_tree: Any

    def reference(self) -> Callable[..., list[Any]]:
        """The traced jaxpr as a function of ``(*consts, *args)``, nested calls intact.

        This is what derivatives are taken of: ``custom_jvp``/``custom_vjp`` rules and
        ``stop_gradient``, which the imported graph no longer has, still apply here.
        """
        jaxpr = self.closed_jaxpr.jaxpr
        open_consts = jaxpr.replace(constvars=[], invars=[*jaxpr.constvars, *jaxpr.invars])
        return jaxpr_as_fun(ClosedJaxpr(open_consts, []))


def trace_function(fun: Callable, args: Sequence[Any], kwargs: dict | None = None) -> TracedFunction:
    """Trace ``fun(*args, **kwargs)`` and import it; args may be arrays, tracers or pytrees.

    Errors raised by ``fun`` itself (shape mismatches, concretization errors) propagate
    unchanged, exactly as ``jax.make_jaxpr`` raises them.
    """
    leaves, in_tree = jax.tree_util.tree_flatten((tuple(args), dict(kwargs or {})))
    out_trees: list[Any] = []

    @functools.wraps(fun)  # errors and debug info then name the user's function
    def flat_fun(*flat_args):
        call_args, call_kwargs = jax.tree_util.tree_unflatten(in_tree, flat_args)
        out_leaves, out_tree = jax.tree_util.tree_flatten(fun(*call_args, **call_kwargs))
        out_trees.append(out_tree)
        return out_leaves

    closed = jax.make_jaxpr(flat_fun)(*leaves)
    graph, jaxpr_ops = import_jaxpr(closed)
    return TracedFunction(graph, closed, list(closed.consts), jaxpr_ops, in_tree, out_trees[-1])


def import_jaxpr(closed: ClosedJaxpr) -> tuple[Graph, int]:
    """Converts a closed jaxpr to a Graph; returns it with the flattened equation count."""
    importer = _Importer()
    const_inputs = [_var_like(v) for v in closed.jaxpr.constvars]
    arg_inputs = [_var_like(v) for v in closed.jaxpr.invars]
    outputs = importer.inline(closed.jaxpr, [*const_inputs, *arg_inputs], consts=None)
    graph = Graph([*const_inputs, *arg_inputs], importer.constants, importer.nodes, outputs,
                  num_consts=len(const_inputs))
    return graph, importer.jaxpr_ops


def import_call(closed: ClosedJaxpr, operands: Sequence[Var]
                ) -> tuple[list[Node], dict[Var, Any], list[Var]]:
    """The equations of ``closed`` as nodes that read ``operands`` for its inputs, as a graph
    inlines a call: (nodes, the constants they read, the values of its outputs).

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> x = Var((3,), np.dtype("float32"))
    >>> nodes, _, [out] = import_call(jax.make_jaxpr(lambda v: jnp.exp(v) + 1.0)(jnp.ones(3)), [x])
    >>> [n.op for n in nodes], nodes[0].inputs[0] is x, out is nodes[-1].out
    (['exp', 'add'], True, True)
    """
    sub, _ = import_jaxpr(closed)
    constants = {**sub.constants, **dict(zip(sub.inputs[:sub.num_consts], closed.consts))}
    rename = dict(zip(sub.inputs[sub.num_consts:], operands))
    nodes = [Node(n.primitive, tuple(rename.get(v, v) for v in n.inputs), n.outputs, n.params,
                  n.effects) for n in sub.nodes]
    return nodes, constants, [rename.get(v, v) for v in sub.outputs]


def count_equations(jaxpr: Jaxpr | ClosedJaxpr) -> int:
    """Equations of ``jaxpr`` with nested calls flattened and loop and branch bodies counted
    (as ``TracedFunction.jaxpr_ops`` counts them).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jax import lax
        >>> f = lambda x: lax.fori_loop(0, 3, lambda i, c: jnp.sin(c) * 2.0, x)
        >>> count_equations(jax.make_jaxpr(f)(jnp.ones(2)))  # a scan; add, sin, mul inside
        4
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        inner = sum(map(count_equations, _sub_jaxprs(eqn.params)))
        total += inner if eqn.primitive.name in INLINED_CALLS else 1 + inner
    return total


def _sub_jaxprs(params: dict) -> list[Any]:
    found = []
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, (Jaxpr, ClosedJaxpr)):
                found.append(item)
    return found


def _var_like(jaxpr_var: Any) -> Var:
    aval = jaxpr_var.aval
    return Var(tuple(getattr(aval, "shape", ())), getattr(aval, "dtype", aval),
               bool(getattr(aval, "weak_type", False)))


class _Importer:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.constants: dict[Var, Any] = {}
        self.jaxpr_ops = 0

    def inline(self, jaxpr: Jaxpr, inputs: Sequence[Var], consts: Sequence[Any] | None) -> list[Var]:
        """Imports ``jaxpr`` with its invars (and constvars, when ``consts`` is None) bound."""
        env: dict[Any, Var] = {}
        if consts is None:  # top level: constvars are the leading inputs
            env.update(zip([*jaxpr.constvars, *jaxpr.invars], inputs))
        else:
            for constvar, value in zip(jaxpr.constvars, consts):
                env[constvar] = self._constant(constvar, value)
            env.update(zip(jaxpr.invars, inputs))

        for eqn in jaxpr.eqns:
            ins = [self._read(env, atom) for atom in eqn.invars]
            name = eqn.primitive.name
            if name in INLINED_CALLS:
                body = eqn.params[INLINED_CALLS[name]]
                if isinstance(body, ClosedJaxpr):
                    outs = self.inline(body.jaxpr, ins, body.consts)
                else:
                    outs = self.inline(body, ins, ())
            elif name in FORWARD_IDENTITIES:
                self.jaxpr_ops += 1
                outs = ins
            else:
                params = dict(eqn.params)
                outs = [_var_like(v) for v in eqn.outvars]
                node_outs = outs
                indexed = index_small_slices(eqn)
                if indexed is not None:  # small scanned inputs read where they are used
                    zero = Var((), np.dtype(np.int32))
                    self.constants[zero] = np.int32(0)
                    ins, params = indexed.operands(ins, zero), indexed.params
                    node_outs = [*outs[:indexed.num_carry], Var((), np.dtype(np.int32)),
                                 *outs[indexed.num_carry:]]
                split = split_invariants(name, params)
                if split is not None:  # the loop's invariant work runs once, before it
                    residuals = self.inline(split.hoisted.jaxpr, ins[split.constants],
                                            split.hoisted.consts)
                    ins, params = split.operands(ins, residuals), split.params
                self.jaxpr_ops += 1 + sum(map(count_equations, _sub_jaxprs(params)))
                primitive = CANONICAL.get(name, eqn.primitive)
                self.nodes.append(Node(primitive, tuple(ins), tuple(node_outs), params,
                                       frozenset(eqn.effects)))
            env.update(zip(eqn.outvars, outs))
        return [self._read(env, atom) for atom in jaxpr.outvars]

    def _read(self, env: dict[Any, Var], atom: Any) -> Var:
        if isinstance(atom, Literal):
            return self._constant(atom, atom.val)
        return env[atom]

    def _constant(self, atom: Any, value: Any) -> Var:
        var = _var_like(atom)
        self.constants[var] = value
        return var
