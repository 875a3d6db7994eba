"""How the Pallas renderer spells things: operations, reductions, dtypes, literals, shapes.

The tables and helpers ``pallas_render`` writes its source with (``pallas_backend.namespace``
provides the names the spelling uses: ``jax, jnp, lax, np, pl, plgpu, pm``).

Example:
    >>> literal(float("-inf"), "f32"), literal(-0.0, "f32"), shape_tuple((8,))
    ('np.float32(-np.inf)', 'np.float32(-0.0)', '(8,)')
"""
from __future__ import annotations

import math
from typing import Any

PALLAS_OPS = {
    # kernel IR operation → spelling; {0} {1} {2} are operands (arrays or scalars)
    "neg": "lax.neg({0})", "abs": "lax.abs({0})", "exp": "lax.exp({0})",
    "exp2": "lax.exp2({0})", "log": "lax.log({0})", "log1p": "lax.log1p({0})",
    "expm1": "lax.expm1({0})", "tanh": "lax.tanh({0})", "logistic": "lax.logistic({0})",
    "sqrt": "lax.sqrt({0})", "rsqrt": "lax.rsqrt({0})", "cbrt": "lax.cbrt({0})",
    "sin": "lax.sin({0})", "cos": "lax.cos({0})", "tan": "lax.tan({0})",
    "floor": "lax.floor({0})", "ceil": "lax.ceil({0})",
    "round_away": "pm.round_away({0})", "round_even": "pm.round_even({0})",
    "sign": "lax.sign({0})", "erf": "pm.erf({0})", "erfc": "pm.erfc({0})",
    "is_finite": "lax.is_finite({0})", "not": "lax.bitwise_not({0})",
    "sinh": "lax.sinh({0})", "cosh": "lax.cosh({0})", "asinh": "lax.asinh({0})",
    "acosh": "lax.acosh({0})", "atanh": "lax.atanh({0})", "asin": "lax.asin({0})",
    "acos": "lax.acos({0})", "atan": "lax.atan({0})", "erf_inv": "lax.erf_inv({0})",
    "nextafter": "lax.nextafter({0}, {1})",
    "add": "lax.add({0}, {1})", "sub": "lax.sub({0}, {1})", "mul": "lax.mul({0}, {1})",
    "div": "lax.div({0}, {1})",  # integers: rounds toward zero, as XLA
    "rem": "lax.rem({0}, {1})",  # the sign of the dividend (C fmod), as XLA
    "max": "pm.max({0}, {1})", "min": "pm.min({0}, {1})",  # Triton's drop NaN; XLA's keep it
    "pow": "lax.pow({0}, {1})", "atan2": "lax.atan2({0}, {1})",
    "and": "lax.bitwise_and({0}, {1})", "or": "lax.bitwise_or({0}, {1})",
    "xor": "lax.bitwise_xor({0}, {1})",
    "eq": "lax.eq({0}, {1})", "ne": "lax.ne({0}, {1})", "lt": "lax.lt({0}, {1})",
    "le": "lax.le({0}, {1})", "gt": "lax.gt({0}, {1})", "ge": "lax.ge({0}, {1})",
    "select": "jnp.where({0}, {1}, {2})",  # lax.select does not broadcast size-1 dimensions
}
"""Kernel IR operation → Pallas spelling: the primitives ``jax.jit`` itself runs, or their
``pallas_math`` forms where Triton has no rule."""

REDUCERS = {"add": "lax.reduce_sum", "mul": "lax.reduce_prod", "max": "pm.reduce_max",
            "min": "pm.reduce_min", "and": "lax.reduce_and", "or": "lax.reduce_or"}
"""Reduce-stage combiner → reduction over an array axis."""

JNP_DTYPES = {"f32": "jnp.float32", "f64": "jnp.float64", "i32": "jnp.int32",
              "i64": "jnp.int64", "u32": "jnp.uint32", "u8": "jnp.uint8", "i8": "jnp.int8",
              "bool": "jnp.bool_", "bf16": "jnp.bfloat16", "f16": "jnp.float16"}
"""Kernel IR dtype → jnp dtype (bf16 and f16 only as buffers: values are f32, ``kernel_ir``)."""
NP_SCALARS = {"f32": "np.float32", "f64": "np.float64", "i32": "np.int32", "i64": "np.int64",
              "u32": "np.uint32", "u8": "np.uint8", "i8": "np.int8", "bool": "np.bool_", "bf16": "jnp.bfloat16", "f16": "np.float16"}

INDEX_DTYPES = ("i32", "i64")  # index arithmetic is int32 (buffers stay below 2**31 elements)
COMMENT_WIDTH = 100


def shape_tuple(values: tuple) -> str:
    """A Python tuple: ``(8,)``, ``(8, 1, 4)``."""
    return f"({values[0]},)" if len(values) == 1 else f"({', '.join(map(str, values))})"


def shape_args(values: tuple) -> str:
    """Arguments of ``reshape``: ``2, 3`` (``()`` for a scalar shape)."""
    return ", ".join(map(str, values)) if values else "()"


def literal(value: Any, dtype: str) -> str:
    """A typed scalar that reads back exactly (inf and NaN by name)."""
    if value in ("min", "max"):
        return f"np.iinfo({NP_SCALARS[dtype]}).{value}"
    if dtype in ("f32", "f64"):
        value = float(value)
        text = ("np.nan" if math.isnan(value) else
                ("-np.inf" if value < 0 else "np.inf") if math.isinf(value) else repr(value))
        return f"{NP_SCALARS[dtype]}({text})"
    if dtype == "bool":
        return f"np.bool_({bool(value)})"
    if dtype in INDEX_DTYPES:  # compared with int32 index arithmetic: keep it weakly typed
        return str(int(value)) if dtype == "i64" else f"np.int32({int(value)})"
    return f"{NP_SCALARS[dtype]}({int(value)})"


def comment(text: str, suffix: str) -> str:
    """``# text suffix``, the text cut to keep the line within ``COMMENT_WIDTH``."""
    room = COMMENT_WIDTH - len(suffix) - 2
    return "# " + (text if len(text) <= room else text[:room - 3] + "...") + suffix
