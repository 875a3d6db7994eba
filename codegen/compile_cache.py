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

The cache directory is used only when it is safe (``dnnfusion_jax.files.usable_cache_dir``): an
unusable one (a file, a dangling link, no write access, a ``.lock`` that is a folder) or one that
others can write gives one warning and a private per-user cache instead, and an entry owned by
another user or writable by others is never loaded: it is rebuilt in the private cache.

The compiler (``host_compiler``) is the system's ``gcc``/``cc``/``clang`` (``g++``/``c++``/
``clang++`` for C++) when present, else the ``zig cc``/``zig c++`` of the ``ziglang`` package
(``pip install "dnnfusion_jax[zig]"``); with neither, ``CompilerMissing`` says what to install.

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
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dnnfusion_jax.fusion.backend import ToolMissing
from dnnfusion_jax.files import default_cache_dir  # noqa: F401 (re-exported)
from dnnfusion_jax.files import (CACHE_ADVICE, private_cache_dir, umask, untrusted_reason,
                                 usable_cache_dir, warn_once, write_atomically)

_ELF_MAGIC = b"\x7fELF"
_MAX_MESSAGE = 4000  # characters of compiler output kept in a CompileError


class CompileError(RuntimeError):
    """The compiler failed (or is missing); the message holds the command and its stderr."""


class CompilerMissing(CompileError, ToolMissing):
    """No compiler for the language on this machine; the message says what to install."""


SYSTEM_COMPILERS = {"c": ("gcc", "cc", "clang"), "c++": ("g++", "c++", "clang++")}
"""The system compilers tried first, in order, per language."""

INSTALL_HINT = ('install gcc and g++ (Debian/Ubuntu: apt-get install gcc g++; macOS: xcode-select '
                '--install), or the zig compiler from the package index: '
                'pip install "dnnfusion_jax[zig]" (or pip install ziglang)')


@functools.cache
def host_compiler(language: str = "c") -> tuple[str, ...]:
    """The command that compiles ``language`` ("c" or "c++") for this machine: the first system
    compiler of ``SYSTEM_COMPILERS`` on PATH, else ``zig cc``/``zig c++`` from the ``ziglang``
    package. Raises ``CompilerMissing`` (after one warning per process) when there is none.

    Example:
        >>> Path(host_compiler("c")[0]).name in ("gcc", "cc", "clang", "zig")
        True
    """
    for name in SYSTEM_COMPILERS[language]:
        if found := shutil.which(name):
            return (found,)
    if zig := zig_binary():
        return (zig, "cc" if language == "c" else "c++")
    message = (f"dnnfusion: no {language.upper()} compiler found (tried "
               f"{', '.join(SYSTEM_COMPILERS[language])} on PATH and the ziglang package), so "
               f"nothing can be fused into C kernels and functions run unfused through XLA; "
               f"{INSTALL_HINT}")
    warn_once(message)
    raise CompilerMissing(message)


def zig_binary() -> str | None:
    """The ``zig`` executable of the installed ``ziglang`` package, or None.

    Example:
        >>> zig_binary() is None or zig_binary().endswith("zig")
        True
    """
    try:
        import ziglang  # an optional extra: pip install "dnnfusion_jax[zig]"
    except ImportError:
        return None
    folder = Path(getattr(ziglang, "__file__", None) or sys.prefix).parent
    zig = folder / "zig"
    return str(zig) if zig.is_file() and os.access(zig, os.X_OK) else None


