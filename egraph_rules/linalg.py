"""Linear algebra: shared-operand factoring, matrix-chain reassociation, scale hoisting,
folding an affine scale that follows a conv or dense layer into its weights (batch norm), and
absorbing a transpose of a dot into the dot by swapping its operands (``jax.vmap`` of
``W @ v`` is ``transpose(dot(W, X))``; XLA folds that transpose into the GEMM's layout, we
remove it from the graph).

Reassociation is an equality both ways; extraction picks the cheaper order by shapes (an
``(A@B)@v`` with a narrow ``v`` costs n²k instead of n³). Factoring and hoisting are exact
for finite values; the factor must be free of ±inf (``finite=``). All of them are exact only
while intermediates stay inside the float32 range (``in_range=True``): regrouping a product
can overflow where the original did not.
"""
from dnnfusion_jax.rules_api import (BATCHED, MATMUL, ConvChannel, DotSwap, P, Rank, Rule,
                                     SameShape, Scalar, ScaleCols, ScaleRows, V, conv, conv_key,
                                     dot, neg, reshape, swap_dot, transpose)

a, b, c, x, q, k, s, w = (V(n) for n in "abcxqksw")
d, key, ks = P("dims", "str"), P("key", "str"), P("kshape")
F = "linalg"
DIMS = {"dims": [MATMUL]}
MM = {"x": ("m", "k"), "a": ("k", "n"), "b": ("k", "n"), "q": ("m", "k")}
CHAIN = {"a": ("m", "k"), "b": ("k", "n"), "c": ("n", "p")}
BCHAIN = {"a": ("z", "m", "k"), "b": ("z", "k", "n"), "c": ("z", "n", "p")}


def _conv_params(rng, dims_):
    from jax import lax
    n_out = dims_["o"]
    params = {"window_strides": (1, 1), "padding": ((1, 1), (1, 1)), "lhs_dilation": (1, 1),
              "rhs_dilation": (1, 1),
              "dimension_numbers": lax.ConvDimensionNumbers((0, 1, 2, 3), (0, 1, 2, 3),
                                                            (0, 1, 2, 3)),
              "feature_group_count": 1, "batch_group_count": 1, "precision": None,
              "preferred_element_type": None, "out_sharding": None}
    return {"key": conv_key(params), "kshape": (n_out, 1, 1, 1)}


# dimension numbers that fit a: (z, m, k), b: (z, n, k): batched, plain and outer contractions
SWAP_DIMS = ["(((2,), (2,)), ((0,), (0,)))", "(((0, 2), (0, 2)), ((), ()))",
             "(((2,), (2,)), ((), ()))", "(((0,), (0,)), ((), ()))"]
perm, swapped = P("perm"), P("swapped", "str")


def _swap_params(rng, dims_):
    dims = SWAP_DIMS[int(rng.integers(len(SWAP_DIMS)))]
    p, e = swap_dot(dims, 3, 3)
    return {"dims": dims, "perm": p, "swapped": e}


CONV = {"x": (1, "i", 5, 5), "w": ("o", "i", 3, 3), "s": (1, "o", 1, 1)}

