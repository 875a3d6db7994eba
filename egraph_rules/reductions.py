"""Reduction rules: a reduction over the dimensions a broadcast added gives back its input.

``reduce_max(broadcast(x))`` over exactly the broadcast dimensions is ``x`` (the same for
min); the sum would need the count, and is left to the commutative family's scale rules.
"""
from dnnfusion_jax.rules_api import (ComplementAxes, KeepsShape, P, Rule, V, broadcast, reduce)

x = V("x")
shp, dims, axes = P("shape"), P("dims"), P("axes")
F = "reductions"


def _params(rng, dims_):
    m, n = dims_["m"], dims_["n"]
    return {"shape": (m, 3, n), "dims": (0, 2), "axes": (1,)}


RULES = [
    Rule(f"{op}-broadcast", F, f"{op}(broadcast(x)) over the broadcast dims -> x",
         reduce(op, broadcast(x, shp, dims), axes), x, (ComplementAxes(dims, axes), KeepsShape(x)),
         shapes={"x": ("m", "n")}, params=_params)
    for op in ("reduce_max", "reduce_min")
]
