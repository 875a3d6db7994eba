"""The DNNFusion planner: Table 3 (refined, ``legality``) plus profitability for YELLOW cells.

Nodes are visited in topological order, so each block grows towards its successors as soon as
they are ready (the paper's step 2). A node joins the first producer block where the refined
Table 3 says GREEN, or YELLOW and ``profitability`` says the fused kernel is faster, provided
the block graph stays acyclic and the block within its ``Constraints``; otherwise it starts
(seeds) a block of its own. The node's other producer blocks then merge into that block where
the grown block is legal too (``Legality.merge_verdict``: the sibling's type followed by the
block's accumulated type), acyclic (``BlockBuilder.can_join``: no path from the sibling through
another block back to the node), within the constraints, and, if YELLOW, profitable: the two
branches of ``gelu(x, approximate=False)`` meet at one multiply and become one kernel.
Growth towards predecessors (step 3) is what parameter adapters and sibling merges give: a
broadcast or reshape of a weight waits until its consumer has a block and then joins that
block in front of it (an adapter shared by several consumers is first copied per consumer,
because inside a kernel it is only an index transform). Nodes the backend cannot fuse (a GEMM
for the C backend) and Opaque nodes get blocks of their own. Layouts XLA folds into such a
GEMM or convolution (a transpose it reads, a block of only reshapes and transposes next to it)
go to that block, to XLA, rather than into a copy kernel (``Legality.folds_into``). Last,
independent small elementwise blocks share a kernel (``horizontal.py``: an optimizer's
per-parameter updates).

Seed order. The paper seeds from the unfused One-to-One operator with the smallest
intermediate result and grows from there; we keep the topological sweep, because with sibling
merging it builds the same blocks up to where a cut falls. Every node is decided once all its
producers are placed, joins one of them and absorbs every other one that may legally share a
kernel with it, so a region of legal, acyclic joins ends as one block whichever node seeded
it (up to the size constraints, which cut it where they bind). What a seed order changes is
the side of an unfusable boundary an operator lands on: in Many-to-Many → One-to-One →
Many-to-Many (the two Many-to-Many not fusible), the sweep makes the One-to-One the first
block's epilogue, a seed at it would make it the second block's prologue: the same number of
blocks and of intermediates, of the same size (a One-to-One output is as large as its input).
We have not measured a seed-order variant; the argument is why we did not expect a gain.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> def layer_norm(x, g, b):
    ...     m = x.mean(-1, keepdims=True)
    ...     v = ((x - m) ** 2).mean(-1, keepdims=True)
    ...     return (x - m) * jax.lax.rsqrt(v + 1e-5) * g + b
    >>> g = trace_function(layer_norm, [jnp.ones((512, 768)), jnp.ones(768), jnp.ones(768)]).graph
    >>> len(DnnFusionPlanner().plan(g).blocks)
    1
    >>> gelu = lambda x: jax.nn.gelu(x, approximate=False)  # 0.5 * x and erfc(...) merge
    >>> len(DnnFusionPlanner().plan(trace_function(gelu, [jnp.ones((4, 8))]).graph).blocks)
    1
"""
from __future__ import annotations

from collections.abc import Callable

from dnnfusion_jax.fusion.fusion_table import Verdict
from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.fusion.horizontal import merge_independent
from dnnfusion_jax.fusion.legality import Constraints, Legality
from dnnfusion_jax.ops.mapping_types import MappingType, node_mapping_type
from dnnfusion_jax.fusion.plan import BlockBuilder, FusionPlan
from dnnfusion_jax.fusion.profitability import CostModel, Profitability


