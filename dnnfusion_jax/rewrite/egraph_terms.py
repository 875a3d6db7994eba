"""The e-graph's term language and its analyses (egglog sorts, functions and analysis rules).

A ``Term`` is one tensor-valued operation. Elementwise float operations are ``un``/``bin``
with the lax primitive's name; layout operations carry their parameters as ``Vec[i64]``;
``dot``/``conv`` carry a canonical parameter key. Anything else (integer arithmetic, control
flow, RNG, effects, multi-output primitives) is an ``app`` of a key into a Python table, with
its outputs as ``out(app, i)``: opaque nodes pass through the e-graph untouched.

Analyses (filled by the ``ANALYSIS`` ruleset and by the translation):
  * ``shape(t)`` and ``dtype(t)``: functions without a merge, so a rewrite that equates terms
    of different shapes is a loud error (egglog panics with "Illegal merge"), never hidden;
  * ``nonneg(t)``: every element of t is NaN or has its sign bit clear (+0.0 yes, -0.0 no:
    rsqrt(-0.0) is -inf); ``finite(t)``: t is never ±inf (NaN allowed);
    ``moderate(t)``: t is a positive value in [1e-18, 1e18] (products of two cannot leave the
    f32 normal range);
  * parameter facts the translation computes in Python: ``inverse_perm(p, q)``,
    ``compose_perm(p, q)``, ``conv_channel(key, chan_shape, kernel_shape)``,
    ``dot_swap(dims, lhs_rank, rhs_rank, perm, swapped)`` (see ``swap_dot``).

Example:
    >>> from egglog import EGraph, Vec, i64, set_
    >>> eg = EGraph()
    >>> x = Term.leaf(0)
    >>> eg.register(set_(shape(x)).to(Vec(i64(2), i64(3))), set_(dtype(x)).to("float32"))
    >>> y = Term.un("exp", Term.transpose(Vec(i64(1), i64(0)), x))
    >>> eg.register(y)
    >>> _ = eg.run(ANALYSIS.saturate())
    >>> eg.extract(shape(y))
    Vec(3, 2)
"""
from __future__ import annotations

import numpy as np
from egglog import (Bool, BoolLike, Expr, String, StringLike, Unit, Vec, eq, f64, f64Like, function,
                    i64, i64Like, relation, rule, ruleset, set_, var)

from dnnfusion_jax.ops.registry import PRIMITIVES
from dnnfusion_jax.frontend.simplify import dot_transpose_swap

MAX_RANK = 6


class Term(Expr):
    """One tensor: a leaf, a float scalar, an operation, or one output of an opaque node."""

    @classmethod
    def leaf(cls, index: i64Like) -> Term: ...          # graph input, array constant
    @classmethod
    def scalar(cls, value: f64Like, dtype: StringLike, weak: BoolLike) -> Term: ...
    @classmethod
    def un(cls, op: StringLike, a: Term) -> Term: ...    # float elementwise unary
    @classmethod
    def bin(cls, op: StringLike, a: Term, b: Term) -> Term: ...  # float elementwise binary
    @classmethod
    def ipow(cls, y: i64Like, a: Term) -> Term: ...     # integer_pow
    @classmethod
    def dot(cls, dims: StringLike, a: Term, b: Term) -> Term: ...  # dot_general
    @classmethod
    def conv(cls, key: StringLike, a: Term, b: Term) -> Term: ...  # conv_general_dilated
    @classmethod
    def transpose(cls, perm: Vec[i64], a: Term) -> Term: ...
    @classmethod
    def reshape(cls, sizes: Vec[i64], a: Term) -> Term: ...
    @classmethod
    def bcast(cls, shape: Vec[i64], dims: Vec[i64], a: Term) -> Term: ...  # broadcast_in_dim
    @classmethod
    def reduce(cls, op: StringLike, axes: Vec[i64], a: Term) -> Term: ...
    @classmethod
    def app(cls, key: i64Like, args: Args) -> Term: ...  # opaque node: a tuple of outputs
    @classmethod
    def out(cls, node: Term, index: i64Like) -> Term: ...


