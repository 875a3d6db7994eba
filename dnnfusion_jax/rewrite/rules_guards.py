"""Guards: side conditions of rules, each as egglog facts (for saturation) and as a check on
sampled values (for ``rules check``).

``Scalar(v)``, ``SameShape(a, b)``, ``SameRank(a, b)``, ``KeepsShape(v)`` (v has the shape of
the whole left side), ``Broadcasts(v)`` (it has not), ``ShapeIs(v, p)``, ``Rank(v, k)``,
``Nonneg(v)``, ``Moderate(v)``, ``Finite(v)``, ``NonzeroConst(c)``, ``InversePerm(p, q)``,
``ComposePerm(p, q, r)``, ``ComplementAxes(dims, axes)``, ``ScaleRows(s, q)``,
``ScaleCols(s, k)``, ``ConvChannel(key, s, k)``, ``DotSwap(dims, a, b, perm, swapped)``.

Example:
    >>> import numpy as np
    >>> from dnnfusion_jax.rewrite.rules_terms import V
    >>> Nonneg(V("a")).holds({"a": np.array([0.0, 2.0])}, {}, (2,))
    True
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dnnfusion_jax.rewrite.egraph_terms import (complement_axes, compose_perm, conv_channel,
                                               dot_swap, finite, inverse_perm, int_vec, moderate,
                                               nonneg, shape, swap_dot)
from dnnfusion_jax.rewrite.rules_terms import CONV_KEYS, P, Pat

class Compiler(Protocol):
    """What a guard asks of the rule compiler (``rules_api.Compiler``) to state its facts."""

    def term(self, v: Pat) -> Any: ...
    def fresh_vec(self) -> Any: ...


class Guard:
    """A side condition: egglog facts for saturation, a numpy check for ``rules check``."""

    def facts(self, c: Compiler) -> list: raise NotImplementedError
    def holds(self, env: dict, params: dict, root_shape: tuple) -> bool: return True


@dataclass(frozen=True)
class Scalar(Guard):
    v: Pat
    def facts(self, c): return [shape(c.term(self.v)) == int_vec(())]
    def holds(self, env, params, root_shape): return np.ndim(env[self.v.op]) == 0


@dataclass(frozen=True)
class SameShape(Guard):
    a: Pat
    b: Pat
    def facts(self, c):
        s = c.fresh_vec()
        return [shape(c.term(self.a)) == s, shape(c.term(self.b)) == s]
    def holds(self, env, params, root_shape):
        return np.shape(env[self.a.op]) == np.shape(env[self.b.op])


@dataclass(frozen=True)
class SameRank(Guard):
    a: Pat
    b: Pat
    def facts(self, c):
        from egglog import eq
        sa, sb = c.fresh_vec(), c.fresh_vec()
        return [shape(c.term(self.a)) == sa, shape(c.term(self.b)) == sb,
                eq(sa.length()).to(sb.length())]
    def holds(self, env, params, root_shape):
        return np.ndim(env[self.a.op]) == np.ndim(env[self.b.op])


@dataclass(frozen=True)
class ShapeIs(Guard):
    """The shape of ``v`` is the parameter ``p``."""
    v: Pat
    p: P
    def facts(self, c): return [shape(c.term(self.v)) == c.param(self.p)]
    def holds(self, env, params, root_shape):
        return np.shape(env[self.v.op]) == tuple(params[self.p.name])


@dataclass(frozen=True)
class Broadcasts(Guard):
    """``v`` is smaller than the whole left side (it is broadcast: a bias, a scale)."""
    v: Pat
    def facts(self, c):
        from egglog import ne
        s, r = c.fresh_vec(), c.fresh_vec()
        return [shape(c.term(self.v)) == s, shape(c.root) == r, ne(s).to(r)]
    def holds(self, env, params, root_shape): return np.shape(env[self.v.op]) != root_shape


@dataclass(frozen=True)
class NonzeroConst(Guard):
    c: Pat
    def facts(self, c):
        from egglog import f64, ne
        c.const(self.c.op)
        return [ne(c.consts[self.c.op][0]).to(f64(0.0))]
    def holds(self, env, params, root_shape): return bool(np.all(np.asarray(env[self.c.op]) != 0))


@dataclass(frozen=True)
class ComplementAxes(Guard):
    """``axes`` are exactly the dimensions ``broadcast_in_dim`` with ``dims`` added."""
    dims: P
    axes: P
    def facts(self, c): return [complement_axes(c.param(self.dims), c.param(self.axes))]
    def holds(self, env, params, root_shape):
        dims, axes = tuple(params[self.dims.name]), tuple(params[self.axes.name])
        return tuple(sorted(set(range(len(dims) + len(axes))) - set(dims))) == axes


@dataclass(frozen=True)
class KeepsShape(Guard):
    v: Pat
    def facts(self, c):
        s = c.fresh_vec()
        return [shape(c.term(self.v)) == s, shape(c.root) == s]
    def holds(self, env, params, root_shape): return np.shape(env[self.v.op]) == root_shape


@dataclass(frozen=True)
class Rank(Guard):
    v: Pat
    k: int
    def facts(self, c):
        s = c.fresh_vec()
        from egglog import eq, i64
        return [shape(c.term(self.v)) == s, eq(s.length()).to(i64(self.k))]
    def holds(self, env, params, root_shape): return np.ndim(env[self.v.op]) == self.k


@dataclass(frozen=True)
class Nonneg(Guard):
    v: Pat
    def facts(self, c): return [nonneg(c.term(self.v))]
    def holds(self, env, params, root_shape):
        x = np.asarray(env[self.v.op], np.float64)
        return bool(np.all(~np.signbit(x) | np.isnan(x)))  # -0.0 is not: see egraph_terms


@dataclass(frozen=True)
class Moderate(Guard):
    v: Pat
    def facts(self, c): return [moderate(c.term(self.v))]
    def holds(self, env, params, root_shape):
        x = np.asarray(env[self.v.op], np.float64)
        return bool(np.all((x >= 1e-18) & (x <= 1e18)))


@dataclass(frozen=True)
class Finite(Guard):
    v: Pat
    def facts(self, c): return [finite(c.term(self.v))]
    def holds(self, env, params, root_shape):
        return not np.any(np.isinf(np.asarray(env[self.v.op], np.float64)))


@dataclass(frozen=True)
class InversePerm(Guard):
    p: P
    q: P
    def facts(self, c): return [inverse_perm(c.param(self.p), c.param(self.q))]
    def holds(self, env, params, root_shape):
        p, q = params[self.p.name], params[self.q.name]
        return len(p) == len(q) and all(p[q[i]] == i for i in range(len(p)))


@dataclass(frozen=True)
class ComposePerm(Guard):
    """``r`` is the permutation of ``transpose(transpose(x, p), q)``."""
    p: P
    q: P
    r: P
    def facts(self, c): return [compose_perm(c.param(self.p), c.param(self.q)) == c.param(self.r)]
    def holds(self, env, params, root_shape):
        p, q, r = (params[x.name] for x in (self.p, self.q, self.r))
        return tuple(r) == tuple(p[i] for i in q)


@dataclass(frozen=True)
class ScaleRows(Guard):
    """``s`` has shape ``[rows of q, 1]``: it scales the rows of a 2-D ``q``."""
    s: Pat
    q: Pat
    def facts(self, c):
        from egglog import i64
        sq = c.fresh_vec()
        return [shape(c.term(self.q)) == sq, shape(c.term(self.s)) == int_vec((sq[0], i64(1)))]
    def holds(self, env, params, root_shape):
        q = np.shape(env[self.q.op])
        return len(q) == 2 and np.shape(env[self.s.op]) == (q[0], 1)


@dataclass(frozen=True)
class ScaleCols(Guard):
    """``s`` has shape ``[1, columns of k]``: it scales the columns of a 2-D ``k``."""
    s: Pat
    k: Pat
    def facts(self, c):
        from egglog import i64
        sk = c.fresh_vec()
        return [shape(c.term(self.k)) == sk, shape(c.term(self.s)) == int_vec((i64(1), sk[1]))]
    def holds(self, env, params, root_shape):
        k = np.shape(env[self.k.op])
        return len(k) == 2 and np.shape(env[self.s.op]) == (1, k[1])


@dataclass(frozen=True)
class ConvChannel(Guard):
    """``s`` holds one value per output channel of the conv ``key`` (broadcast along the
    others); ``kshape`` is that vector's shape laid out along the kernel's output-feature
    dimension."""
    key: P
    s: Pat
    kshape: P
    def facts(self, c):
        s = c.fresh_vec()
        return [shape(c.term(self.s)) == s, conv_channel(c.param(self.key), s, c.param(self.kshape))]
    def holds(self, env, params, root_shape):
        chan, kshape = conv_channel_shapes(CONV_KEYS[params[self.key.name]], root_shape)
        return np.shape(env[self.s.op]) == chan and tuple(params[self.kshape.name]) == kshape


@dataclass(frozen=True)
class DotSwap(Guard):
    """``transpose(dot(a, b, dims), perm)`` is ``dot(b, a, swapped)``: ``perm`` moves the rhs
    free dimensions in front of the lhs ones, batch dimensions leading (``swap_dot``)."""
    dims: P
    a: Pat
    b: Pat
    perm: P
    swapped: P
    def facts(self, c):
        sa, sb = c.fresh_vec(), c.fresh_vec()
        return [shape(c.term(self.a)) == sa, shape(c.term(self.b)) == sb,
                dot_swap(c.param(self.dims), sa.length(), sb.length(), c.param(self.perm),
                         c.param(self.swapped))]
    def holds(self, env, params, root_shape):
        perm, swapped = swap_dot(params[self.dims.name], np.ndim(env[self.a.op]),
                                 np.ndim(env[self.b.op]))
        return (perm == tuple(params[self.perm.name]) and swapped == params[self.swapped.name]
                and perm != tuple(range(len(perm))))


def conv_channel_shapes(params: dict, out_shape: Sequence[int]) -> tuple[tuple, tuple]:
    """For a conv with these params and output shape: the shape of a per-output-channel
    tensor broadcast against the output, and the same values laid out for the kernel."""
    dn = params["dimension_numbers"]
    out_feature, kernel_feature = dn.out_spec[1], dn.rhs_spec[0]
    channels = out_shape[out_feature]
    chan = tuple(channels if d == out_feature else 1 for d in range(len(out_shape)))
    kshape = tuple(channels if d == kernel_feature else 1 for d in range(len(out_shape)))
    return chan, kshape

