"""Differential testing on random graphs: ``dnnfusion.jit`` must agree with ``jax.jit``.

A hypothesis strategy draws a small straight-line program: 2-3 input arrays (f32, rank 1-3,
dims 1-6) and 3-12 operations, each reading values computed before it (inputs or earlier
results). The operations come from these families:

  * unary      neg, exp, log(|x|+1), tanh, logistic, sqrt(|x|), sin, abs, square,
               integer_pow, relu (as maximum with 0)
  * binary     add, sub, mul, safe div a/(1+b*b), maximum, minimum, with implicit
               numpy broadcasting whenever the operand shapes are broadcast-compatible
  * broadcast  jnp.broadcast_to (new leading dim, or a size-1 dim expanded) and
               lax.broadcast_in_dim (new dim anywhere)
  * reduce     sum/max/min/mean over one axis, with and without keepdims
  * reshape    flatten, split a dim, merge two adjacent dims, insert a size-1 dim
  * transpose  a random permutation
  * slice      x[..., a:b, ...] along one axis
  * concat     x with itself, with -x, or with another value of matching shape
  * where      jnp.where(cmp(a, b), a, b) with cmp in >, <, >=, ==
  * dot        x @ x.T, x.T @ x, a @ b, einsum("ij,kj->ik"), batched x @ x^T, and x @ w
               with w a fresh weight input
  * window     along one axis: cumsum/cummax/cummin/cumlogsumexp (either direction), max and
               sum pooling (width 2-3, stride 1-2, padded), argmax/argmin (as f32), one part of
               a split, pad with interior padding
  * repeat     an earlier op once more (a common subexpression for CSE)

Half of the time an op reads the newest value, and half of the time it repeats the family of
the op before it on the newest value, so chains that the simplifier composes or removes
(reshape of reshape, transpose of transpose back to the identity, ...) are frequent.

The function returns the last value plus one or two earlier values (possibly repeated, so
outputs may be shared, and possibly inputs). The program is plain data and the function is
built from it deterministically (written out as Python source and exec'd), so hypothesis
shrinks failing programs to small ones and prints a standalone repro script for them.

Every example runs through ``dnnfusion.jit(f, fallback=False)`` with planner "dnnfusion" (the
default: Table 3 with YELLOW cells and sibling merges), "greedy" and "none", each with rewrite
(simplify and the e-graph rule library) on and off, and is compared with ``jax.jit(f)``; the
explain report must satisfy blocks <= ops_after_rewrite, and neither fusing planner may use
more blocks than "none". A second test injects inf, -inf, NaN and 0 into the
inputs; it runs with ``finite_math=False`` (the default), the setting that promises IEEE
inf/NaN results; the finite-input test turns ``finite_math=True`` on, so the factoring rules
that assume operands free of ±inf are exercised too.

CI runs a fixed 60 + 40 examples. For a long campaign of fresh ones, set
``DNNFUSION_DIFFERENTIAL_EXAMPLES``: ``DNNFUSION_DIFFERENTIAL_EXAMPLES=2000 python3 -m pytest -q
tests/test_differential.py`` (hypothesis then shrinks a failure and prints its repro script).
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from jax import lax

import dnnfusion_jax as dnnfusion

RTOL = ATOL = 1e-5
MAX_RANK = 4
MAX_SIZE = 256  # elements per value: keeps compile and run time small

# ----------------------------------------------------------------------------- op vocabulary

# Each op is written out as Python source: the tested function is that source, exec'd, so a
# failing example prints (via ``note``) a standalone repro that is exactly what was run.
UNARY = {
    "neg": "-{0}",
    "exp": "jnp.exp({0})",
    "log_abs1": "jnp.log(jnp.abs({0}) + 1.0)",
    "tanh": "jnp.tanh({0})",
    "logistic": "jax.nn.sigmoid({0})",
    "sqrt_abs": "jnp.sqrt(jnp.abs({0}))",
    "sin": "jnp.sin({0})",
    "abs": "jnp.abs({0})",
    "square": "jnp.square({0})",
    "integer_pow": "lax.integer_pow({0}, 3)",
    "relu": "jnp.maximum({0}, 0.0)",
}

BINARY = {
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "div": "{0} / (1.0 + {1} * {1})",
    "max": "jnp.maximum({0}, {1})",
    "min": "jnp.minimum({0}, {1})",
}

REDUCE = {"sum": "jnp.sum", "max": "jnp.max", "min": "jnp.min", "mean": "jnp.mean"}

COMPARE = {"gt": ">", "lt": "<", "ge": ">=", "eq": "=="}

DOT = {
    "x_xT": "{0} @ {0}.T",
    "xT_x": "{0}.T @ {0}",
    "matmul": "{0} @ {1}",
    "einsum_nt": "jnp.einsum('ij,kj->ik', {0}, {1})",
    "batched": "jnp.matmul({0}, jnp.swapaxes({0}, -1, -2))",
    "weight": "{0} @ w{w}",
}

WINDOW = {
    "cumsum": "lax.cumsum({0}, {1}, reverse={2})",
    "cummax": "lax.cummax({0}, {1}, reverse={2})",
    "cummin": "lax.cummin({0}, {1}, reverse={2})",
    "cumlogsumexp": "lax.cumlogsumexp({0}, {1}, reverse={2})",
    "argmax": "jnp.argmax({0}, axis={1}).astype(jnp.float32)",
    "argmin": "jnp.argmin({0}, axis={1}).astype(jnp.float32)",
}

FAMILIES = ("unary", "binary", "broadcast", "reduce", "reshape", "transpose", "slice",
            "concat", "where", "dot", "window", "repeat")


@dataclass(frozen=True)
class Op:
    """One operation: ``family``/``kind`` say what, ``args`` index earlier values."""

    family: str
    kind: str
    args: tuple[int, ...]
    params: tuple
    shape: tuple[int, ...]  # the result's shape, as the generator predicts it

    def expression(self, names: list[str]) -> str:
        """The op as a Python expression over the values called ``names``."""
        a, p = [names[i] for i in self.args], self.params
        if self.family == "unary":
            return UNARY[self.kind].format(*a)
        if self.family == "binary":
            return BINARY[self.kind].format(*a)
        if self.family == "broadcast":
            if self.kind == "broadcast_to":
                return f"jnp.broadcast_to({a[0]}, {self.shape})"
            return f"lax.broadcast_in_dim({a[0]}, {self.shape}, {p[0]})"
        if self.family == "reduce":
            return f"{REDUCE[self.kind]}({a[0]}, axis={p[0]}, keepdims={p[1]})"
        if self.family == "reshape":
            return f"jnp.reshape({a[0]}, {self.shape})"
        if self.family == "transpose":
            return f"jnp.transpose({a[0]}, {p[0]})"
        if self.family == "slice":
            axis, start, stop = p
            return f"{a[0]}[{', '.join([':'] * axis + [f'{start}:{stop}'])}]"
        if self.family == "concat":
            other = {"self": a[0], "neg": f"-{a[0]}"}.get(self.kind) or a[-1]
            return f"jnp.concatenate([{a[0]}, {other}], axis={p[0]})"
        if self.family == "where":
            return f"jnp.where({a[0]} {COMPARE[self.kind]} {a[1]}, {a[0]}, {a[1]})"
        if self.family == "dot":
            return DOT[self.kind].format(*a, w=p[0] if p else None)
        if self.family == "window":
            if self.kind in WINDOW:
                return WINDOW[self.kind].format(a[0], *p)
            axis, n = p[0], len(self.shape)
            if self.kind == "split":  # the last of two parts
                return f"jnp.split({a[0]}, [{p[1]}], axis={axis})[1]"
            if self.kind == "pad":  # interior padding, negative high padding
                config = [(0, 0, 0)] * n
                config[axis] = (1, -1, p[1])
                return f"lax.pad({a[0]}, jnp.asarray(0.5, {a[0]}.dtype), {tuple(config)})"
            dims, strides = [1] * n, [1] * n
            dims[axis], strides[axis] = p[1], p[2]
            init, combine = ("-jnp.inf", "lax.max") if self.kind == "maxpool" else ("0.0", "lax.add")
            return (f"lax.reduce_window({a[0]}, {init}, {combine}, {tuple(dims)}, "
                    f"{tuple(strides)}, 'SAME')")
        raise AssertionError(f"unknown op {self!r}")


@dataclass(frozen=True)
class Program:
    """Inputs ``0..len(input_shapes)-1``, then one value per op; weights are extra inputs."""

    input_shapes: tuple[tuple[int, ...], ...]
    weight_shapes: tuple[tuple[int, ...], ...]
    ops: tuple[Op, ...]
    outputs: tuple[int, ...]

    def source(self, check_shapes: bool = False) -> str:
        """The program as a Python function ``random_program(x0, .., w0, ..)``."""
        n = len(self.input_shapes)
        names = [f"x{i}" for i in range(n)] + [f"v{n + k}" for k in range(len(self.ops))]
        params = names[:n] + [f"w{k}" for k in range(len(self.weight_shapes))]
        lines = [f"def random_program({', '.join(params)}):"]
        lines += [f"    # {p}: f32{list(shape)}"
                  for p, shape in zip(params, (*self.input_shapes, *self.weight_shapes))]
        for k, op in enumerate(self.ops):
            lines.append(f"    {names[n + k]} = {op.expression(names)}  # {list(op.shape)}")
            if check_shapes:  # the generator's own shape bookkeeping
                lines.append(f"    assert {names[n + k]}.shape == {op.shape}")
        lines.append(f"    return ({', '.join(names[i] for i in self.outputs)},)")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:  # how hypothesis prints an example
        printer.text(f"Program(input_shapes={self.input_shapes}, "
                     f"weight_shapes={self.weight_shapes}):\n{self.source()}\n")


def build_function(program: Program, check_shapes: bool = False):
    """The function the program describes: f(*inputs, *weights) -> tuple of outputs."""
    namespace = {"jax": jax, "jnp": jnp, "lax": lax}
    exec(program.source(check_shapes), namespace)  # noqa: S102 - our own generated code
    return namespace["random_program"]


# ----------------------------------------------------------------------------- the generator

def _size(shape) -> int:
    return math.prod(shape)


def _broadcast(s1, s2):
    try:
        return tuple(np.broadcast_shapes(s1, s2))
    except ValueError:
        return None


def _fits(shape) -> bool:
    return len(shape) <= MAX_RANK and _size(shape) <= MAX_SIZE


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n) if n % d == 0]


dims = st.integers(1, 6)


@st.composite
def input_shapes(draw):
    """2-3 shapes, rank 1-3, dims 1-6, often broadcast-compatible with the first one."""
    base = tuple(draw(st.lists(dims, min_size=1, max_size=3)))
    shapes = [base]
    for _ in range(draw(st.integers(1, 2))):
        how = draw(st.sampled_from(["same", "ones", "suffix", "fresh"]))
        if how == "same":
            shapes.append(base)
        elif how == "ones":  # some dims set to 1: broadcasts against base
            mask = draw(st.lists(st.booleans(), min_size=len(base), max_size=len(base)))
            shapes.append(tuple(1 if m else d for d, m in zip(base, mask)))
        elif how == "suffix":  # a trailing part: broadcasts by rank promotion
            shapes.append(base[draw(st.integers(0, len(base) - 1)):])
        else:
            shapes.append(tuple(draw(st.lists(dims, min_size=1, max_size=3))))
    return tuple(shapes)


def _choices(shapes: list[tuple[int, ...]], ops: list[Op]) -> dict[str, list]:
    """Which families are possible given the current values (family -> candidates)."""
    idx = range(len(shapes))
    out: dict[str, list] = {"unary": list(idx), "repeat": list(ops)}
    pairs = [(i, j) for i in idx for j in idx
             if (s := _broadcast(shapes[i], shapes[j])) is not None and _fits(s)]
    out["binary"] = pairs
    out["where"] = pairs
    out["broadcast"] = [i for i in idx if len(shapes[i]) < MAX_RANK or 1 in shapes[i]]
    nonscalar = [i for i in idx if len(shapes[i]) >= 1]
    out["reduce"] = nonscalar
    out["reshape"] = list(idx)
    out["transpose"] = [i for i in idx if len(shapes[i]) >= 2]
    out["slice"] = nonscalar
    out["concat"] = [i for i in nonscalar if 2 * _size(shapes[i]) <= MAX_SIZE]
    out["dot"] = [i for i in nonscalar]
    out["window"] = [i for i in nonscalar if 3 * _size(shapes[i]) <= MAX_SIZE]  # pad: < 3x
    return {k: v for k, v in out.items() if v}


def _pick(draw, candidates: list):
    """A candidate, half of the time the newest one (so that ops chain: reshape of reshape,
    transpose of transpose, ...), otherwise any."""
    if len(candidates) > 1 and draw(st.booleans()):
        return candidates[-1]
    return draw(st.sampled_from(candidates))


@st.composite
def _op(draw, shapes: list[tuple[int, ...]], ops: list[Op],
        n_weights: int) -> tuple[Op, tuple | None]:
    """One op over the current values; returns it and a new weight shape (or None)."""
    choices = _choices(shapes, ops)
    newest = len(shapes) - 1
    chained = None
    if ops and ops[-1].family not in ("binary", "where") and draw(st.booleans()):
        # Chain: the previous op's family again, on the newest value (transpose of transpose,
        # reshape of reshape, unary of unary...), which the simplifier composes or removes.
        if newest in choices.get(ops[-1].family, ()):
            chained = newest
    if chained is not None:
        family = ops[-1].family
    else:
        family = draw(st.sampled_from([f for f in FAMILIES if f in choices]))
    if family == "repeat":  # the same computation again: common subexpressions for CSE
        return _pick(draw, choices[family]), None
    if family in ("binary", "where"):
        i, j = _pick(draw, choices[family])
        kind = draw(st.sampled_from(sorted(BINARY if family == "binary" else COMPARE)))
        return Op(family, kind, (i, j), (), _broadcast(shapes[i], shapes[j])), None

    i = chained if chained is not None else _pick(draw, choices[family])
    s = shapes[i]
    if family == "unary":
        return Op(family, draw(st.sampled_from(list(UNARY))), (i,), (), s), None

    if family == "broadcast":
        options = []
        if len(s) < MAX_RANK:
            options += ["broadcast_to", "broadcast_in_dim"]
        if 1 in s:
            options.append("expand_one")
        how = draw(st.sampled_from(options))
        k = draw(st.integers(2, 4))
        if how == "broadcast_to":  # a new leading dim
            shape = (k, *s)
            kind, params = "broadcast_to", ()
        elif how == "expand_one":  # a size-1 dim becomes k
            axis = draw(st.sampled_from([a for a, d in enumerate(s) if d == 1]))
            shape = s[:axis] + (k,) + s[axis + 1:]
            kind, params = "broadcast_to", ()
        else:  # a new dim at any position
            pos = draw(st.integers(0, len(s)))
            shape = s[:pos] + (k,) + s[pos:]
            kind, params = "broadcast_in_dim", (tuple(d for d in range(len(shape)) if d != pos),)
        if not _fits(shape):  # too big: broadcast to a size-1 dim instead (still an op)
            shape = (1, *s) if len(s) < MAX_RANK else s
            kind, params = "broadcast_to", ()
        return Op(family, kind, (i,), params, shape), None

    if family == "reduce":
        axis = draw(st.integers(0, len(s) - 1))
        keepdims = draw(st.booleans())
        shape = s[:axis] + ((1,) if keepdims else ()) + s[axis + 1:]
        return Op(family, draw(st.sampled_from(list(REDUCE))), (i,), (axis, keepdims), shape), None

    if family == "reshape":
        options = ["flatten"]
        if len(s) < MAX_RANK:
            options.append("expand")
            if any(_divisors(d) for d in s):
                options.append("split")
        if len(s) >= 2:
            options.append("merge")
        kind = draw(st.sampled_from(options))
        if kind == "flatten":
            shape = (_size(s),)
        elif kind == "expand":
            pos = draw(st.integers(0, len(s)))
            shape = s[:pos] + (1,) + s[pos:]
        elif kind == "split":
            axis = draw(st.sampled_from([a for a, d in enumerate(s) if _divisors(d)]))
            factor = draw(st.sampled_from(_divisors(s[axis])))
            shape = s[:axis] + (factor, s[axis] // factor) + s[axis + 1:]
        else:
            axis = draw(st.integers(0, len(s) - 2))
            shape = s[:axis] + (s[axis] * s[axis + 1],) + s[axis + 2:]
        return Op(family, kind, (i,), (), shape), None

    if family == "transpose":
        perm = tuple(draw(st.permutations(range(len(s)))))
        return Op(family, "perm", (i,), (perm,), tuple(s[p] for p in perm)), None

    if family == "slice":
        axis = draw(st.integers(0, len(s) - 1))
        start = draw(st.integers(0, s[axis] - 1))
        stop = draw(st.integers(start + 1, s[axis]))
        shape = s[:axis] + (stop - start,) + s[axis + 1:]
        return Op(family, "slice", (i,), (axis, start, stop), shape), None

    if family == "concat":
        axis = draw(st.integers(0, len(s) - 1))
        others = [j for j, t in enumerate(shapes) if len(t) == len(s)
                  and all(a == b for d, (a, b) in enumerate(zip(s, t)) if d != axis)
                  and _fits(s[:axis] + (s[axis] + t[axis],) + s[axis + 1:])]
        kind = draw(st.sampled_from(["self", "neg", "other"]))
        if kind == "other":
            j = draw(st.sampled_from(others))  # never empty: s itself qualifies
            shape = s[:axis] + (s[axis] + shapes[j][axis],) + s[axis + 1:]
            return Op(family, kind, (i, j), (axis,), shape), None
        return Op(family, kind, (i,), (axis,), s[:axis] + (2 * s[axis],) + s[axis + 1:]), None

    if family == "window":
        axis = draw(st.integers(0, len(s) - 1))
        kind = draw(st.sampled_from([*WINDOW, "maxpool", "sumpool", "split", "pad"]))
        if kind in WINDOW and kind.startswith("arg"):
            return Op(family, kind, (i,), (axis,), s[:axis] + s[axis + 1:]), None
        if kind in WINDOW:
            return Op(family, kind, (i,), (axis, draw(st.booleans())), s), None
        if kind == "split":
            cut = draw(st.integers(0, s[axis] - 1))
            return Op(family, kind, (i,), (axis, cut), s[:axis] + (s[axis] - cut,)
                      + s[axis + 1:]), None
        if kind == "pad":
            interior = draw(st.integers(1, 2))
            extent = (s[axis] - 1) * (interior + 1) + 1
            return Op(family, kind, (i,), (axis, interior), s[:axis] + (extent,)
                      + s[axis + 1:]), None
        width, stride = draw(st.integers(2, 3)), draw(st.integers(1, 2))
        extent = -(-s[axis] // stride)
        return Op(family, kind, (i,), (axis, width, stride), s[:axis] + (extent,)
                  + s[axis + 1:]), None

    # dot
    options = ["weight"]
    if len(s) == 2:
        options += ["x_xT", "xT_x"]
        if any(len(t) == 2 and t[0] == s[1] for t in shapes):
            options.append("matmul")
        if any(len(t) == 2 and t[1] == s[1] for t in shapes):
            options.append("einsum_nt")
    if len(s) == 3 and _size((s[0], s[1], s[1])) <= MAX_SIZE:
        options.append("batched")
    kind = draw(st.sampled_from(options))
    if kind == "x_xT":
        return Op(family, kind, (i,), (), (s[0], s[0])), None
    if kind == "xT_x":
        return Op(family, kind, (i,), (), (s[1], s[1])), None
    if kind == "matmul":
        j = draw(st.sampled_from([j for j, t in enumerate(shapes) if len(t) == 2 and t[0] == s[1]]))
        return Op(family, kind, (i, j), (), (s[0], shapes[j][1])), None
    if kind == "einsum_nt":
        j = draw(st.sampled_from([j for j, t in enumerate(shapes) if len(t) == 2 and t[1] == s[1]]))
        return Op(family, kind, (i, j), (), (s[0], shapes[j][0])), None
    if kind == "batched":
        return Op(family, kind, (i,), (), (s[0], s[1], s[1])), None
    m = draw(st.integers(1, 6))
    shape = s[:-1] + (m,)
    return Op(family, "weight", (i,), (n_weights,), shape), (s[-1], m)


@st.composite
def programs(draw) -> Program:
    inputs = draw(input_shapes())
    shapes = list(inputs)
    weights: list[tuple[int, ...]] = []
    ops = []
    for _ in range(draw(st.integers(3, 12))):
        op, weight = draw(_op(shapes, ops, len(weights)))
        if weight is not None:
            weights.append(weight)
        ops.append(op)
        shapes.append(op.shape)
    last = len(shapes) - 1
    extra = draw(st.lists(st.integers(0, last), min_size=1, max_size=2))
    return Program(tuple(inputs), tuple(weights), tuple(ops), (last, *extra))


# ----------------------------------------------------------------------------- input values

def make_args(program: Program, seed: int, specials=()) -> list[np.ndarray]:
    """Standard normal f32 inputs (then weights); ``specials`` are (arg, position, value)."""
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal(shape).astype(np.float32)
            for shape in (*program.input_shapes, *program.weight_shapes)]
    for which, position, value in specials:
        arr = args[which % len(args)]
        arr.reshape(-1)[position % arr.size] = value
    return args


special_values = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 10_000),
              st.sampled_from([np.inf, -np.inf, np.nan, 0.0])),
    min_size=1, max_size=6)


# ----------------------------------------------------------------------------- the check

CONFIGS = [(planner, rewrite) for planner in ("dnnfusion", "greedy", "none")
           for rewrite in (True, False)]


def repro_script(program: Program, seed: int, specials=(), finite_math: bool = True) -> str:
    """A standalone script that reruns one example (printed for a failing one)."""
    return "\n".join([
        "import jax, jax.numpy as jnp, numpy as np", "from jax import lax",
        "import dnnfusion_jax as dnnfusion", "", program.source(), "",
        f"rng = np.random.default_rng({seed})",
        "args = [rng.standard_normal(s).astype(np.float32) for s in "
        f"{[*program.input_shapes, *program.weight_shapes]}]",
        "for which, pos, value in ["
        + ", ".join(f"({w}, {p}, float('{float(v)}'))" for w, p, v in specials) + "]:",
        "    arr = args[which % len(args)]",
        "    arr.reshape(-1)[pos % arr.size] = value",
        "expected = jax.jit(random_program)(*args)",
        "for planner in ('dnnfusion', 'greedy', 'none'):",
        "    for rewrite in (True, False):",
        "        f = dnnfusion.jit(random_program, fallback=False, planner=planner,",
        f"                          rewrite=rewrite, finite_math={finite_math})",
        "        for got, want in zip(f(*args), expected):",
        "            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True,",
        "                                       err_msg=f'{planner=} {rewrite=}')",
        "        blocks = dnnfusion.explain(f, *args).summary()['blocks']",
        "        print(planner, rewrite, blocks, 'blocks: ok')",
    ])


def check_program(program: Program, seed: int, specials=(), finite_math: bool = True) -> None:
    note("Standalone repro:\n" + repro_script(program, seed, specials, finite_math))
    args = make_args(program, seed, specials)
    f = build_function(program)
    expected = jax.jit(f)(*args)
    blocks = {}
    for planner, rewrite in CONFIGS:
        fused = dnnfusion.jit(f, fallback=False, planner=planner, rewrite=rewrite,
                              finite_math=finite_math)
        got = fused(*args)
        assert len(got) == len(expected)
        for k, (g, e) in enumerate(zip(got, expected)):
            where = f"output {k} (planner={planner}, rewrite={rewrite})"
            assert g.shape == e.shape and g.dtype == e.dtype, (where, g.shape, e.shape)
            np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=RTOL, atol=ATOL,
                                       equal_nan=True, err_msg=where)
        summary = dnnfusion.explain(fused, *args).summary()
        assert summary["internal_error"] is None
        assert summary["planner"] == planner
        assert summary["blocks"] <= summary["ops_after_rewrite"], summary
        if planner == "none":  # one block per operation
            assert summary["blocks"] == summary["ops_after_rewrite"], summary
        blocks[planner, rewrite] = summary["blocks"]
    for planner, rewrite in CONFIGS:
        assert blocks[planner, rewrite] <= blocks["none", rewrite], blocks


CAMPAIGN = int(os.environ.get("DNNFUSION_DIFFERENTIAL_EXAMPLES", "0"))
"""Examples per test for a long campaign (fresh random ones each run); 0: CI's fixed few."""

