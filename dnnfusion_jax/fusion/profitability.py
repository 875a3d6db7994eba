"""Is a YELLOW join worth it? latency(block + node) ≤ latency(block) + latency(node).

Two answers, kept apart from legality:

* ``CostModel`` estimates latency from bytes moved across the block boundary and weighted
  FLOPs, counting elementwise work again for every stage that needs it (``stages_reading``:
  the lowering recomputes instead of storing). It needs no compiler, so it is the default.
* ``MeasuredProfitability`` compiles the three candidate blocks with the real backend, times
  them, and keeps the figures in a ``ProfilingDatabase`` (a JSON file per device under the
  compile cache) keyed by device, backend and each block's shape signature; it measures only
  on a miss and, past its budget of measurements per plan, answers with the cost model. The
  same database settles which GEMMs run inside kernels (``gemm_profitability``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(jax.nn.softmax, [jnp.ones((512, 1024))]).graph
    >>> model = CostModel(g)
    >>> model.fuse_yellow(g.nodes[:1], g.nodes[1:3])  # reduce_max then max, broadcast
    True
"""
from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from dnnfusion_jax.files import default_cache_dir, write_atomically
from dnnfusion_jax.ops.cost import node_flops
from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.ops.mapping_types import MappingType, node_mapping_type
from dnnfusion_jax.ops.registry import lookup
from dnnfusion_jax.fusion.backend import Backend
from dnnfusion_jax.fusion.plan import Block



class Profitability(Protocol):
    def fuse_yellow(self, block: Sequence[Node], candidate: Sequence[Node]) -> bool: ...


class CostModel:
    """Roofline-style latency estimate of a set of nodes run as one kernel."""

    bandwidth = 20e9        # bytes/s a fused kernel streams (2-core x86-64, measured ~30 GB/s)
    throughput = 40e9       # simple flops/s
    transcendental = 8.0    # cost of a transcendental (the registry's) in simple flops
    launch = 2e-6           # fixed cost of one kernel call through the FFI

    def __init__(self, graph: Graph) -> None:
        self._consumers = graph.consumers()
        self._returned = set(graph.outputs)

    def latency(self, nodes: Sequence[Node]) -> float:
        read, written = boundary(nodes, self._consumers, self._returned)
        traffic = sum(v.nbytes for v in {*read, *written})
        stages = stages_reading(nodes, set(written))
        work = 0.0
        for n in nodes:
            weight = self.transcendental if lookup(n.op).transcendental else 1.0
            again = stages[n] if node_mapping_type(n) is MappingType.ONE_TO_ONE else 1
            work += node_flops(n) * weight * again
        return self.launch + traffic / self.bandwidth + work / self.throughput

    def fuse_yellow(self, block: Sequence[Node], candidate: Sequence[Node]) -> bool:
        return (self.latency([*block, *candidate])
                <= self.latency(block) + self.latency(candidate))


def stages_reading(nodes: Sequence[Node], written: set[Var]) -> dict[Node, int]:
    """How many loop stages of a kernel of ``nodes`` compute each node (at least one): the
    lowering recomputes elementwise work in every stage that needs it instead of storing it,
    and a stage is a reduction (reading the node through elementwise work only) or the store
    of a written value. Independent reductions (a guard's check of several operands) compute
    their own operands' work once each; the stages of a softmax row compute ``x - max`` twice.

    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> g = trace_function(lambda a, b: jnp.all(jnp.abs(a) < 1) & jnp.all(jnp.abs(b) < 1),
    ...                    [jnp.ones(8), jnp.ones(4)]).graph
    >>> sorted(stages_reading(g.nodes, set(g.outputs)).values())
    [1, 1, 1, 1, 1, 1, 1]
    >>> def softmax(x):
    ...     e = jnp.exp(x - x.max())
    ...     return e / e.sum()
    >>> g = trace_function(softmax, [jnp.ones(8)]).graph
    >>> {n.op: k for n, k in stages_reading(g.nodes, set(g.outputs)).items()}["exp"]
    2
    """
    inside = {out: n for n in nodes for out in n.outputs}
    users: dict[Node, list[Node]] = {n: [] for n in nodes}
    for n in nodes:
        for v in n.inputs:
            if v in inside:
                users[inside[v]].append(n)
    reached: dict[Node, set] = {}
    for n in reversed(list(nodes)):  # users before producers
        stages: set = {("store", v) for v in n.outputs if v in written}
        for user in users[n]:
            stages |= {user} if user.op.startswith("reduce_") else reached[user]
        reached[n] = stages
    return {n: max(1, len(stages)) for n, stages in reached.items()}


def boundary(nodes: Sequence[Node], consumers: dict[Var, list[Node]],
              returned: set[Var]) -> tuple[list[Var], list[Var]]:
    """(values the nodes read from outside, values they produce that are needed outside), each
    in first-use order: what a kernel of exactly these nodes must load and store."""
    inside = set(nodes)
    produced = {out for n in nodes for out in n.outputs}
    read = dict.fromkeys(v for n in nodes for v in n.inputs if v not in produced)
    written = [v for n in nodes for v in n.outputs if v in returned
               or any(c not in inside for c in consumers.get(v, ()))]
    return list(read), written


