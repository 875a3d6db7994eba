"""Fused C kernels against jax.jit, side by side in one run: ms and speed-up per workload.

Workloads: the normalisations the issue names (row softmax, layer norm, RMS norm, group norm),
GELU/SiLU chains, a transpose sandwich, a plain elementwise chain, and a BERT-base layer
(GEMMs stay in XLA). Also printed: a memory copy's bandwidth measured in the same run (the
machine's ceiling for memory-bound kernels), each fused kernel's effective bandwidth, and the
compile cache: first-run compile time against a second process that compiles nothing.

Sizes stay below glibc's 32 MiB mmap threshold so neither side pays first-touch page faults on
fresh buffers (see ../shared/ENGINEERING.md).

Run: python3 benchmarks/kernels.py [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import dnnfusion_jax as dnnfusion  # noqa: E402


def layer_norm(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) * jax.lax.rsqrt(v + 1e-5) * g + b


def rms_norm(x, g):
    return x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + 1e-6) * g


def group_norm(x, g, b, groups=32):
    n, h, w, c = x.shape
    xr = x.reshape(n, h, w, groups, c // groups)
    m = xr.mean((1, 2, 4), keepdims=True)
    v = ((xr - m) ** 2).mean((1, 2, 4), keepdims=True)
    return ((xr - m) * jax.lax.rsqrt(v + 1e-5)).reshape(x.shape) * g + b


def workloads():
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    from examples.bert import example as bert_example
    yield "softmax 4096x1024", jax.nn.softmax, (f(4096, 1024),)
    yield "layer norm 4096x1024", layer_norm, (f(4096, 1024), f(1024), f(1024))
    yield "RMS norm 4096x1024", rms_norm, (f(4096, 1024), f(1024))
    yield "group norm 8x32x32x256", group_norm, (f(8, 32, 32, 256), f(256), f(256))
    yield "gelu(erf) 4096x1024", lambda x: jax.nn.gelu(x, approximate=False), (f(4096, 1024),)
    yield "silu*y 4096x1024", lambda x, y: jax.nn.silu(x) * y, (f(4096, 1024), f(4096, 1024))
    yield "transpose sandwich", lambda x: (jnp.tanh(x.T) * 2.0).T + x, (f(2048, 1024),)
    yield "elementwise chain", lambda x: jnp.maximum(x * 1.5 + 0.5, 0.0) * x, (f(4096, 1024),)
    fn, args = bert_example(num_layers=1)
    yield "BERT-base layer", fn, args


def best_ms(fn, args, repeats):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def copy_bandwidth(repeats):
    x = np.random.default_rng(1).standard_normal((4096, 1024)).astype(np.float32)
    copy = jax.jit(lambda x: x + 0.0)
    ms = best_ms(copy, (x,), repeats)
    return 2 * x.nbytes / (ms * 1e-3) / 1e9


def compile_cache_demo():
    """Compile time of a fresh cache, then of a second process that finds every kernel."""
    code = ("import time, jax, numpy as np, dnnfusion_jax as d; from examples.bert import example;"
            "from codegen.compile_cache import cache_stats; fn, a = example(num_layers=1); t = time.time();"
            "jax.block_until_ready(d.jit(fn)(*a)); s = cache_stats();"
            "print(f'{time.time() - t:.2f} {s.misses} {s.compile_seconds:.2f}')")
    root = os.path.join(os.path.dirname(__file__), "..")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "DNNFUSION_CACHE_DIR": cache, "PYTHONPATH": root}
        runs = [subprocess.run([sys.executable, "-c", code], env=env, cwd=root, check=True,
                               capture_output=True, text=True).stdout.split()
                for _ in range(2)]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {os.cpu_count()} cores, backend c vs jax.jit (XLA:CPU)")
    ceiling = copy_bandwidth(args.repeats)
    print(f"copy bandwidth (jax.jit x+0 on 16 MiB): {ceiling:.1f} GB/s")
    print(f"{'workload':24} {'jax.jit ms':>10} {'dnnfusion ms':>12} {'ratio':>7} "
          f"{'GB/s':>6} {'% copy':>6} {'blocks':>6} {'xla kernels':>11}")
    from dnnfusion_jax.xla_hlo import xla_kernels
    for name, fn, inputs in workloads():
        reference = jax.jit(fn)
        fused = dnnfusion.jit(fn, backend="c")
        got, want = fused(*inputs), reference(*inputs)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
        ref_ms = fused_ms = float("inf")
        for _ in range(3):  # interleaved: both see the same machine state
            ref_ms = min(ref_ms, best_ms(reference, inputs, args.repeats))
            fused_ms = min(fused_ms, best_ms(fused, inputs, args.repeats))
        moved = sum(np.asarray(x).nbytes for x in jax.tree.leaves(inputs)) + sum(
            np.asarray(x).nbytes for x in jax.tree.leaves(want))
        gbs = moved / (fused_ms * 1e-3) / 1e9
        blocks = fused.explain(*inputs).summary()["blocks"]
        kernels = xla_kernels(fn, *inputs).count
        print(f"{name:24} {ref_ms:10.3f} {fused_ms:12.3f} {ref_ms / fused_ms:6.2f}x "
              f"{gbs:6.1f} {100 * gbs / ceiling:5.0f}% {blocks:6d} {kernels:11d}")
    first, second = compile_cache_demo()
    print(f"compile cache, BERT-base layer: first process {first[0]} s to first result "
          f"({first[1]} kernels compiled in {first[2]} s); second process {second[0]} s "
          f"({second[1]} compiled)")


if __name__ == "__main__":
    main()
