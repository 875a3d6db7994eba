"""Distributive rules: factor a shared operand out of a sum (DNNFusion's A⊙C + A⊙B → (A+B)⊙C).

Factoring is exact for finite values, but ``inf*0 + inf*1`` is NaN while ``inf*(0+1)`` is inf:
the shared operand must be free of ±inf (``finite=``). Expansion distributes only a broadcast
factor (a per-channel scale) over the bias or mean next to a conv or a matmul, which is what
batch-norm folding needs; a general expansion would feed the factoring rules back and forth.
"""
from dnnfusion_jax.rules_api import MATMUL, Broadcasts, P, Rule, V, conv, dot, square

from .linalg import CONV, _conv_params

a, b, c, x, w = V("a"), V("b"), V("c"), V("x"), V("w")
key = P("key", "str")
F = "distributive"
CONV_C = {**CONV, "b": (1, "o", 1, 1), "c": (1, "o", 1, 1)}
DOT_C = {"x": ("m", "k"), "w": ("k", "n"), "b": (1, "n"), "c": (1, "n")}

RULES = [
    Rule("factor-right", F, "a*c + b*c -> (a+b)*c", a * c + b * c, (a + b) * c, finite=(c,), in_range=True),
    Rule("factor-left", F, "c*a + c*b -> c*(a+b)", c * a + c * b, c * (a + b), finite=(c,), in_range=True),
    Rule("factor-right-sub", F, "a*c - b*c -> (a-b)*c", a * c - b * c, (a - b) * c, finite=(c,), in_range=True),
    Rule("factor-left-sub", F, "c*a - c*b -> c*(a-b)", c * a - c * b, c * (a - b), finite=(c,), in_range=True),
    Rule("add-mul-one", F, "a + a*b -> a*(b+1)", a + a * b, a * (b + 1.0), finite=(a,), in_range=True),
    Rule("square-sub", F, "square(x) - x*c -> x*(x-c)", square(x) - x * c, x * (x - c),
         finite=(x,), in_range=True),
    Rule("conv-sub-expand", F, "(conv(x,w)-b)*c -> conv(x,w)*c - b*c for a broadcast c",
         (conv(x, w, key) - b) * c, conv(x, w, key) * c - b * c, (Broadcasts(c),),
         finite=(c,), shapes=CONV_C, params=_conv_params, in_range=True),
    Rule("conv-add-expand", F, "(conv(x,w)+b)*c -> conv(x,w)*c + b*c for a broadcast c",
         (conv(x, w, key) + b) * c, conv(x, w, key) * c + b * c, (Broadcasts(c),),
         finite=(c,), shapes=CONV_C, params=_conv_params, in_range=True),
    Rule("matmul-sub-expand", F, "(x@w-b)*c -> (x@w)*c - b*c for a broadcast c",
         (dot(x, w, MATMUL) - b) * c, dot(x, w, MATMUL) * c - b * c, (Broadcasts(c),),
         finite=(c,), shapes=DOT_C, in_range=True),
    Rule("matmul-add-expand", F, "(x@w+b)*c -> (x@w)*c + b*c for a broadcast c",
         (dot(x, w, MATMUL) + b) * c, dot(x, w, MATMUL) * c + b * c, (Broadcasts(c),),
         finite=(c,), shapes=DOT_C, in_range=True),
]
