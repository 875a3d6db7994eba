"""Soundness check of rules: both sides as JAX functions on random shapes and values.

For each rule, ``check_rule`` draws dims, parameters and values the rule's ``shapes``,
``params`` and ``values`` describe, keeps the samples its guard accepts, and evaluates the left
side in float32 and float64 and the right side in float32. A third of the samples are plain
normal values; a third mix in special values (0, -0, ±1, negatives, ±inf and NaN, no
infinities in operands the rule requires finite); a third mix in tiny and huge magnitudes
(1e-30, 1e-38, 1e30, 3e38).

A sample passes, element by element, when the right side agrees with the left side within
rtol = atol = 1e-5 (NaN where NaN), or the difference is rounding: within 1e-5 of the exact
(float64) result scaled by the largest magnitude the computation meets (reassociating a sum
may cancel differently), or the original float32 result was itself wrong (it overflowed or
underflowed where float64 did not). A rewrite may therefore never turn an accurate result
into an inaccurate one, nor change what an inf or NaN input gives. Rules marked ``in_range``
(regroupings) are excused on samples where an exact intermediate of either side leaves the
float32 range.

Example:
    >>> from dnnfusion_jax.rewrite.rules_api import Rule, V
    >>> x = V("x")
    >>> check_rule(Rule("twice", "demo", "x+x -> 2*x", x + x, 2.0 * x), trials=8).ok
    True
    >>> bad = check_rule(Rule("wrong", "demo", "x+x -> 3*x", x + x, 3.0 * x), trials=8)
    >>> bad.ok, "counterexample" in bad.message
    (False, True)
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from dnnfusion_jax.rewrite.rules_api import Pat, Rule, Scalar, evaluate

RTOL = ATOL = 1e-5
SPECIAL_VALUES = (0.0, -0.0, 1.0, -1.0, -3.5, np.inf, -np.inf, np.nan)
RANGE_VALUES = (1e-30, -1e-30, 1e-38, 1e30, -1e30, 3e38, -3e38)
INFINITE = (np.inf, -np.inf)
DIM_CHOICES = (1, 2, 3)
F32_MAX, F32_TINY = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)


@dataclass
class CheckResult:
    rule: Rule
    ok: bool
    samples: int
    message: str


def _resolve_shape(spec: tuple, dims: dict[str, int], rng: np.random.Generator) -> tuple:
    out = []
    for d in spec:
        if isinstance(d, str):
            if d not in dims:
                dims[d] = int(rng.choice(DIM_CHOICES))
            out.append(dims[d])
        else:
            out.append(int(d))
    return tuple(out)


def _values(shape: tuple, kind: str | None, edge: str, finite: bool,
            rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(shape) * (10.0 ** rng.integers(-1, 2))
    if edge != "plain":
        flat = x.reshape(-1)
        pool = SPECIAL_VALUES if edge == "special" else RANGE_VALUES
        edges = [v for v in pool if not (finite and v in INFINITE)]
        for i in range(flat.size):
            if rng.random() < 0.4:
                flat[i] = edges[int(rng.integers(len(edges)))]
    if kind in ("nonneg", "positive"):
        x = np.abs(x) + (1e-3 if kind == "positive" else 0.0)
    elif kind == "moderate":
        x = 10.0 ** rng.uniform(-18, 18, shape)
        if edge != "plain" and x.size:
            x.reshape(-1)[0] = 1e18 if rng.random() < 0.5 else 1e-18
    return np.asarray(x, np.float64)


def _sample(rule: Rule, rng: np.random.Generator, edge: str) -> tuple[dict, dict, dict]:
    dims: dict[str, int] = {}
    if callable(rule.params):
        shapes_spec = dict(rule.shapes or {})
        for spec in shapes_spec.values():  # draw the dims first: params may depend on them
            _resolve_shape(spec, dims, rng)
        params = rule.params(rng, dims)
    else:
        params = {}
        for name, choices in (rule.params or {}).items():
            params[name] = choices[int(rng.integers(len(choices)))] if isinstance(choices, list) \
                else choices(rng, dims)
    scalars = {g.v.op for g in rule.guard if isinstance(g, Scalar)}
    finite = {v.op for v in rule.finite}
    consts = {n.op for n in rule.lhs.walk() if n.kind == "const"}
    env = {}
    for name in rule.lhs.vars():
        if name in scalars or name in consts:
            shape = ()
        else:
            shape = _resolve_shape((rule.shapes or {}).get(name, ("m", "n")), dims, rng)
        env[name] = _values(shape, rule.values.get(name), edge, name in finite, rng)
    return env, params, dims


def _magnitude(arrays: list) -> float:
    mag = 1.0
    for a in arrays:
        a = np.abs(np.asarray(a, np.float64))
        a = a[np.isfinite(a)]
        if a.size:
            mag = max(mag, float(a.max()))
    return mag


def _eval(pat: Pat, env: dict, params: dict, dtype: Any, trace: list | None = None) -> np.ndarray:
    cast = {k: np.asarray(v, dtype) for k, v in env.items()}
    with np.errstate(all="ignore"):
        return np.asarray(evaluate(pat, cast, params, trace), np.float64)


def compare(lhs32: np.ndarray, rhs32: np.ndarray, lhs64: np.ndarray, mag: float) -> np.ndarray:
    """Element-wise verdict of the module docstring's criterion (True = acceptable)."""
    with np.errstate(all="ignore"):
        close = np.isclose(rhs32, lhs32, RTOL, ATOL, equal_nan=True)
        original_off = ~np.isclose(lhs32, lhs64, RTOL, ATOL, equal_nan=True)
        rounding = np.isfinite(rhs32) & np.isfinite(lhs64) & \
            (np.abs(rhs32 - lhs64) <= RTOL * mag + ATOL)
    return close | original_off | rounding


