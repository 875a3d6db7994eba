"""Pallas kernels on a GPU against jax.jit (XLA:GPU), side by side in one run.

For every workload: jax.jit ms, dnnfusion (backend="pallas") ms, the ratio, the blocks of the
plan, whether the results agree with jax.jit (``verdict``: where they differ, both are measured
against float32 at "highest" matmul precision), and, for memory-bound workloads, the fraction
of the GPU's HBM bandwidth the fused function reaches (its inputs and outputs moved once, over
its time). Groups: memory-bound blocks (goal: >= 70% of HBM bandwidth), transformer blocks and
CNN blocks (goal: >= 1.2x geomean over XLA:GPU), and the bf16 forms of the memory-bound blocks
and of a BERT layer. Times are medians of interleaved calls
(``kernels.interleaved_ms``), inputs on the device.

``--tune`` times the memory-bound workloads with each tile size in ``TILES`` and records the
best one for this device kind, then GEMM + bias + GELU at the sizes of ``GEMM_SIZES`` with
the GEMM inside the Pallas kernel, and records the largest size up to which that was never
slower than jax.jit (``codegen/pallas/tuning.py``; later runs and every ``dnnfusion.jit`` on
this machine use both). ``--check`` runs small shapes in interpret mode
anywhere (no GPU): the script's plumbing and every result checked, nothing timed.

Run: python3 benchmarks/pallas_gpu.py [--repeats N] [--peak-gbps G] [--tune] [--check] [names]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
import dnnfusion_jax as dnnfusion  # noqa: E402
from codegen.pallas import tuning as pallas_tuning  # noqa: E402
from codegen.pallas.backend import PallasBackend  # noqa: E402
from dnnfusion_jax import options  # noqa: E402
from examples.norms import group_norm, layer_norm, rms_norm  # noqa: E402
from kernels import interleaved_ms  # noqa: E402
from sweep import causal_softmax, check, conv_bn_relu  # noqa: E402

HBM_GBPS = {"NVIDIA H200": 4800, "NVIDIA H100 80GB HBM3": 3350, "NVIDIA A100-SXM4-80GB": 2039}
"""Peak HBM bandwidth (GB/s, vendor figures) by device kind; ``--peak-gbps`` for others."""

TILES = (1024, 2048, 4096, 8192, 16384)
"""Tile sizes (elements per program) ``--tune`` tries."""


def workloads(small: bool):
    """(group, name, function, inputs). ``small``: shapes for interpret mode (``--check``)."""
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    rows, width = (64, 96) if small else (8192, 4096)
    yield "memory", f"softmax {rows}x{width}", jax.nn.softmax, (f(rows, width),)
    yield "memory", f"layer norm {rows}x{width}", layer_norm, (f(rows, width), f(width), f(width))
    yield "memory", f"RMS norm {rows}x{width}", rms_norm, (f(rows, width), f(width))
    yield "memory", f"gelu(erf) {rows}x{width}", lambda x: jax.nn.gelu(x, approximate=False), \
        (f(rows, width),)
    yield "memory", f"silu*y {rows}x{width}", lambda x, y: jax.nn.silu(x) * y, \
        (f(rows, width), f(rows, width))
    side = 96 if small else 4096
    yield "memory", f"transpose sandwich {side}^2", lambda x: (jnp.tanh(x.T) * 2.0).T + x, \
        (f(side, side),)
    n, hw, c = (2, 8, 64) if small else (16, 64, 512)
    yield "memory", f"group norm {n}x{hw}x{hw}x{c}", group_norm, (f(n, hw, hw, c), f(c), f(c))
    heads, seq = (2, 64) if small else (16, 2048)
    yield "memory", f"causal softmax {heads}x{seq}^2", causal_softmax, (f(heads, seq, seq),)
    from examples.bert import example as bert
    from examples.gpt2 import example as gpt2
    yield ("transformer", "BERT-base layer", *bert(num_layers=1, seq_len=32 if small else 512,
                                                   batch=1 if small else 8))
    yield ("transformer", "GPT-2 small", *gpt2(seq_len=32 if small else 1024,
                                               batch=1 if small else 8))
    from examples.efficientnet_b0 import example as efficientnet
    from examples.mobilenet_v1_ssd import example as mobilenet
    yield ("cnn", "EfficientNet-B0", *efficientnet(resolution=32 if small else 224,
                                                   batch=1 if small else 32))
    yield ("cnn", "MobileNetV1-SSD", *mobilenet(resolution=64 if small else 300,
                                                batch=1 if small else 16))
    hw = 8 if small else 56
    yield "cnn", "conv + BN + relu", conv_bn_relu, \
        (f(1 if small else 32, hw, hw, 64), f(3, 3, 64, 64), f(64), f(64))
    yield from half_workloads(small)


def half_workloads(small: bool):
    """bf16 storage, f32 arithmetic inside: norms and softmax (mixed precision: f32
    statistics), elementwise chains, and a BERT layer with every float input cast to bf16."""
    rng = np.random.default_rng(2)
    h = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.bfloat16)  # noqa: E731
    rows, width = (64, 96) if small else (8192, 4096)

    def mixed_layer_norm(x, g, b):
        y = layer_norm(x.astype(jnp.float32), g.astype(jnp.float32), b.astype(jnp.float32))
        return y.astype(jnp.bfloat16)

    def mixed_softmax(x):
        return jax.nn.softmax(x.astype(jnp.float32)).astype(jnp.bfloat16)

    yield "memory-bf16", f"softmax bf16 (f32 inside) {rows}x{width}", mixed_softmax, \
        (h(rows, width),)
    yield "memory-bf16", f"layer norm bf16 (f32 inside) {rows}x{width}", mixed_layer_norm, \
        (h(rows, width), h(width), h(width))
    yield "memory-bf16", f"RMS norm bf16 {rows}x{width}", rms_norm, (h(rows, width), h(width))
    yield "memory-bf16", f"gelu(tanh) bf16 {rows}x{width}", jax.nn.gelu, (h(rows, width),)
    yield "memory-bf16", f"silu*y bf16 {rows}x{width}", lambda x, y: jax.nn.silu(x) * y, \
        (h(rows, width), h(rows, width))
    from examples.bert import example as bert
    fn, inputs = bert(num_layers=1, seq_len=32 if small else 512, batch=1 if small else 8)
    yield "transformer-bf16", "BERT-base layer bf16", fn, to_bf16(inputs)


def to_bf16(tree):
    """Every float leaf of ``tree`` cast to bfloat16."""
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating)
        else x, tree)


def to_f32(tree):
    """Every float leaf of ``tree`` cast to float32."""
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating)
        else x, tree)


def scaled_error(got, want) -> float:
    """max|got - want| / max(1, max|want|) over the finite reference values, in float32."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    if got.dtype.kind != "f" or got.size == 0:
        return 0.0 if np.array_equal(got, want) else float("inf")
    finite = np.isfinite(want)
    if not np.array_equal(np.isfinite(got), finite):
        return float("inf")
    if not finite.any():
        return 0.0
    scale = max(1.0, float(np.abs(want[finite]).max()))
    return float(np.abs(got[finite] - want[finite]).max()) / scale