class DnnFusionPlanner:
    """Plans with the refined Table 3; YELLOW cells go to ``profitability``.

    fusible:       backend capability, ``node -> None | reason it must stay alone``;
    profitability: a factory ``graph -> Profitability`` (default: the static cost model).
    """

    name = "dnnfusion"

    def __init__(self, fusible: Callable[[Node], str | None] | None = None,
                 profitability: Callable[[Graph], Profitability] | None = None,
                 constraints: Constraints = Constraints()) -> None:
        self.fusible = fusible
        self.profitability = profitability or CostModel
        self.constraints = constraints

    def plan(self, graph: Graph) -> FusionPlan:
        graph = copy_shared_adapters(graph, Legality(graph, self.fusible))
        legality = Legality(graph, self.fusible, self.constraints)
        profit = self.profitability(graph)
        builder = BlockBuilder(graph)
        producer = graph.producers()
        position = {n: i for i, n in enumerate(graph.nodes)}
        waiting: set[Node] = set()
        decisions = {"green": 0, "yellow_fused": 0, "yellow_apart": 0, "merged": 0}
        closed: set[int] = set()  # blocks of nodes that stay alone

        for node in graph.nodes:
            if legality.is_adapter(node):
                waiting.add(node)  # joins its consumer's block (growth to predecessors)
                continue
            adapters = _waiting_chain(node, producer, waiting, position)
            node_type = legality.node_type(node)
            alone = legality.must_stay_alone(node)
            apart = alone or legality.feeds_alone_absorber(node)  # XLA folds it in a GEMM
            target = None if apart else self._choose_block(
                builder, legality, profit, node, node_type, decisions, closed)
            block = self._place(builder, node, node_type, target, adapters)
            waiting.difference_update(adapters)
            if alone:
                closed.add(block)
        for adapter in graph.nodes:  # adapters nobody consumed (outputs of dead code)
            if adapter in waiting:
                builder.new_block(adapter, node_mapping_type(adapter))
        decisions["layout_to_xla"] = self._fold_layouts(builder, legality, closed)
        decisions["horizontal"] = merge_independent(builder, legality, closed,
                                                    self.constraints)
        plan = builder.finish(self.name)
        plan.notes.update({k: str(v) for k, v in decisions.items()})
        plan.notes.update({f"alone: {n.op}": why for n, why in legality.alone_reasons.items()})
        return plan

    @staticmethod
    def _fold_layouts(builder: BlockBuilder, legality: Legality, closed: set[int]) -> int:
        """Moves each block of only layout operations into the GEMM or convolution block that
        stays alone next to it (``Legality.folds_into``): into the one that alone consumes
        its results (an operand layout), else the one that alone produces its inputs (a
        result layout). With one neighbour on that side the merge cannot close a cycle.
        Returns how many blocks moved."""
        consumers = builder.graph.consumers()
        moved = 0
        for block, members in enumerate(builder.members):
            if not members or block in closed:
                continue
            inside = {out for n in members for out in n.outputs}
            succs = {builder.block_of[user] for out in inside
                     for user in consumers.get(out, ())} - {block}
            preds = {b for n in members for b in builder.producer_blocks(n)} - {block}
            for side in (succs, preds):
                if len(side) == 1 and (target := next(iter(side))) in closed \
                        and legality.folds_into(members, builder.members[target]):
                    builder.merge(target, block, builder.types[target])
                    moved += 1
                    break
        return moved

    @staticmethod
    def _place(builder: BlockBuilder, node: Node, node_type: MappingType,
               target: tuple[int, MappingType, list[int]] | None, adapters: list[Node]) -> int:
        """Merges the target's sibling blocks into it, then adds the node's waiting adapters
        and the node; without a target they seed a new block."""
        adapters = list(dict.fromkeys(adapters))
        if node_type is MappingType.OPAQUE:  # an Opaque node is alone, without its adapters
            for adapter in adapters:
                builder.new_block(adapter, node_mapping_type(adapter))
            adapters = []
        queue = [*adapters, node]
        if target is None:
            block, fused_type = builder.new_block(queue.pop(0), node_type), node_type
        else:
            block, fused_type, siblings = target
            for sibling in siblings:
                builder.merge(block, sibling, fused_type)
        for member in queue:
            builder.join(block, fused_type, member)
        return block

    def _choose_block(self, builder: BlockBuilder, legality: Legality, profit: Profitability,
                      node: Node, node_type: MappingType, decisions: dict[str, int],
                      closed: set[int]) -> tuple[int, MappingType, list[int]] | None:
        """(block the node joins, accumulated type, sibling blocks merged into it), or None.

        Every producer block that could take the node on its own is a candidate (``can_join``
        also makes candidates independent of each other, so merging them is acyclic). The
        first one that is legal and, if YELLOW, profitable takes the node; the others then
        merge into it one by one where Table 3 allows the grown group (``merge_verdict``),
        the constraints hold and, if YELLOW, ``profitability`` agrees.
        """
        candidates = []
        for block in builder.producer_blocks(node):
            if block in closed or not builder.can_join(block, node):
                continue
            values = builder.values_from(block, node)
            read_type = max(legality.edge_type(node, v) for v in values)
            candidates.append((block, read_type))
        target = None
        for k, (block, read_type) in enumerate(candidates):
            members = builder.members[block]
            fused_type, verdict = legality.verdict(members, builder.types[block], node,
                                                   read_type)
            if self._accept(verdict, members, [node], legality, profit, node, decisions):
                target = block, fused_type
                break
        if target is None:
            return None
        block, fused_type = target
        # Siblings are independent of the group, so sibling-then-group is a topological order
        # (profitability may compile these node lists); the node stays last.
        group, siblings = [*builder.members[block], node], []
        for other, read_type in candidates[k + 1:]:
            members = builder.members[other]
            merged_type, verdict = legality.merge_verdict(group, fused_type, members,
                                                          builder.types[other], node, read_type)
            if self._accept(verdict, members, group, legality, profit, node, decisions):
                group, fused_type = [*members, *group], merged_type
                siblings.append(other)
                decisions["merged"] += 1
        return block, fused_type, siblings

    @staticmethod
    def _accept(verdict: Verdict, block: list[Node], candidate: list[Node], legality: Legality,
                profit: Profitability, node: Node, decisions: dict[str, int]) -> bool:
        """Legal (not RED), within the constraints, and GREEN or profitable: ``block`` then
        ``candidate`` (topologically ordered) fused into one kernel, with ``node`` among them."""
        if verdict is Verdict.RED:
            return False
        nodes = [n for n in (*block, *candidate) if n is not node]
        if not legality.within_constraints(nodes, node):
            return False
        if verdict is Verdict.YELLOW:
            if not profit.fuse_yellow(block, candidate):
                decisions["yellow_apart"] += 1
                return False
            decisions["yellow_fused"] += 1
        else:
            decisions["green"] += 1
        return True


