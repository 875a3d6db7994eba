"""Which leading dimensions of a block become its parallel rows loop.

Every stage of a lowered block runs inside one loop over the rows (the leading dimensions its
outputs, and the kept dimensions of its reductions, share); a reduction's partial results then
live in row-local temporaries. Candidates are tried longest first; the lowering falls back to
shorter ones when a stage would read another row's temporary, and to no rows at all, where
each stage parallelises its own outer loop. Without reductions rows only split the work, so
they stop where a row would hold fewer than ``MIN_ROW_ELEMENTS`` (short rows made the row
loop's overhead the cost); a stored concatenate's axis never becomes a row (it is a joined
loop), and a layout transpose may ask for no rows so that the renderer can tile its loops.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> from dnnfusion_jax.fusion.plan import whole_graph_block
    >>> g = trace_function(jax.nn.softmax, [jnp.ones((4, 8, 16))]).graph
    >>> row_candidates(whole_graph_block(g), {"reduce_max", "reduce_sum"})
    [(4, 8), (4,), ()]
"""
from __future__ import annotations

from collections.abc import Collection

import numpy as np

from dnnfusion_jax.fusion.backend import UnsupportedBlock
from dnnfusion_jax.fusion.plan import Block

MIN_PARALLEL_ROWS = 4         # fewer rows than this: parallelise each stage instead
MIN_ROW_ELEMENTS = 1024       # elementwise blocks: shorter rows cost more in loop overhead


def row_candidates(block: Block, reductions: Collection[str],
                   tile_transposes: bool = False) -> list[tuple[int, ...]]:
    """Shared leading extents to try as the rows loop, longest first, ending with none."""
    spaces = [var.shape for var in block.outputs]
    if not spaces:
        raise UnsupportedBlock("the block computes no value anyone reads")
    for node in block.nodes:
        if node.op in reductions:
            operand = node.inputs[0].shape
            first_reduced = min(node.params["axes"])
            spaces.append(operand[:first_reduced])
    common: tuple[int, ...] = ()
    for extents in zip(*spaces):
        if len(set(extents)) != 1:
            break
        common += (extents[0],)
    for node in block.nodes:  # a stored concatenate's axis stays out of the rows: joined loops
        if node.op == "concatenate" and any(v in block.outputs for v in node.outputs):
            common = common[:node.params["dimension"]]
    has_reduction = any(node.op in reductions for node in block.nodes)
    if tile_transposes and not has_reduction and any(
            node.op == "transpose" and node.params["permutation"][-1] != node.out.ndim - 1
            for node in block.nodes):
        return [()]  # a layout transpose: the stages' own loops, which the renderer tiles
    # keep a vectorisable inner loop: rows never take a whole stage space
    shortest = min(len(space) for space in spaces)
    limit = min(len(common), shortest if has_reduction else shortest - 1)
    while (not has_reduction and limit > 1
           and min(int(np.prod(space[limit:])) for space in spaces) < MIN_ROW_ELEMENTS
           and int(np.prod(common[:limit - 1])) >= MIN_PARALLEL_ROWS):
        limit -= 1  # without reductions rows only split the work: keep them long enough
    candidates = [common[:k] for k in range(max(limit, 0), 0, -1)
                  if int(np.prod(common[:k])) >= MIN_PARALLEL_ROWS]
    return candidates + [()]
