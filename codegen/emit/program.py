"""Emitting a model's C kernels as a standalone program for another machine (aarch64, x86-64).

``emit`` optimises a function with the C backend and writes, for every block that became a C
kernel, its source and its concrete inputs and expected outputs (computed by the XLA reference,
primitive by primitive), plus a harness that calls every kernel on its inputs and compares
(floats: ``|got - want| <= atol + rtol*|want|`` with rtol = atol = 1e-5, NaN where NaN, inf
equal; integers and bools exactly). ``build_and_run`` cross-compiles the folder and runs the
harness, under ``qemu-aarch64`` for aarch64 on an x86-64 host. Layout of the folder::

    kernels/<symbol>.c          one translation unit per kernel (the prelude is in each)
    data/<symbol>/in<k>.bin     raw little-endian inputs, out<k>.bin expected outputs
    harness.c                   prints ``KERNEL <symbol> max_abs_err <e> <ok|MISMATCH>``
    build.sh                    the compile commands (``./build.sh run`` also runs it)
    manifest.json               kernels, shapes, dtypes, files, toolchain

aarch64 binaries are linked ``-static``: the one file then runs under qemu without
``-L /usr/aarch64-linux-gnu`` and on a real board without a matching sysroot. The harness gives
the kernels a runtime (``c_abi.h``) whose ``parallel_for`` splits each parallel loop over
``DNF_THREADS`` (default 2) POSIX threads, so the kernels' parallel loops run concurrently
under qemu too.

Example:
    >>> import jax, jax.numpy as jnp, tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     manifest = emit(jax.nn.softmax, (jnp.ones((4, 64)),), out, arch=host_arch())
    ...     ok, lines = build_and_run(out, arch=host_arch())
    >>> ok, len(manifest["kernels"]), [line.split()[-1] for line in lines]
    (True, 1, ['ok'])
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dnnfusion_jax.frontend.evaluate import evaluate_nodes
from dnnfusion_jax.options import make_options

from codegen.c.backend import c_kernel_source
from codegen.c.render import C_ABI

RTOL = ATOL = 1e-5
ARCHS = ("aarch64", "x86_64")
_COMMON_FLAGS = ("-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-std=gnu11")
_DTYPE_CODES = {"f32": "DNF_F32", "f64": "DNF_F64", "i32": "DNF_I32", "i64": "DNF_I64",
                "u32": "DNF_U32", "u8": "DNF_U8", "i8": "DNF_I8", "bool": "DNF_BOOL"}


@dataclass(frozen=True)
class Toolchain:
    """How to build and run for ``arch`` from this host.

    Example:
        >>> tc = toolchain("aarch64", host="x86_64")
        >>> tc.compiler, tc.runner, tc.packages
        ('aarch64-linux-gnu-gcc', ('qemu-aarch64',), ('gcc-aarch64-linux-gnu', 'qemu-user'))
        >>> toolchain("x86_64", host="x86_64").cflags[:2]
        ('-O3', '-march=native')
    """

    arch: str
    compiler: str
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    runner: tuple[str, ...]   # prefix that runs a binary of ``arch`` here; () runs it natively
    packages: tuple[str, ...]  # Debian packages that provide compiler and runner


def host_arch() -> str:
    """This machine's architecture in ``ARCHS`` spelling ("x86_64", "aarch64", ...)."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def toolchain(arch: str, host: str | None = None) -> Toolchain:
    """The toolchain for ``arch`` on ``host`` (default: this machine); native when they agree."""
    if arch not in ARCHS:
        raise ValueError(f"unknown target architecture {arch!r}; choose one of {ARCHS}")
    host = host or host_arch()
    march = {"aarch64": "-march=armv8-a", "x86_64": "-march=native"}[arch]
    if arch == host:
        return Toolchain(arch, "gcc", (_COMMON_FLAGS[0], march, *_COMMON_FLAGS[1:]),
                         ("-pthread", "-lm"), (), ("gcc",))
    if arch == "x86_64":  # a cross build cannot ask the build machine's CPU
        march = "-march=x86-64-v2"
    cross = f"{arch}-linux-gnu-gcc"
    return Toolchain(arch, cross, (_COMMON_FLAGS[0], march, *_COMMON_FLAGS[1:]),
                     ("-static", "-pthread", "-lm"), (f"qemu-{arch}",),
                     (f"gcc-{arch.replace('_', '-')}-linux-gnu", "qemu-user"))