def _out_of_range(arrays: list, inputs_finite: bool) -> bool:
    """Does an exact intermediate leave the float32 range (or overflow from finite inputs)?"""
    for a in arrays:
        a = np.abs(np.asarray(a, np.float64))
        if inputs_finite and np.isinf(a).any():
            return True
        a = a[np.isfinite(a) & (a > 0)]
        if a.size and (a.max() > F32_MAX or a.min() < F32_TINY):
            return True
    return False


def check_rule(rule: Rule, trials: int = 45, seed: int = 0) -> CheckResult:
    """Checks one rule on ``trials`` samples (plain, special and range values in turn)."""
    rng = np.random.default_rng(zlib.crc32(rule.name.encode()) + seed)
    accepted = 0
    for trial in range(trials):
        edge = ("plain", "special", "range")[trial % 3]
        env, params, dims = _sample(rule, rng, edge)
        try:
            lhs32 = _eval(rule.lhs, env, params, np.float32)
        except Exception as error:  # the sample does not type-check: the spec is wrong
            return CheckResult(rule, False, accepted, f"{rule.name}: left side fails on "
                               f"shapes {_shapes(env)} params {params}: {error}")
        if not all(g.holds(env, params, lhs32.shape) for g in rule.all_guards):
            continue
        accepted += 1
        try:
            rhs32 = _eval(rule.rhs, env, params, np.float32)
        except Exception as error:
            return CheckResult(rule, False, accepted, _report(rule, env, params,
                                                              f"right side fails: {error}"))
        if rhs32.shape != lhs32.shape:
            return CheckResult(rule, False, accepted, _report(
                rule, env, params, f"shape {rhs32.shape} instead of {lhs32.shape}"))
        trace: list = []
        with jax.enable_x64(True):
            lhs64 = _eval(rule.lhs, env, params, np.float64, trace)
        ok = compare(lhs32, rhs32, lhs64, _magnitude([*env.values(), *trace]))
        if not ok.all() and rule.in_range:
            rhs_trace: list = []
            with jax.enable_x64(True):
                _eval(rule.rhs, env, params, np.float64, rhs_trace)
            finite_inputs = all(np.isfinite(v).all() for v in env.values())
            if _out_of_range([*trace, *rhs_trace], finite_inputs):
                continue
        if not ok.all():
            i = tuple(int(k) for k in np.argwhere(~ok)[0]) if ok.ndim else ()
            return CheckResult(rule, False, accepted, _report(
                rule, env, params, f"at index {i}: left side {float(lhs32[i])!r} (exact "
                f"{float(lhs64[i])!r}), right side {float(rhs32[i])!r}"))
    if accepted < max(1, trials // 4):
        return CheckResult(rule, False, accepted, f"{rule.name}: only {accepted} of {trials} "
                           "samples satisfy the guard; give the rule shapes/params/values that do")
    return CheckResult(rule, True, accepted, f"{rule.name}: ok ({accepted} samples)")


def _shapes(env: dict) -> dict:
    return {k: np.shape(v) for k, v in env.items()}


def _report(rule: Rule, env: dict, params: dict, what: str) -> str:
    lines = [f"{rule.name}: counterexample to {rule.law}: {what}"]
    if params:
        lines.append(f"  params: {params}")
    for name, value in env.items():
        text = np.array2string(np.asarray(value, np.float32), precision=6, threshold=64,
                               separator=", ").replace("\n", "\n    ")
        lines.append(f"  {name} = {text}")
    return "\n".join(lines)


def check_rules(rules: list[Rule], trials: int = 45, seed: int = 0) -> list[CheckResult]:
    return [check_rule(r, trials, seed) for r in rules]
