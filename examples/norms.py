"""Normalisations as plain functions of arrays, written as users write them in JAX: the
reduction chains the fusion planner and the C lowering must turn into one kernel each. The
kernel benchmarks and the planner and lowering tests share them. (The zoo's models use the
parameter-dict layers of ``layers.py``.)

Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(8.0).reshape(2, 4)
    >>> [round(float(v), 3) for v in layer_norm(x)[0]]
    [-1.342, -0.447, 0.447, 1.342]
    >>> group_norm(jnp.ones((1, 2, 2, 8)), groups=4).shape
    (1, 2, 2, 8)
"""
from __future__ import annotations

import jax


def layer_norm(x, scale=None, bias=None, eps=1e-5):
    """Normalises over the last axis, then ``* scale + bias`` where given."""
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return _affine((x - m) * jax.lax.rsqrt(v + eps), scale, bias)


def rms_norm(x, scale=None, eps=1e-6):
    """Divides by the root mean square over the last axis, then ``* scale`` where given."""
    return _affine(x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + eps), scale, None)


def group_norm(x, scale=None, bias=None, groups=32, eps=1e-5):
    """NHWC group norm: each of ``groups`` channel groups normalised over H, W and the group."""
    n, h, w, c = x.shape
    xr = x.reshape(n, h, w, groups, c // groups)
    m = xr.mean((1, 2, 4), keepdims=True)
    v = ((xr - m) ** 2).mean((1, 2, 4), keepdims=True)
    return _affine(((xr - m) * jax.lax.rsqrt(v + eps)).reshape(x.shape), scale, bias)


def _affine(y, scale, bias):
    y = y if scale is None else y * scale
    return y if bias is None else y + bias