def block_signature(nodes: Sequence[Node], inputs: Sequence[Var]) -> str:
    """A key that is equal for blocks of equal operations, shapes and dtypes."""
    number: dict[Var, str] = {v: f"i{k}" for k, v in enumerate(inputs)}
    parts = []
    for node in nodes:
        ins = ",".join(number.get(v, v.type_str) for v in node.inputs)
        for out in node.outputs:
            number[out] = f"v{len(number)}"
        params = ";".join(f"{k}={v}" for k, v in sorted(node.params.items())
                          if k not in ("sharding", "out_sharding"))
        parts.append(f"{node.op}[{params}]({ins})->"
                     + ",".join(o.type_str for o in node.outputs))
    return " | ".join([",".join(v.type_str for v in inputs)] + parts)


def machine_key() -> str:
    """Names this machine's CPU and core count: profiles do not travel between machines."""
    return f"{platform.machine()}-{platform.processor() or 'cpu'}-{os.cpu_count()}"


def device_key(backend: Backend) -> str:
    """Names the device ``backend``'s kernels run on: its ``device_kind`` where it has one (a
    GPU's, e.g. "NVIDIA H200"), else this machine's CPU (``machine_key``).

    >>> from codegen.xla.backend import XlaBackend
    >>> device_key(XlaBackend()) == machine_key()
    True
    """
    return backend.device_kind or machine_key()


class ProfilingDatabase:
    """Measured latencies (seconds) by backend and block signature, persisted as JSON."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.entries: dict[str, float] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def get(self, key: str) -> float | None:
        return self.entries.get(key)

    def put(self, key: str, seconds: float) -> None:
        self.entries[key] = seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(self.entries).encode())


def profiling_database(backend: Backend) -> ProfilingDatabase:
    """The database of timings on ``backend``'s device (``device_key``), next to the compile
    cache: one file per device."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", device_key(backend))
    return ProfilingDatabase(default_cache_dir() / f"profile-{name}.json")


class MeasuredProfitability:
    """Settles YELLOW joins by timing the backend's kernels (on a database miss)."""

    def __init__(self, graph: Graph, backend: Backend, database: ProfilingDatabase,
                 budget: int = 24) -> None:
        self.graph = graph
        self.backend = backend
        self.timings = Timings(database, device_key(backend), budget)
        self.estimate = CostModel(graph)
        self._consumers = graph.consumers()
        self._returned = set(graph.outputs)

    def fuse_yellow(self, block: Sequence[Node], candidate: Sequence[Node]) -> bool:
        fused = self._latency([*block, *candidate])
        if fused is None:
            return self.estimate.fuse_yellow(block, candidate)
        apart = [self._latency(block), self._latency(candidate)]
        if None in apart:
            return self.estimate.fuse_yellow(block, candidate)
        return fused <= sum(apart)

    @property
    def measured(self) -> int:
        """How many blocks this object timed (the others came from the database)."""
        return self.timings.measured

    def _latency(self, nodes: Sequence[Node]) -> float | None:
        return self.timings.latency(self._block(nodes), self.graph.constants, self.backend)

    def _block(self, nodes: Sequence[Node]) -> Block:
        inputs, outputs = boundary(nodes, self._consumers, self._returned)
        return Block(0, list(nodes), node_mapping_type(nodes[0]), tuple(inputs),
                     tuple(outputs or nodes[-1].outputs[:1]))


class Timings:
    """Latencies (seconds) of blocks on one device: from the database, or timed and recorded
    there while fewer than ``budget`` were timed by this object (then None)."""

    def __init__(self, database: ProfilingDatabase, device: str, budget: int) -> None:
        self.database = database
        self.device = device
        self.budget = budget
        self.measured = 0

    @property
    def left(self) -> int:
        """Timings this object may still take."""
        return self.budget - self.measured

    def missing(self, block: Block, backends: Sequence[Backend]) -> int:
        """How many of ``backends`` have no recorded latency for ``block``."""
        return sum(self.database.get(self._key(block, b)) is None for b in backends)

    def _key(self, block: Block, backend: Backend) -> str:
        return f"{self.device}|{backend.name}|{block_signature(block.nodes, block.inputs)}"

    def latency(self, block: Block, constants: dict, backend: Backend) -> float | None:
        key = self._key(block, backend)
        known = self.database.get(key)
        if known is not None or self.measured >= self.budget:
            return known
        self.measured += 1
        seconds = time_block(block, constants, backend)
        self.database.put(key, seconds)
        return seconds


def time_block(block: Block, constants: dict, backend: Backend, repeats: int = 7) -> float:
    """Median seconds of one call of the block's kernel (compiled by ``backend``)."""
    import jax
    kernel = backend.compile_block(block, constants)
    rng = np.random.default_rng(0)
    args = [constants[v] if v in constants else
            rng.standard_normal(v.shape).astype(v.dtype) if np.issubdtype(v.dtype, np.floating)
            else np.zeros(v.shape, v.dtype) for v in block.inputs]
    run = jax.jit(lambda *xs: kernel.run(list(xs)))
    jax.block_until_ready(run(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))
