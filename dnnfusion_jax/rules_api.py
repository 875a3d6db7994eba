"""The rule API: a small term language for both sides of a rule, guards, and ``Rule``.

The same term builds an egglog pattern (for saturation) and a JAX function (for
``rules check``), so a rule is written once. Variables are ``V("a")``; Python numbers are
float scalars; ``+ - * / @`` and unary ``-`` build elementwise ops and matmuls; parameters of
layout ops and dots are literals or ``P("p")`` parameter variables.

A guard is a tuple of conditions, each compiled to egglog facts and checked on samples:
``Scalar(v)``, ``SameShape(a, b)``, ``SameRank(a, b)``, ``KeepsShape(v)`` (v has the shape
of the whole left side), ``Broadcasts(v)`` (it has not), ``ShapeIs(v, p)``, ``Rank(v, k)``,
``Nonneg(v)``, ``Moderate(v)``, ``NonzeroConst(c)``, ``InversePerm(p, q)``,
``ComposePerm(p, q, r)``, ``ComplementAxes(dims, axes)``, ``ScaleRows(s, q)``,
``ScaleCols(s, k)``, ``ConvChannel(key, s, k)``. ``C("c")`` is a scalar constant whose value
is a variable and ``fold(op, c, d)`` (right side only) computes a constant.
``finite=(v, ...)`` names operands that must not hold ±inf (DNNFusion's distributive laws
turn ``inf*0 + inf*1 = NaN`` into ``inf*1 = inf``); those rules fire only where the analysis
proves it or under ``finite_math=True``.

Example:
    >>> a, b = V("a"), V("b")
    >>> r = Rule("exp-mul", "associative", "exp(a)*exp(b) -> exp(a+b)",
    ...          exp(a) * exp(b), exp(a + b))
    >>> r.name, str(r.lhs), str(r.rhs)
    ('exp-mul', 'mul(exp(a), exp(b))', 'exp(add(a, b))')
    >>> import jax.numpy as jnp
    >>> float(evaluate(r.rhs, {"a": jnp.float32(1.0), "b": jnp.float32(0.0)}))  # doctest: +ELLIPSIS
    2.718...
"""
from __future__ import annotations

import ast
import importlib.util
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from .egraph_terms import (BATCHED_MATMUL_DIMS, MATMUL_DIMS, Term, complement_axes, compose_perm, conv_channel, dtype,
                           finite, inverse_perm, moderate, nonneg, shape)

MATMUL, BATCHED = MATMUL_DIMS, BATCHED_MATMUL_DIMS
UNARY_OPS = ("neg", "exp", "log", "sqrt", "rsqrt", "abs", "tanh", "logistic", "sin", "cos",
             "square", "erf", "log1p", "expm1", "exp2", "sign", "erfc", "tan", "cbrt")
BINARY_OPS = ("add", "sub", "mul", "div", "max", "min", "pow", "atan2")


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
    """A float scalar constant (a literal in the traced program)."""
    return Pat("scalar", float(value))


def C(name: str) -> Pat:  # noqa: N802
    """A float scalar constant whose value is a variable (for constant folding)."""
    return Pat("const", name)


def fold(op: str, a: Pat, b: Pat) -> Pat:
    """Right side only: the scalar ``a op b`` of two constants, computed while rewriting."""
    assert op in ("add", "sub", "mul", "div") and a.kind == b.kind == "const"
    return Pat("fold", op, (a, b))


def _pat(x: Any) -> Pat:
    return x if isinstance(x, Pat) else scalar(x)


def _unary(op: str):
    def build(a: Pat) -> Pat:
        return Pat("un", op, (_pat(a),))
    build.__name__ = op
    build.__doc__ = f"Elementwise lax.{op}."
    return build


exp, log, sqrt, rsqrt, tanh, logistic, sin, cos = map(
    _unary, ("exp", "log", "sqrt", "rsqrt", "tanh", "logistic", "sin", "cos"))
abs_, square, neg = _unary("abs"), _unary("square"), _unary("neg")