class Args(Expr):
    """Argument list of an opaque node."""

    @classmethod
    def nil(cls) -> Args: ...
    @classmethod
    def cons(cls, head: Term, tail: Args) -> Args: ...


@function
def shape(t: Term) -> Vec[i64]: ...


@function
def dtype(t: Term) -> String: ...


@function
def compose_perm(p: Vec[i64], q: Vec[i64]) -> Vec[i64]: ...


nonneg = relation("nonneg", Term)
finite = relation("finite", Term)
moderate = relation("moderate", Term)
inverse_perm = relation("inverse_perm", Vec[i64], Vec[i64])
conv_channel = relation("conv_channel", String, Vec[i64], Vec[i64])
complement_axes = relation("complement_axes", Vec[i64], Vec[i64])
dot_swap = relation("dot_swap", String, i64, i64, Vec[i64], String)

ANALYSIS = ruleset(name="analysis")
FINITE_MATH = ruleset(name="finite_math")

_a, _b, _r = var("a", Term), var("b", Term), var("r", Term)
_sa, _sb = var("sa", Vec[i64]), var("sb", Vec[i64])
_p, _o, _dt = var("p", Vec[i64]), var("o", String), var("dt", String)
_v, _w, _y = var("v", f64), var("w", Bool), var("y", i64)
_empty = Vec[i64].empty()


def int_vec(items) -> Vec[i64]:
    """An egglog vector of integers (Python ints, or i64 terms such as a shape's entries)."""
    if not items:
        return Vec[i64].empty()
    return Vec(*[i64(int(x)) if isinstance(x, (int, np.integer)) else x for x in items])

ELEMENTWISE_SHAPE_RULES = [
    # un/ipow keep shape and dtype
    rule(eq(_r).to(Term.un(_o, _a)), shape(_a) == _sa).then(set_(shape(_r)).to(_sa)),
    rule(eq(_r).to(Term.un(_o, _a)), dtype(_a) == _dt).then(set_(dtype(_r)).to(_dt)),
    rule(eq(_r).to(Term.ipow(_y, _a)), shape(_a) == _sa).then(set_(shape(_r)).to(_sa)),
    rule(eq(_r).to(Term.ipow(_y, _a)), dtype(_a) == _dt).then(set_(dtype(_r)).to(_dt)),
    # bin: numpy broadcasting with equal ranks, or a rank-0 operand
    rule(eq(_r).to(Term.bin(_o, _a, _b)), dtype(_a) == _dt).then(set_(dtype(_r)).to(_dt)),
    rule(eq(_r).to(Term.bin(_o, _a, _b)), shape(_a) == _sa, shape(_b) == _empty)
    .then(set_(shape(_r)).to(_sa)),
    rule(eq(_r).to(Term.bin(_o, _a, _b)), shape(_a) == _empty, shape(_b) == _sb)
    .then(set_(shape(_r)).to(_sb)),
    rule(eq(_r).to(Term.scalar(_v, _dt, _w))).then(set_(shape(_r)).to(_empty)),
    rule(eq(_r).to(Term.scalar(_v, _dt, _w))).then(set_(dtype(_r)).to(_dt)),
]

LAYOUT_SHAPE_RULES = [
    rule(eq(_r).to(Term.reshape(_p, _a))).then(set_(shape(_r)).to(_p)),
    rule(eq(_r).to(Term.reshape(_p, _a)), dtype(_a) == _dt).then(set_(dtype(_r)).to(_dt)),
    rule(eq(_r).to(Term.bcast(_p, _sb, _a))).then(set_(shape(_r)).to(_p)),
    rule(eq(_r).to(Term.bcast(_p, _sb, _a)), dtype(_a) == _dt).then(set_(dtype(_r)).to(_dt)),
    rule(eq(_r).to(Term.transpose(_p, _a)), dtype(_a) == _dt).then(set_(dtype(_r)).to(_dt)),
    rule(eq(_r).to(Term.reduce(_o, _p, _a)), dtype(_a) == _dt).then(set_(dtype(_r)).to(_dt)),
    rule(eq(_r).to(Term.dot(_o, _a, _b)), dtype(_a) == _dt).then(set_(dtype(_r)).to(_dt)),
    rule(eq(_r).to(Term.conv(_o, _a, _b)), dtype(_a) == _dt).then(set_(dtype(_r)).to(_dt)),
]


