"""How the C renderer spells things: types, operations (``C_OPS``, one entry per kernel IR
operation, overridden by dtype where C differs), conversions and literals, with helpers from
``prelude.h``.

    >>> from codegen.kernel.kernel_ir import Expr
    >>> spell(Expr("exp", (), "f32"), ["x"]), literal(0.5, "f32"), literal(float("inf"), "f64")
    ('dnf_expf(x)', '0x1.0000000000000p-1f', '((double)INFINITY)')
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from codegen.kernel.kernel_ir import Expr

C_TYPES = {"f32": "float", "f64": "double", "i32": "int32_t", "i64": "int64_t",
           "u32": "uint32_t", "u8": "uint8_t", "i8": "int8_t", "bool": "uint8_t",
           "bf16": "uint16_t", "f16": "uint16_t"}
"""Kernel IR dtype → C type. bf16 and f16 are held as their bits; ``prelude.h`` converts
(vectorisable: with the CPU's own f16 conversions where gcc vectorises them)."""

_WIDEN = {"bf16": "dnf_bf16_to_f32({0})", "f16": "dnf_f16_to_f32({0})"}
_NARROW = {"bf16": "dnf_f32_to_bf16({0})", "f16": "dnf_f32_to_f16({0})"}


def widened(storage: str, text: str) -> str:
    """An element read from a buffer of dtype ``storage``, as its value dtype (f32 for the
    half-precision storage dtypes, exactly; others as they are).

    >>> widened("bf16", "in0[i]"), widened("f32", "in0[i]")
    ('dnf_bf16_to_f32(in0[i])', 'in0[i]')
    """
    return _WIDEN[storage].format(text) if storage in _WIDEN else text


def narrowed(storage: str, text: str) -> str:
    """A value as an element of a buffer of dtype ``storage``: half precision rounds to
    nearest even (NaN stays NaN, overflow is inf, as XLA's convert)."""
    return _NARROW[storage].format(text) if storage in _NARROW else text

_FLOAT_FUNCTIONS = {
    # op: (f32 spelling, f64 spelling); {0} {1} are the operands
    "exp": ("dnf_expf({0})", "exp({0})"), "exp2": ("exp2f({0})", "exp2({0})"),
    "log": ("dnf_logf({0})", "log({0})"), "log1p": ("dnf_log1pf({0})", "log1p({0})"),
    "expm1": ("dnf_expm1f({0})", "expm1({0})"), "tanh": ("dnf_tanhf({0})", "tanh({0})"),
    "logistic": ("dnf_logisticf({0})", "(1.0 / (1.0 + exp(-{0})))"),
    "sqrt": ("sqrtf({0})", "sqrt({0})"), "rsqrt": ("(1.0f / sqrtf({0}))", "(1.0 / sqrt({0}))"),
    "cbrt": ("cbrtf({0})", "cbrt({0})"), "sin": ("sinf({0})", "sin({0})"),
    "cos": ("cosf({0})", "cos({0})"), "tan": ("tanf({0})", "tan({0})"),
    "floor": ("floorf({0})", "floor({0})"), "ceil": ("ceilf({0})", "ceil({0})"),
    "round_away": ("roundf({0})", "round({0})"), "round_even": ("rintf({0})", "rint({0})"),
    "sign": ("dnf_signf({0})", "dnf_sign({0})"), "erf": ("dnf_erff({0})", "erf({0})"),
    "erfc": ("dnf_erfcf({0})", "erfc({0})"), "abs": ("fabsf({0})", "fabs({0})"),
    "is_finite": ("(fabsf({0}) < INFINITY)", "(fabs({0}) < INFINITY)"),
    "max": ("dnf_maxf({0}, {1})", "dnf_max({0}, {1})"),
    "min": ("dnf_minf({0}, {1})", "dnf_min({0}, {1})"),
    "rem": ("fmodf({0}, {1})", "fmod({0}, {1})"), "pow": ("powf({0}, {1})", "pow({0}, {1})"),
    "atan2": ("atan2f({0}, {1})", "atan2({0}, {1})"),
    "sinh": ("sinhf({0})", "sinh({0})"), "cosh": ("coshf({0})", "cosh({0})"),
    "asinh": ("asinhf({0})", "asinh({0})"), "acosh": ("acoshf({0})", "acosh({0})"),
    "atanh": ("atanhf({0})", "atanh({0})"), "asin": ("asinf({0})", "asin({0})"),
    "acos": ("acosf({0})", "acos({0})"), "atan": ("atanf({0})", "atan({0})"),
    "erf_inv": ("dnf_erf_invf({0})", "dnf_erf_inv({0})"),
    "nextafter": ("nextafterf({0}, {1})", "nextafter({0}, {1})"),
}

C_OPS = {
    # op: spelling for every dtype (operators C defines the same way for all our types)
    "neg": "(-{0})", "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})",
    "div": "({0} / {1})", "eq": "({0} == {1})", "ne": "({0} != {1})", "lt": "({0} < {1})",
    "le": "({0} <= {1})", "gt": "({0} > {1})", "ge": "({0} >= {1})",
    "and": "({0} & {1})", "or": "({0} | {1})", "xor": "({0} ^ {1})",
    "select": "({0} ? {1} : {2})",
}
"""Kernel IR operation → C spelling; ``spell`` overrides it by dtype where C differs."""


def spell(expr: Expr, operands: list[str]) -> str:
    op, dtype = expr.op, expr.dtype
    if op in ("max", "min") and dtype in ("f32", "f64"):
        return _float_max_min(expr, operands)
    if op in _FLOAT_FUNCTIONS and dtype in ("f32", "f64"):
        return _FLOAT_FUNCTIONS[op][dtype == "f64"].format(*operands)
    if op == "is_finite":  # the operand is floating, the result bool
        source = expr.args[0].dtype
        return _FLOAT_FUNCTIONS[op][source == "f64"].format(*operands)
    if op in ("div", "rem") and dtype in ("i32", "i64"):
        return f"dnf_{op}_{dtype}({operands[0]}, {operands[1]})"
    if op in ("max", "min"):
        compare = ">" if op == "max" else "<"
        return f"({operands[0]} {compare} {operands[1]} ? {operands[0]} : {operands[1]})"
    if op == "abs":
        return f"({operands[0]} < 0 ? -{operands[0]} : {operands[0]})"
    if op == "sign":
        return f"(({operands[0]} > 0) - ({operands[0]} < 0))"
    if op == "not":
        return f"(!{operands[0]})" if dtype == "bool" else f"(~{operands[0]})"
    if op == "select":
        return C_OPS[op].format(*operands)
    if op in C_OPS:
        text = C_OPS[op].format(*operands)
        return f"(({C_TYPES[dtype]}){text})" if dtype in ("u8", "i8", "bool") else text
    raise NotImplementedError(f"no C spelling for {op} on {dtype}")


def convert(expr: Expr, operand: str) -> str:
    source, target = expr.attrs[0], expr.dtype
    if target == "bool":
        return f"({operand} != 0)"
    if source in ("f32", "f64") and target in ("i32", "i64", "u32", "u8", "i8"):
        value = operand if source == "f32" else f"(float)({operand})"
        return f"dnf_f32_to_{target}({value})"
    return f"(({C_TYPES[target]})({operand}))"


def literal(value: Any, dtype: str) -> str:
    """A C literal of ``value`` that reads back exactly (hex floats; inf and NaN by name)."""
    if value == "min":
        return {"i32": "INT32_MIN", "i64": "INT64_MIN"}.get(dtype, "0")
    if value == "max":
        return {"i32": "INT32_MAX", "i64": "INT64_MAX", "u32": "UINT32_MAX",
                "u8": "255", "i8": "127", "bool": "1"}[dtype]
    if dtype in ("f32", "f64"):
        value = float(value)
        suffix = "f" if dtype == "f32" else ""
        if math.isnan(value):
            return f"(({C_TYPES[dtype]})NAN)"
        if math.isinf(value):
            return f"(({C_TYPES[dtype]}){'-' if value < 0 else ''}INFINITY)"
        return f"{value.hex()}{suffix}"
    if dtype == "bool":
        return "1" if value else "0"
    return f"(({C_TYPES[dtype]}){int(value)}LL)"


def _float_max_min(expr: Expr, operands: list[str]) -> str:
    """dnf_max/dnf_min, or the lane form (no tie test; a tie gives the second operand) when
    one operand is a constant that is the right answer to every tie: max(x, c) for c not -0.0
    (relu's max(x, 0.0) is +0.0 at x = -0.0: the constant), min(x, c) for c not +0.0. The tie
    test cost relu 14% here."""
    suffix = "f" if expr.dtype == "f32" else ""
    wrong_zero_is_negative = expr.op == "max"  # max(x, -0.0), min(x, +0.0): a tie goes wrong
    for position in (1, 0):
        arg = expr.args[position]
        if arg.op == "const" and not (arg.attrs[0] == 0 and
                                      bool(np.signbit(arg.attrs[0])) == wrong_zero_is_negative):
            other = operands[1 - position]
            return f"dnf_lane_{expr.op}{suffix}({other}, {operands[position]})"
    return _FLOAT_FUNCTIONS[expr.op][expr.dtype == "f64"].format(*operands)