def binary(op: str, a: Any, b: Any) -> Pat:
    """Elementwise binary ``op`` (add, sub, mul, div, max, min, pow, atan2)."""
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


# ----------------------------------------------------------------------------- guards

class Guard:
    """A side condition: egglog facts for saturation, a numpy check for ``rules check``."""

    def facts(self, c: Compiler) -> list: raise NotImplementedError
    def holds(self, env: dict, params: dict, root_shape: tuple) -> bool: return True


@dataclass(frozen=True)
class Scalar(Guard):
    v: Pat
    def facts(self, c): return [shape(c.term(self.v)) == _vec(())]
    def holds(self, env, params, root_shape): return np.ndim(env[self.v.op]) == 0


@dataclass(frozen=True)
class SameShape(Guard):
    a: Pat
    b: Pat
    def facts(self, c):
        s = c.fresh_vec()
        return [shape(c.term(self.a)) == s, shape(c.term(self.b)) == s]
    def holds(self, env, params, root_shape):
        return np.shape(env[self.a.op]) == np.shape(env[self.b.op])


@dataclass(frozen=True)
class SameRank(Guard):
    a: Pat
    b: Pat
    def facts(self, c):
        from egglog import eq
        sa, sb = c.fresh_vec(), c.fresh_vec()
        return [shape(c.term(self.a)) == sa, shape(c.term(self.b)) == sb,
                eq(sa.length()).to(sb.length())]
    def holds(self, env, params, root_shape):
        return np.ndim(env[self.a.op]) == np.ndim(env[self.b.op])


@dataclass(frozen=True)
class ShapeIs(Guard):
    """The shape of ``v`` is the parameter ``p``."""
    v: Pat
    p: P
    def facts(self, c): return [shape(c.term(self.v)) == c.param(self.p)]
    def holds(self, env, params, root_shape):
        return np.shape(env[self.v.op]) == tuple(params[self.p.name])


@dataclass(frozen=True)
class Broadcasts(Guard):
    """``v`` is smaller than the whole left side (it is broadcast: a bias, a scale)."""
    v: Pat
    def facts(self, c):
        from egglog import ne
        s, r = c.fresh_vec(), c.fresh_vec()
        return [shape(c.term(self.v)) == s, shape(c.root) == r, ne(s).to(r)]
    def holds(self, env, params, root_shape): return np.shape(env[self.v.op]) != root_shape


@dataclass(frozen=True)
class NonzeroConst(Guard):
    c: Pat
    def facts(self, c):
        from egglog import f64, ne
        c.const(self.c.op)
        return [ne(c.consts[self.c.op][0]).to(f64(0.0))]
    def holds(self, env, params, root_shape): return bool(np.all(np.asarray(env[self.c.op]) != 0))


@dataclass(frozen=True)
class ComplementAxes(Guard):
    """``axes`` are exactly the dimensions ``broadcast_in_dim`` with ``dims`` added."""
    dims: P
    axes: P
    def facts(self, c): return [complement_axes(c.param(self.dims), c.param(self.axes))]
    def holds(self, env, params, root_shape):
        dims, axes = tuple(params[self.dims.name]), tuple(params[self.axes.name])
        return tuple(sorted(set(range(len(dims) + len(axes))) - set(dims))) == axes


@dataclass(frozen=True)
class KeepsShape(Guard):
    v: Pat
    def facts(self, c):
        s = c.fresh_vec()
        return [shape(c.term(self.v)) == s, shape(c.root) == s]
    def holds(self, env, params, root_shape): return np.shape(env[self.v.op]) == root_shape


@dataclass(frozen=True)
class Rank(Guard):
    v: Pat
    k: int
    def facts(self, c):
        s = c.fresh_vec()
        from egglog import eq, i64
        return [shape(c.term(self.v)) == s, eq(s.length()).to(i64(self.k))]
    def holds(self, env, params, root_shape): return np.ndim(env[self.v.op]) == self.k