def missing_tools(tc: Toolchain) -> list[str]:
    """The programs of ``tc`` (compiler, runner) not found on PATH."""
    return [tool for tool in (tc.compiler, *tc.runner[:1]) if shutil.which(tool) is None]


# ---------------------------------------------------------------------------------------------
# Emitting


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
                 for b, v in zip(loop_kernel.inputs, loop_kernel.notes["input_vars"])]
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
    (out / "harness.c").write_text(harness_source(kernels))
    build = out / "build.sh"
    build.write_text(build_script(tc, [k["symbol"] for k in kernels]))
    build.chmod(0o755)
    manifest = {
        "model": name, "arch": arch, "compiler": tc.compiler, "cflags": list(tc.cflags),
        "ldflags": list(tc.ldflags), "run": [*tc.runner, "./harness"],
        "rtol": RTOL, "atol": ATOL, "kernels": kernels, "skipped": skipped,
        "files": ["harness.c", "build.sh", "manifest.json",
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


# ---------------------------------------------------------------------------------------------
# The harness and the build script


def harness_source(kernels: Sequence[dict[str, Any]]) -> str:
    """C source of the test harness for manifest ``kernels`` entries (see ``emit``).

    Example:
        >>> entry = {"symbol": "dnf_00", "inputs": [{"file": "data/dnf_00/in0.bin",
        ...          "dtype": "f32", "bytes": 16}], "outputs": [{"file":
        ...          "data/dnf_00/out0.bin", "dtype": "bool", "bytes": 4}]}
        >>> src = harness_source([entry])
        >>> "extern void dnf_00(const void *const *, void *const *, const dnf_runtime *);" in src
        True
        >>> '{"data/dnf_00/out0.bin", 4L, DNF_BOOL}' in src
        True
    """
    decls, tables, cases = [], [], []
    for n, k in enumerate(kernels):
        decls.append(f"extern void {k['symbol']}(const void *const *, void *const *, "
                     "const dnf_runtime *);")
        for key in ("inputs", "outputs"):
            rows = ", ".join(f'{{"{b["file"]}", {b["bytes"]}L, {_DTYPE_CODES[b["dtype"]]}}}'
                             for b in k[key]) or '{"", 0L, DNF_U8}'
            tables.append(f"static const dnf_file k{n}_{key}[] = {{{rows}}};")
        cases.append(f'  {{"{k["symbol"]}", {k["symbol"]}, {len(k["inputs"])}, k{n}_inputs, '
                     f'{len(k["outputs"])}, k{n}_outputs}},')
    if not cases:
        cases.append('  {"", 0, 0, 0, 0, 0},')
    return _HARNESS.format(abi=C_ABI, rtol=RTOL, atol=ATOL, decls="\n".join(decls),
                           tables="\n".join(tables), cases="\n".join(cases),
                           count=len(kernels))


_HARNESS = r"""/* Generated by `python -m dnnfusion_jax emit`: calls every kernel on its recorded inputs
 * and compares with the outputs the XLA reference computed. Usage: ./harness [DIR]
 * (DIR holds data/; default: the current directory). Exit status: 0 all ok, 1 a mismatch,
 * 2 a missing or short data file. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

{abi}
#define RTOL {rtol!r}
#define ATOL {atol!r}
#define MAX_THREADS 64

enum {{ DNF_F32, DNF_F64, DNF_I32, DNF_I64, DNF_U32, DNF_U8, DNF_I8, DNF_BOOL }};
typedef void (*dnf_fn)(const void *const *, void *const *, const dnf_runtime *);
typedef struct {{ const char *file; long bytes; int dtype; }} dnf_file;
typedef struct {{ const char *symbol; dnf_fn fn; int n_in; const dnf_file *in;
                 int n_out; const dnf_file *out; }} dnf_case;

{decls}

{tables}

static const dnf_case cases[] = {{
{cases}
}};
static const int n_cases = {count};

static void *dnf_read(const char *dir, const dnf_file *f) {{
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, f->file);
  void *data = aligned_alloc(64, (size_t)((f->bytes + 63) / 64 * 64 + 64));
  FILE *fp = fopen(path, "rb");
  if (!data || !fp || fread(data, 1, (size_t)f->bytes, fp) != (size_t)f->bytes) {{
    fprintf(stderr, "harness: cannot read %ld bytes from %s\n", f->bytes, path);
    exit(2);
  }}
  fclose(fp);
  return data;
}}

static int dnf_is_float(int dtype) {{ return dtype == DNF_F32 || dtype == DNF_F64; }}

static double dnf_get(const void *p, int dtype, long i) {{
  switch (dtype) {{
    case DNF_F32: return ((const float *)p)[i];
    case DNF_F64: return ((const double *)p)[i];
    case DNF_I32: return ((const int32_t *)p)[i];
    case DNF_I64: return (double)((const int64_t *)p)[i];
    case DNF_U32: return ((const uint32_t *)p)[i];
    case DNF_I8: return ((const int8_t *)p)[i];
    default: return ((const uint8_t *)p)[i];
  }}
}}

static long dnf_itemsize(int dtype) {{
  switch (dtype) {{
    case DNF_F64: case DNF_I64: return 8;
    case DNF_F32: case DNF_I32: case DNF_U32: return 4;
    default: return 1;
  }}
}}

/* Returns 1 when got matches want; raises *max_err to the largest |got - want| (inf where
 * an inf or NaN differs). */
static int dnf_compare(const dnf_file *f, const void *got, const void *want, double *max_err) {{
  int ok = 1;
  long n = f->bytes / dnf_itemsize(f->dtype);
  for (long i = 0; i < n; i++) {{
    if (!dnf_is_float(f->dtype)) {{  /* integers and bools: bit-exact */
      long size = dnf_itemsize(f->dtype);
      if (memcmp((const char *)got + i * size, (const char *)want + i * size, size)) {{
        double e = fabs(dnf_get(got, f->dtype, i) - dnf_get(want, f->dtype, i));
        *max_err = e > *max_err ? e : *max_err;
        ok = 0;
      }}
      continue;
    }}
    double g = dnf_get(got, f->dtype, i), w = dnf_get(want, f->dtype, i);
    if (isnan(g) || isnan(w) || isinf(g) || isinf(w)) {{
      int same = (isnan(g) && isnan(w)) || g == w;
      if (!same) {{ ok = 0; *max_err = INFINITY; }}
      continue;
    }}
    double e = fabs(g - w);
    if (e > *max_err) *max_err = e;
    if (!(e <= ATOL + RTOL * fabs(w))) ok = 0;
  }}
  return ok;
}}

/* The kernels' runtime: each parallel loop split into one contiguous range per thread, the
 * first on this thread, the others on fresh POSIX threads (run here if one cannot start). */
typedef struct {{ dnf_body *body; void *ctx; long begin, end; }} dnf_piece;

static void *dnf_run_piece(void *piece) {{
  dnf_piece *p = piece;
  p->body(p->ctx, p->begin, p->end);
  return NULL;
}}

static void dnf_threads_for(const dnf_runtime *rt, long n, dnf_body *body, void *ctx) {{
  long threads = *(const long *)rt->state;
  threads = threads < n ? threads : n;
  threads = threads < MAX_THREADS ? (threads > 1 ? threads : 1) : MAX_THREADS;
  dnf_piece pieces[MAX_THREADS];
  pthread_t ids[MAX_THREADS];
  int started[MAX_THREADS] = {{0}};
  for (long t = 0; t < threads; t++)
    pieces[t] = (dnf_piece){{body, ctx, n * t / threads, n * (t + 1) / threads}};
  for (long t = 1; t < threads; t++) {{
    started[t] = pthread_create(&ids[t], NULL, dnf_run_piece, &pieces[t]) == 0;
    if (!started[t]) dnf_run_piece(&pieces[t]);
  }}
  dnf_run_piece(&pieces[0]);
  for (long t = 1; t < threads; t++)
    if (started[t]) pthread_join(ids[t], NULL);
}}

int main(int argc, char **argv) {{
  const char *dir = argc > 1 ? argv[1] : ".";
  const char *threads_env = getenv("DNF_THREADS");
  long threads = threads_env ? atol(threads_env) : 2;
  const dnf_runtime runtime = {{dnf_threads_for, &threads}};
  int failed = 0;
  for (int c = 0; c < n_cases; c++) {{
    const dnf_case *k = &cases[c];
    const void **ins = malloc(sizeof(void *) * (size_t)(k->n_in + 1));
    void **outs = malloc(sizeof(void *) * (size_t)(k->n_out + 1));
    for (int i = 0; i < k->n_in; i++) ins[i] = dnf_read(dir, &k->in[i]);
    for (int o = 0; o < k->n_out; o++) {{
      outs[o] = aligned_alloc(64, (size_t)((k->out[o].bytes + 63) / 64 * 64 + 64));
      memset(outs[o], 0xff, (size_t)k->out[o].bytes);  /* NaN/-1: unwritten values show */
    }}
    k->fn(ins, outs, &runtime);
    double max_err = 0.0;
    int ok = 1;
    for (int o = 0; o < k->n_out; o++) {{
      void *want = dnf_read(dir, &k->out[o]);
      ok &= dnf_compare(&k->out[o], outs[o], want, &max_err);
      free(want);
      free(outs[o]);
    }}
    for (int i = 0; i < k->n_in; i++) free((void *)ins[i]);
    free(ins);
    free(outs);
    printf("KERNEL %s max_abs_err %.3e %s\n", k->symbol, max_err, ok ? "ok" : "MISMATCH");
    failed += !ok;
  }}
  printf("%d of %d kernels match (rtol=%g atol=%g)\n", n_cases - failed, n_cases, RTOL, ATOL);
  return failed ? 1 : 0;
}}
"""


def build_commands(tc: Toolchain, symbols: Sequence[str]) -> tuple[list[list[str]], list[str]]:
    """(compile commands, one per translation unit; the link command), run in the out dir.

    Example:
        >>> compiles, link = build_commands(toolchain("aarch64", host="x86_64"), ["dnf_00"])
        >>> " ".join(compiles[0])
        'aarch64-linux-gnu-gcc -O3 -march=armv8-a -fopenmp-simd -fno-math-errno -fno-trapping-math -std=gnu11 -c kernels/dnf_00.c -o build/dnf_00.o'
        >>> " ".join(link)
        'aarch64-linux-gnu-gcc build/dnf_00.o build/harness.o -o harness -static -pthread -lm'
    """
    units = [(f"kernels/{s}.c", f"build/{s}.o") for s in symbols] + [("harness.c",
                                                                       "build/harness.o")]
    compiles = [[tc.compiler, *tc.cflags, "-c", src, "-o", obj] for src, obj in units]
    link = [tc.compiler, *(obj for _, obj in units), "-o", "harness", *tc.ldflags]
    return compiles, link


def build_script(tc: Toolchain, symbols: Sequence[str]) -> str:
    """``build.sh``: the commands of ``build_commands``; ``./build.sh run`` also runs it."""
    compiles, link = build_commands(tc, symbols)
    run = " ".join([*tc.runner, "./harness"])
    lines = ["#!/bin/sh",
             f"# Builds ./harness for {tc.arch} (generated by python -m dnnfusion_jax emit).",
             f"# Needs {tc.compiler}" + (f" and {tc.runner[0]}" if tc.runner else "")
             + f" (Debian/Ubuntu: apt-get install {' '.join(tc.packages)}).",
             "# Usage: ./build.sh [run]", "set -e", 'cd "$(dirname "$0")"', "mkdir -p build",
             *(" ".join(cmd) for cmd in compiles), " ".join(link),
             f'if [ "$1" = run ]; then DNF_THREADS=${{DNF_THREADS:-2}} exec {run}; fi',
             ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Building and running


class BuildError(RuntimeError):
    """A compiler or tool failed; the message holds the command and its output."""


def build_and_run(out_dir: str | Path, arch: str = "aarch64",
                  timeout: float = 600) -> tuple[bool, list[str]]:
    """Compiles an emitted folder and runs its harness; returns (all ok, the KERNEL lines).

    Raises ``BuildError`` when a tool is missing or fails (the message names the packages).
    """
    out = Path(out_dir)
    tc = toolchain(arch)
    missing = missing_tools(tc)
    if missing:
        raise BuildError(f"--target {arch} needs {' and '.join(missing)} on PATH "
                         f"(Debian/Ubuntu: apt-get install {' '.join(tc.packages)})")
    symbols = [k["symbol"] for k in json.loads((out / "manifest.json").read_text())["kernels"]]
    compiles, link = build_commands(tc, symbols)
    (out / "build").mkdir(exist_ok=True)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda cmd: _check(cmd, out, timeout), compiles))
    _check(link, out, timeout)
    env = {**os.environ, "DNF_THREADS": os.environ.get("DNF_THREADS", "2")}
    result = subprocess.run([*tc.runner, "./harness"], cwd=out, env=env, capture_output=True,
                            text=True, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("KERNEL ")]
    if result.returncode not in (0, 1) or len(lines) != len(symbols):
        raise BuildError(f"harness failed (exit status {result.returncode}):\n"
                         f"{result.stdout}{result.stderr}")
    return result.returncode == 0, lines


def _check(cmd: list[str], cwd: Path, timeout: float) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed (exit status {result.returncode}):\n"
                         f"{result.stdout}{result.stderr}")


