"""A fused kernel that XLA's SPMD partitioner can split: ``jax.experimental.custom_partitioning``
with a rule derived from the block's loops (``dnnfusion_jax/fusion/shard_factors.py``).

A kernel is an FFI custom call, opaque to the partitioner: with a batch-sharded input XLA
would all-gather it and run the whole kernel on every device. ``ShardedKernel`` instead wraps
the call in ``custom_partitioning`` with

* a Shardy ``sharding_rule``: one factor per splittable iteration axis (shared by the
  operands and results it runs through: batch, rows, the kept axes of reductions; a merged
  axis as a compound factor), ``reduction`` for a summed axis that may be split, and a
  ``need_replication`` factor for every other axis (reduced by max, mixed by a Reorganize or
  Shuffle, indexed), so the partitioner never splits those;
* ``infer_sharding_from_operands`` and ``partition`` for GSPMD (and ``partition`` for
  Shardy too, which calls it once it has placed the kernel): both pick the mesh axes of
  each factor from the shardings they are given; ``partition`` compiles the block again at
  the per-device shapes (``shard_block``) and returns what one device runs: that kernel, and
  where a summed axis is split, a ``psum`` of the partial sums (between the phases of
  ``shard_sums`` where a nonlinear operator needs the complete sum).

Under explicit sharding (``jax.set_mesh`` with Explicit axes) the operands' types say where
the data is while tracing, so the per-device function runs under ``jax.shard_map`` instead.
Only programs over several devices pay for any of this: with one device in the process the
kernel is called as it is, and jax lowers ``custom_partitioning`` of a one-device program to
its body anyway. Under ``vmap`` the rule is dropped (the kernel runs per batch element, as
before), and under a fully manual ``shard_map`` jax inlines the body.

Example (one device: the call is the kernel itself):
    >>> import jax.numpy as jnp, numpy as np
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> g = trace_function(lambda x: x * 2.0, [jnp.ones((4, 8))]).graph
    >>> block = whole_graph_block(g)
    >>> sharded = ShardedKernel(lambda args: [args[0] * 2.0], block, g.inputs, None)
    >>> sharded([np.ones((4, 8), np.float32)])[0].shape
    (4, 8)
"""
from __future__ import annotations

import gc
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from jax.extend.core import jaxpr_as_fun
from jax.experimental.custom_partitioning import (ArrayMapping, CompoundFactor, SdyShardingRule,
                                                  custom_partitioning, custom_partitioning_p)
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from dnnfusion_jax.files import warn_once
from dnnfusion_jax.frontend.ir import Node, Var
from dnnfusion_jax.fusion.backend import UnsupportedBlock
from dnnfusion_jax.fusion.plan import Block
from dnnfusion_jax.fusion.shard_block import shard_shape
from dnnfusion_jax.fusion.shard_factors import BlockFactors, block_factors

KernelCall = Callable[[Sequence[Any]], Sequence[Any]]
ShardBuilder = Callable[[Block, BlockFactors, dict[int, int]], KernelCall]
"""Builds a block (the kernel's, or a phase of it: ``shard_sums``) at per-device extents
(factor → extent); the call takes the values of all of that block's inputs and returns its
outputs. Raises UnsupportedBlock when the shard cannot be compiled."""