@dataclass(frozen=True)
class Nonneg(Guard):
    v: Pat
    def facts(self, c): return [nonneg(c.term(self.v))]
    def holds(self, env, params, root_shape):
        x = np.asarray(env[self.v.op], np.float64)
        return bool(np.all((x >= 0) | np.isnan(x)))


@dataclass(frozen=True)
class Moderate(Guard):
    v: Pat
    def facts(self, c): return [moderate(c.term(self.v))]
    def holds(self, env, params, root_shape):
        x = np.asarray(env[self.v.op], np.float64)
        return bool(np.all((x >= 1e-18) & (x <= 1e18)))


@dataclass(frozen=True)
class Finite(Guard):
    v: Pat
    def facts(self, c): return [finite(c.term(self.v))]
    def holds(self, env, params, root_shape):
        return not np.any(np.isinf(np.asarray(env[self.v.op], np.float64)))


@dataclass(frozen=True)
class InversePerm(Guard):
    p: P
    q: P
    def facts(self, c): return [inverse_perm(c.param(self.p), c.param(self.q))]
    def holds(self, env, params, root_shape):
        p, q = params[self.p.name], params[self.q.name]
        return len(p) == len(q) and all(p[q[i]] == i for i in range(len(p)))


@dataclass(frozen=True)
class ComposePerm(Guard):
    """``r`` is the permutation of ``transpose(transpose(x, p), q)``."""
    p: P
    q: P
    r: P
    def facts(self, c): return [compose_perm(c.param(self.p), c.param(self.q)) == c.param(self.r)]
    def holds(self, env, params, root_shape):
        p, q, r = (params[x.name] for x in (self.p, self.q, self.r))
        return tuple(r) == tuple(p[i] for i in q)


@dataclass(frozen=True)
class ScaleRows(Guard):
    """``s`` has shape ``[rows of q, 1]``: it scales the rows of a 2-D ``q``."""
    s: Pat
    q: Pat
    def facts(self, c):
        from egglog import i64
        sq = c.fresh_vec()
        return [shape(c.term(self.q)) == sq, shape(c.term(self.s)) == _vec((sq[0], i64(1)))]
    def holds(self, env, params, root_shape):
        q = np.shape(env[self.q.op])
        return len(q) == 2 and np.shape(env[self.s.op]) == (q[0], 1)


@dataclass(frozen=True)
class ScaleCols(Guard):
    """``s`` has shape ``[1, columns of k]``: it scales the columns of a 2-D ``k``."""
    s: Pat
    k: Pat
    def facts(self, c):
        from egglog import i64
        sk = c.fresh_vec()
        return [shape(c.term(self.k)) == sk, shape(c.term(self.s)) == _vec((i64(1), sk[1]))]
    def holds(self, env, params, root_shape):
        k = np.shape(env[self.k.op])
        return len(k) == 2 and np.shape(env[self.s.op]) == (1, k[1])


@dataclass(frozen=True)
class ConvChannel(Guard):
    """``s`` holds one value per output channel of the conv ``key`` (broadcast along the
    others); ``kshape`` is that vector's shape laid out along the kernel's output-feature
    dimension."""
    key: P
    s: Pat
    kshape: P
    def facts(self, c):
        s = c.fresh_vec()
        return [shape(c.term(self.s)) == s, conv_channel(c.param(self.key), s, c.param(self.kshape))]
    def holds(self, env, params, root_shape):
        chan, kshape = conv_channel_shapes(CONV_KEYS[params[self.key.name]], root_shape)
        return np.shape(env[self.s.op]) == chan and tuple(params[self.kshape.name]) == kshape


def conv_channel_shapes(params: dict, out_shape: Sequence[int]) -> tuple[tuple, tuple]:
    """For a conv with these params and output shape: the shape of a per-output-channel
    tensor broadcast against the output, and the same values laid out for the kernel."""
    dn = params["dimension_numbers"]
    out_feature, kernel_feature = dn.out_spec[1], dn.rhs_spec[0]
    channels = out_shape[out_feature]
    chan = tuple(channels if d == out_feature else 1 for d in range(len(out_shape)))
    kshape = tuple(channels if d == kernel_feature else 1 for d in range(len(out_shape)))
    return chan, kshape


