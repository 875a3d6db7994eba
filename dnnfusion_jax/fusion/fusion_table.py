"""The paper's Table 3: may a producer of one mapping type fuse with a consumer of another?

Each cell gives the mapping type of the fused pair and a verdict: GREEN (always legal and
profitable: fuse), YELLOW (legal; fuse only if measured faster), RED (do not fuse). This is
legality only; profitability (the latency measurements behind YELLOW) lives with the planner.

The paper's prose fixes 20 cells: One-to-One with anything is GREEN in either order;
Reorganize or Shuffle with One-to-Many or Many-to-Many (either order) is YELLOW; Many-to-Many
then One-to-Many is YELLOW; One-to-Many then Many-to-Many and Many-to-Many then Many-to-Many
are RED. Our reading of the five cells it leaves open:
  * One-to-Many → One-to-Many: YELLOW, fused type One-to-Many. A broadcast of a broadcast is
    legal as one composed index map, but it may recompute the producer for every copy, so it
    must earn its place by measurement.
  * Reorganize/Shuffle followed by Reorganize/Shuffle: GREEN. Both are index remaps, so the
    pair composes into one remap and never costs a copy. The fused type is Reorganize when
    either side is a Reorganize (the result is addressed linearly), Shuffle otherwise.
Opaque operators never fuse with anything.

Example:
    >>> from dnnfusion_jax.ops.mapping_types import MappingType as M
    >>> fused_type, verdict = TABLE3[M.ONE_TO_ONE, M.MANY_TO_MANY]
    >>> fused_type.label, verdict.name
    ('Many-to-Many', 'GREEN')
    >>> fuse_verdict(M.MANY_TO_MANY, M.MANY_TO_MANY)[1].name
    'RED'
"""
from __future__ import annotations

import enum

from dnnfusion_jax.ops.mapping_types import MappingType


class Verdict(enum.Enum):
    """How a pair of mapping types may fuse."""

    GREEN = "fuse"        # always legal and profitable
    YELLOW = "measure"    # legal; fuse only when profiling says the fused kernel is faster
    RED = "never"         # illegal or never profitable


_O2O, _O2M, _M2M = MappingType.ONE_TO_ONE, MappingType.ONE_TO_MANY, MappingType.MANY_TO_MANY
_REO, _SHU = MappingType.REORGANIZE, MappingType.SHUFFLE
_G, _Y, _R = Verdict.GREEN, Verdict.YELLOW, Verdict.RED

# (first = producer, second = consumer) → (fused mapping type, verdict)
TABLE3: dict[tuple[MappingType, MappingType], tuple[MappingType, Verdict]] = {
    (_O2O, _O2O): (_O2O, _G), (_O2O, _O2M): (_O2M, _G), (_O2O, _M2M): (_M2M, _G),
    (_O2O, _REO): (_REO, _G), (_O2O, _SHU): (_SHU, _G),

    (_O2M, _O2O): (_O2M, _G), (_O2M, _O2M): (_O2M, _Y), (_O2M, _M2M): (_M2M, _R),
    (_O2M, _REO): (_O2M, _Y), (_O2M, _SHU): (_O2M, _Y),

    (_M2M, _O2O): (_M2M, _G), (_M2M, _O2M): (_M2M, _Y), (_M2M, _M2M): (_M2M, _R),
    (_M2M, _REO): (_M2M, _Y), (_M2M, _SHU): (_M2M, _Y),

    (_REO, _O2O): (_REO, _G), (_REO, _O2M): (_O2M, _Y), (_REO, _M2M): (_M2M, _Y),
    (_REO, _REO): (_REO, _G), (_REO, _SHU): (_REO, _G),

    (_SHU, _O2O): (_SHU, _G), (_SHU, _O2M): (_O2M, _Y), (_SHU, _M2M): (_M2M, _Y),
    (_SHU, _REO): (_REO, _G), (_SHU, _SHU): (_SHU, _G),
}


def fuse_verdict(first: MappingType, second: MappingType) -> tuple[MappingType, Verdict]:
    """Table 3's cell for a producer type followed by a consumer type (Opaque: never fuse).

    Example:
        >>> fuse_verdict(MappingType.OPAQUE, MappingType.ONE_TO_ONE)[1].name
        'RED'
    """
    if MappingType.OPAQUE in (first, second):
        return MappingType.OPAQUE, Verdict.RED
    return TABLE3[first, second]
