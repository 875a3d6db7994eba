"""``python -m dnnfusion_jax emit TARGET``: a model's C kernels as a standalone program with
reference data (``codegen.emit.program``), optionally built and run (``codegen.emit.toolchain``;
aarch64 under qemu), its verdict printed.

Example:
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     model = pathlib.Path(folder, "tiny.py")
    ...     _ = model.write_text("import jax, jax.numpy as jnp\\n"
    ...                          "def example():\\n"
    ...                          "    return jax.nn.softmax, (jnp.ones((4, 64)),)\\n")
    ...     emit_command(str(model), f"{folder}/out")  # doctest: +ELLIPSIS
    tiny: wrote 1 C kernels (1 blocks) for aarch64 to .../out; build with .../out/build.sh
    0
"""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from codegen.emit.harness import ATOL, RTOL
from codegen.emit.program import emit
from codegen.emit.toolchain import BuildError, build_and_run, missing_tools, toolchain
from dnnfusion_jax.tools.targets import load_target


def emit_command(target: str, out_dir: str, arch: str = "aarch64", run: bool = False) -> int:
    """Emits TARGET into ``out_dir`` for ``arch``, with ``run`` builds and runs it; the exit
    status: 0 emitted (and, with ``run``, every kernel matches); 1 a mismatch or a failed
    build; 2 a bad TARGET or a missing tool."""
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