def _vec(items: Sequence) -> Any:
    from egglog import Vec, i64
    if not items:
        return Vec[i64].empty()
    return Vec(*[i64(int(x)) if isinstance(x, (int, np.integer)) else x for x in items])


# ----------------------------------------------------------------------------- rules

@dataclass(frozen=True, eq=False)
class Rule:
    """One rewrite ``lhs → rhs`` with a stable ``name``, its ``family`` and one-line ``law``.

    ``guard``: conditions (see the module docstring); ``finite``: operands that must not be
    ±inf. ``shapes`` (var → shape with symbolic dims such as ``("m", "k")``) and ``params``
    (param → candidate values, or a function of the drawn dims) tell ``rules check`` what to
    sample; by default every variable gets the same random shape. ``values`` (var → "nonneg",
    "moderate" or "positive") restricts sampled values where a guard needs it. ``ac`` marks
    associativity/commutativity rules, which run only in the first iterations (bounded AC).
    ``in_range`` says the rule regroups work so that it is exact only while every intermediate
    of both sides stays inside the float32 range (reassociating ``(a*b)*x`` can overflow
    where the original did not); ``rules check`` then excuses samples that leave the range.
    """

    name: str
    family: str
    law: str
    lhs: Pat
    rhs: Pat
    guard: tuple[Guard, ...] = ()
    finite: tuple[Pat, ...] = ()
    shapes: dict[str, tuple] | None = None
    params: dict[str, Any] | None = None
    values: dict[str, str] = field(default_factory=dict)
    ac: bool = False
    in_range: bool = False

    def __post_init__(self) -> None:
        missing = set(self.rhs.vars()) - set(self.lhs.vars())
        if missing:
            raise ValueError(f"rule {self.name}: right side uses unbound {sorted(missing)}")
        if self.lhs.kind in ("var", "scalar"):
            raise ValueError(f"rule {self.name}: the left side must be an operation")

    @property
    def all_guards(self) -> tuple[Guard, ...]:
        return self.guard + tuple(Finite(v) for v in self.finite)

    def reverse(self, name: str, law: str | None = None) -> Rule:
        """The same law read right to left, under the same guard."""
        return Rule(name, self.family, law or _reverse_law(self.law), self.rhs, self.lhs,
                    self.guard, self.finite, self.shapes, self.params, self.values, self.ac,
                    self.in_range)

    def __repr__(self) -> str:
        return f"Rule({self.name}: {self.law})"


def _reverse_law(law: str) -> str:
    left, _, right = law.partition("->")
    return f"{right.strip()} -> {left.strip()}"


