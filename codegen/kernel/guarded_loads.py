"""Which predicated loads are selected for a whole run of the innermost loop, or for none of it.

Pad, concatenate and a convolution's padded window lower to predicated reads: a ``select``
whose branches load from where the element would be, with an index that may leave the buffer
in the unselected branch (``c_render`` clamps such loads so that they cannot fault). Clamping
every lane's index turns a contiguous vector load into a gather: a 64-channel ``pad`` of H and
W ran at 0.44x of XLA that way. When no predicate on the way to a load depends on the
innermost loop, all of that loop's lanes take the same branch: either the load is used and
every lane's index is inside the buffer (the lowering only reads out of bounds in an
unselected branch), or it is not used at all. Then clamping the part of the index that does
not depend on the innermost loop, to a range that leaves room for the whole run, is exact when
used and safe when not, and the load stays contiguous.

Example:
    >>> from codegen.kernel.index import Index, LoopVar
    >>> from codegen.kernel.kernel_ir import Expr
    >>> h, c = LoopVar("h", 8), LoopVar("c", 16)
    >>> inside = Expr("lt", (Expr("index", (), "i64", (Index.var(h) + -1,)),
    ...                      Expr("const", (), "i64", (6,))), "bool")
    >>> load = Expr("load", (), "f32", ("in0", Index.var(h) * 16 + Index.var(c) + -16))
    >>> zero = Expr("const", (), "f32", (0.0,))
    >>> uniform_loads([Expr("select", (inside, load, zero), "f32")], c) == {load}
    True
    >>> uniform_loads([Expr("select", (inside, load, zero), "f32")], h)  # h decides
    set()
"""
from __future__ import annotations

from codegen.kernel.index import Div, Index, LoopVar, Mod
from codegen.kernel.kernel_ir import Expr, expr_nodes


def index_vars(index: Index) -> set[LoopVar]:
    """Every loop variable an index depends on, inside divisions and remainders too."""
    found: set[LoopVar] = set()
    for atom, _ in index.terms:
        if isinstance(atom, LoopVar):
            found.add(atom)
        elif isinstance(atom, (Div, Mod)):
            found |= index_vars(atom.index)
    return found


def affine_coefficient(index: Index, var: LoopVar) -> int | None:
    """``var``'s coefficient in ``index`` (0 when absent), or None when ``var`` also appears
    inside a division or remainder, where a step of ``var`` is no fixed step of the index."""
    for atom, _ in index.terms:
        if isinstance(atom, (Div, Mod)) and var in index_vars(atom.index):
            return None
    return dict(index.terms).get(var, 0)


def expr_vars(expr: Expr) -> set[LoopVar]:
    """Every loop variable an expression depends on: through its index expressions and the
    indices of the values it loads (a data-dependent predicate depends on where it reads)."""
    found: set[LoopVar] = set()
    for node in expr_nodes([expr]):
        if node.op == "index":
            found |= index_vars(node.attrs[0])
        elif node.op == "load":
            found |= index_vars(node.attrs[1])
    return found


def uniform_loads(roots: list[Expr], inner: LoopVar) -> set[Expr]:
    """Loads of ``roots`` that every path from a root reaches through a branch of some
    ``select``, with no ``select`` on any path whose predicate depends on ``inner``."""
    nodes = expr_nodes(roots)
    # per node, over every path from a root: "passed a select branch", "no inner predicate"
    branched: dict[Expr, bool] = {}
    steady: dict[Expr, bool] = {}
    for root in roots:
        branched[root], steady[root] = False, True
    for node in reversed(nodes):  # users before operands
        if node not in branched:
            continue
        for position, arg in enumerate(node.args):
            through_branch = node.op == "select" and position > 0
            edge_branched = branched[node] or through_branch
            edge_steady = steady[node] and not (
                through_branch and inner in expr_vars(node.args[0]))
            branched[arg] = branched.get(arg, True) and edge_branched
            steady[arg] = steady.get(arg, True) and edge_steady
    return {node for node in nodes
            if node.op == "load" and branched.get(node) and steady.get(node)}
