"""Models with their work inside loops and branches against jax.jit, side by side in one run,
each also unrolled (``tests/loop_models.py``: layers stacked by ``nn.scan``/``nnx.scan``, an
LSTM through ``nn.RNN``, ``fori_loop`` with ``cond``, ``switch``, a ``while_loop``), and their
gradients.

For every model: the median ms of interleaved calls of jax.jit and dnnfusion.jit on the loop
form, the same two on the unrolled form (the same computation as straight-line code, where the
planner may fuse across iterations), ratios against jax.jit's loop (above 1: faster), the
blocks of each body, and whether the results agree with jax.jit (``agreement``). ``grad``
rows time ``jax.grad`` of the model's summed output with respect to its first argument. Then
the geometric mean of the loop ratios and the smallest.

Run: python3 benchmarks/loops.py [--repeats N] [--no-grad] [NAME ...]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dnnfusion_jax as dnnfusion  # noqa: E402
from kernels import interleaved_ms  # noqa: E402
from loop_models import LOOP_MODELS  # noqa: E402


def gradient(fn):
    """``jax.grad`` of the summed float outputs with respect to the first argument."""
    def loss(first, *rest):
        leaves = jax.tree_util.tree_leaves(fn(first, *rest))
        return sum(jnp.sum(leaf) for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating))
    return jax.grad(loss)


def agreement(got, want) -> str:
    """"yes" within rtol = atol = 1e-5; "~" within 1e-4 of each leaf's largest magnitude (the
    summation order of a gradient's long sums, as ``tests/test_libraries.py`` allows); "NO"."""
    pairs = list(zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)))
    if all(np.allclose(g, w, rtol=1e-5, atol=1e-5, equal_nan=True) for g, w in pairs):
        return "yes"
    scaled = all(float(np.max(np.abs(np.asarray(g) - np.asarray(w))))
                 <= 1e-4 * max(1.0, float(np.max(np.abs(np.asarray(w))))) for g, w in pairs)
    return "~" if scaled else "NO"


def body_blocks(fused, args) -> str:
    """Blocks per loop body, e.g. ``scan body 14 (6 kernels)``."""
    bodies = fused.explain(*args).optimized.loop_bodies
    return "; ".join(f"{b.loop.split(' ')[0]} {b.loop.split(' ', 2)[2]} "
                     f"{len(b.optimized.plan.blocks)} "
                     f"({sum(k.backend != 'xla' for k in b.optimized.executable.kernels)} kernels)"
                     + (f" as traced: {b.reason}" if b.reason else "")
                     for b in bodies) or "-"


def row(name: str, loop_fn, unrolled_fn, args, repeats: int, grad: bool) -> float:
    if grad:
        loop_fn, unrolled_fn = gradient(loop_fn), gradient(unrolled_fn)
    functions = [jax.jit(loop_fn), dnnfusion.jit(loop_fn), jax.jit(unrolled_fn),
                 dnnfusion.jit(unrolled_fn)]
    reference = functions[0](*args)
    verdicts = {agreement(f(*args), reference) for f in functions[1:]}
    ok = "NO" if "NO" in verdicts else "~" if "~" in verdicts else "yes"
    times = [statistics.median(t) for t in interleaved_ms(functions, [args] * 4, repeats)]
    ratio = times[0] / times[1]
    label = f"{name}{' grad' if grad else ''}"
    bodies = "-" if grad else body_blocks(functions[1], args)
    print(f"{label:26} {times[0]:9.3f} {times[1]:9.3f} {ratio:6.2f}x {times[2]:10.3f} "
          f"{times[3]:10.3f} {times[0] / times[3]:6.2f}x  {ok:5}  {bodies}",
          flush=True)
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--no-grad", action="store_true", help="skip the gradient rows")
    parser.add_argument("names", nargs="*", help="only models whose name contains one")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {os.cpu_count()} cores; median of {args.repeats} interleaved "
          "calls; ratios: jax.jit's loop ms / ours")
    print(f"{'model':26} {'jax.jit':>9} {'ours':>9} {'ratio':>7} {'jit unroll':>10} "
          f"{'ours unroll':>10} {'ratio':>7}  agree  blocks per body (ours, loop form)")
    ratios = []
    for name, build in LOOP_MODELS.items():
        if args.names and not any(n in name for n in args.names):
            continue
        loop_fn, loop_args = build(False)
        unrolled_fn, _ = build(True)
        ratios.append(row(name, loop_fn, unrolled_fn, loop_args, args.repeats, grad=False))
        differentiable = jnp.issubdtype(jax.tree_util.tree_leaves(loop_args[0])[0].dtype,
                                        jnp.floating)
        if not args.no_grad and differentiable and name != "while_converges":
            ratios.append(row(name, loop_fn, unrolled_fn, loop_args, args.repeats, grad=True))
    if ratios:
        geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"geomean {geomean:.2f}x over jax.jit's loops, minimum {min(ratios):.2f}x "
              f"({len(ratios)} rows)")


if __name__ == "__main__":
    main()
