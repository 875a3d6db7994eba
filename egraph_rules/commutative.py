"""Commutative rules: swap operands (bounded AC) and move work past reductions.

``add-comm``/``mul-comm`` enable the other families to match either operand order; they run
only in the first saturation iterations (``ac=True``, see ``SaturationBudget.ac_iterations``).
"""
from dnnfusion_jax.rules_api import P, Rule, Scalar, V, exp, neg, reduce_prod, reduce_sum

a, b, s = V("a"), V("b"), V("s")
ax = P("axes")
F = "commutative"
AXES = {"axes": [(0,), (1,), (0, 1)]}

RULES = [
    Rule("add-comm", F, "a+b -> b+a", a + b, b + a, ac=True),
    Rule("mul-comm", F, "a*b -> b*a", a * b, b * a, ac=True),
    Rule("neg-mul-neg", F, "(-a)*(-b) -> a*b", neg(a) * neg(b), a * b),
    Rule("reduce-prod-exp", F, "reduce_prod(exp(a)) -> exp(reduce_sum(a))",
         reduce_prod(exp(a), ax), exp(reduce_sum(a, ax)), params=AXES, in_range=True),
    Rule("reduce-sum-scale", F, "reduce_sum(a*s) -> reduce_sum(a)*s for scalar s",
         reduce_sum(a * s, ax), reduce_sum(a, ax) * s, (Scalar(s),), finite=(s,), params=AXES,
         in_range=True),
    Rule("reduce-sum-neg", F, "reduce_sum(-a) -> -reduce_sum(a)", reduce_sum(neg(a), ax),
         neg(reduce_sum(a, ax)), params=AXES),
]