class ShardedKernel:
    """Calls a kernel; over several devices, as a ``custom_partitioning`` the SPMD
    partitioner splits along the block's splittable factors.

    ``operands``: the block values the kernel's arguments hold, in order; the results are
    ``block.outputs``. ``per_device``: the (operand shapes, result shapes) each partitioning
    compiled the kernel at, for ``explain``.
    """

    def __init__(self, call: KernelCall, block: Block, operands: Sequence[Var],
                 build_shard: ShardBuilder, constants: Mapping[Var, Any] = {}) -> None:
        self.call, self.block, self.operands = call, block, tuple(operands)
        self.build_shard = build_shard
        # the block's inputs the kernel inlined (scalar constants), for per-device phases
        self.constants = {v: constants[v] for v in block.inputs
                          if v not in self.operands and v in constants}
        self.per_device: list[tuple[tuple[tuple[int, ...], ...], ...]] = []
        self._factors: BlockFactors | None = None
        self._wrapped: Any = None
        self._shards: dict[tuple, Callable] = {}
        self._lock = threading.Lock()  # partition callbacks may come from XLA's threads

    @property
    def factors(self) -> BlockFactors:
        """The block's factors (``shard_factors``), worked out on first use."""
        if self._factors is None:
            self._factors = block_factors(self.block)
        return self._factors

    def __call__(self, args: Sequence[Any]) -> Sequence[Any]:
        if jax.device_count() == 1:
            return self.call(args)  # one device: nothing to partition, nothing wrapped
        if not self.factors.any_splittable((*self.operands, *self.block.outputs)):
            return self.call(args)  # every axis needs replication: as opaque as the call
        explicit = self._explicit_placement(args)
        if explicit is not None:
            return self._shard_mapped(args, *explicit)
        if self._wrapped is None:
            self._wrapped = self._custom_partitioning()
        return list(self._wrapped(*args))

    # -- explicit sharding (jax.set_mesh with Explicit axes): the types say where data is ----
    def _explicit_placement(self, args: Sequence[Any]) -> tuple[Any, dict] | None:
        """(mesh, factor → axes) when the operands' types carry shardings over Explicit mesh
        axes that split some factor; None otherwise (then the partitioner decides)."""
        shardings = [getattr(jax.typeof(a), "sharding", None) for a in args]
        meshes = {s.mesh for s in shardings if isinstance(s, NamedSharding)
                  and not s.mesh.empty and any(t == AxisType.Explicit for t in s.mesh.axis_types)}
        if len(meshes) != 1:
            return None
        mesh = meshes.pop()
        axes = self._factor_axes(mesh, list(zip(self.operands, shardings)))
        return (mesh, axes) if axes else None

    def _shard_mapped(self, args: Sequence[Any], mesh: Any, axes: dict) -> list[Any]:
        """The per-device kernel under ``shard_map``: with explicit types the placement is
        known while tracing, so no partitioner callback is needed."""
        try:
            per_device = self._per_device(mesh, axes)
        except UnsupportedBlock:
            return self.call(args)
        in_specs = tuple(self._spec(v, axes) for v in self.operands)
        out_specs = tuple(self._spec(v, axes) for v in self.block.outputs)
        # an operand typed otherwise (a replicated mask read per batch row) is resharded first
        args = [a if jax.typeof(a).sharding.spec == spec else jax.sharding.reshard(a, spec)
                for a, spec in zip(args, in_specs)]
        mapped = jax.shard_map(per_device, mesh=mesh,
                               in_specs=in_specs, out_specs=out_specs)
        return list(mapped(*args))

    # -- the rule ----------------------------------------------------------------------------
    def _custom_partitioning(self) -> Any:
        call = self.call

        @custom_partitioning
        def kernel(*args):
            return tuple(call(args))

        kernel.def_partition(self._partition,
                             infer_sharding_from_operands=self._infer_from_operands,
                             sharding_rule=lambda mesh, operand_types, result_types:
                             self.sharding_rule(mesh))
        return kernel

    def sharding_rule(self, mesh: Any) -> SdyShardingRule:
        """The Shardy rule on ``mesh``: ``f<n>`` for a factor that may be split, a
        need-replication ``r<n>`` for every other axis, ``(f<n> r<m>)`` for a merged axis.
        A factor that some mesh axis would have to split into sub-axes (a factor of 2 on an
        axis of 4) is never split: jax cannot name such a sharding in ``partition``."""
        factors = self.factors
        usable = {f for f, n in factors.sizes.items() if _usable(n, mesh)}
        replicated: dict[str, int] = {}  # factor name -> extent, never split
        whole: set[str] = set()

        def never_split(extent: int) -> str:
            replicated[f"r{len(replicated)}"] = extent
            return f"r{len(replicated) - 1}"

        def mapping(var: Var) -> ArrayMapping:
            names: list[Any] = []
            for f, m, n in zip(factors.dims(var), factors.multiples(var), var.shape):
                if f not in usable:  # its own factor, never split
                    names.append(never_split(n))
                    whole.add(names[-1])
                elif m == 1:
                    names.append(f"f{f}")
                    whole.add(names[-1])
                else:  # a merged axis: the factor (major) and the rest (minor, never split)
                    names.append(CompoundFactor(f"f{f}", never_split(m)))
            return ArrayMapping(*names)

        operands = tuple(mapping(v) for v in self.operands)
        results = tuple(mapping(v) for v in self.block.outputs)
        # Shardy infers a factor's size from a whole dimension; the others are stated
        used = set().union(*(_names(m) for m in (*operands, *results)))
        sizes = {**{name: n for name, n in replicated.items() if name not in whole},
                 **{f"f{f}": n for f, n in factors.sizes.items() if f"f{f}" not in whole}}
        # a summed factor in no result: Shardy's reduction factor (the kernel all-reduces)
        in_results = set().union(*(_names(m) for m in results))
        reductions = tuple(f"f{f}" for f in factors.sums
                           if f in usable and f"f{f}" not in in_results)
        # Shardy wants each kind's factors in the order they first appear
        order = list(dict.fromkeys(name for m in (*operands, *results)
                                   for dim in m for name in ((dim,) if isinstance(dim, str)
                                                             else dim)))
        reductions = tuple(sorted(reductions, key=order.index))
        return SdyShardingRule(operands, results,
                               need_replication_factors=tuple(sorted(replicated, key=order.index)),
                               reduction_factors=reductions,
                               **{name: n for name, n in sizes.items() if name in used})

    def _infer_from_operands(self, mesh: Any, arg_shapes: Sequence[Any],
                             result_shape: Any) -> tuple:
        """GSPMD: the results' shardings from the operands' (factor by factor)."""
        axes = self._factor_axes(mesh, [(v, s.sharding) for v, s in zip(self.operands,
                                                                         arg_shapes)])
        if axes is None:
            return tuple(_replicated(mesh, arg_shapes) for _ in self.block.outputs)
        return tuple(NamedSharding(mesh, self._spec(v, axes)) for v in self.block.outputs)

    def _partition(self, mesh: Any, arg_shapes: Sequence[Any], result_shape: Any) -> tuple:
        """The per-device kernel and the shardings it runs at: the factors' mesh axes as the
        operands (then the results) are sharded; anything else is replicated."""
        results = tuple(result_shape)
        placed = [*zip(self.operands, (s.sharding for s in arg_shapes)),
                  *zip(self.block.outputs, (s.sharding for s in results))]
        axes = self._factor_axes(mesh, placed)
        call = self.call
        per_device = lambda *args: tuple(call(args))  # noqa: E731
        if axes:
            try:
                per_device = self._per_device(mesh, axes)
            except UnsupportedBlock:
                axes = None  # cannot compile the shard: run the whole kernel, replicated
            except Exception as error:  # a bug here must cost data movement, not the program
                warn_once(f"dnnfusion: the per-device kernel of block {self.block.id} failed "
                          f"({type(error).__name__}: {error}); it runs whole, replicated")
                axes = None
        if not axes:
            arg_shardings = tuple(_replicated(mesh, arg_shapes) for _ in arg_shapes)
            out_shardings = tuple(_replicated(mesh, arg_shapes) for _ in results)
        else:
            arg_shardings = tuple(NamedSharding(mesh, self._spec(v, axes))
                                  for v in self.operands)
            out_shardings = tuple(NamedSharding(mesh, self._spec(v, axes))
                                  for v in self.block.outputs)

        return mesh, per_device, out_shardings, arg_shardings

    def _per_device(self, mesh: Any, axes: dict[int, tuple[str, ...]]) -> Callable:
        """What one device runs: the block's kernel at the per-device shapes; with a summed
        factor split, the kernel of each phase in turn, the partial sums leaving a phase
        all-reduced (``shard_sums``: a batch mean, a weight gradient, batch statistics)."""
        extents = {f: self._factors.sizes[f] // _axes_size(mesh, a) for f, a in axes.items()}
        summed = [f for f in axes if f in self._factors.sums]
        key = (tuple(sorted(extents.items())), tuple((f, axes[f]) for f in summed))
        with self._lock:
            if key in self._shards:
                return self._shards[key]
            plan = self._factors.sums[summed[0]] if summed else None
            names = axes[summed[0]] if summed else ()
            pieces = [(self.block, None)] if plan is None or len(plan.phases) == 1 else \
                [(sub, None) for sub in phase_blocks(self.block, plan.phases)]
            pieces = [(sub, self.build_shard(sub, self._factors, extents)) for sub, _ in pieces]
            partial = plan.partial if plan else frozenset()
            constants, operands, outputs = self.constants, self.operands, self.block.outputs

            def per_device(*args):
                env = {**constants, **dict(zip(operands, args))}
                for sub, call in pieces:
                    for var, out in zip(sub.outputs, call([env[v] for v in sub.inputs])):
                        env[var] = jax.lax.psum(out, names) if var in partial else out
                return tuple(env[v] for v in outputs)

            self._shards[key] = per_device
            shape = lambda v: shard_shape(v, self._factors, extents)  # noqa: E731
            self.per_device.append((tuple(shape(v) for v in self.operands),
                                    tuple(shape(v) for v in self.block.outputs)))
            return per_device

    def _factor_axes(self, mesh: Any,
                     placed: Sequence[tuple[Var, Any]]) -> dict[int, tuple[str, ...]] | None:
        """Factor → the mesh axes it is split over, read from the first value (in order)
        whose sharding splits it; None where the shardings are not named ones on ``mesh``
        (then nothing is split). A factor whose extent the axes do not divide, or whose axes
        a factor it shares a value with took (one value, two axes split alike: each device
        would hold only the diagonal), stays whole."""
        if getattr(mesh, "empty", True):
            return None
        axes: dict[int, tuple[str, ...]] = {}
        together = self._factors.together()
        for var, sharding in placed:
            if not isinstance(sharding, NamedSharding):
                if sharding is None:
                    continue
                return None
            spec = tuple(sharding.spec) + (None,) * (var.ndim - len(sharding.spec))
            for factor, entry in zip(self._factors.dims(var), spec):
                if factor is None or factor in axes or entry is None:
                    continue
                names = (entry,) if isinstance(entry, str) else tuple(entry)
                size = self._factors.sizes[factor]
                taken = {a for other in together.get(factor, ()) for a in axes.get(other, ())}
                if (not names or taken & set(names) or any(n not in mesh.shape for n in names)
                        or size % _axes_size(mesh, names) or not _usable(size, mesh)):
                    continue
                if factor in self._factors.sums and any(f in self._factors.sums for f in axes):
                    continue  # one summed factor split at a time: its phases are its own
                axes[factor] = names
        return axes

    def _spec(self, var: Var, axes: dict[int, tuple[str, ...]]) -> PartitionSpec:
        return PartitionSpec(*(None if f not in axes else
                               axes[f][0] if len(axes[f]) == 1 else axes[f]
                               for f in self._factors.dims(var)))


def collect_before_partitioning() -> None:
    """A full garbage collection on this (the tracing) thread, where a program runs over
    several devices; the executable calls it once per plan, before its kernels.

    >>> collect_before_partitioning()  # with one device: nothing to do

    The partitioner calls ``partition`` from XLA's compile threads, and Python code there may
    run the cyclic garbage collector; egglog's e-graphs left in reference cycles by the
    rewrite stage must be dropped on the thread that made them, and a collection elsewhere
    prints "EGraph is unsendable" and leaks them. Collecting here first, while tracing,
    leaves none for those threads (about 50 ms, once per plan, only over several devices)."""
    if jax.device_count() > 1:
        gc.collect()


def replay_block(block: Block, args: Sequence[Any]) -> list[Any]:
    """A block's primitives bound one by one (the per-device phase no kernel takes).

    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> g = trace_function(lambda x: x.reshape(2, 2), [jnp.arange(4.0)]).graph
    >>> replay_block(whole_graph_block(g), [jnp.arange(4.0)])[0].tolist()
    [[0.0, 1.0], [2.0, 3.0]]
    """
    env = dict(zip(block.inputs, args))
    for node in block.nodes:
        env.update(zip(node.outputs, node.bind(*[env[v] for v in node.inputs])))
    return [env[v] for v in block.outputs]


def phase_blocks(block: Block, phases: Sequence[Sequence[Node]]) -> list[Block]:
    """The block's phases as blocks: each reads what earlier phases (or the block's inputs)
    computed and hands on what later phases or the block's outputs need.

    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> g = trace_function(lambda x: x - x.sum(0), [jnp.ones((8, 4))]).graph
    >>> block = whole_graph_block(g)
    >>> [(b.ops, len(b.inputs), len(b.outputs))
    ...  for b in phase_blocks(block, [block.nodes[:1], block.nodes[1:]])]
    [(['reduce_sum'], 1, 1), (['broadcast_in_dim', 'sub'], 2, 1)]
    """
    phase_of = {out: k for k, nodes in enumerate(phases) for n in nodes for out in n.outputs}
    needed = set(block.outputs) | {v for k, nodes in enumerate(phases) for n in nodes
                                   for v in n.inputs if phase_of.get(v, k) < k}
    blocks = []
    for k, nodes in enumerate(phases):
        inputs = dict.fromkeys(v for n in nodes for v in n.inputs if phase_of.get(v) != k)
        outputs = [v for n in nodes for v in n.outputs if v in needed]
        if outputs:
            blocks.append(Block(block.id, list(nodes), block.mapping_type, tuple(inputs),
                                tuple(outputs)))
    return blocks


def _names(mapping: ArrayMapping) -> set[str]:
    """Every factor name in one operand's or result's mapping."""
    return {name for dim in mapping for name in ((dim,) if isinstance(dim, str) else dim)}


def _usable(size: int, mesh: Any) -> bool:
    """Whether no axis of ``mesh`` splits a factor of ``size`` into sub-axes: every axis
    divides it or shares no divisor with it."""
    return all(size % n == 0 or math.gcd(size, n) == 1
               for n in getattr(mesh, "shape", {}).values())


def _axes_size(mesh: Any, names: Sequence[str]) -> int:
    return math.prod(mesh.shape[n] for n in names)


def _replicated(mesh: Any, arg_shapes: Sequence[Any]) -> Any:
    """A replicated sharding on the devices the call runs on."""
    if not getattr(mesh, "empty", True):
        return NamedSharding(mesh, PartitionSpec())
    from jax._src.sharding_impls import GSPMDSharding  # no public spelling in jax 0.10.2
    return GSPMDSharding.get_replicated(arg_shapes[0].sharding._device_assignment)


def _batch_without_rule(args, dims, *, call, **_):
    """vmap of a partitioned kernel: the rule is dropped and the body batched as it is (jax
    0.10.2 has no batching rule for custom_partitioning; the FFI call runs per element)."""
    body = jaxpr_as_fun(call)
    outs = jax.vmap(body, in_axes=tuple(dims))(*args)
    return list(outs), [0] * len(outs)


def _register_batching() -> None:
    """Installs ``_batch_without_rule`` unless this jax has a rule of its own."""
    from jax.interpreters import batching
    from jax._src.interpreters.batching import fancy_primitive_batchers  # where jax keeps them
    if custom_partitioning_p not in fancy_primitive_batchers:
        batching.primitive_batchers[custom_partitioning_p] = _batch_without_rule


_register_batching()
