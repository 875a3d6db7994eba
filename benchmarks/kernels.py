"""Fused C kernels against jax.jit, side by side in one run: ms and speed-up per workload.

Workloads: the normalisations the issue names (row softmax, layer norm, RMS norm, group norm),
GELU/SiLU chains, a transpose sandwich, a plain elementwise chain, and a BERT-base layer
(GEMMs stay in XLA). Also printed: the compile cache, first-run compile time against a second
process that compiles nothing.

Method. Inputs live on the device (``jax.device_put``), as a user's arrays do: numpy inputs
would add a host-to-device copy of every input to every call, for both sides. For every
workload four functions are timed call by call, interleaved (jax.jit, dnnfusion, and two
copies of an array of half the bytes the workload reads and writes, so that they move the same
bytes: ``x + 1`` through XLA and through a C kernel of ours), and the median of each is
reported (the minimum too, with ``--min``). "copy ms" is the faster copy; "% copy" is copy ms
/ dnnfusion ms: how close a fused kernel comes to a copy of its own traffic, measured the same
way and in the same moment. It says nothing for BERT (GEMM-bound), which gets "-".

Regimes. glibc serves large allocations with fresh ``mmap``s whose pages fault on first touch
(~8 ms per 32 MiB here; see ../shared/ENGINEERING.md), and whether a call pays that depends on
the allocation history of the process: XLA's temporaries often do, our single-kernel blocks
rarely. So the table is printed twice: "default" is the allocator as every JAX user has it;
"warm heap" reruns this script with ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` and
``MALLOC_TOP_PAD_`` set large, so that no call of either side faults and the kernels alone
are compared. The rows of 4096x1024 (16 MiB in, 16 MiB out) fit this machine's 32 MiB L3
together; "softmax 8000x1024" (2 x 31 MiB) does not and measures DRAM bandwidth.

Run: python3 benchmarks/kernels.py [--repeats N] [--min] [--regime default|warm|both]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import dnnfusion_jax as dnnfusion  # noqa: E402
from examples.norms import group_norm, layer_norm, rms_norm  # noqa: E402


def workloads():
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    from examples.bert import example as bert_example
    yield "softmax 4096x1024", jax.nn.softmax, (f(4096, 1024),)
    yield "softmax 8000x1024", jax.nn.softmax, (f(8000, 1024),)
    yield "layer norm 4096x1024", layer_norm, (f(4096, 1024), f(1024), f(1024))
    yield "RMS norm 4096x1024", rms_norm, (f(4096, 1024), f(1024))
    yield "group norm 8x32x32x256", group_norm, (f(8, 32, 32, 256), f(256), f(256))
    yield "gelu(erf) 4096x1024", lambda x: jax.nn.gelu(x, approximate=False), (f(4096, 1024),)
    yield "silu*y 4096x1024", lambda x, y: jax.nn.silu(x) * y, (f(4096, 1024), f(4096, 1024))
    yield "transpose sandwich", lambda x: (jnp.tanh(x.T) * 2.0).T + x, (f(2048, 1024),)
    yield "elementwise chain", lambda x: jnp.maximum(x * 1.5 + 0.5, 0.0) * x, (f(4096, 1024),)
    fn, args = bert_example(num_layers=1)
    yield "BERT-base layer", fn, args


def interleaved_ms(fns, args_list, repeats):
    """Per function: the sorted wall times (ms) of ``repeats`` calls, taken one call of each
    function in turn so that all see the same machine state (another job may share it)."""
    for fn, args in zip(fns, args_list):  # warm-up: compile, first-touch outputs
        for _ in range(3):
            jax.block_until_ready(fn(*args))
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, args, out in zip(fns, args_list, times):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            out.append((time.perf_counter() - start) * 1e3)
    return [sorted(t) for t in times]


def copy_input(nbytes):
    """An f32 array of ``nbytes / 2``: ``x + 1`` on it reads and writes ``nbytes`` in all."""
    return np.random.default_rng(1).standard_normal(max(nbytes // 8, 1)).astype(np.float32)


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


WARM_HEAP = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 34),
             "MALLOC_TOP_PAD_": str(1 << 30)}
"""glibc tunables that keep freed memory in the heap, so no buffer is a fresh mmap."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--min", action="store_true", help="also print minimum times")
    parser.add_argument("--regime", choices=["default", "warm", "both"], default="both",
                        help="allocator regime (see the module docstring); both: default "
                             "here, then warm heap in a second process")
    args = parser.parse_args()
    if args.regime == "warm" and not all(os.environ.get(k) == v for k, v in WARM_HEAP.items()):
        # glibc reads its tunables at start-up: run again with them set
        argv = [sys.executable, __file__, "--repeats", str(args.repeats), "--regime", "warm"]
        os.execve(sys.executable, argv + (["--min"] if args.min else []),
                  {**os.environ, **WARM_HEAP})
    regime = "warm heap (MALLOC_* tunables)" if args.regime == "warm" else "default allocator"
    print(f"jax {jax.__version__}, {os.cpu_count()} cores, backend c vs jax.jit (XLA:CPU); "
          f"median of {args.repeats} interleaved calls; {regime}")
    header = f"{'workload':24} {'jax.jit ms':>10} {'dnnfusion ms':>12} {'ratio':>6}"
    if args.min:
        header += f" {'min ratio':>9}"
    print(header + f" {'copy ms':>7} {'% copy':>6} {'blocks':>6} {'xla kernels':>11}")
    from dnnfusion_jax.tools.xla_hlo import xla_kernels
    copies = [jax.jit(lambda x: x + 1.0), dnnfusion.jit(lambda x: x + 1.0, backend="c")]
    for name, fn, inputs in workloads():
        inputs = jax.device_put(inputs)
        reference = jax.jit(fn)
        fused = dnnfusion.jit(fn, backend="c")
        got, want = fused(*inputs), reference(*inputs)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
        memory_bound = not name.startswith("BERT")
        moved = sum(x.nbytes for x in jax.tree.leaves((inputs, want)))
        fns, fn_args = [reference, fused], [inputs, inputs]
        if memory_bound:
            fns.extend(copies)
            fn_args.extend([(jax.device_put(copy_input(moved)),)] * len(copies))
        times = interleaved_ms(fns, fn_args, args.repeats)
        ref_ms, fused_ms = (statistics.median(t) for t in times[:2])
        line = f"{name:24} {ref_ms:10.3f} {fused_ms:12.3f} {ref_ms / fused_ms:5.2f}x"
        if args.min:
            line += f" {times[0][0] / times[1][0]:8.2f}x"
        if memory_bound:
            copy_ms = min(statistics.median(t) for t in times[2:])
            line += f" {copy_ms:7.3f} {100 * copy_ms / fused_ms:5.0f}%"
        else:
            line += f" {'-':>7} {'-':>6}"
        blocks = fused.explain(*inputs).summary()["blocks"]
        kernels = xla_kernels(fn, *inputs).count
        print(f"{line} {blocks:6d} {kernels:11d}", flush=True)
    if args.regime == "warm":
        return
    first, second = compile_cache_demo()
    print(f"compile cache, BERT-base layer: first process {first[0]} s to first result "
          f"({first[1]} kernels compiled in {first[2]} s); second process {second[0]} s "
          f"({second[1]} compiled)", flush=True)
    if args.regime == "both":
        print()
        argv = [sys.executable, __file__, "--repeats", str(args.repeats), "--regime", "warm"]
        subprocess.run(argv + (["--min"] if args.min else []), env={**os.environ, **WARM_HEAP},
                       check=True)


if __name__ == "__main__":
    main()