SETTINGS = settings(max_examples=CAMPAIGN or 60, deadline=None, derandomize=not CAMPAIGN,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(program=programs(), seed=st.integers(0, 2**32 - 1))
def test_random_graph_matches_jax_jit(program, seed):
    check_program(program, seed)


@settings(SETTINGS, max_examples=CAMPAIGN or 40)
@given(program=programs(), seed=st.integers(0, 2**32 - 1), specials=special_values)
def test_random_graph_with_inf_nan_zero_matches_jax_jit(program, seed, specials):
    check_program(program, seed, specials, finite_math=False)


def test_generator_covers_every_family():
    """The generator is not degenerate: all families, kinds, broadcasting and multi-output,
    and its programs make the simplifier's rules fire (traced only, nothing compiled)."""
    seen: Counter = Counter()
    rules: Counter = Counter()

    @settings(max_examples=300, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(programs())
    def collect_programs(program):
        shapes = [*program.input_shapes, *(op.shape for op in program.ops)]
        for k, op in enumerate(program.ops):
            seen["repeat"] += op in program.ops[:k]
            seen[op.family] += 1
            seen[op.family, op.kind] += 1
            if op.family == "binary" and shapes[op.args[0]] != shapes[op.args[1]]:
                seen["implicit-broadcast"] += 1
            if op.family == "reduce":
                seen["keepdims", op.params[1]] += 1
        seen["families>=3"] += len({op.family for op in program.ops}) >= 3
        seen["outputs>=2"] += len(program.outputs) >= 2
        seen["shared-output"] += len(set(program.outputs)) < len(program.outputs)
        seen["weights"] += bool(program.weight_shapes)
        seen["ops"] += len(program.ops)
        # Traced (with the generator's shape assertions) and simplified; nothing compiled.
        args = [jax.ShapeDtypeStruct(shape, jnp.float32)
                for shape in (*program.input_shapes, *program.weight_shapes)]
        rules.update(dnnfusion.explain(build_function(program, check_shapes=True), *args)
                     .summary()["rules_fired"])

    collect_programs()
    missing = [f for f in FAMILIES if not seen[f]]
    missing += [(fam, k) for fam, kinds in (("unary", UNARY), ("binary", BINARY),
                                            ("reduce", REDUCE), ("where", COMPARE),
                                            ("window", [*WINDOW, "maxpool", "sumpool",
                                                        "split", "pad"]))
                for k in kinds if not seen[fam, k]]
    missing += [key for key in ("implicit-broadcast", ("keepdims", True), ("keepdims", False),
                                "families>=3", "outputs>=2", "shared-output", "weights",
                                ("dot", "x_xT"), ("dot", "matmul"), ("dot", "weight"),
                                ("concat", "other"), ("reshape", "split"), ("reshape", "merge"),
                                ("broadcast", "broadcast_in_dim")) if not seen[key]]
    missing += [rule for rule in ("cse", "reshape-reshape", "transpose-transpose",
                                  "transpose-identity", "reshape-noop") if not rules[rule]]
    assert not missing, f"generator never produced: {missing}"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))


