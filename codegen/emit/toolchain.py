"""Toolchains per target architecture: compiler, flags, runner; building an emitted folder and
running its harness (under ``qemu-aarch64`` for aarch64 on an x86-64 host).

The compile flags are the host kernels' ``HOST_FLAGS`` (``codegen.c.backend``) with two
differences that must differ: ``-march=native`` names the CPU of the machine that compiles, so
a program built for another machine gets its target's ``-march`` instead; and ``-lm`` moves to
the link step with ``-pthread`` (the harness's threads), because the folder is compiled one
translation unit at a time and linked once. aarch64 binaries are linked ``-static``: the one
file then runs under qemu without ``-L /usr/aarch64-linux-gnu`` and on a real board without a
matching sysroot.

Example:
    >>> tc = toolchain("aarch64", host="x86_64")
    >>> tc.compiler, tc.runner, tc.packages
    ('aarch64-linux-gnu-gcc', ('qemu-aarch64',), ('gcc-aarch64-linux-gnu', 'qemu-user'))
    >>> toolchain("x86_64", host="x86_64").cflags[:2]
    ('-O3', '-march=native')
    >>> compiles, link = build_commands(tc, ["dnf_00"])
    >>> print(" ".join(compiles[0]))  # doctest: +NORMALIZE_WHITESPACE
    aarch64-linux-gnu-gcc -O3 -march=armv8-a -fopenmp-simd -fno-math-errno -fno-trapping-math
        -std=gnu11 -c kernels/dnf_00.c -o build/dnf_00.o
    >>> " ".join(link)
    'aarch64-linux-gnu-gcc build/dnf_00.o build/harness.o -o harness -static -pthread -lm'
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from codegen.c.backend import HOST_FLAGS

ARCHS = ("aarch64", "x86_64")
_MARCH = {"aarch64": "-march=armv8-a", "x86_64": "-march=native"}
"""Per target. aarch64 keeps the baseline armv8-a even natively, so the binary runs on any
board; a cross build for x86-64 cannot ask the build machine's CPU and gets x86-64-v2."""


@dataclass(frozen=True)
class Toolchain:
    """How to build and run for ``arch`` from this host (see ``toolchain``)."""

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


def compile_flags(march: str) -> tuple[str, ...]:
    """``HOST_FLAGS`` for one translation unit built for ``march``: ``-march=native`` becomes
    ``march`` (it would name the compiling machine's CPU), ``-lm`` goes to the link step.

    Example:
        >>> flags = compile_flags("-march=armv8-a")
        >>> flags[:2], "-march=native" in flags, "-lm" in flags, len(flags) == len(HOST_FLAGS) - 1
        (('-O3', '-march=armv8-a'), False, False, True)
    """
    return tuple(march if flag == "-march=native" else flag
                 for flag in HOST_FLAGS if flag != "-lm")


def toolchain(arch: str, host: str | None = None) -> Toolchain:
    """The toolchain for ``arch`` on ``host`` (default: this machine); native when they agree."""
    if arch not in ARCHS:
        raise ValueError(f"unknown target architecture {arch!r}; choose one of {ARCHS}")
    host = host or host_arch()
    if arch == host:
        return Toolchain(arch, "gcc", compile_flags(_MARCH[arch]), ("-pthread", "-lm"), (),
                         ("gcc",))
    march = "-march=x86-64-v2" if arch == "x86_64" else _MARCH[arch]
    return Toolchain(arch, f"{arch}-linux-gnu-gcc", compile_flags(march),
                     ("-static", "-pthread", "-lm"), (f"qemu-{arch}",),
                     (f"gcc-{arch.replace('_', '-')}-linux-gnu", "qemu-user"))


def missing_tools(tc: Toolchain) -> list[str]:
    """The programs of ``tc`` (compiler, runner) not found on PATH."""
    return [tool for tool in (tc.compiler, *tc.runner[:1]) if shutil.which(tool) is None]


def build_commands(tc: Toolchain, symbols: Sequence[str]) -> tuple[list[list[str]], list[str]]:
    """(compile commands, one per translation unit; the link command), run in the out dir."""
    units = [(f"kernels/{s}.c", f"build/{s}.o") for s in symbols] + [("harness.c",
                                                                       "build/harness.o")]
    compiles = [[tc.compiler, *tc.cflags, "-c", src, "-o", obj] for src, obj in units]
    link = [tc.compiler, *(obj for _, obj in units), "-o", "harness", *tc.ldflags]
    return compiles, link


def build_script(tc: Toolchain, symbols: Sequence[str]) -> str:
    """``build.sh``: the commands of ``build_commands``; ``./build.sh run`` also runs it.

    Example:
        >>> script = build_script(toolchain("x86_64", host="x86_64"), ["dnf_00"])
        >>> print(script)  # doctest: +ELLIPSIS
        #!/bin/sh
        # Builds ./harness for x86_64 (generated by python -m dnnfusion_jax emit).
        # Needs gcc (Debian/Ubuntu: apt-get install gcc).
        ...
        gcc build/dnf_00.o build/harness.o -o harness -pthread -lm
        if [ "$1" = run ]; then DNF_THREADS=${DNF_THREADS:-2} exec ./harness; fi
        <BLANKLINE>
    """
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