def _rank_rules() -> list:
    """Shape rules that need the rank spelled out: broadcasting, transpose, reductions, dots."""
    rules = []
    for k in range(1, MAX_RANK + 1):
        both = Vec(*[_sa[i].max(_sb[i]) for i in range(k)])
        rules.append(rule(eq(_r).to(Term.bin(_o, _a, _b)), shape(_a) == _sa, shape(_b) == _sb,
                          eq(_sa.length()).to(i64(k)), eq(_sb.length()).to(i64(k)))
                     .then(set_(shape(_r)).to(both)))
        permuted = Vec(*[_sa[_p[i]] for i in range(k)])
        rules.append(rule(eq(_r).to(Term.transpose(_p, _a)), shape(_a) == _sa,
                          eq(_p.length()).to(i64(k))).then(set_(shape(_r)).to(permuted)))
    for n in range(1, MAX_RANK + 1):  # axes are sorted: remove the highest first
        reduced = _sa
        for i in reversed(range(n)):
            reduced = reduced.remove(_p[i])
        rules.append(rule(eq(_r).to(Term.reduce(_o, _p, _a)), shape(_a) == _sa,
                          eq(_p.length()).to(i64(n))).then(set_(shape(_r)).to(reduced)))
    # canonical matmuls, the only dots rewrites create with new shapes (reassociation)
    mm, bmm = MATMUL_DIMS, BATCHED_MATMUL_DIMS
    rules += [
        rule(eq(_r).to(Term.dot(mm, _a, _b)), shape(_a) == _sa, shape(_b) == _sb,
             eq(_sa.length()).to(i64(2)), eq(_sb.length()).to(i64(2)))
        .then(set_(shape(_r)).to(Vec(_sa[0], _sb[1]))),
        rule(eq(_r).to(Term.dot(mm, _a, _b)), shape(_a) == _sa, shape(_b) == _sb,
             eq(_sa.length()).to(i64(2)), eq(_sb.length()).to(i64(1)))
        .then(set_(shape(_r)).to(Vec(_sa[0]))),
        rule(eq(_r).to(Term.dot(bmm, _a, _b)), shape(_a) == _sa, shape(_b) == _sb,
             eq(_sa.length()).to(i64(3)), eq(_sb.length()).to(i64(3)))
        .then(set_(shape(_r)).to(Vec(_sa[0], _sa[1], _sb[2]))),
    ]
    # any other dot: the same dimension numbers on operands of the same shapes
    _c, _d, _r2 = var("c", Term), var("d", Term), var("r2", Term)
    rules.append(rule(eq(_r).to(Term.dot(_o, _a, _b)), shape(_r) == _p, eq(_r2).to(Term.dot(_o, _c, _d)),
                      shape(_a) == _sa, shape(_c) == _sa, shape(_b) == _sb, shape(_d) == _sb)
                 .then(set_(shape(_r2)).to(_p)))
    return rules


MATMUL_DIMS = "(((1,), (0,)), ((), ()))"
"""dot_general dimension numbers of ``a @ b`` for a 2-D ``a`` (the canonical matmul)."""
BATCHED_MATMUL_DIMS = "(((2,), (1,)), ((0,), (0,)))"
"""dot_general dimension numbers of a batched matmul of 3-D operands."""


def swap_dot(dims: str, lhs_rank: int, rhs_rank: int) -> tuple[tuple[int, ...], str]:
    """``(perm, swapped)``: ``transpose(dot(a, b, dims), perm)`` is ``dot(b, a, swapped)``.

    dot_general lays its result out as batch, then lhs free, then rhs free dimensions;
    swapping the operands (and their dimension numbers) gives batch, rhs free, lhs free,
    which is the original under the one permutation that moves the rhs free dimensions in
    front of the lhs ones and keeps the batch dimensions leading.

    Example (``jax.vmap(lambda v: W @ v)``: ``dot(W, X)^T`` is ``dot(X, W)``):
        >>> swap_dot("(((1,), (1,)), ((), ()))", 2, 2)
        ((1, 0), '(((1,), (1,)), ((), ()))')
        >>> swap_dot(BATCHED_MATMUL_DIMS, 3, 3)
        ((0, 2, 1), '(((1,), (2,)), ((0,), (0,)))')
    """
    import ast
    perm, swapped = dot_transpose_swap(ast.literal_eval(dims), lhs_rank, rhs_rank)
    return perm, repr(swapped)


