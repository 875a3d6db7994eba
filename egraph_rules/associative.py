"""Associative rules: regroup products and quotients so that work cancels or folds.

The paper's representative associative rules are here (``recip-mul``, ``sqrt-pair``,
``abs-mul``), with the exp identity and the scalar regroupings that let constants fold.
Binary associativity itself (``mul-assoc``, ``add-assoc``) is bounded AC (``ac=True``).
"""
from dnnfusion_jax.rules_api import (C, Moderate, Nonneg, Rule, Scalar, V, abs_, exp, fold,
                                     recip, sqrt)

a, b, x, y, z, s = V("a"), V("b"), V("x"), V("y"), V("z"), V("s")
c, d = C("c"), C("d")
F = "associative"

RULES = [
    Rule("exp-mul", F, "exp(a)*exp(b) -> exp(a+b)", exp(a) * exp(b), exp(a + b), in_range=True),
    Rule("recip-mul", F, "(1/a)*(1/b) -> 1/(a*b)", recip(a) * recip(b), recip(a * b)),
    Rule("mul-recip", F, "a*(1/b) -> a/b", a * recip(b), a / b),
    Rule("recip-mul-left", F, "(1/b)*a -> a/b", recip(b) * a, a / b),
    Rule("div-div", F, "x/y/z -> x/(y*z) for moderate y, z", (x / y) / z, x / (y * z),
         (Moderate(y), Moderate(z)), values={"y": "moderate", "z": "moderate"}),
    Rule("div-mul", F, "(x/y)*z -> x*(z/y)", (x / y) * z, x * (z / y), in_range=True),
    Rule("sqrt-pair", F, "sqrt(a)*sqrt(a) -> a for a >= 0", sqrt(a) * sqrt(a), a,
         (Nonneg(a),), values={"a": "nonneg"}),
    Rule("sqrt-mul-sqrt", F, "(a*sqrt(b))*(sqrt(b)*x) -> (a*b)*x for b >= 0",
         (a * sqrt(b)) * (sqrt(b) * x), (a * b) * x, (Nonneg(b),), values={"b": "nonneg"},
         in_range=True),
    Rule("abs-mul", F, "(abs(a)*b)*abs(x) -> abs(a*x)*b", (abs_(a) * b) * abs_(x),
         abs_(a * x) * b, in_range=True),
    Rule("scale-scale", F, "c*(d*x) -> (c*d)*x", c * (d * x), fold("mul", c, d) * x,
         in_range=True),
    Rule("scale-scale-right", F, "(x*c)*d -> x*(c*d)", (x * c) * d, x * fold("mul", c, d),
         in_range=True),
    Rule("scalar-scalar", F, "s*(b*x) -> (s*b)*x for scalar s, b", s * (b * x), (s * b) * x,
         (Scalar(s), Scalar(b)), in_range=True),
    Rule("sub-add", F, "(a-b)+x -> a+(x-b)", (a - b) + x, a + (x - b), in_range=True),
    Rule("mul-assoc", F, "(a*b)*x -> a*(b*x)", (a * b) * x, a * (b * x), ac=True, in_range=True),
    Rule("add-assoc", F, "(a+b)+x -> a+(b+x)", (a + b) + x, a + (b + x), ac=True, in_range=True),
]
RULES += [RULES[-2].reverse("mul-assoc-rev"), RULES[-1].reverse("add-assoc-rev")]
