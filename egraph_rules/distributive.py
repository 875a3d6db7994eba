"""Distributive rules: factor a shared operand out of a sum (DNNFusion's A⊙C + A⊙B → (A+B)⊙C).

Factoring is exact for finite values, but ``inf*0 + inf*1`` is NaN while ``inf*(0+1)`` is inf:
the shared operand must be free of ±inf (``finite=``). Expansion (``mul-sub-expand``) only
distributes a broadcast factor (a per-channel scale), which is what batch-norm folding needs.
"""
from dnnfusion_jax.rules_api import Broadcasts, Rule, V, square

a, b, c, x = V("a"), V("b"), V("c"), V("x")
F = "distributive"

RULES = [
    Rule("factor-right", F, "a*c + b*c -> (a+b)*c", a * c + b * c, (a + b) * c, finite=(c,), in_range=True),
    Rule("factor-left", F, "c*a + c*b -> c*(a+b)", c * a + c * b, c * (a + b), finite=(c,), in_range=True),
    Rule("factor-right-sub", F, "a*c - b*c -> (a-b)*c", a * c - b * c, (a - b) * c, finite=(c,), in_range=True),
    Rule("factor-left-sub", F, "c*a - c*b -> c*(a-b)", c * a - c * b, c * (a - b), finite=(c,), in_range=True),
    Rule("add-mul-one", F, "a + a*b -> a*(b+1)", a + a * b, a * (b + 1.0), finite=(a,), in_range=True),
    Rule("square-sub", F, "square(x) - x*c -> x*(x-c)", square(x) - x * c, x * (x - c),
         finite=(x,), in_range=True),
    Rule("mul-sub-expand", F, "(a-b)*c -> a*c - b*c for a broadcast c", (a - b) * c,
         a * c - b * c, (Broadcasts(c),), finite=(c,), shapes={"a": ("m", "n"), "b": ("m", "n"),
                                                             "c": (1, "n")}, in_range=True),
    Rule("mul-add-expand", F, "(a+b)*c -> a*c + b*c for a broadcast c", (a + b) * c,
         a * c + b * c, (Broadcasts(c),), finite=(c,), shapes={"a": ("m", "n"), "b": ("m", "n"),
                                                             "c": (1, "n")}, in_range=True),
]
