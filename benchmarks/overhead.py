"""Measures dnnfusion's own overhead (a script, not a test).

(a) Trace + plan time: ``dnnfusion.explain(dnnfusion.jit(bert_encoder), *args)`` on a fresh
    ``dnnfusion.jit`` object traces the function and runs the whole optimiser (import, rewrite,
    plan, kernel generation) without executing it. Reported per BERT-base depth (batch 1,
    sequence 128), with ``jax.jit(f).trace`` alone as a baseline and the per-stage timings.
    Target: under 5 s for 12 layers.
(b) Cached-call overhead: per-call time of ``jax.jit(f)`` and ``dnnfusion.jit(f)`` after
    warm-up, measured in interleaved blocks in the same process, medians over blocks; for a
    dispatch-dominated small function and for 1-layer BERT. Target: dnnfusion adds under 50 µs.

Run from the repository root:
    python benchmarks/overhead.py            # full run (about a minute on 2 cores)
    python benchmarks/overhead.py --quick    # fewer repeats and calls
    python benchmarks/overhead.py --layers 12
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import dnnfusion_jax as dnnfusion

TRACE_PLAN_TARGET_S = 5.0
CALL_OVERHEAD_TARGET_US = 50.0
STAGES = ("trace_s", "rewrite_s", "plan_s", "compile_s")


def load_bert():
    """The ``examples.bert`` module (imported with the repository root on the path)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    return importlib.import_module("examples.bert")


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor(), else '?'."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine_description() -> list[str]:
    devices = ", ".join(str(d) for d in jax.devices())
    return [
        f"machine : {platform.machine()} {cpu_model()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        f"python  : {platform.python_version()}; jax {jax.__version__}, jaxlib "
        f"{getattr(jax.lib, '__version__', '?')}; dnnfusion_jax {dnnfusion.__version__}",
        f"devices : {devices}",
    ]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ----------------------------------------------------------------------------------------------
# (a) trace + plan
# ----------------------------------------------------------------------------------------------

def bench_trace_plan(bert, layers: list[int], repeats: int) -> bool:
    print("\n(a) trace + plan: dnnfusion.explain(dnnfusion.jit(bert_encoder), *args) on a fresh "
          "object\n    BERT-base, batch 1, seq 128; times in ms; 'total' is wall time of explain "
          f"(median of {repeats}, max in brackets,\n    the first run in the process is cold); "
          "'jax trace' is jax.jit(f).trace(*args) alone;\n    "
          "'other' = total - stages (outer jax.jit trace of the wrapper, tracing the kernels)")
    header = (f"  {'layers':>6} {'jaxpr_ops':>9} {'ops_rw':>6} {'blocks':>6} "
              f"{'jax trace':>9} {'total':>17} " + " ".join(f"{s[:-2]:>8}" for s in STAGES)
              + f" {'other':>8}")
    print(header)
    print("  " + "-" * (len(header) - 2))
    worst = {}
    for n in layers:
        fn, args = bert.example(num_layers=n)
        jax.block_until_ready(args)  # parameter generation runs asynchronously: let it finish
        totals, stage_runs, summary = [], [], None
        for _ in range(repeats):
            gc.collect()
            start = time.perf_counter()
            report = dnnfusion.explain(dnnfusion.jit(fn), *args)
            totals.append(time.perf_counter() - start)
            summary = report.summary()
            stage_runs.append([summary.get(s, float("nan")) for s in STAGES])
        jax_trace = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.jit(lambda *a: fn(*a)).trace(*args)  # a fresh function: no trace-cache hit
            jax_trace.append(time.perf_counter() - start)
        stages = [statistics.median(col) for col in zip(*stage_runs)]
        worst[n] = max(totals)
        total = f"{statistics.median(totals) * 1e3:.1f} [{max(totals) * 1e3:.1f}]"
        print(f"  {n:>6} {summary['jaxpr_ops']:>9} {summary['ops_after_rewrite']:>6} "
              f"{summary['blocks']:>6} {statistics.median(jax_trace) * 1e3:>9.1f} {total:>17} "
              + " ".join(f"{s * 1e3:>8.1f}" for s in stages)
              + f" {(statistics.median(totals) - sum(stages)) * 1e3:>8.1f}")
        if summary["internal_error"] or summary["fallback_blocks"]:
            print(f"         note: internal_error={summary['internal_error']!r}, "
                  f"fallback_blocks={summary['fallback_blocks']}")
    if 12 in worst:
        ok = worst[12] < TRACE_PLAN_TARGET_S
        print(f"  target: trace+plan of 12-layer BERT-base < {TRACE_PLAN_TARGET_S:.0f} s: "
              f"worst {worst[12]:.3f} s -> {verdict(ok)}")
        return ok
    print("  target: trace+plan of 12-layer BERT-base < 5 s: not measured (12 not in --layers)")
    return True


