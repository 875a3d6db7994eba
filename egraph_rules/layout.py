"""Layout rules: cancel transpose and reshape pairs, and move elementwise ops across them so
that Shuffle/Reorganize operators gather at block edges or vanish.

A transpose or reshape commutes with a unary elementwise op; with a binary op when both
operands have the full shape (reshape) or the same rank (transpose), or when one is a scalar.
"""
from dnnfusion_jax.rules_api import (ComposePerm, InversePerm, P, Rule, SameRank, SameShape,
                                     Scalar, ShapeIs, V, binary, reshape, transpose, Pat)

x, a, b, s = V("x"), V("a"), V("b"), V("s")
p, q, r, sz, sz2, op = P("p"), P("q"), P("r"), P("sizes"), P("sizes2"), P("op", "str")
F = "layout"


def un(o, v):
    return Pat("un", o, (v,))


UNARY = ["exp", "tanh", "neg", "logistic", "sqrt", "abs"]
BINARY = ["add", "mul", "sub", "div", "max"]


def _perms(rng, dims_):
    perm = tuple(int(i) for i in rng.permutation(3))
    inv = tuple(int(i) for i in __import__("numpy").argsort(perm))
    second = tuple(int(i) for i in rng.permutation(3))
    return {"p": perm, "q": inv, "r": tuple(perm[i] for i in second), "q2": second,
            "op": str(rng.choice(UNARY)), "bop": str(rng.choice(BINARY))}


def _sizes(rng, dims_):
    m, n = dims_["m"], dims_["n"]
    return {"sizes": (m * n,), "sizes2": (n, m), "op": str(rng.choice(UNARY)),
            "bop": str(rng.choice(BINARY))}


bop = P("bop", "str")
T3 = {"x": ("m", "n", "k"), "a": ("m", "n", "k"), "b": ("m", "n", "k")}
T2 = {"x": ("m", "n"), "a": ("m", "n"), "b": ("m", "n")}
q2 = P("q2")

RULES = [
    Rule("transpose-inverse", F, "transpose(transpose(x, p), q) -> x for q = p^-1",
         transpose(transpose(x, p), q), x, (InversePerm(p, q),), shapes=T3, params=_perms),
    Rule("transpose-compose", F, "transpose(transpose(x, p), q) -> transpose(x, p∘q)",
         transpose(transpose(x, p), q2), transpose(x, r), (ComposePerm(p, q2, r),), shapes=T3,
         params=_perms),
    Rule("reshape-reshape", F, "reshape(reshape(x, s1), s2) -> reshape(x, s2)",
         reshape(reshape(x, sz), sz2), reshape(x, sz2), shapes=T2, params=_sizes),
    Rule("reshape-noop", F, "reshape(x, shape(x)) -> x", reshape(x, sz), x, (ShapeIs(x, sz),),
         shapes={"x": ("mn",)}, params=lambda rng, d: {"sizes": (d["mn"],)}),
    Rule("transpose-sink-unary", F, "transpose(f(x), p) -> f(transpose(x, p))",
         transpose(un(op, x), p), un(op, transpose(x, p)), shapes=T3, params=_perms),
    Rule("transpose-sink-binary", F, "transpose(a op b, p) -> transpose(a,p) op transpose(b,p)",
         transpose(binary(bop, a, b), p), binary(bop, transpose(a, p), transpose(b, p)),
         (SameRank(a, b),), shapes=T3, params=_perms),
    Rule("transpose-sink-scalar", F, "transpose(a op s, p) -> transpose(a,p) op s for scalar s",
         transpose(binary(bop, a, s), p), binary(bop, transpose(a, p), s), (Scalar(s),),
         shapes=T3, params=_perms),
    Rule("transpose-sink-scalar-left", F,
         "transpose(s op a, p) -> s op transpose(a,p) for scalar s",
         transpose(binary(bop, s, a), p), binary(bop, s, transpose(a, p)), (Scalar(s),),
         shapes=T3, params=_perms),
    Rule("transpose-hoist-binary", F, "transpose(a,p) op transpose(b,p) -> transpose(a op b, p)",
         binary(bop, transpose(a, p), transpose(b, p)), transpose(binary(bop, a, b), p),
         shapes=T3, params=_perms),
    Rule("reshape-sink-unary", F, "reshape(f(x), s) -> f(reshape(x, s))",
         reshape(un(op, x), sz), un(op, reshape(x, sz)), shapes=T2, params=_sizes),
    Rule("reshape-sink-binary", F, "reshape(a op b, s) -> reshape(a,s) op reshape(b,s)",
         reshape(binary(bop, a, b), sz), binary(bop, reshape(a, sz), reshape(b, sz)),
         (SameShape(a, b),), shapes=T2, params=_sizes),
    Rule("reshape-sink-scalar", F, "reshape(a op s, sz) -> reshape(a,sz) op s for scalar s",
         reshape(binary(bop, a, s), sz), binary(bop, reshape(a, sz), s), (Scalar(s),),
         shapes=T2, params=_sizes),
    Rule("reshape-hoist-binary", F, "reshape(a,s) op reshape(b,s) -> reshape(a op b, s)",
         binary(bop, reshape(a, sz), reshape(b, sz)), reshape(binary(bop, a, b), sz),
         (SameShape(a, b),), shapes=T2, params=_sizes),
]
RULES.insert(5, RULES[4].reverse("transpose-hoist-unary"))
RULES.append(RULES[-4].reverse("reshape-hoist-unary"))
