"""Tile sizes of Pallas kernels per GPU kind: measured where someone measured, a default where not.

A program's tile (its grid points × each point's stage tile, in elements) trades parallelism
(more programs) against work per program; the best size depends on the GPU. ``tile_elements``
answers for a device kind from, in order: the measurements recorded on this machine (JSON next
to the compile cache, written by ``benchmarks/pallas_gpu.py --tune``), the ones shipped in
``MEASURED``, and ``DEFAULT_TILE_ELEMENTS``.

Example:
    >>> tile_elements("a GPU nobody measured") == DEFAULT_TILE_ELEMENTS
    True
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

DEFAULT_TILE_ELEMENTS = 1 << 12
"""Tile of one program when the device kind was never measured: 4096 elements, as Triton
programs of 4-8 warps like them (Triton's tutorials use 1024-4096). Not measured here."""

MEASURED: dict[str, int] = {}
"""Device kind → tile elements, from ``benchmarks/pallas_gpu.py --tune`` runs recorded in the
README. Empty: no GPU has been lent to this project yet."""


def tuning_path() -> Path:
    from .compile_cache import default_cache_dir
    return default_cache_dir() / "pallas-tiles.json"


def _recorded() -> dict[str, int]:
    try:
        return {str(k): int(v) for k, v in json.loads(tuning_path().read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def tile_elements(device_kind: str) -> int:
    """Elements of one program's tile on ``device_kind`` (see the module docstring)."""
    return _recorded().get(device_kind) or MEASURED.get(device_kind) or DEFAULT_TILE_ELEMENTS


def record(device_kind: str, elements: int) -> Path:
    """Remembers a measured tile size for ``device_kind`` on this machine; returns the file."""
    if elements <= 0 or elements & (elements - 1):
        raise ValueError(f"tile of {elements} elements: expected a power of two")
    entries = _recorded()
    entries[device_kind] = elements
    path = tuning_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(entries, f, indent=1)
    os.replace(tmp, path)  # readers see the old or the new file, never half of one
    return path
