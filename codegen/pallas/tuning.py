"""What Pallas kernels do per GPU kind: measured where someone measured, a default where not.

Two choices depend on the GPU. The *tile* of a program (its grid points × each point's stage
tile, in elements) trades parallelism against work per program. A *GEMM* runs inside a fused
kernel (its prologue and epilogue with it) only up to some size; beyond, XLA's own GEMM wins.
Answers for a device kind come from, in order: what was measured on this machine (JSON next to
the compile cache, written by ``benchmarks/pallas_gpu.py --tune``), ``MEASURED`` (figures
shipped with the project), and the defaults.

Example:
    >>> settings("a GPU nobody measured") == Settings()
    True
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from dnnfusion_jax.ops.cost import node_flops
from dnnfusion_jax.frontend.ir import Node

from dnnfusion_jax.files import default_cache_dir, write_atomically
from codegen.kernel.kernel_blocks import gemm_sides
from codegen.pallas.grid import next_power_of_two


@dataclass(frozen=True)
class Settings:
    """Per device kind: ``tile_elements`` per program (a power of two) and the largest GEMM,
    in FLOPs, worth running inside a fused kernel (0: GEMMs stay with XLA)."""

    tile_elements: int = 1 << 12  # as Triton programs of 4-8 warps like them (not measured)
    gemm_flops: int = 0           # not measured: XLA's GEMM (cuBLAS) until shown otherwise


DEFAULT_TILE_ELEMENTS = Settings().tile_elements

INTERPRET_GEMM_FLOPS = 1 << 20
"""Interpret mode (CPU) takes GEMMs up to this size into kernels: not for speed, so that the
tests check the path a GPU takes once measured."""

MEASURED: dict[str, Settings] = {
    # 2026-12-04, jax 0.11.2: tiles of 1024-16384 elements within 1.00-1.07x geomean of each
    # other on the memory-bound workloads (2048 best); GEMM + bias + GELU with the GEMM in the
    # kernel was 0.90-0.99x of XLA's at every size, so GEMMs stay with XLA.
    "NVIDIA H200": Settings(tile_elements=2048, gemm_flops=0),
}
"""Device kind → settings from ``benchmarks/pallas_gpu.py --tune`` runs recorded in the README."""


def tuning_path() -> Path:
    return default_cache_dir() / "pallas-tuning.json"


def _recorded() -> dict[str, Settings]:
    try:
        entries = json.loads(tuning_path().read_text())
        return {str(kind): Settings(**values) for kind, values in entries.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def settings(device_kind: str) -> Settings:
    """The settings for ``device_kind`` (see the module docstring)."""
    return _recorded().get(device_kind) or MEASURED.get(device_kind) or Settings()


def tile_elements(device_kind: str) -> int:
    """Elements of one program's tile on ``device_kind``."""
    return settings(device_kind).tile_elements


def gemm_fits(node: Node, tile: int | None) -> bool:
    """Whether a Pallas program's ``tile`` (None: unbounded) holds this dot_general's
    contracted × output-column panel, padded to powers of two."""
    lhs = node.inputs[0]
    (lhs_contract, _), _ = node.params["dimension_numbers"]
    depth = math.prod(lhs.shape[d] for d in lhs_contract)
    _, columns = gemm_sides(node)
    return tile is None or next_power_of_two(depth) * next_power_of_two(columns) <= tile


def gemm_within(node: Node, limit: int) -> bool:
    """Whether this dot_general has at most ``limit`` FLOPs (a device kind's ``gemm_flops``,
    ``INTERPRET_GEMM_FLOPS`` interpreted): the unmeasured answer to "worth a kernel?"."""
    return node_flops(node) <= limit


def record(device_kind: str, **values: int) -> Path:
    """Remembers measured settings for ``device_kind`` on this machine; returns the file.

    >>> import os, tempfile; os.environ["DNNFUSION_CACHE_DIR"] = tempfile.mkdtemp()
    >>> _ = record("NVIDIA H200", tile_elements=8192)
    >>> settings("NVIDIA H200")
    Settings(tile_elements=8192, gemm_flops=0)
    """
    tile = values.get("tile_elements")
    if tile is not None and (tile <= 0 or tile & (tile - 1)):
        raise ValueError(f"tile of {tile} elements: expected a power of two")
    entries = _recorded()
    entries[device_kind] = replace(settings(device_kind), **values)
    path = tuning_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({kind: asdict(s) for kind, s in entries.items()}, indent=1)
    write_atomically(path, text.encode())
    return path