RULES = [
    Rule("dot-factor-rhs", F, "x@a + x@b -> x@(a+b)", dot(x, a, d) + dot(x, b, d),
         dot(x, a + b, d), (SameShape(a, b),), finite=(x,), shapes=MM, params=DIMS,
         in_range=True),
    Rule("dot-factor-lhs", F, "a@x + b@x -> (a+b)@x", dot(a, x, d) + dot(b, x, d),
         dot(a + b, x, d), (SameShape(a, b),), finite=(x,),
         shapes={"a": ("m", "k"), "b": ("m", "k"), "x": ("k", "n")}, params=DIMS,
         in_range=True),
    Rule("matmul-assoc-right", F, "(a@b)@c -> a@(b@c)", (a @ b) @ c, a @ (b @ c),
         (Rank(a, 2), Rank(b, 2)), finite=(a, b, c), shapes=CHAIN, in_range=True),
    Rule("bmm-assoc-right", F, "(a@b)@c -> a@(b@c) batched", dot(dot(a, b, BATCHED), c, BATCHED),
         dot(a, dot(b, c, BATCHED), BATCHED), (Rank(a, 3), Rank(b, 3)), finite=(a, b, c),
         shapes=BCHAIN, in_range=True),
    Rule("dot-scale-lhs", F, "(s*q)@k -> s*(q@k) for scalar s", dot(s * q, k, d),
         s * dot(q, k, d), (Scalar(s),), finite=(s,), shapes={"q": ("m", "k"), "k": ("k", "n")},
         params=DIMS, in_range=True),
    Rule("dot-scale-lhs-right", F, "(q*s)@k -> (q@k)*s for scalar s", dot(q * s, k, d),
         dot(q, k, d) * s, (Scalar(s),), finite=(s,), shapes={"q": ("m", "k"), "k": ("k", "n")},
         params=DIMS, in_range=True),
    Rule("dot-scale-rhs", F, "q@(s*k) -> s*(q@k) for scalar s", dot(q, s * k, d),
         s * dot(q, k, d), (Scalar(s),), finite=(s,), shapes={"q": ("m", "k"), "k": ("k", "n")},
         params=DIMS, in_range=True),
    Rule("dot-scale-rhs-right", F, "q@(k*s) -> (q@k)*s for scalar s", dot(q, k * s, d),
         dot(q, k, d) * s, (Scalar(s),), finite=(s,), shapes={"q": ("m", "k"), "k": ("k", "n")},
         params=DIMS, in_range=True),
    Rule("matmul-row-scale", F, "(q*s)@k -> (q@k)*s for a row scale s", (q * s) @ k,
         (q @ k) * s, (ScaleRows(s, q),), finite=(s,),
         shapes={"q": ("m", "k"), "k": ("k", "n"), "s": ("m", 1)}, in_range=True),
    Rule("matmul-col-scale", F, "q@(k*s) -> (q@k)*s for a column scale s", q @ (k * s),
         (q @ k) * s, (ScaleCols(s, k),), finite=(s,),
         shapes={"q": ("m", "k"), "k": ("k", "n"), "s": (1, "n")}, in_range=True),
    Rule("dot-neg", F, "(-a)@b -> -(a@b)", dot(neg(a), b, d), neg(dot(a, b, d)),
         shapes={"a": ("m", "k"), "b": ("k", "n")}, params=DIMS),
    Rule("transpose-dot-swap", F, "transpose(dot(a, b), p) -> dot(b, a) for p that puts b's "
         "free dims first", transpose(dot(a, b, d), perm), dot(b, a, swapped),
         (DotSwap(d, a, b, perm, swapped),),
         shapes={"a": ("z", "m", "k"), "b": ("z", "n", "k")}, params=_swap_params),
    Rule("conv-scale", F, "conv(x, w)*s -> conv(x, w*s') for a per-channel s (batch norm)",
         conv(x, w, key) * s, conv(x, w * reshape(s, ks), key), (ConvChannel(key, s, ks),),
         finite=(s,), shapes=CONV, params=_conv_params, in_range=True),
    Rule("conv-scale-left", F, "s*conv(x, w) -> conv(x, w*s') for a per-channel s",
         s * conv(x, w, key), conv(x, w * reshape(s, ks), key), (ConvChannel(key, s, ks),),
         finite=(s,), shapes=CONV, params=_conv_params, in_range=True),
]
RULES.insert(3, RULES[2].reverse("matmul-assoc-left"))
RULES.insert(5, RULES[4].reverse("bmm-assoc-left"))
RULES.insert(12, RULES[11].reverse("matmul-col-scale-fold", "(q@k)*s -> q@(k*s): fold a "
                                   "column scale after a dense layer into its weights"))
# The scale hoisting read backwards: a scalar scale after a GEMM moves onto the smaller
# operand, so (q*c)@(k*c).T (attention) pays one scaling of q, not two, nor one of the scores.
_BY_NAME = {rule.name: rule for rule in RULES}
RULES += [
    _BY_NAME["dot-scale-lhs-right"].reverse(
        "dot-scale-fold-lhs", "(q@k)*s -> (q*s)@k for scalar s: the scale onto an operand"),
    _BY_NAME["dot-scale-rhs-right"].reverse(
        "dot-scale-fold-rhs", "(q@k)*s -> q@(k*s) for scalar s: the scale onto an operand"),
]
