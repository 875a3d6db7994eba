"""An on-disk cache of compiled shared libraries, keyed by everything that shapes the binary.

The key is a sha256 over the source files (names and text), the compiler (its resolved path and
its ``--version`` text), the flags, the target and, for host builds, the host CPU (``-march=native``
output must not travel to another machine through a shared or copied cache). Entries live at
``<cache>/<key[:2]>/<key>.so`` with a ``<key>.sha256`` sidecar holding the library's own digest and
copies of the sources (``<key>.<file name>``) for debugging. A second process that asks for the
same library compiles nothing.

Publishing is atomic: the compiler writes into a temporary file in the entry's own directory and
``os.replace`` moves it onto the final name, so no process ever loads a half-written library. A
per-key ``flock`` makes concurrent builders of one key wait for each other instead of compiling
twice. A truncated or corrupt entry fails the sidecar check and is rebuilt.

Example:
    >>> import ctypes, tempfile
    >>> src = "int answer(void) { return 42; }"
    >>> with tempfile.TemporaryDirectory() as cache:
    ...     reset_cache_stats()
    ...     so = build_shared_library(src, flags=["-O2"], cache_dir=cache)
    ...     again = build_shared_library(src, flags=["-O2"], cache_dir=cache)
    ...     (ctypes.CDLL(str(so)).answer(), so == again, cache_stats().misses, cache_stats().hits)
    (42, True, 1, 1)
"""
from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dnnfusion_jax.files import default_cache_dir, umask, write_atomically

_ELF_MAGIC = b"\x7fELF"
_MAX_MESSAGE = 4000  # characters of compiler output kept in a CompileError


class CompileError(RuntimeError):
    """The compiler failed (or is missing); the message holds the command and its stderr."""


@dataclass
class CacheStats:
    """What this process's builds did: entries found, entries compiled, time spent compiling."""

    hits: int = 0
    misses: int = 0
    compile_seconds: float = 0.0
    rebuilt_corrupt: int = 0  # entries that failed validation and were compiled again


_stats = CacheStats()


def cache_stats() -> CacheStats:
    """A snapshot of this process's statistics."""
    return dataclasses.replace(_stats)


def reset_cache_stats() -> None:
    """Zeroes the statistics (benchmarks measure one phase at a time)."""
    global _stats
    _stats = CacheStats()


@functools.cache
def _compiler_identity(compiler: str) -> tuple[str, str]:
    """The compiler's resolved path and ``--version`` text (asked once per process)."""
    found = shutil.which(compiler)
    if found is None:
        raise CompileError(f"compiler not found: {compiler!r}")
    path = os.path.realpath(found)
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    return path, version


@functools.cache
def _host_identity() -> str:
    """The CPU a host build runs on: the architecture plus the kernel's list of CPU features."""
    features = ""
    try:
        with open("/proc/cpuinfo") as f:
            features = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return f"{platform.machine()} {features.strip()}"


def library_key(sources: Mapping[str, str], compiler: str, flags: Sequence[str],
                target: str = "host") -> str:
    """The cache key (64 hex digits) of one build."""
    path, version = _compiler_identity(compiler)
    material = {
        "sources": sorted(sources.items()),
        "compiler": [path, version],
        "flags": list(flags),
        "target": target,
        "host": _host_identity() if target == "host" else "",
    }
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()


def build_shared_library(sources: Mapping[str, str] | str, *, compiler: str = "gcc",
                         flags: Sequence[str], cache_dir: str | Path | None = None,
                         target: str = "host") -> Path:
    """Path of the compiled library for ``sources`` (``{file name: text}``; a str is
    ``kernel.c``), compiling it with ``compiler *flags -shared -fPIC`` on a cache miss. All
    files go to one compiler command (so g++ compiles ``.c`` files as C++ too). Raises
    ``CompileError`` when the compiler fails."""
    if isinstance(sources, str):
        sources = {"kernel.c": sources}
    for name in sources:
        if not name or os.path.basename(name) != name or name.startswith("."):
            raise ValueError(f"source names must be plain file names, got {name!r}")
    key = library_key(sources, compiler, flags, target)
    entry = Path(cache_dir or default_cache_dir()) / key[:2]
    library = entry / f"{key}.so"
    if _is_valid(library):
        _stats.hits += 1
        return library
    entry.mkdir(parents=True, exist_ok=True)
    with open(entry / f"{key}.lock", "w") as lock:
        # Whoever holds the lock builds; the others wait and then find a valid entry.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_valid(library):
            _stats.hits += 1
            return library
        if library.exists():
            _stats.rebuilt_corrupt += 1
            library.unlink()
        _compile(sources, compiler, flags, library)
        for name, text in sources.items():
            write_atomically(entry / f"{key}.{name}", text.encode())
    return library


def _is_valid(library: Path) -> bool:
    """True when the library exists, looks like ELF and matches its sidecar digest."""
    try:
        data = library.read_bytes()
        expected = library.with_suffix(".sha256").read_text().strip()
    except OSError:
        return False
    return data.startswith(_ELF_MAGIC) and hashlib.sha256(data).hexdigest() == expected


def _compile(sources: Mapping[str, str], compiler: str, flags: Sequence[str],
             library: Path) -> None:
    """Compiles into a temporary file beside ``library``, then publishes library and sidecar."""
    compiler_path, _ = _compiler_identity(compiler)
    # Libraries to link (-l...) must follow the sources, or an --as-needed linker drops them.
    libs = [f for f in flags if f.startswith("-l")]
    options = [f for f in flags if not f.startswith("-l")]
    fd, partial = tempfile.mkstemp(dir=library.parent, prefix=f".{library.stem[:16]}-",
                                   suffix=".so.tmp")
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory(prefix="dnnfusion-build-") as build:
            for name, text in sources.items():
                Path(build, name).write_text(text)
            # Relative file names keep the temporary directory out of the binary.
            cmd = [compiler_path, *options, "-shared", "-fPIC", "-o", partial, *sources, *libs]
            start = time.perf_counter()
            done = subprocess.run(cmd, cwd=build, capture_output=True, text=True)
            _stats.compile_seconds += time.perf_counter() - start
            _stats.misses += 1
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip()
            if len(message) > _MAX_MESSAGE:
                message = message[:_MAX_MESSAGE] + "\n... (truncated)"
            raise CompileError(f"{' '.join(cmd)}\nexited with {done.returncode}:\n{message}")
        digest = hashlib.sha256(Path(partial).read_bytes()).hexdigest()
        os.chmod(partial, 0o755 & ~umask())
        os.replace(partial, library)
        # The sidecar comes last: an entry without one is incomplete and gets rebuilt.
        write_atomically(library.with_suffix(".sha256"), f"{digest}\n".encode())
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