# ----------------------------------------------------------------------------------------------
# (b) cached-call overhead
# ----------------------------------------------------------------------------------------------

def small_fn(x):
    """A few elementwise ops: a call on 16 elements is all dispatch."""
    return jnp.tanh(x * 2.0 + 1.0) * x - 0.5


def time_block(f, args, calls: int) -> float:
    """Seconds per call over ``calls`` calls, each waited for (latency, not throughput)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(calls):
            jax.block_until_ready(f(*args))
        return (time.perf_counter() - start) / calls
    finally:
        gc.enable()


def bench_call(name: str, fn, args, blocks: int, calls: int) -> tuple[float, float]:
    """Interleaved blocks of jax.jit and dnnfusion.jit calls; returns median µs of each."""
    f_jax, f_dnn = jax.jit(fn), dnnfusion.jit(fn)
    ref, out = f_jax(*args), f_dnn(*args)  # compile both
    jax.block_until_ready((ref, out))
    err = max(float(jnp.max(jnp.abs(a - b))) for a, b in
              zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(out)))
    for _ in range(3):  # warm-up
        time_block(f_jax, args, max(calls // 10, 1))
        time_block(f_dnn, args, max(calls // 10, 1))
    t_jax, t_dnn = [], []
    for i in range(blocks):  # alternate which one goes first to cancel drift
        order = ((f_jax, t_jax), (f_dnn, t_dnn)) if i % 2 == 0 else ((f_dnn, t_dnn), (f_jax, t_jax))
        for f, sink in order:
            sink.append(time_block(f, args, calls) * 1e6)
    m_jax, m_dnn = statistics.median(t_jax), statistics.median(t_dnn)
    cache = getattr(f_dnn._jitted, "_cache_size", lambda: "?")()
    print(f"  {name:<22} {m_jax:>10.2f} {m_dnn:>13.2f} {m_dnn - m_jax:>+10.2f} "
          f"{m_dnn / m_jax:>6.3f}   {min(t_jax):>8.2f} {min(t_dnn):>8.2f}   "
          f"{blocks}x{calls:<5}  {err:.1e}  {cache}")
    return m_jax, m_dnn


def bench_calls(bert, blocks: int, small_calls: int, bert_calls: int) -> bool:
    print("\n(b) cached-call overhead: per-call µs after warm-up, each call block_until_ready;"
          "\n    interleaved blocks, median over blocks (min in the 'min' columns)")
    header = (f"  {'function':<22} {'jax.jit µs':>10} {'dnnfusion µs':>13} {'diff µs':>10} "
              f"{'ratio':>6}   {'min jax':>8} {'min dnn':>8}   {'blocks':<8} {'max|diff|':>7}  "
              "jit cache")
    print(header)
    print("  " + "-" * (len(header) - 2))
    m_jax, m_dnn = bench_call("small (16 f32, 5 ops)", small_fn,
                              (jnp.linspace(-1.0, 1.0, 16, dtype=jnp.float32),),
                              blocks, small_calls)
    fn, args = bert.example(num_layers=1)
    jax.block_until_ready(args)
    b_jax, b_dnn = bench_call("BERT-base 1 layer", fn, args, blocks, bert_calls)
    ok = m_dnn - m_jax < CALL_OVERHEAD_TARGET_US
    print(f"  target: cached call adds < {CALL_OVERHEAD_TARGET_US:.0f} µs over jax.jit "
          f"(small fn, dispatch-dominated): {m_dnn - m_jax:+.2f} µs -> {verdict(ok)}")
    print(f"          (BERT 1 layer, compute-dominated, for reference: {b_dnn - b_jax:+.1f} µs, "
          f"ratio {b_dnn / b_jax:.3f})")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="1,4,12",
                        help="comma-separated BERT depths for trace+plan (default 1,4,12)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, blocks and calls")
    opts = parser.parse_args(argv)
    layers = [int(n) for n in opts.layers.split(",") if n.strip()]
    repeats, blocks, small_calls, bert_calls = (2, 5, 500, 5) if opts.quick else (5, 9, 2000, 15)

    print("dnnfusion overhead benchmark" + (" (--quick)" if opts.quick else ""))
    for line in machine_description():
        print("  " + line)
    bert = load_bert()
    ok_a = bench_trace_plan(bert, layers, repeats)
    ok_b = bench_calls(bert, blocks, small_calls, bert_calls)
    print(f"\noverall: {verdict(ok_a and ok_b)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