def verdict(fn, inputs, fused_out, reference_out) -> str:
    """"ok" where the results agree with jax.jit (rtol = atol = 1e-5, or rounding of a long
    sum); else both sides against jax.jit at "highest" matmul precision on float32 inputs (a
    GPU's default float32 GEMMs round to TF32; bf16 rounds on both sides): "as accurate" where
    ours is within 1.25x of jax.jit's error (or under 2e-3 scaled), "MISMATCH" otherwise."""
    checks = jax.tree_util.tree_leaves(jax.tree_util.tree_map(check, fused_out, reference_out))
    if all(c in ("ok", "rounding") for c in checks):
        return ",".join(sorted(set(checks)))
    with jax.default_matmul_precision("highest"):
        exact = jax.jit(fn)(*to_f32(inputs))
    ours = max(map(scaled_error, jax.tree_util.tree_leaves(fused_out),
                   jax.tree_util.tree_leaves(exact)))
    xla = max(map(scaled_error, jax.tree_util.tree_leaves(reference_out),
                  jax.tree_util.tree_leaves(exact)))
    label = "as accurate" if ours <= max(1.25 * xla, 2e-3 if ours < float("inf") else 0) \
        else "MISMATCH"
    return f"{label} (error {ours:.1e}, jax.jit {xla:.1e})"


GEMM_SIZES = ((256, 128, 128), (1024, 256, 256), (4096, 512, 512), (8192, 1024, 1024))
"""(m, k, n) of the GEMM + bias + GELU workloads ``--tune`` uses to find the largest GEMM worth
running inside a Pallas kernel on this GPU."""


def gemm_workloads(small: bool):
    rng = np.random.default_rng(1)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    for m, k, n in ((64, 32, 32),) if small else GEMM_SIZES:
        yield ("gemm", f"gemm+bias+gelu {m}x{k}x{n}", lambda x, w, b: jax.nn.gelu(x @ w + b),
               (f(m, k), f(k, n) / np.sqrt(k), f(n)))


def gemm_in_kernel(tile: int) -> PallasBackend:
    """The Pallas backend taking every GEMM whose panel fits a program into its kernel."""
    backend = PallasBackend(tile=tile)
    backend.gemm_choice = lambda node: True
    return backend


def traffic_bytes(fn, inputs) -> int:
    """Bytes a perfect fused kernel moves: every input read and every output written once."""
    outputs = jax.eval_shape(fn, *inputs)
    leaves = jax.tree_util.tree_leaves((inputs, outputs))
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves)


