"""The rule language's terms: pattern variables, parameters, operation builders, and what a
term means in JAX (``evaluate``, used by ``rules check``).

A term is a ``Pat``; ``V("a")`` is a tensor variable, Python numbers are float scalars, and
``+ - * / @`` and unary ``-`` build elementwise ops and matmuls. Parameters of layout ops and
dots are literals or ``P("p")`` parameter variables.

Example:
    >>> a, b = V("a"), V("b")
    >>> str(exp(a) * b + 1.0)
    'add(mul(exp(a), b), 1.0)'
    >>> import jax.numpy as jnp
    >>> float(evaluate(exp(a) * b, {"a": jnp.float32(0.0), "b": jnp.float32(3.0)}))
    3.0
"""
from __future__ import annotations

import ast
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from dnnfusion_jax.ops.registry import PRIMITIVES, names
from dnnfusion_jax.rewrite.egraph_terms import BATCHED_MATMUL_DIMS, MATMUL_DIMS

MATMUL, BATCHED = MATMUL_DIMS, BATCHED_MATMUL_DIMS
UNARY_OPS = tuple(row.name for row in PRIMITIVES.values() if row.term == "un" and row.rule)
"""The rule language's unary operations: registry rows with a ``un`` term and a builder."""
BINARY_OPS = names(term="bin")
"""The rule language's binary operations (``binary``, and ``+ - * /``)."""


class P:
    """A parameter variable (dimension numbers, a permutation, a shape, a conv key).

    Example:
        >>> P("perm")
        P(perm)
    """

    def __init__(self, name: str, kind: str = "vec") -> None:
        assert kind in ("vec", "str"), kind
        self.name, self.kind = name, kind

    def __repr__(self) -> str:
        return f"P({self.name})"


@dataclass(frozen=True, eq=False)
class Pat:
    """A term of the rule language: ``kind`` is var, scalar or an operation."""

    kind: str
    op: Any = None
    args: tuple[Pat, ...] = ()

    def __add__(self, other): return Pat("bin", "add", (self, _pat(other)))
    def __radd__(self, other): return Pat("bin", "add", (_pat(other), self))
    def __sub__(self, other): return Pat("bin", "sub", (self, _pat(other)))
    def __rsub__(self, other): return Pat("bin", "sub", (_pat(other), self))
    def __mul__(self, other): return Pat("bin", "mul", (self, _pat(other)))
    def __rmul__(self, other): return Pat("bin", "mul", (_pat(other), self))
    def __truediv__(self, other): return Pat("bin", "div", (self, _pat(other)))
    def __rtruediv__(self, other): return Pat("bin", "div", (_pat(other), self))
    def __neg__(self): return Pat("un", "neg", (self,))
    def __matmul__(self, other): return dot(self, _pat(other), MATMUL_DIMS)

    def vars(self) -> list[str]:
        """Variable names in order of first appearance."""
        found: dict[str, None] = {}
        for node in self.walk():
            if node.kind in ("var", "const"):
                found[node.op] = None
        return list(found)

    def params(self) -> list[P]:
        found: dict[str, P] = {}
        for node in self.walk():
            for value in _flat_params(node.op):
                if isinstance(value, P):
                    found[value.name] = value
        return list(found.values())

    def walk(self) -> Iterable[Pat]:
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.args))

    def __str__(self) -> str:
        if self.kind in ("var", "const"):
            return self.op
        if self.kind == "scalar":
            return repr(self.op)
        name = self.op if self.kind in ("un", "bin") else self.kind
        extra = "" if self.kind in ("un", "bin") else "[" + _param_str(self.op) + "]"
        return f"{name}{extra}({', '.join(map(str, self.args))})"


def _flat_params(op: Any) -> list:
    return list(op) if isinstance(op, tuple) and any(isinstance(x, P) for x in op) else [op]


def _param_str(op: Any) -> str:
    if isinstance(op, P):
        return op.name
    if isinstance(op, tuple) and any(isinstance(x, P) for x in op):
        return ", ".join(_param_str(x) for x in op)
    return str(op)


