"""Identities and constant folding: rules that remove work outright.

Every identity keeps the shape (``KeepsShape``: ``x*1`` may broadcast ``x``, and then it is no
identity). ``x*0 → 0`` and ``x-x → 0`` are left out on purpose: they are wrong for inf and NaN.
Constant folding computes in f64 and rounds once to the tensor's dtype.
"""
from dnnfusion_jax.rules_api import (C, KeepsShape, NonzeroConst, Rule, V, fold, neg)

x = V("x")
c, d = C("c"), C("d")
F = "identities"

RULES = [
    Rule("mul-one", F, "x*1 -> x", x * 1.0, x, (KeepsShape(x),)),
    Rule("one-mul", F, "1*x -> x", 1.0 * x, x, (KeepsShape(x),)),
    Rule("add-zero", F, "x+0 -> x", x + 0.0, x, (KeepsShape(x),)),
    Rule("zero-add", F, "0+x -> x", 0.0 + x, x, (KeepsShape(x),)),
    Rule("sub-zero", F, "x-0 -> x", x - 0.0, x, (KeepsShape(x),)),
    Rule("div-one", F, "x/1 -> x", x / 1.0, x, (KeepsShape(x),)),
    Rule("neg-neg", F, "-(-x) -> x", neg(neg(x)), x),
    Rule("mul-minus-one", F, "x*(-1) -> -x", x * -1.0, neg(x), (KeepsShape(x),)),
    Rule("zero-sub", F, "0-x -> -x", 0.0 - x, neg(x), (KeepsShape(x),)),
    Rule("fold-add", F, "c+d -> (c+d)", c + d, fold("add", c, d)),
    Rule("fold-sub", F, "c-d -> (c-d)", c - d, fold("sub", c, d)),
    Rule("fold-mul", F, "c*d -> (c*d)", c * d, fold("mul", c, d)),
    Rule("fold-div", F, "c/d -> (c/d) for d != 0", c / d, fold("div", c, d), (NonzeroConst(d),)),
]
