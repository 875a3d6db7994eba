"""Horizontal fusion: independent small elementwise blocks share one kernel.

An optimizer step updates every parameter with its own elementwise chain (Adam: two moments,
a bias correction, the update), and a training step's backward ends in many small ones (bias
gradients, scales). Table 3 fuses along edges, so each chain is a block of its own: a Haiku
transformer's Adam step had 56 blocks (44 with this pass), many of them a few thousand
elements. Each block is a kernel launch. Blocks with no path
between them may run in one kernel one after the other (a stage each: nothing is recomputed,
nothing changes but the launches), which is what this pass does for One-to-One blocks whose
outputs are all at most ``MAX_ELEMENTS``: it merges each into the first earlier candidate
that is independent of it in both directions and stays within the block constraints.

Legality is the block graph's: a merge must keep it acyclic (``BlockBuilder._reaches`` both
ways). Profitability is the size limit: large blocks gain nothing from sharing a launch.

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.dnnfusion_planner import DnnFusionPlanner
    >>> update = lambda p, g, q, h: (p - 0.1 * jnp.tanh(g), q - 0.1 * jnp.tanh(h))
    >>> g = trace_function(update, [jnp.ones(8), jnp.ones(8), jnp.ones(4), jnp.ones(4)]).graph
    >>> len(DnnFusionPlanner().plan(g).blocks)
    1
"""
from __future__ import annotations

from dnnfusion_jax.fusion.legality import Constraints, Legality
from dnnfusion_jax.fusion.plan import BlockBuilder
from dnnfusion_jax.ops.mapping_types import MappingType

MAX_ELEMENTS = 1 << 14
"""Largest output (elements) of a block merged horizontally: small enough that the launch is
a noticeable part of the block's cost. A chosen bound, not a measured one: on the library
training steps (2026-12-04) merging was neutral within this machine's noise, and it saves
launches only."""

MAX_INPUTS = 64
"""Arguments of a horizontally merged kernel: its stages read their inputs one after another,
so the elementwise limit on live streams (``Constraints.max_inputs``) does not apply; this
bounds the call's argument list."""

MERGEABLE = frozenset({MappingType.ONE_TO_ONE, MappingType.REORGANIZE})
"""Block types merged: their kernels are one store stage, whose rows and tiling do not depend
on what else the kernel computes."""


def merge_independent(builder: BlockBuilder, legality: Legality, closed: set[int],
                      constraints: Constraints) -> int:
    """Merges independent small elementwise blocks (module docstring); returns how many
    blocks were merged away."""
    groups: list[int] = []  # blocks that take others, in plan order
    merged = 0
    for block, members in enumerate(builder.members):
        if not _mergeable(builder, legality, closed, block):
            continue
        for target in groups:
            if _fits(builder, target, block, constraints) \
                    and not builder._reaches(target, block) \
                    and not builder._reaches(block, target):
                builder.merge(target, block, builder.types[target])
                merged += 1
                break
        else:
            groups.append(block)
    return merged


def _mergeable(builder: BlockBuilder, legality: Legality, closed: set[int], block: int) -> bool:
    members = builder.members[block]
    return (bool(members) and block not in closed and builder.types[block] in MERGEABLE
            and not any(node.effects or legality.must_stay_alone(node) for node in members)
            and all(out.size <= MAX_ELEMENTS for node in members for out in node.outputs))


def _fits(builder: BlockBuilder, target: int, block: int, constraints: Constraints) -> bool:
    nodes = builder.members[target] + builder.members[block]
    produced = {out for node in nodes for out in node.outputs}
    inputs = {v for node in nodes for v in node.inputs if v not in produced}
    return len(nodes) <= constraints.max_nodes and len(inputs) <= MAX_INPUTS