def _registry_term(row, *operands) -> Term:
    """The term of a registry row with a ``un``, ``bin`` or ``reduce`` term kind."""
    if row.term == "un":
        return Term.un(row.name, operands[0])
    if row.term == "bin":
        return Term.bin(row.name, *operands)
    return Term.reduce(row.name, _p, operands[0])


def _fact_rules() -> list:
    """The registry's ``facts`` column as analysis rules, then those of scalars, even powers
    and layout operations."""
    rules = []
    for row in PRIMITIVES.values():
        if row.term not in ("un", "bin", "reduce") or not row.facts:
            continue
        operands = (_a, _b) if row.term == "bin" else (_a,)
        built = eq(_r).to(_registry_term(row, *operands))
        for fact in row.facts:
            if fact == "nonneg":
                rules.append(rule(built).then(nonneg(_r)))
            elif fact == "nonneg_if_nonneg":
                rules.append(rule(built, *map(nonneg, operands)).then(nonneg(_r)))
            elif fact == "nonneg_if_either":
                rules += [rule(built, nonneg(x)).then(nonneg(_r)) for x in operands]
            elif fact == "nonneg_if_same":
                rules.append(rule(eq(_r).to(_registry_term(row, _a, _a))).then(nonneg(_r)))
            elif fact == "finite":
                rules.append(rule(built).then(finite(_r)))
            elif fact == "finite_if_finite":
                rules.append(rule(built, finite(_a)).then(finite(_r)))
            elif fact == "moderate_if_moderate":
                rules.append(rule(built, moderate(_a)).then(moderate(_r)))
    rules += [
        # a zero scalar is +0.0: -0.0 literals are leaves, folds that are zero in f64 are
        # refused (one that underflows in f32 keeps the sign its factors give it)
        rule(eq(_r).to(Term.scalar(_v, _dt, _w)), _v >= 0.0).then(nonneg(_r)),
        rule(eq(_r).to(Term.scalar(_v, _dt, _w))).then(finite(_r)),
        rule(eq(_r).to(Term.scalar(_v, _dt, _w)), _v >= 1e-18, _v <= 1e18).then(moderate(_r)),
    ]
    for k in range(0, MAX_RANK + 1, 2):
        rules.append(rule(eq(_r).to(Term.ipow(i64(k), _a))).then(nonneg(_r)))
    for build in (lambda a: Term.transpose(_p, a), lambda a: Term.reshape(_p, a),
                  lambda a: Term.bcast(_p, _sb, a)):
        for fact in (nonneg, finite, moderate):
            rules.append(rule(eq(_r).to(build(_a)), fact(_a)).then(fact(_r)))
    return rules


ANALYSIS.register(*ELEMENTWISE_SHAPE_RULES, *LAYOUT_SHAPE_RULES, *_rank_rules(), *_fact_rules())
# finite_math: every tensor is assumed free of ±inf (the rules' `finite` guards always hold)
FINITE_MATH.register(rule(eq(_r).to(Term.un(_o, _a))).then(finite(_r)),
                     rule(eq(_r).to(Term.bin(_o, _a, _b))).then(finite(_r)),
                     rule(shape(_r) == _sa).then(finite(_r)))

__all__ = ["Term", "Args", "int_vec", "shape", "dtype", "nonneg", "finite", "moderate", "inverse_perm",
           "compose_perm", "dot_swap", "swap_dot", "conv_channel", "complement_axes", "ANALYSIS", "FINITE_MATH", "MATMUL_DIMS",
           "BATCHED_MATMUL_DIMS", "Unit"]
