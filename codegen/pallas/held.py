"""Values a Pallas kernel keeps in registers between its stages.

Every value a stage stores to a buffer, or loads from one, is remembered as ``Held``: its
offsets into the buffer and the lanes of the stage that made it. A later stage loading from
that buffer uses the value instead when it holds, lane for lane, what the load would read
(softmax's row maximum and exponentials, layer norm's row): then no scratch, no store and no
barrier. ``reading`` decides: the axes the held offsets and value use map one to one onto this
stage's axes of the same extent and padding (the grid axis onto the grid axis), in the same
order, and the held offsets with its axes renamed are the load's.

Example:
    >>> from codegen.kernel.index import Index, LoopVar
    >>> r, a, b = LoopVar("r", 4), LoopVar("k0", 6), LoopVar("k1", 6)
    >>> row = Index.var(r) * 6
    >>> held = Held(row + Index.var(a), "v3", frozenset({r, a}), {r: (0, 4, 4), a: (1, 6, 8)})
    >>> ours = {r: (0, 4, 4), b: (1, 6, 8)}
    >>> {str(v): str(w) for v, w in reading(held, row + Index.var(b), ours, point=r).items()}
    {'r': 'r', 'k0': 'k1'}
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from codegen.kernel.guarded_loads import index_vars
from codegen.kernel.index import Index, LoopVar, substitute

Lanes = dict[LoopVar, tuple[int, int, int]]
"""A stage's axes, each with its (position, extent, padded size) in the stage's tile."""


@dataclass(frozen=True, eq=False)
class Held:
    """``value`` holds a buffer at ``offsets`` over the lanes of the stage that made it; it
    varies along ``varies`` (size 1 along the rest of ``lanes``)."""

    offsets: Index
    value: str
    varies: frozenset[LoopVar]
    lanes: Lanes

    def position(self, var: LoopVar) -> int:
        return self.lanes[var][0]

    def shape(self) -> tuple[int, ...]:
        """The value's tile shape where it was made."""
        return tuple(self.lanes[v][2] if v in self.varies else 1
                     for v in sorted(self.lanes, key=self.position))


def reading(held: Held, offsets: Index, ours: Lanes,
            point: LoopVar) -> dict[LoopVar, LoopVar] | None:
    """How ``held``'s axes map onto ``ours`` (a stage's axes; ``point`` is the grid axis) when
    it holds, lane for lane, what a load at ``offsets`` would read there; None when it does
    not. The first such map is taken."""
    varies = sorted(held.varies, key=held.position)
    needed = sorted(index_vars(held.offsets) | set(varies), key=held.position)
    for mapping in _axis_mappings(needed, held.lanes, ours, point):
        renamed = {v: Index.var(w) for v, w in mapping.items()}
        positions = [ours[mapping[v]][0] for v in varies]
        if substitute(held.offsets, renamed) == offsets and positions == sorted(positions):
            return mapping
    return None


def _axis_mappings(needed: list[LoopVar], lanes: Lanes, ours: Lanes,
                   point: LoopVar) -> Iterator[dict[LoopVar, LoopVar]]:
    """Every one-to-one map of the producer axes ``needed`` onto our axes of the same extent
    and padding (the grid axis only onto the grid axis), in our axes' order."""
    choices = []
    for var in needed:
        _, extent, size = lanes[var]
        choices.append([ours_var for ours_var, (_, our_extent, our_size) in ours.items()
                        if (our_extent, our_size) == (extent, size)
                        and (ours_var == point) == (var == point)])
    for picked in itertools.product(*choices):
        if len(set(picked)) == len(picked):
            yield dict(zip(needed, picked))
