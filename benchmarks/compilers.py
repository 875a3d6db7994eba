"""The C kernels built by gcc against the same kernels built by ``zig cc`` (the ``zig`` extra,
used when a machine has no system C compiler), side by side in one run.

For each workload the plan is made once; its blocks are compiled twice, once per compiler, and
the two executables are timed call by call, interleaved, under ``jax.jit`` (median ms of
``--repeats`` calls). "zig / gcc" above 1 means zig's kernels are slower.

Run: python3 benchmarks/compilers.py [--repeats N]   (needs gcc and pip install ziglang)
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from codegen.c.backend import CBackend  # noqa: E402
from codegen.compile_cache import zig_binary  # noqa: E402
from dnnfusion_jax.executable import compile_plan  # noqa: E402
from dnnfusion_jax.options import make_options  # noqa: E402
from dnnfusion_jax.pipeline import optimize  # noqa: E402
from examples.norms import layer_norm, rms_norm  # noqa: E402


def workloads():
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    yield "softmax 4096x1024", jax.nn.softmax, (f(4096, 1024),)
    yield "layer norm 4096x1024", layer_norm, (f(4096, 1024), f(1024), f(1024))
    yield "RMS norm 4096x1024", rms_norm, (f(4096, 1024), f(1024))
    yield "gelu(erf) 4096x1024", lambda x: jax.nn.gelu(x, approximate=False), (f(4096, 1024),)
    yield "elementwise chain", lambda x: np.float32(1.5) * x * x + x, (f(4096, 1024),)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    zig = zig_binary()
    if zig is None:
        sys.exit("needs the ziglang package: pip install ziglang")
    compilers = {"gcc": "gcc", "zig": [zig, "cc"]}
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{platform.platform()}; median of {args.repeats} calls")
    print(f"{'workload':<22} {'gcc ms':>8} {'zig ms':>8} {'zig / gcc':>9}")
    ratios = []
    for name, fn, inputs in workloads():
        inputs = [jax.device_put(x) for x in inputs]
        opt = optimize(fn, inputs, {}, make_options(backend="c"))
        runs = {}
        for label, command in compilers.items():
            built = dataclasses.replace(
                opt, executable=compile_plan(opt.plan, CBackend(compiler=command)))
            runs[label] = jax.jit(lambda *xs, built=built: built(list(xs)))
        times = {label: [] for label in runs}
        for run in runs.values():
            for _ in range(3):
                jax.block_until_ready(run(*inputs))
        for _ in range(args.repeats):
            for label, run in runs.items():
                start = time.perf_counter()
                jax.block_until_ready(run(*inputs))
                times[label].append((time.perf_counter() - start) * 1e3)
        gcc, zig_ms = (statistics.median(times[k]) for k in ("gcc", "zig"))
        ratios.append(zig_ms / gcc)
        print(f"{name:<22} {gcc:>8.3f} {zig_ms:>8.3f} {zig_ms / gcc:>8.2f}x", flush=True)
    print(f"geometric mean zig / gcc: {statistics.geometric_mean(ratios):.2f}x")


if __name__ == "__main__":
    main()
