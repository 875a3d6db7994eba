"""Calling compiled C kernels from inside ``jax.jit`` through one generic XLA FFI handler.

Every kernel follows one ABI (``c_abi.h``), ``void NAME(const void *const *inputs,
void *const *outputs, const dnf_runtime *rt)`` with its shapes baked in; the handler passes a
runtime whose ``parallel_for`` runs on XLA's intra-op thread pool. ``ffi_handler.cc`` (built once, cached by ``compile_cache``) keeps a
process-wide table from a 64-bit kernel id to a function pointer; the custom call carries only
the id, a hash of the kernel's source, so HLO stays valid in another process (a persistent
compilation cache) as long as that process loads the same kernel first.

``load_kernel`` puts a compiled kernel into the table; ``call_kernel`` emits one custom call.
Under ``vmap`` the call runs once per batch element (the shapes are baked into the kernel).

Example:
    >>> import tempfile, jax, jax.numpy as jnp
    >>> from codegen.compile_cache import build_shared_library
    >>> src = C_ABI + '''void axpy(const void *const *in, void *const *out, const dnf_runtime *rt) {
    ...   const float *x = in[0], *y = in[1]; float *r = out[0];
    ...   for (int i = 0; i < 4; ++i) r[i] = 2.0f * x[i] + y[i];
    ... }'''
    >>> with tempfile.TemporaryDirectory() as cache:
    ...     load_kernel(build_shared_library(src, flags=["-O2"], cache_dir=cache), "axpy",
    ...                 kernel_id_for(src))
    >>> f = jax.jit(lambda x, y: call_kernel(kernel_id_for(src), [x, y],
    ...                                      [jax.ShapeDtypeStruct((4,), jnp.float32)])[0])
    >>> f(jnp.arange(4.0), jnp.ones(4)).tolist()
    [1.0, 3.0, 5.0, 7.0]
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jaxlib
import numpy as np

from codegen.c.render import C_ABI
from codegen.compile_cache import build_shared_library

TARGET_NAME = "dnnfusion_c_kernel"
_HANDLER_SYMBOL = "DnnfusionCKernel"
_HANDLER_SOURCE = Path(__file__).with_name("ffi_handler.cc")

_lock = threading.Lock()
_runtime: ctypes.CDLL | None = None
# id -> (library, symbol): the CDLL objects stay referenced so the code is never unloaded.
_kernels: dict[int, tuple[ctypes.CDLL, str]] = {}


def kernel_id_for(source: str) -> int:
    """The stable id of a kernel: the first 8 bytes of its source's sha256, unsigned."""
    return int.from_bytes(hashlib.sha256(source.encode()).digest()[:8], "big")


def ensure_runtime(cache_dir: str | Path | None = None) -> ctypes.CDLL:
    """Builds (or finds in the cache) and loads the handler, and registers the FFI target;
    does the work once per process (a later ``cache_dir`` is ignored)."""
    global _runtime
    with _lock:
        if _runtime is None:
            # The jaxlib version is part of the source so an upgrade rebuilds against its headers;
            # the kernel ABI is pasted in so that a change to it rebuilds the handler too.
            source = (f"// jaxlib {jaxlib.__version__}\n" + _HANDLER_SOURCE.read_text()).replace(
                '#include "c_abi.h"', C_ABI)
            library = build_shared_library(
                {"ffi_handler.cc": source}, cache_dir=cache_dir,  # host_compiler("c++")
                # -isystem: the FFI headers' own warnings are not ours to see.
                flags=["-O2", "-std=c++17", "-isystem", jax.ffi.include_dir()])
            lib = ctypes.CDLL(str(library))
            lib.dnnfusion_register_kernel.argtypes = [ctypes.c_uint64, ctypes.c_void_p]
            lib.dnnfusion_register_kernel.restype = None
            lib.dnnfusion_kernel_registered.argtypes = [ctypes.c_uint64]
            lib.dnnfusion_kernel_registered.restype = ctypes.c_int
            jax.ffi.register_ffi_target(
                TARGET_NAME, jax.ffi.pycapsule(getattr(lib, _HANDLER_SYMBOL)), platform="cpu")
            _runtime = lib
        return _runtime


def load_kernel(library: str | Path, symbol: str, kernel_id: int) -> None:
    """Loads ``symbol`` from the shared library and registers it under ``kernel_id``.
    Loading an id again is a no-op: equal ids mean equal sources."""
    _as_int64(kernel_id)  # rejects ids outside 64 unsigned bits before ctypes truncates them
    runtime = ensure_runtime()
    with _lock:
        if kernel_id in _kernels:
            return
        lib = ctypes.CDLL(str(library), mode=os.RTLD_LOCAL)
        address = ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
        runtime.dnnfusion_register_kernel(kernel_id, address)
        _kernels[kernel_id] = (lib, symbol)


def is_loaded(kernel_id: int) -> bool:
    """Whether this process has registered a kernel under ``kernel_id``."""
    return kernel_id in _kernels


def call_kernel(kernel_id: int, inputs: Sequence[Any],
                out_avals: Sequence[jax.ShapeDtypeStruct]) -> list[jax.Array]:
    """One custom call running the kernel on ``inputs`` (row-major buffers, in order);
    returns one array per entry of ``out_avals``."""
    if kernel_id not in _kernels:
        # Caught here at trace time; the handler also answers an unknown id with an error.
        raise KeyError(f"kernel id {kernel_id:#018x} is not loaded; call load_kernel first")
    ensure_runtime()
    call = jax.ffi.ffi_call(TARGET_NAME, list(out_avals), vmap_method="sequential")
    return list(call(*inputs, kernel=_as_int64(kernel_id)))


def _as_int64(kernel_id: int) -> np.int64:
    """The id's 64 bits as a signed integer: jax 0.10.2 turns ``np.uint64`` attributes of 2**63
    and above into ``std::bad_cast``, so the handler takes int64 and reinterprets it."""
    if not 0 <= kernel_id < 1 << 64:
        raise ValueError(f"kernel id {kernel_id} does not fit in 64 unsigned bits")
    return np.int64(kernel_id - (1 << 64) if kernel_id >= 1 << 63 else kernel_id)
