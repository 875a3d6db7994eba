"""How many Pallas kernels of each zoo model lower for an NVIDIA GPU through Triton, on any
machine: Pallas emits Triton IR without a device (``codegen.pallas.backend.lower_for_cuda``),
which checks Triton's power-of-two rule and that every primitive has a Triton lowering. Only
Triton's compiler (registers, shared memory) and timings need a GPU.

Per model: kernels that lower / Pallas kernels, the failures by message, and the blocks that
stay with XLA by reason (GEMMs and convolutions on every backend; tiles too big for one
program on a GPU). Kernels get the GPU's default tiles (``pallas_tuning``).

Run: python3 benchmarks/pallas_lowering.py [model ...]   (default: the whole zoo)
"""
from __future__ import annotations

import argparse
import collections
import importlib
import os
import sys
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from codegen.pallas.backend import cuda_lowerings  # noqa: E402
from dnnfusion_jax.fusion.backend import UnsupportedBlock  # noqa: E402
from dnnfusion_jax.frontend.trace import trace_function  # noqa: E402

ZOO = ["albert", "bert", "c3d", "distilbert", "efficientnet_b0", "faster_rcnn", "gpt2",
       "mask_rcnn", "mobilebert", "mobilenet_v1_ssd", "s3d", "tinybert", "unet", "vgg16",
       "yolo_v4"]


def probe(name: str) -> tuple[int, int, collections.Counter, collections.Counter]:
    """(kernels lowered, Pallas kernels, failures by message, XLA blocks by reason)."""
    fn, args = importlib.import_module(f"examples.{name}").example()
    lowered = total = 0
    failures, refused = collections.Counter(), collections.Counter()
    for _, outcome in cuda_lowerings(trace_function(fn, list(args)).graph):
        if isinstance(outcome, UnsupportedBlock):
            refused[str(outcome).split(":")[0][:60]] += 1
            continue
        total += 1
        if isinstance(outcome, Exception):
            failures[f"{type(outcome).__name__}: {str(outcome).splitlines()[0][:120]}"] += 1
        else:
            lowered += 1
    return lowered, total, failures, refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=ZOO)
    args = parser.parse_args()
    print(f"jax {jax.__version__}; kernels lowered for CUDA through Triton (no GPU needed)")
    all_lowered = all_total = 0
    for name in args.models:
        start = time.time()
        lowered, total, failures, refused = probe(name)
        all_lowered, all_total = all_lowered + lowered, all_total + total
        stays = ", ".join(f"{reason} {n}" for reason, n in refused.most_common())
        print(f"{name:18} {lowered:4d}/{total:<4d} lower  ({time.time() - start:4.1f} s)  "
              f"XLA keeps: {stays}", flush=True)
        for message, n in failures.most_common():
            print(f"{'':18} {n:4d} fail: {message}")
    print(f"all: {all_lowered}/{all_total} kernels lower")


if __name__ == "__main__":
    main()
