"""Math the Pallas Triton lowering has no rule for, written with operations it has.

Pallas on GPU (Triton, jax 0.10) lowers ``erf_inv`` but not ``erf`` or ``erfc``, and no
``round``; it lowers ``max``/``min`` and their reductions to ``maxnumf``/``minnumf``, which
drop a NaN where XLA returns it (seen on an H200, jax 0.11.2). Generated kernels call these
instead (as ``pm.erf(x)``, ``pm.max(x, y)`` ...), in interpret mode too,
so the CPU tests check the very arithmetic a GPU runs. Each follows the C prelude's form
(``codegen/c/prelude.h``) so both backends agree with XLA to a few ulp; float64 (and any other
dtype) goes to the ``lax`` primitive unchanged.

Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> x = jnp.asarray([-2.5, -0.5, 0.5, 1.5, 2.5, np.inf, np.nan], jnp.float32)
    >>> np.asarray(round_even(x)).tolist()
    [-2.0, -0.0, 0.0, 2.0, 2.0, inf, nan]
    >>> np.asarray(round_away(x)).tolist()
    [-3.0, -1.0, 1.0, 2.0, 3.0, inf, nan]
    >>> bool(np.allclose(erf(x[:5]), [-0.999593, -0.520500, 0.520500, 0.966105, 0.999593]))
    True
    >>> np.asarray(max(x, jnp.float32(0.0))).tolist()[-2:], float(reduce_min(x, (0,)))
    ([inf, nan], nan)
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)
# erfc(z) = e^(-z²)·t·Q(t), t = 1/(1 + 3z/8): Q's coefficients, highest degree first
_ERFC_Q = tuple(float.fromhex(c) for c in (
    "0x1.f73606p-5", "-0x1.25b018p-2", "0x1.b9b270p-2", "-0x1.d37090p-3", "0x1.177cdap-2",
    "0x1.f30654p-4", "0x1.a45070p-3", "0x1.af6f00p-3", "0x1.b16210p-3"))


def _f32(x) -> bool:
    return x.dtype == jnp.float32


def _horner(coefficients, x):
    result = jnp.float32(coefficients[0])
    for c in coefficients[1:]:
        result = result * x + jnp.float32(c)
    return result


def erf(x):
    """erf as XLA:CPU computes it: odd degree-13 over even degree-8 on x clamped to ±4 (about
    5.5 ulp at worst).

    >>> import numpy as np; float(erf(np.float32(0.5)))  # doctest: +ELLIPSIS
    0.52049...
    """
    if not _f32(x):
        return lax.erf(x)
    xc = lax.clamp(jnp.float32(-4.0), x, jnp.float32(4.0))
    x2 = xc * xc
    result = _horner(_ERF_P, x2) * xc / _horner(_ERF_Q, x2)
    return jnp.where(x != x, x, result)  # NaN stays NaN (clamp would not say so everywhere)


def erfc(x):
    """erfc(|x|) = e^(-z²)·t·Q(t), t = 1/(1 + 3z/8); x < 0 by 2 - erfc(-x). Without the C
    form's fma correction of z²: up to ~66 ulp (relative 4e-6) near z = 9, still inside f32
    tolerance; NaN reaches the result through t.

    >>> import numpy as np; float(erfc(np.float32(3.0)))  # doctest: +ELLIPSIS
    2.209...e-05
    """
    if not _f32(x):
        return lax.erfc(x)
    z = lax.abs(x)
    zb = lax.min(z, jnp.float32(16.0))  # e^-256 is 0: keeps z² finite for z = inf
    t = jnp.float32(1.0) / (jnp.float32(0.375) * z + jnp.float32(1.0))
    result = lax.exp(-(zb * zb)) * (t * _horner(_ERFC_Q, t))
    return jnp.where(x < 0, jnp.float32(2.0) - result, result)


def _fraction(x):
    """(floor(x), x - floor(x)): the difference is exact for every float (0 from 2^23 on)."""
    whole = lax.floor(x)
    return whole, x - whole


def round_even(x):
    """Round half to even, exactly (inf and NaN stay; -0.5 gives -0.0 as XLA)."""
    if not _f32(x):
        return lax.round(x, lax.RoundingMethod.TO_NEAREST_EVEN)
    whole, part = _fraction(x)
    odd = lax.rem(whole, jnp.float32(2.0)) != 0
    up = (part > 0.5) | ((part == 0.5) & odd)
    return _signed(jnp.where(up, whole + jnp.float32(1.0), whole), x)


def round_away(x):
    """Round half away from zero, exactly (as C ``roundf``)."""
    if not _f32(x):
        return lax.round(x, lax.RoundingMethod.AWAY_FROM_ZERO)
    whole, part = _fraction(lax.abs(x))
    magnitude = jnp.where(part >= 0.5, whole + jnp.float32(1.0), whole)
    return _signed(magnitude, x)


def _signed(magnitude, x):
    """``magnitude`` with the sign of ``x`` (negative zero included; NaN and inf kept)."""
    negative = (x < 0) | ((x == 0) & (jnp.float32(1.0) / x < 0))
    result = jnp.where(negative, -lax.abs(magnitude), lax.abs(magnitude))
    return jnp.where(x != x, x, result)


def _is_float(x) -> bool:
    return jnp.issubdtype(x.dtype, jnp.floating)


def max(x, y):  # noqa: A001 (the kernel IR's name)
    """``lax.max`` with XLA's NaN rule on Triton too: a NaN on either side is the result."""
    return _nan_kept(lax.max(x, y), x, y)


def min(x, y):  # noqa: A001
    """``lax.min`` with XLA's NaN rule on Triton too."""
    return _nan_kept(lax.min(x, y), x, y)


def _nan_kept(result, x, y):
    if not _is_float(result):
        return result
    return jnp.where(x != x, x, jnp.where(y != y, y, result))


def reduce_max(x, axes):
    """``lax.reduce_max`` over ``axes``, NaN when any element is NaN (as XLA)."""
    return _reduce_nan_kept(lax.reduce_max(x, axes), x, axes)


def reduce_min(x, axes):
    """``lax.reduce_min`` over ``axes``, NaN when any element is NaN (as XLA)."""
    return _reduce_nan_kept(lax.reduce_min(x, axes), x, axes)


def _reduce_nan_kept(result, x, axes):
    if not _is_float(x):
        return result
    has_nan = lax.reduce_max((x != x).astype(jnp.int32), axes) > 0
    return jnp.where(has_nan, jnp.asarray(jnp.nan, result.dtype), result)
