"""What a fusion plan asks of a code generator: the ``Backend`` protocol, the ``Kernel`` it
makes of a block, and ``UnsupportedBlock`` when it cannot.

Planners ask a backend two questions: may this node join a block with others
(``fusible``), and does a GEMM run inside its kernel rather than in XLA's GEMM
(``gemm_in_kernel``, answered by ``gemm_choice`` when measured, else by
``unmeasured_gemm_choice``). Measuring asks whether it ``renders_gemms`` and on which
``device_kind`` it runs. The pipeline then asks it to ``compile_block`` each block.
Backends live in ``codegen/`` (``c``, ``pallas``, ``xla``); this module is what they share
with the planner, so neither imports the other.

    >>> from codegen.xla.backend import XlaBackend
    >>> isinstance(XlaBackend(), Backend)
    True
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from dnnfusion_jax.frontend.ir import Node, Var
from dnnfusion_jax.fusion.plan import Block


class UnsupportedBlock(Exception):
    """Raised by a backend for a block it cannot compile; the message says why."""


class ToolMissing(RuntimeError):
    """A backend's tool (a C compiler) is missing on this machine. The backend has already
    told the user, once per process, what to install; the pipeline does not warn again."""


@dataclass
class Kernel:
    """One block made runnable: ``run(inputs) -> outputs`` in the block's value order."""

    block: Block
    backend: str
    source: str
    run: Callable[[Sequence[Any]], Sequence[Any]]
    fallback_reason: str | None = None
    per_device: list = field(default_factory=list)
    """(operand shapes, result shapes) of each per-device kernel the SPMD partitioner had
    compiled (``codegen/kernel/sharded_call.py``); empty where it never split the kernel."""


GemmPolicy = Callable[[Node], bool]
"""Whether a backend runs this dot_general inside its kernel rather than leaving it to XLA."""


@runtime_checkable
class Backend(Protocol):
    """A code generator, as the planner and the pipeline see it.

    ``renders_gemms``: the backend can run a dot_general inside its kernels, so
    ``profile=True`` may install a measured ``gemm_choice`` on it. ``device_kind``: the device
    its kernels run on, which keys its measurements (a GPU's kind); None: this machine's CPU.
    ``platforms``: the JAX platforms its kernels run on ("cpu", "gpu"); None: any.
    """

    name: str
    platforms: tuple[str, ...] | None
    renders_gemms: bool
    gemm_choice: GemmPolicy | None
    device_kind: str | None

    def fusible(self, node: Node) -> str | None:
        """None when ``node`` may join a block with others, else why it must stay alone."""

    def gemm_in_kernel(self, node: Node) -> bool:
        """Whether this dot_general runs inside the backend's kernel."""

    def unmeasured_gemm_choice(self, node: Node) -> bool:
        """``gemm_in_kernel``'s answer where nothing was measured."""

    def compile_block(self, block: Block, constants: Mapping[Var, Any]) -> Kernel:
        """The block's kernel; ``constants``: the graph's constant values, which a backend may
        inline. Raises UnsupportedBlock when the block should stay with XLA."""
