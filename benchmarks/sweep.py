"""A sweep of small everyday workloads against jax.jit, side by side in one run.

``kernels.py`` times the workloads the issue names; this sweep times the kind a user writes
without thinking of fusion: tiny dispatch-bound functions, reductions over any axis, layout
transposes, pads and concatenations, masks, integer arithmetic, GEMM and convolution
epilogues, argmax (which stays in XLA). Every workload is checked against jax.jit (rtol = atol
= 1e-5, NaN equal) and timed by interleaved calls on device inputs; the medians and their
ratio are printed, with the number of blocks. "check" says "rounding" where the result differs
from jax.jit beyond that tolerance but by less than 5e-5 of the output's largest magnitude, as
two summation orders of a long reduction do (README, "The C backend"); "MISMATCH" otherwise.

Run: python3 benchmarks/sweep.py [--repeats N] [NAME ...]   (names filter by substring)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import dnnfusion_jax as dnnfusion  # noqa: E402
from examples.norms import layer_norm  # noqa: E402
from kernels import interleaved_ms  # noqa: E402


def causal_softmax(scores):
    n = scores.shape[-1]
    return jax.nn.softmax(jnp.where(jnp.tril(jnp.ones((n, n), bool)), scores, -1e9), -1)


def conv_bn_relu(x, w, scale, shift):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y * scale + shift)


def workloads():
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    ints = rng.integers(0, 100, (4096, 1024), dtype=np.int32)
    yield "tiny elementwise 1k", lambda x: jnp.tanh(x) * 2 + 1, (f(1000),)
    yield "small gelu 64x64", lambda x: jax.nn.gelu(x) * x, (f(64, 64),)
    yield "softmax 128x128", jax.nn.softmax, (f(128, 128),)
    yield "softmax axis 0 1024x1024", lambda x: jax.nn.softmax(x, axis=0), (f(1024, 1024),)
    yield "sum axis 0 4096x1024", lambda x: x.sum(0), (f(4096, 1024),)
    yield "mean of all 4096x1024", lambda x: x.mean(), (f(4096, 1024),)
    yield "max axis 1 of 64x256x256", lambda x: x.max(1), (f(64, 256, 256),)
    yield "layer norm 128x768", layer_norm, (f(128, 768),)
    yield "layer norm 16x4096x64", layer_norm, (f(16, 4096, 64),)
    yield "transpose 2048x2048", lambda x: x.T * 2.0, (f(2048, 2048),)
    yield "NCHW to NHWC 8x64x56x56", lambda x: jnp.tanh(x.transpose(0, 2, 3, 1)), \
        (f(8, 64, 56, 56),)
    yield "heads transpose 8x512x12x64", lambda x: x.transpose(0, 2, 1, 3) + 1.0, \
        (f(8, 512, 12, 64),)
    yield "pad H, W + relu", lambda x: jax.nn.relu(jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))), \
        (f(8, 64, 64, 64),)
    yield "concatenate channels", lambda a, b: jnp.concatenate([jax.nn.relu(a), b * 2], -1), \
        (f(8, 64, 64, 64), f(8, 64, 64, 32))
    yield "slice + add", lambda x: x[:, 1:] + x[:, :-1], (f(2048, 1025),)
    yield "outer product tanh", lambda a, b: jnp.tanh(a[:, None] * b[None, :]), \
        (f(2048), f(2048))
    yield "causal-mask softmax", causal_softmax, (f(12, 512, 512),)
    yield "GEMM + bias + gelu", lambda x, w, b: jax.nn.gelu(x @ w + b), \
        (f(512, 1024), f(1024, 1024), f(1024))
    yield "conv + BN + relu", conv_bn_relu, (f(1, 56, 56, 64), f(3, 3, 64, 64), f(64), f(64))
    yield "argmax rows", lambda x: jnp.argmax(x, -1), (f(4096, 1024),)
    yield "where isnan", lambda x: jnp.where(jnp.isnan(x), 0.0, x) * 3, (f(4096, 1024),)
    yield "int32 arithmetic", lambda x: (x * 3 + 1) % 7, (ints,)
    yield "log_softmax", jax.nn.log_softmax, (f(4096, 1024),)
    yield "l2 normalise", lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True), \
        (f(4096, 1024),)
    yield "swiglu 2048x2816", lambda a, b: jax.nn.silu(a) * b, (f(2048, 2816), f(2048, 2816))
    yield "RMS norm 8x512", lambda x: x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + 1e-6), \
        (f(8, 512),)


def check(got, want) -> str:
    """ok, rounding or MISMATCH (see the module docstring)."""
    got, want = np.asarray(got), np.asarray(want)
    if np.allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True):
        return "ok"
    if got.dtype.kind != "f":
        return "MISMATCH"
    scale = max(float(np.abs(want).max()), 1.0) * 1e-5
    return "rounding" if float(np.nanmax(np.abs(got - want))) <= 5 * scale else "MISMATCH"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("names", nargs="*", help="run only workloads whose name contains one")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {os.cpu_count()} cores, backend c vs jax.jit (XLA:CPU); "
          f"median of {args.repeats} interleaved calls")
    print(f"{'workload':30} {'jax.jit ms':>10} {'dnnfusion ms':>12} {'ratio':>6} "
          f"{'blocks':>6}  check")
    for name, fn, inputs in workloads():
        if args.names and not any(n in name for n in args.names):
            continue
        inputs = jax.device_put(inputs)
        reference, fused = jax.jit(fn), dnnfusion.jit(fn, backend="c")
        verdict = check(fused(*inputs), reference(*inputs))
        ref_times, fused_times = interleaved_ms([reference, fused], [inputs, inputs],
                                                args.repeats)
        ref_ms, fused_ms = statistics.median(ref_times), statistics.median(fused_times)
        blocks = fused.explain(*inputs).summary()["blocks"]
        print(f"{name:30} {ref_ms:10.3f} {fused_ms:12.3f} {ref_ms / fused_ms:5.2f}x "
              f"{blocks:6d}  {verdict}", flush=True)


if __name__ == "__main__":
    main()