def emit_command(target: str, out_dir: str, arch: str = "aarch64", run: bool = False) -> int:
    """``python -m dnnfusion_jax emit``: emit TARGET, optionally build and run; the exit status.

    0: emitted (and, with ``run``, every kernel matches); 1: a mismatch or a failed build;
    2: a bad TARGET or a missing tool.
    """
    from dnnfusion_jax.tools.targets import load_target

    tc = toolchain(arch)
    if run and missing_tools(tc):
        print(f"error: --run --target {arch} needs {' and '.join(missing_tools(tc))} on PATH "
              f"(Debian/Ubuntu: apt-get install {' '.join(tc.packages)})", file=sys.stderr)
        return 2
    try:
        fn, args, name = load_target(target)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"error: cannot write to {out_dir}: {error.strerror}", file=sys.stderr)
        return 2
    manifest = emit(fn, args, out_dir, arch=arch, name=name)
    blocks = sum(len(k["blocks"]) for k in manifest["kernels"])
    print(f"{name}: wrote {len(manifest['kernels'])} C kernels ({blocks} blocks) for {arch} to "
          f"{out_dir}; build with {out_dir}/build.sh")
    reasons = Counter(entry["reason"] for entry in manifest["skipped"])
    for reason, count in reasons.most_common():
        print(f"  {count} block{'s' * (count > 1)} left to XLA: {reason}")
    if not run:
        return 0
    try:
        ok, lines = build_and_run(out_dir, arch)
    except (BuildError, subprocess.TimeoutExpired) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    where = f"under {tc.runner[0]}" if tc.runner else "natively"
    print(f"{name}: {len(lines) - sum(not l.endswith(' ok') for l in lines)} of {len(lines)} "
          f"kernels match the XLA reference on {arch} ({where}; rtol={RTOL} atol={ATOL})")
    return 0 if ok else 1