def with_tile(elements: int) -> str:
    """Registers a Pallas backend whose tiles hold ``elements``; returns its option name."""
    name = f"pallas_tile_{elements}"
    options.BACKENDS[name] = lambda: PallasBackend(tile=elements)
    return name


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def run(selected, backend: str, repeats: int, peak: float | None, timed: bool) -> dict:
    """Prints one row per workload; returns {group: [ratio, ...]} and {"memory%": [...]}."""
    results: dict[str, list[float]] = {}
    print(f"{'workload':44} {'jax.jit ms':>10} {'pallas ms':>10} {'ratio':>6} {'HBM %':>6} "
          f"{'blocks':>6}  check")
    for group, name, fn, inputs in selected:
        inputs = jax.device_put(inputs)
        reference, fused = jax.jit(fn), dnnfusion.jit(fn, backend=backend)
        agreement = verdict(fn, inputs, fused(*inputs), reference(*inputs))
        blocks = fused.explain(*inputs).summary()["blocks"]
        if not timed:
            print(f"{name:44} {'-':>10} {'-':>10} {'-':>6} {'-':>6} {blocks:6d}  {agreement}")
            continue
        ref_times, fused_times = interleaved_ms([reference, fused], [inputs, inputs], repeats)
        ref_ms, fused_ms = statistics.median(ref_times), statistics.median(fused_times)
        ratio = ref_ms / fused_ms
        results.setdefault(group, []).append(ratio)
        hbm = "-"
        if group.startswith("memory") and peak:
            fraction = traffic_bytes(fn, inputs) / (fused_ms * 1e-3) / (peak * 1e9)
            results.setdefault("memory%", []).append(fraction)
            hbm = f"{100 * fraction:5.0f}%"
        print(f"{name:44} {ref_ms:10.3f} {fused_ms:10.3f} {ratio:5.2f}x {hbm:>6} {blocks:6d}  "
              f"{agreement}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--peak-gbps", type=float, help="HBM bandwidth of this GPU (GB/s)")
    parser.add_argument("--tune", action="store_true", help="measure and record tile sizes")
    parser.add_argument("--check", action="store_true",
                        help="small shapes, interpret mode, nothing timed (runs without a GPU)")
    parser.add_argument("names", nargs="*", help="run only workloads whose name contains one")
    args = parser.parse_args()
    on_gpu = jax.default_backend() == "gpu"
    if not on_gpu and not args.check:
        sys.exit("no GPU: Pallas kernels would run in interpret mode, which is not timed; "
                 "run with --check to verify results only")
    kind = jax.devices()[0].device_kind
    peak = args.peak_gbps or HBM_GBPS.get(kind)
    selected = [w for w in [*workloads(small=args.check), *gemm_workloads(small=args.check)]
                if not args.names or any(n in w[1] for n in args.names)]
    print(f"jax {jax.__version__}, {kind}, backend pallas vs jax.jit; median of "
          f"{args.repeats} interleaved calls; HBM peak {peak or '?'} GB/s; tile "
          f"{pallas_tuning.tile_elements(kind)} elements")
    if args.tune:
        memory = [w for w in selected if w[0] == "memory"]
        scores = {}
        for tile in TILES:
            print(f"\ntile {tile} elements")
            scores[tile] = geomean(run(memory, with_tile(tile), args.repeats, peak, on_gpu)
                                   .get("memory", [float("nan")]))
        best = max(scores, key=lambda t: scores[t])
        print("\ngeomean speed-up by tile: "
              + ", ".join(f"{t}: {s:.2f}x" for t, s in scores.items()))
        if not on_gpu:
            print("nothing recorded: --check times nothing")
            return
        print(f"recorded tile {best} for {kind} in "
              f"{pallas_tuning.record(kind, tile_elements=best)}")
        print("\nGEMMs inside kernels (every one whose panel fits a program)")
        options.BACKENDS["pallas_gemm"] = lambda: gemm_in_kernel(best)
        gemms = list(gemm_workloads(small=False))
        ratios = run(gemms, "pallas_gemm", args.repeats, None, on_gpu).get("gemm", [])
        limit = 0  # the largest GEMM up to which the kernel was never slower than XLA
        for (m, k, n), ratio in zip(GEMM_SIZES, ratios):
            if ratio < 1.0:
                break
            limit = 2 * m * k * n
        print(f"recorded GEMMs up to {limit} FLOPs inside kernels for {kind} in "
              f"{pallas_tuning.record(kind, gemm_flops=limit)}")
        return
    results = run(selected, "pallas", args.repeats, peak, on_gpu)
    for group in ("memory", "memory-bf16", "transformer", "transformer-bf16", "cnn", "gemm"):
        if results.get(group):
            print(f"geomean {group}: {geomean(results[group]):.2f}x over jax.jit")
    if results.get("memory%"):
        print(f"geomean HBM bandwidth of memory-bound blocks: "
              f"{100 * geomean(results['memory%']):.0f}% of {peak} GB/s")


if __name__ == "__main__":
    main()