def V(name: str) -> Pat:  # noqa: N802 (reads like a type in rules)
    """A pattern variable (a tensor)."""
    return Pat("var", name)


def scalar(value: float) -> Pat:
    """A float scalar constant (a literal in the traced program); not -0.0, which egglog's f64
    does not tell from 0.0 (the translation keeps -0.0 literals out of the e-graph)."""
    value = float(value)
    if value == 0 and math.copysign(1.0, value) < 0:
        raise ValueError("a rule scalar cannot be -0.0: egglog's f64 holds it equal to 0.0")
    return Pat("scalar", value)


def C(name: str) -> Pat:  # noqa: N802
    """A float scalar constant whose value is a variable (for constant folding)."""
    return Pat("const", name)


def fold(op: str, a: Pat, b: Pat) -> Pat:
    """Right side only: the scalar ``a op b`` of two constants, computed while rewriting."""
    assert op in ("add", "sub", "mul", "div") and a.kind == b.kind == "const"
    return Pat("fold", op, (a, b))


def _pat(x: Any) -> Pat:
    if isinstance(x, Pat):
        return x
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return scalar(x)
    raise TypeError(f"a rule term must be built from V(...), C(...) and the rules_api "
                    f"operations, or be a Python number; got {x!r}")


def _unary(op: str, name: str):
    """The builder ``name`` of the unary term ``op`` (a registry row's ``rule``)."""
    def build(a: Pat) -> Pat:
        return Pat("un", op, (_pat(a),))
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"""Elementwise lax.{op}.

    >>> str({name}(V("a")))
    '{op}(a)'
    """
    return build


BUILDERS = {row.rule: _unary(row.name, row.rule) for row in PRIMITIVES.values() if row.rule}
"""Builder name → builder, one per registry row that names one (``exp``, ``abs_``, ...); each
is a module-level name here and in ``rules_api``.

>>> str(BUILDERS["abs_"](V("a")))
'abs(a)'
"""
globals().update(BUILDERS)


def unary(op: str | P, a: Any) -> Pat:
    """Elementwise unary ``op``, one of ``UNARY_OPS`` (or a ``P`` that matches any).

    >>> unary("softplus", V("a"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown unary operation 'softplus'; known: neg, abs, exp, ...
    """
    if not isinstance(op, P) and op not in UNARY_OPS:
        raise ValueError(f"unknown unary operation {op!r}; known: {', '.join(UNARY_OPS)}")
    return Pat("un", op, (_pat(a),))


def binary(op: str | P, a: Any, b: Any) -> Pat:
    """Elementwise binary ``op`` (add, sub, mul, div, max, min, pow, atan2; or a ``P``)."""
    if not isinstance(op, P) and op not in BINARY_OPS:
        raise ValueError(f"unknown binary operation {op!r}; known: {', '.join(BINARY_OPS)}")
    return Pat("bin", op, (_pat(a), _pat(b)))


def recip(a: Any) -> Pat:
    """``1/a`` (lax has no reciprocal: JAX traces ``1/a`` as ``div 1.0 a``)."""
    return Pat("bin", "div", (scalar(1.0), _pat(a)))


def ipow(a: Pat, y: int) -> Pat:
    return Pat("ipow", int(y), (a,))


def dot(a: Pat, b: Pat, dims: str | P) -> Pat:
    """``lax.dot_general`` with dimension numbers given as their canonical string or ``P``."""
    return Pat("dot", dims, (a, b))


def matmul(a: Pat, b: Pat) -> Pat:
    return dot(a, b, MATMUL_DIMS)


def conv(x: Pat, w: Pat, key: str | P) -> Pat:
    """``lax.conv_general_dilated``; ``key`` names its parameters (see ``conv_key``)."""
    return Pat("conv", key, (x, w))


def transpose(a: Pat, perm: tuple | P) -> Pat:
    return Pat("transpose", perm, (a,))


def reshape(a: Pat, sizes: tuple | P) -> Pat:
    return Pat("reshape", sizes, (a,))


def broadcast(a: Pat, shape_: tuple | P, dims: tuple | P) -> Pat:
    return Pat("bcast", (shape_, dims), (a,))