def _loss(f):
    """A scalar of every output, through a transcendental so that no gradient is trivial."""
    return lambda *args: sum(jnp.sum(jnp.sin(out)) for out in f(*args))


@settings(SETTINGS, max_examples=CAMPAIGN or 20)
@given(program=programs(), seed=st.integers(0, 2**32 - 1))
def test_random_graph_gradients_match_jax_grad(program, seed):
    """``jax.grad`` through ``dnnfusion.jit`` (the fused forward with its residuals and the
    fused backward, ``derivatives.py``) agrees with ``jax.grad`` of the function: scaled error
    at most 1e-4 (a backward sums many products; it compounds the forward's rounding)."""
    note("Standalone repro of the forward:\n" + repro_script(program, seed))
    args = make_args(program, seed)
    f = build_function(program)
    argnums = tuple(range(len(args)))
    expected = jax.jit(jax.grad(_loss(f), argnums=argnums))(*args)
    fused = dnnfusion.jit(f, fallback=False)
    got = jax.jit(jax.grad(_loss(fused), argnums=argnums))(*args)
    for k, (g, e) in enumerate(zip(got, expected)):
        g, e = np.asarray(g), np.asarray(e)
        finite = np.abs(e[np.isfinite(e)])
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-4 * scale, equal_nan=True,
                                   err_msg=f"gradient of input {k}")
    plan = next(iter(fused._plans.values()))
    assert plan.vjp().backward.internal_error is None  # the backward was optimised, not bypassed
