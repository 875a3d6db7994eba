"""Emitting a model's C kernels as a standalone program for another machine (aarch64, x86-64).

``emit`` optimises a function with the C backend and writes, for every block that became a C
kernel, its source and its concrete inputs and expected outputs (computed by the XLA reference,
``dnnfusion_jax.frontend.evaluate``, primitive by primitive), plus the harness that calls every
kernel on its inputs and compares (``codegen.emit.harness``), a build script and a manifest.
``codegen.emit.toolchain.build_and_run`` compiles the folder and runs the harness, under
``qemu-aarch64`` for aarch64 on an x86-64 host. Layout of the folder::

    kernels/<symbol>.c          one translation unit per kernel (the prelude is in each)
    data/<symbol>/in<k>.bin     raw little-endian inputs, out<k>.bin expected outputs
    harness.c, abi.h, cases.h   the harness; cases.h names this model's kernels and files
    build.sh                    the compile commands (``./build.sh run`` also runs it)
    manifest.json               kernels, shapes, dtypes, files, toolchain

The harness gives the kernels a runtime (``abi.h``) whose ``parallel_for`` splits each parallel
loop over ``DNF_THREADS`` (default 2) POSIX threads, so the kernels' parallel loops run
concurrently under qemu too.

Example:
    >>> import jax, jax.numpy as jnp, tempfile
    >>> from codegen.emit.toolchain import build_and_run, host_arch
    >>> with tempfile.TemporaryDirectory() as out:
    ...     manifest = emit(jax.nn.softmax, (jnp.ones((4, 64)),), out, arch=host_arch())
    ...     ok, lines = build_and_run(out, arch=host_arch())
    >>> ok, len(manifest["kernels"]), [line.split()[-1] for line in lines]
    (True, 1, ['ok'])
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dnnfusion_jax.frontend.evaluate import evaluate_nodes
from dnnfusion_jax.options import make_options

from codegen.c.backend import c_kernel_source
from codegen.emit.harness import ATOL, HARNESS_FILES, RTOL, write_harness
from codegen.emit.toolchain import build_script, toolchain


def emit(fn: Callable, args: Sequence[Any], out_dir: str | Path, arch: str = "aarch64",
         name: str = "model") -> dict[str, Any]:
    """Writes ``fn(*args)``'s C kernels, their data, harness, build script and manifest.

    Returns the manifest (also written as ``manifest.json``). Blocks the C backend leaves to
    XLA are listed under ``"skipped"`` with the reason. Inputs and expected outputs come from
    ``reference_values``: the whole graph run unfused through XLA on ``args``.
    """
    out = Path(out_dir)
    tc = toolchain(arch)
    optimized = _optimize(fn, args)
    plan = optimized.plan
    leaves = jax.tree_util.tree_leaves((tuple(args), {}))
    env = reference_values(plan, [*optimized.traced.consts, *leaves])
    for sub in ("kernels", "data", "build"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "kernels").mkdir(parents=True, exist_ok=True)
    kernels: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    by_symbol: dict[str, dict[str, Any]] = {}
    for kernel in optimized.executable.kernels:
        block = kernel.block
        if kernel.backend != "c":
            skipped.append({"block": block.id, "ops": block.ops,
                            "reason": kernel.fallback_reason or f"backend {kernel.backend}"})
            continue
        symbol, source, loop_kernel = c_kernel_source(block, plan.graph.constants)
        if source != kernel.source:  # the buffers below must be those of the compiled kernel
            raise RuntimeError(f"block {block.id}: C source differs from the compiled kernel's")
        if symbol in by_symbol:  # the same code twice: test it once, list every block
            by_symbol[symbol]["blocks"].append(block.id)
            continue
        (out / "kernels" / f"{symbol}.c").write_text(source)
        entry = {"symbol": symbol, "blocks": [block.id], "ops": block.ops,
                 "source": f"kernels/{symbol}.c", "inputs": [], "outputs": []}
        data = out / "data" / symbol
        data.mkdir(parents=True)
        pairs = [("inputs", "in", b, v)
                 for b, v in zip(loop_kernel.inputs, loop_kernel.input_vars)]
        pairs += [("outputs", "out", b, v) for b, v in zip(loop_kernel.outputs, block.outputs)]
        for key, prefix, buffer, var in pairs:
            k = len(entry[key])
            value = np.asarray(env[var], dtype=np.dtype(var.dtype)).reshape(buffer.shape)
            raw = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
            (data / f"{prefix}{k}.bin").write_bytes(raw)
            entry[key].append({"file": f"data/{symbol}/{prefix}{k}.bin",
                               "shape": list(buffer.shape), "dtype": buffer.dtype,
                               "bytes": len(raw)})
        by_symbol[symbol] = entry
        kernels.append(entry)
    write_harness(out, kernels)
    build = out / "build.sh"
    build.write_text(build_script(tc, [k["symbol"] for k in kernels]))
    build.chmod(0o755)
    manifest = {
        "model": name, "arch": arch, "compiler": tc.compiler, "cflags": list(tc.cflags),
        "ldflags": list(tc.ldflags), "run": [*tc.runner, "./harness"],
        "rtol": RTOL, "atol": ATOL, "kernels": kernels, "skipped": skipped,
        "files": [*HARNESS_FILES, "build.sh", "manifest.json",
                  *(k["source"] for k in kernels),
                  *(b["file"] for k in kernels for b in (*k["inputs"], *k["outputs"]))],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _optimize(fn: Callable, args: Sequence[Any]):
    from dnnfusion_jax.pipeline import optimize  # late: the pipeline imports the backends
    return optimize(fn, args, {}, make_options(backend="c", fallback=False))


def reference_values(plan: Any, inputs: Sequence[Any]) -> dict:
    """Every value of ``plan.graph`` from the unfused XLA reference, as ``{Var: array}``.

    ``inputs`` are the graph's inputs: the ``graph.num_consts`` closed-over constants, then
    the flattened arguments.
    """
    graph = plan.graph
    return evaluate_nodes(graph.nodes, {**graph.constants, **dict(zip(graph.inputs, inputs))})