def reduce(op: str, a: Pat, axes: tuple | P) -> Pat:
    return Pat("reduce", (op, axes), (a,))


def reduce_sum(a: Pat, axes: tuple | P) -> Pat:
    return reduce("reduce_sum", a, axes)


def reduce_prod(a: Pat, axes: tuple | P) -> Pat:
    return reduce("reduce_prod", a, axes)


def reduce_max(a: Pat, axes: tuple | P) -> Pat:
    return reduce("reduce_max", a, axes)


# ----------------------------------------------------------------------------- conv keys

CONV_KEYS: dict[str, dict] = {}
"""Canonical conv parameter key → the params of ``conv_general_dilated``."""


def conv_key(params: dict) -> str:
    """Interns conv params (``lax.conv_general_dilated_p`` params) under a stable string."""
    parts = []
    for name in sorted(params):
        value = params[name]
        parts.append(f"{name}={value!r}")
    key = "conv[" + ";".join(parts) + "]"
    CONV_KEYS.setdefault(key, dict(params))
    return key


def _postorder(pat: Pat) -> list[Pat]:
    order, stack = [], [(pat, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        stack.append((node, True))
        stack.extend((a, False) for a in reversed(node.args))
    return order


# ----------------------------------------------------------------------------- JAX semantics

def parse_dims(dims: str) -> tuple:
    """Canonical dimension-number string → the tuple ``lax.dot_general`` takes."""
    return ast.literal_eval(dims)


def _reduce(op: str, x: Any, axes: tuple) -> Any:
    fn = {"reduce_sum": jnp.sum, "reduce_prod": jnp.prod, "reduce_max": jnp.max,
          "reduce_min": jnp.min}[op]
    return fn(x, axis=tuple(axes))


def _binary(op: str, a: Any, b: Any) -> Any:
    """lax's binary ``op`` after numpy's type promotion and broadcasting (as ``jnp.add`` ...)."""
    dtype = jnp.result_type(a, b)
    return getattr(lax, op)(*jnp.broadcast_arrays(jnp.asarray(a, dtype), jnp.asarray(b, dtype)))


def evaluate(pat: Pat, env: dict[str, Any], params: dict[str, Any] | None = None,
             trace: list | None = None) -> Any:
    """Evaluates a term with JAX on concrete arrays (``env``: var → array).

    Scalars take the dtype of the operand they meet (as weak-typed Python floats do);
    ``trace`` collects every intermediate result.
    """
    params = params or {}

    def param(value: Any) -> Any:
        return params[value.name] if isinstance(value, P) else value

    values: dict[int, Any] = {}
    for node in _postorder(pat):
        args = [values[id(a)] for a in node.args]
        k = node.kind
        if k in ("var", "const"):
            out = env[node.op]
        elif k == "scalar":
            out = node.op
        elif k == "fold":
            a, b = (np.float64(x) for x in args)
            with np.errstate(all="ignore"):
                value = {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b}[node.op]
            out = np.asarray(value, np.asarray(args[0]).dtype)
        elif k == "un":
            out = getattr(lax, param(node.op))(*args)
        elif k == "bin":
            out = _binary(param(node.op), *args)
        elif k == "ipow":
            out = lax.integer_pow(args[0], node.op)
        elif k == "dot":
            out = lax.dot_general(*args, parse_dims(param(node.op)))
        elif k == "conv":
            conv_params = dict(CONV_KEYS[param(node.op)])
            out = lax.conv_general_dilated_p.bind(*args, **conv_params)
        elif k == "transpose":
            out = lax.transpose(args[0], tuple(param(node.op)))
        elif k == "reshape":
            out = lax.reshape(args[0], tuple(param(node.op)))
        elif k == "bcast":
            out = lax.broadcast_in_dim(args[0], tuple(param(node.op[0])), tuple(param(node.op[1])))
        elif k == "reduce":
            out = _reduce(node.op[0], args[0], param(node.op[1]))
        else:
            raise ValueError(f"unknown term kind {k!r}")
        values[id(node)] = out
        if trace is not None and k not in ("var", "const"):
            trace.append(out)
    return values[id(pat)]