def _waiting_chain(node: Node, producer: dict[Var, Node], waiting: set[Node],
                   position: dict[Node, int]) -> list[Node]:
    """The waiting adapters ``node`` reads, directly or through other waiting adapters (a cast
    then a broadcast of a parameter), in graph order."""
    found: set[Node] = set()
    stack = [producer[v] for v in node.inputs if v in producer and producer[v] in waiting]
    while stack:
        adapter = stack.pop()
        if adapter in found:
            continue
        found.add(adapter)
        stack.extend(producer[v] for v in adapter.inputs
                     if v in producer and producer[v] in waiting)
    return sorted(found, key=position.__getitem__)


def _live_nodes(graph: Graph) -> set[int]:
    """Ids of the nodes whose results reach an output, and of effectful nodes."""
    producers = graph.producers()
    live: set[int] = set()
    stack = [*graph.outputs, *(v for n in graph.nodes if n.effects for v in n.outputs)]
    while stack:
        node = producers.get(stack.pop())
        if node is not None and id(node) not in live:
            live.add(id(node))
            stack.extend(node.inputs)
    return live


def copy_shared_adapters(graph: Graph, legality: Legality) -> Graph:
    """A graph where every parameter adapter, and every layout read only by GEMMs that XLA
    runs, has exactly one consuming node.

    An adapter read by several nodes is copied once per extra consumer (a reshape or broadcast
    of a weight costs nothing inside a kernel, but shared it would be a kernel of its own). So
    is a transpose that several of XLA's GEMMs read (a gradient ``dy.T`` for both ``dx`` and
    ``dW``): each GEMM then folds its own copy into its layout, where one shared copy would be
    a copy kernel. Consumers whose results nobody reads (dead code, kept when rewriting is off)
    get no copy: it would be a block of its own.
    """
    consumers = graph.consumers()
    live = _live_nodes(graph)
    copies: dict[tuple[Var, Node], Var] = {}
    nodes: list[Node] = []
    extra: dict[Node, list[Node]] = {}
    for node in graph.nodes:
        if not (legality.is_adapter(node) or legality.feeds_alone_absorber(node)):
            continue
        users = [user for user in consumers.get(node.out, ()) if id(user) in live]
        if len(users) > 1:
            for user in users[1:]:
                clone_out = Var(node.out.shape, node.out.dtype, node.out.weak_type)
                extra.setdefault(user, []).append(
                    Node(node.primitive, node.inputs, (clone_out,), node.params))
                copies[node.out, user] = clone_out
    if not copies:
        return graph
    for node in graph.nodes:
        new_inputs = tuple(copies.get((v, node), v) for v in node.inputs)
        nodes.extend(extra.get(node, []))
        nodes.append(node if new_inputs == node.inputs else
                     Node(node.primitive, new_inputs, node.outputs, node.params, node.effects))
    return graph.replace(nodes)