class Compiler:
    """Turns one Rule into an egglog rule (one per call of ``compile``)."""

    def __init__(self) -> None:
        from egglog import String, Vec, i64, var
        self._var, self._String, self._Vec, self._i64 = var, String, Vec, i64
        self.vars: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.consts: dict[str, tuple] = {}
        self._fresh = itertools.count()
        self.root = var("__root", Term)

    def term(self, v: Pat) -> Any:
        return self.vars.setdefault(v.op, self._var(v.op, Term))

    def param(self, p: P) -> Any:
        sort = self._Vec[self._i64] if p.kind == "vec" else self._String
        return self.params.setdefault(p.name, self._var("p_" + p.name, sort))

    def const(self, name: str) -> Any:
        """The scalar term of constant ``name`` (value, dtype and weak type are variables)."""
        from egglog import Bool, String, f64
        if name not in self.consts:
            self.consts[name] = (self._var("c_" + name, f64), self.fresh(String), self.fresh(Bool))
        return Term.scalar(*self.consts[name])

    def fresh_vec(self) -> Any:
        return self._var(f"__s{next(self._fresh)}", self._Vec[self._i64])

    def fresh(self, sort: Any) -> Any:
        return self._var(f"__f{next(self._fresh)}", sort)

    def _param_value(self, value: Any) -> Any:
        if isinstance(value, P):
            return self.param(value)
        if isinstance(value, str):
            return value
        return _vec(tuple(value))

    def build(self, pat: Pat, side: str) -> Any:
        from egglog import Bool, String, f64, i64
        # iterative post-order so that deep terms cannot overflow the stack
        built: dict[int, Any] = {}
        for node in _postorder(pat):
            args = [built[id(a)] for a in node.args]
            k = node.kind
            if k == "var":
                out = self.term(node)
            elif k == "scalar":
                if side == "lhs":
                    out = Term.scalar(f64(node.op), self.fresh(String), self.fresh(Bool))
                else:
                    out = Term.scalar(f64(node.op), self.root_dtype, Bool(False))
            elif k == "const":
                out = self.const(node.op)
            elif k == "fold":
                (va, _, _), (vb, _, _) = self.consts[node.args[0].op], self.consts[node.args[1].op]
                value = {"add": va + vb, "sub": va - vb, "mul": va * vb, "div": va / vb}[node.op]
                out = Term.scalar(value, self.root_dtype, Bool(False))
            elif k == "un":
                out = Term.un(self._param_value(node.op), *args)
            elif k == "bin":
                out = Term.bin(self._param_value(node.op), *args)
            elif k == "ipow":
                out = Term.ipow(i64(node.op), *args)
            elif k == "dot":
                out = Term.dot(self._param_value(node.op), *args)
            elif k == "conv":
                out = Term.conv(self._param_value(node.op), *args)
            elif k == "transpose":
                out = Term.transpose(self._param_value(node.op), *args)
            elif k == "reshape":
                out = Term.reshape(self._param_value(node.op), *args)
            elif k == "bcast":
                out = Term.bcast(self._param_value(node.op[0]), self._param_value(node.op[1]), *args)
            elif k == "reduce":
                out = Term.reduce(node.op[0], self._param_value(node.op[1]), *args)
            else:
                raise ValueError(f"unknown term kind {k!r}")
            built[id(node)] = out
        return built[id(pat)]

    def compile(self, r: Rule) -> Any:
        from egglog import String, eq, rule, union
        self.root_dtype = self.fresh(String)
        facts = [eq(self.root).to(self.build(r.lhs, "lhs"))]
        for g in r.all_guards:
            facts += g.facts(self)
        if any(n.kind in ("scalar", "fold") for n in r.rhs.walk()):
            facts.append(dtype(self.root) == self.root_dtype)
        return rule(*facts, name=r.name).then(union(self.root).with_(self.build(r.rhs, "rhs")))


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


def compile_rule(r: Rule) -> Any:
    """The egglog rule of ``r`` (named ``r.name`` so that run reports count it)."""
    return Compiler().compile(r)


# ----------------------------------------------------------------------------- JAX semantics

def parse_dims(dims: str) -> tuple:
    """Canonical dimension-number string → the tuple ``lax.dot_general`` takes."""
    return ast.literal_eval(dims)


def _reduce(op: str, x: Any, axes: tuple) -> Any:
    fn = {"reduce_sum": jnp.sum, "reduce_prod": jnp.prod, "reduce_max": jnp.max,
          "reduce_min": jnp.min}[op]
    return fn(x, axis=tuple(axes))


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
            a, b = args
            fn = {"add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": jnp.divide,
                  "max": jnp.maximum, "min": jnp.minimum, "pow": jnp.power,
                  "atan2": jnp.arctan2}[param(node.op)]
            out = fn(a, b)
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


# ----------------------------------------------------------------------------- rule files

def load_rules_file(path: str | Path) -> list[Rule]:
    """The rules a Python file defines: its ``RULES`` list, else every module-level Rule."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no rule file {path}")
    spec = importlib.util.spec_from_file_location(f"_dnnfusion_rules_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rules = getattr(module, "RULES", None)
    if rules is None:
        rules = [v for v in vars(module).values() if isinstance(v, Rule)]
    rules = list(rules)
    if not all(isinstance(r, Rule) for r in rules):
        raise ValueError(f"{path}: RULES must hold dnnfusion_jax.rules_api.Rule objects")
    return rules
