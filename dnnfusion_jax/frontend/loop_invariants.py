"""Loop-invariant code motion: work in a loop body that reads only the loop's constants moves
out of the loop and runs once.

A ``scan`` body's first ``num_consts`` inputs, and a ``while`` body's first ``body_nconsts``,
are the same on every iteration (weights, biases, the closed-over values). An equation of the
body whose operands are all such constants (or literals, or results of other hoisted
equations) computes the same value each time: the weight transposes and reshapes that Flax's
``nn.scan`` layers and an LSTM cell repeat, parameter-only arithmetic. It is hoisted: the
hoisted equations form a jaxpr over the loop's constants that runs before the loop, and what
the body still reads of them becomes extra loop constants.

Not hoisted: equations with effects (they must run once per iteration, in order), and
equations whose result is larger than their operands (``broadcast_in_dim``, ``iota``, a
widening convert): inside the body a fused kernel reads the small operand and broadcasts it in
registers, while a hoisted broadcast would be read from memory in full on every iteration.
A ``dot_general`` or convolution of constants is hoisted whatever its size, for its FLOPs.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jax import lax
    >>> def f(x, w):
    ...     return lax.scan(lambda c, _: (jnp.tanh(c @ w.T), None), x, None, length=3)[0]
    >>> scan = jax.make_jaxpr(f)(jnp.ones((2, 4)), jnp.ones((4, 4))).jaxpr.eqns[0]
    >>> split = split_invariants("scan", scan.params)
    >>> [e.primitive.name for e in split.hoisted.jaxpr.eqns], split.params["num_consts"]
    (['transpose'], 2)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jax.extend.core import ClosedJaxpr, Literal

LOOP_INVARIANTS: dict[str, tuple[str, str, int]] = {
    # loop primitive → (its body's parameter, the parameter counting the body's constants,
    # how many of the loop's operands come before the body's constants)
    "scan": ("jaxpr", "num_consts", 0),
    "while": ("body_jaxpr", "body_nconsts", -1),  # -1: after the cond's ``cond_nconsts``
}

ALWAYS_HOISTED = frozenset({"dot_general", "conv_general_dilated"})
"""Invariant equations hoisted whatever their size, for the FLOPs they save per iteration."""


@dataclass
class InvariantSplit:
    """A loop with its invariant work taken out.

    ``hoisted``: a jaxpr from the loop's constants (``operands[constants]``) to
    ``residuals`` values; the loop, with ``params``, takes ``[*before, *constants, *residuals,
    *after]``: the residuals are new leading-constant operands of the body."""

    hoisted: ClosedJaxpr
    params: dict[str, Any]
    constants: slice
    num_residuals: int

    def operands(self, operands: Sequence[Any], residuals: Sequence[Any]) -> list[Any]:
        """The loop's new operands, given its old ones and the hoisted values."""
        end = self.constants.stop
        return [*operands[:end], *residuals, *operands[end:]]


def split_invariants(name: str, loop_params: dict[str, Any]) -> InvariantSplit | None:
    """A ``scan`` or ``while`` (its primitive's name and parameters) with its loop-invariant
    work split out, or None when nothing in its body is worth hoisting."""
    if name not in LOOP_INVARIANTS:
        return None
    body_param, count_param, _ = LOOP_INVARIANTS[name]
    body: ClosedJaxpr = loop_params[body_param]
    num_invariant = loop_params[count_param]
    start = loop_params["cond_nconsts"] if name == "while" else 0
    jaxpr = body.jaxpr
    invariant_in = jaxpr.invars[:num_invariant]
    invariant = set(invariant_in) | set(jaxpr.constvars)
    hoisted, kept = [], []
    for body_eqn in jaxpr.eqns:
        if _hoistable(body_eqn, invariant):
            hoisted.append(body_eqn)
            invariant.update(body_eqn.outvars)
        else:
            kept.append(body_eqn)
    produced = {v for e in hoisted for v in e.outvars}
    read_later = [v for e in kept for v in e.invars if not isinstance(v, Literal)]
    residuals = list(dict.fromkeys(v for v in [*read_later, *jaxpr.outvars]
                                   if not isinstance(v, Literal) and v in produced))
    if not residuals:
        return None
    hoisted_jaxpr = jaxpr.replace(invars=list(invariant_in), eqns=hoisted, outvars=residuals,
                                  effects=frozenset(),
                                  debug_info=_unnamed(jaxpr, len(invariant_in), len(residuals)))
    new_invars = [*invariant_in, *residuals, *jaxpr.invars[num_invariant:]]
    new_body = jaxpr.replace(invars=new_invars, eqns=kept,
                             debug_info=_unnamed(jaxpr, len(new_invars), len(jaxpr.outvars)))
    params = dict(loop_params)
    params[body_param] = ClosedJaxpr(new_body, body.consts)
    params[count_param] = num_invariant + len(residuals)
    if "linear" in params:  # scan: the residuals are not linear in the loop's tangents
        linear = list(params["linear"])
        params["linear"] = tuple(linear[:num_invariant] + [False] * len(residuals)
                                 + linear[num_invariant:])
    return InvariantSplit(ClosedJaxpr(hoisted_jaxpr, body.consts), params,
                          slice(start, start + num_invariant), len(residuals))


def _unnamed(jaxpr: Any, inputs: int, outputs: int) -> Any:
    """The body's debug info (function and source) with unnamed inputs and outputs."""
    if jaxpr.debug_info is None:
        return None
    return jaxpr.debug_info._replace(arg_names=("",) * inputs, result_paths=("",) * outputs)


def _hoistable(eqn: Any, invariant: set) -> bool:
    if eqn.effects or not all(isinstance(v, Literal) or v in invariant for v in eqn.invars):
        return False
    if eqn.primitive.name in ALWAYS_HOISTED:
        return True
    read = sum(_nbytes(v.aval) for v in eqn.invars if not isinstance(v, Literal))
    written = sum(_nbytes(v.aval) for v in eqn.outvars)
    return read > 0 and written <= read


def _nbytes(aval: Any) -> int:
    shape = getattr(aval, "shape", ())
    try:
        itemsize = np.dtype(aval.dtype).itemsize
    except TypeError:  # extended dtypes (PRNG keys): never worth moving on their own
        return 0
    return math.prod(shape) * itemsize