def _command(compiler: str | Sequence[str] | None, language: str = "c") -> tuple[str, ...]:
    """A compiler given as a name, a command (``["/path/zig", "cc"]``) or None (the host's)."""
    if compiler is None:
        return host_compiler(language)
    return (compiler,) if isinstance(compiler, str) else tuple(compiler)


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
def _compiler_identity(command: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    """The compiler command with its program's resolved path, and its ``--version`` text
    (asked once per process)."""
    found = shutil.which(command[0])
    if found is None:
        raise CompilerMissing(f"compiler not found: {command[0]!r}; {INSTALL_HINT}")
    resolved = (os.path.realpath(found), *command[1:])
    version = subprocess.run([*resolved, "--version"], capture_output=True, text=True).stdout
    return resolved, version


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


def library_key(sources: Mapping[str, str], compiler: str | Sequence[str] | None,
                flags: Sequence[str], target: str = "host") -> str:
    """The cache key (64 hex digits) of one build."""
    command, version = _compiler_identity(_command(compiler))
    material = {
        "sources": sorted(sources.items()),
        "compiler": [*command, version],
        "flags": list(flags),
        "target": target,
        "host": _host_identity() if target == "host" else "",
    }
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()


def build_shared_library(sources: Mapping[str, str] | str, *,
                         compiler: str | Sequence[str] | None = None, flags: Sequence[str],
                         cache_dir: str | Path | None = None, target: str = "host") -> Path:
    """Path of the compiled library for ``sources`` (``{file name: text}``; a str is
    ``kernel.c``), compiling it with ``compiler *flags -shared -fPIC`` on a cache miss. All
    files go to one compiler command (so g++ compiles ``.c`` files as C++ too). ``compiler``:
    a program name, a command list, or None for ``host_compiler`` (C++ when a source ends in
    ``.cc``/``.cpp``). Raises ``CompileError`` when the compiler fails, ``CompilerMissing``
    when there is none."""
    if isinstance(sources, str):
        sources = {"kernel.c": sources}
    for name in sources:
        if not name or os.path.basename(name) != name or name.startswith("."):
            raise ValueError(f"source names must be plain file names, got {name!r}")
    language = "c++" if any(n.endswith((".cc", ".cpp", ".cxx")) for n in sources) else "c"
    command = _command(compiler, language)
    key = library_key(sources, command, flags, target)
    root = usable_cache_dir(cache_dir)
    try:
        return _build_in(root, key, sources, command, flags)
    except (_Untrusted, OSError) as error:
        # the private cache is found (and probed) only here, off the path of every build
        private = private_cache_dir()
        if root == private:
            raise
        if isinstance(error, _Untrusted):
            problem = (f"not loading {error} from the kernel cache {root}: it is "
                       f"{error.reason}; rebuilding in")
        else:  # a .lock that is a folder, a full disk, a folder gone read-only
            problem = (f"the kernel cache {root} is not usable "
                       f"({type(error).__name__}: {error}); using")
        warn_once(f"dnnfusion: {problem} the private cache {private} instead. {CACHE_ADVICE}")
    return _build_in(private, key, sources, command, flags)


class _Untrusted(Exception):
    """An existing cache entry that another user could have written."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(str(path))
        self.reason = reason


def _build_in(root: Path, key: str, sources: Mapping[str, str], command: tuple[str, ...],
              flags: Sequence[str]) -> Path:
    """Finds or builds ``key`` under ``root``; raises ``_Untrusted`` rather than load an entry
    that another user owns or could have written."""
    entry = root / key[:2]
    library = entry / f"{key}.so"
    for path in (entry, library, library.with_suffix(".sha256")):
        if reason := untrusted_reason(path):
            raise _Untrusted(path, reason)
    if _is_valid(library):
        _stats.hits += 1
        return library
    entry.mkdir(mode=0o700, exist_ok=True)
    with open(entry / f"{key}.lock", "w") as lock:
        # Whoever holds the lock builds; the others wait and then find a valid entry.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_valid(library):
            _stats.hits += 1
            return library
        if library.exists():
            _stats.rebuilt_corrupt += 1
            library.unlink()
        _compile(sources, command, flags, library)
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


def _compile(sources: Mapping[str, str], command: tuple[str, ...], flags: Sequence[str],
             library: Path) -> None:
    """Compiles into a temporary file beside ``library``, then publishes library and sidecar."""
    compiler, _ = _compiler_identity(command)
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
            cmd = [*compiler, *options, "-shared", "-fPIC", "-o", partial, *sources, *libs]
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
