"""May a node join a fusion block? Table 3, our two refinements of it, and hard constraints.

Legality only: whether a YELLOW join is worth it is ``profitability``'s question.

Refinements of Table 3 (the paper reasons about ONNX operators; JAX decomposes them):
  * **Parameter adapters** — a broadcast, reshape, transpose or dtype conversion that reads only
    graph inputs and constants — join their consumer's block unconditionally. They compute
    nothing: inside a block they are an index transform of a load (the paper's §5), so fusing
    them can never cost a copy. Without this rule every bias and norm scale is its own kernel.
  * **Reduction after reduction** (Many-to-Many → Many-to-Many, RED in Table 3) is YELLOW when
    both are plain ``reduce_*`` operators. The paper counts Softmax and LayerNorm as single
    Many-to-Many operators; in JAX they are chains of reductions over the same rows, which the
    lowering runs as stages of one kernel with the first result in a row-local temporary.
    Contractions (dot_general, conv) keep Table 3's RED. One-to-Many → reduction keeps it
    too: tried as YELLOW, a causal mask fused into its softmax (1.12-1.34× of jax.jit with
    the cost model deciding, 1.18-1.64× fully fused) lost to the mask in a block of its own
    (1.28-1.68×), 2-core x86-64, 2026-11-21: every stage of the row recomputes the mask.

  * **Parameter broadcasts** — an elementwise operator that broadcasts only parameters (graph
    inputs, constants, or parameter adapters of them: a bias, a norm's scale, a temperature)
    and whose output has the shape of one of its operands is One-to-One, not One-to-Many
    (``node_type``). Every output element reads one element of its main operand and one
    loaded parameter element through an index transform; nothing is recomputed per copy.
    So a scale fuses into the reduction that follows it (``softmax(x * g)``, a scaled layer
    norm: one kernel, as XLA makes them). A *computed* broadcast operand (a mask built from
    iotas, a row statistic) keeps One-to-Many, and One-to-Many → reduction stays RED (above).

Sibling blocks: when a node's producers sit in several blocks, the planner may merge them with
the node (``merge_verdict``). The merged block is the group (the block the node joined, with
its accumulated type) grown towards one more predecessor block, the paper's step 3: Table 3's
cell (sibling's type, group's type), refined as above, and the worse of that and the cell for
the sibling taking the node on its own (which sees how the node reads it, e.g. a broadcast).

Layouts for XLA's GEMMs: a block of only layout operations (reshape, squeeze, expand_dims,
transpose, a broadcast that only inserts unit dimensions) next to a dot_general or
convolution that stays alone (left to XLA) is not worth a copy kernel of its own: XLA folds
a transpose into a GEMM's dimension numbers or output layout and a reshape into a bitcast.
``folds_into`` says when such a block goes to the GEMM's block instead.

Constraints, apart from the table: nodes a backend cannot put in a fused kernel stay alone,
a block's inputs and size are bounded (``Constraints``), and neither a convolution (a windowed
read) nor a gather or dynamic slice (a read at runtime positions, ``INDEXED_OPERAND``) takes
that operand's producer into its block.

Example:
    >>> from dnnfusion_jax.ops.mapping_types import MappingType as M
    >>> from dnnfusion_jax.fusion.fusion_table import Verdict
    >>> join_verdict(M.MANY_TO_MANY, M.MANY_TO_MANY, reductions_only=True)[1] is Verdict.YELLOW
    True
    >>> join_verdict(M.MANY_TO_MANY, M.MANY_TO_MANY, reductions_only=False)[1] is Verdict.RED
    True
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dnnfusion_jax.fusion.fusion_table import Verdict, fuse_verdict
from dnnfusion_jax.frontend.ir import Graph, Node, Var
from dnnfusion_jax.ops.registry import INDEXED_OPERAND
from dnnfusion_jax.ops.mapping_types import (ELEMENTWISE_PRIMITIVES, MappingType,
                                             edge_mapping_type, node_mapping_type)

ADAPTER_PRIMITIVES = frozenset("""broadcast_in_dim reshape squeeze expand_dims transpose rev
    convert_element_type copy""".split())
"""Primitives that only move or re-type elements: an adapter when they read graph inputs."""

LAYOUT_PRIMITIVES = frozenset("reshape squeeze expand_dims transpose broadcast_in_dim copy"
                              .split())
"""Primitives that only lay elements out anew (with ``broadcast_in_dim`` when it only inserts
unit dimensions): what XLA folds into a GEMM's or convolution's layout."""

LAYOUT_ABSORBERS = frozenset({"dot_general", "conv_general_dilated"})
"""Primitives that, left alone (to XLA), take a neighbouring layout block with them."""

PLAIN_REDUCTIONS = frozenset("reduce_sum reduce_max reduce_min reduce_prod reduce_and "
                             "reduce_or".split())

_SEVERITY = {Verdict.GREEN: 0, Verdict.YELLOW: 1, Verdict.RED: 2}


@dataclass(frozen=True)
class Constraints:
    """Limits on one block, kept apart from the type table.

    max_inputs: distinct values a block reads (kernel arguments, live streams per element);
    max_nodes:  operations per block (bounds code size and compile time).
    """

    max_inputs: int = 24
    max_nodes: int = 200


def join_verdict(block_type: MappingType, read_type: MappingType,
                 reductions_only: bool) -> tuple[MappingType, Verdict]:
    """Table 3's cell for a block followed by a node, with the reduction refinement."""
    fused, verdict = fuse_verdict(block_type, read_type)
    if (verdict is Verdict.RED and reductions_only
            and block_type is read_type is MappingType.MANY_TO_MANY):
        return fused, Verdict.YELLOW
    return fused, verdict


class Legality:
    """The legality questions a planner asks about one graph.

    ``fusible(node)`` is the backend's answer (None, or why the node must stay alone).
    """

    def __init__(self, graph: Graph, fusible: Callable[[Node], str | None] | None = None,
                 constraints: Constraints = Constraints()) -> None:
        self.graph = graph
        self.constraints = constraints
        self._fusible = fusible or (lambda node: None)
        self._leaves = set(graph.inputs) | set(graph.constants)
        self._returned = set(graph.outputs)
        self._producer = graph.producers()
        self._consumers = graph.consumers()
        self.alone_reasons: dict[Node, str] = {}

    def node_type(self, node: Node) -> MappingType:
        """The node's mapping type with the parameter-broadcast refinement (module docstring).

        Example (a per-column scale: One-to-Many by shape, One-to-One here):
            >>> import jax.numpy as jnp
            >>> from dnnfusion_jax.frontend.trace import trace_function
            >>> g = trace_function(lambda x, s: x * s, [jnp.ones((4, 8)), jnp.ones(8)]).graph
            >>> [n.op for n in g.nodes]
            ['broadcast_in_dim', 'mul']
            >>> node_mapping_type(g.nodes[1]).label, Legality(g).node_type(g.nodes[1]).label
            ('One-to-Many', 'One-to-One')
        """
        kind = node_mapping_type(node)
        if kind is not MappingType.ONE_TO_MANY or len(node.outputs) != 1:
            return kind
        out = node.outputs[0]
        if (node.op in ELEMENTWISE_PRIMITIVES
                and any(v.shape == out.shape for v in node.inputs)
                and all(self.is_parameter(v) for v in node.inputs if 1 < v.size < out.size)):
            return MappingType.ONE_TO_ONE
        return kind

    def edge_type(self, node: Node, operand: Var) -> MappingType:
        """How ``node`` reads ``operand`` (``edge_mapping_type``), refined as ``node_type``."""
        if self.node_type(node) is MappingType.ONE_TO_ONE:
            return MappingType.ONE_TO_ONE
        return edge_mapping_type(node, operand)

    def is_parameter(self, var: Var) -> bool:
        """A graph input or constant, or what a chain of data-movement operations makes of
        them (a float32 bias cast to bfloat16, then reshaped)."""
        if var in self._leaves:
            return True
        producer = self._producer.get(var)
        if producer is None or producer.op not in ADAPTER_PRIMITIVES or producer.effects:
            return False
        return all(self.is_parameter(v) for v in producer.inputs)

    def must_stay_alone(self, node: Node) -> bool:
        """Opaque nodes, and nodes the backend cannot put in a fused kernel."""
        reason = self._fusible(node)
        if reason:
            self.alone_reasons[node] = reason
        return bool(reason) or node_mapping_type(node) is MappingType.OPAQUE

    def is_adapter(self, node: Node) -> bool:
        """A data-movement node that reads only parameters: graph inputs and constants, or
        what other data movement makes of them (a bias cast to bfloat16, then broadcast)."""
        return (node.op in ADAPTER_PRIMITIVES and not node.effects
                and all(self.is_parameter(v) for v in node.inputs)
                and not any(v in self._returned for v in node.outputs)
                and self._fusible(node) is None)

    def verdict(self, block_nodes: list[Node], block_type: MappingType, node: Node,
                read_type: MappingType) -> tuple[MappingType, Verdict]:
        """Table 3 (refined) for ``node`` joining a block of ``block_nodes``."""
        reductions_only = (node.op in PLAIN_REDUCTIONS and not any(
            node_mapping_type(n) is MappingType.MANY_TO_MANY and n.op not in PLAIN_REDUCTIONS
            for n in block_nodes))
        return join_verdict(block_type, read_type, reductions_only)

    def merge_verdict(self, group_nodes: list[Node], group_type: MappingType,
                      sibling_nodes: list[Node], sibling_type: MappingType, node: Node,
                      read_type: MappingType) -> tuple[MappingType, Verdict]:
        """Table 3 (refined) for a sibling block merging into a group that holds ``node``.

        ``group_nodes`` includes ``node``; ``read_type`` is how the node reads the sibling.

        Example (softmax: exp(x - max) and its sum, each in its own block, meet at div):
            >>> import jax, jax.numpy as jnp
            >>> from dnnfusion_jax.frontend.trace import trace_function
            >>> from dnnfusion_jax.ops.mapping_types import MappingType as M
            >>> g = trace_function(lambda x: jnp.exp(x) / jnp.exp(x).sum(), [jnp.ones(4)]).graph
            >>> [n.op for n in g.nodes]
            ['exp', 'exp', 'reduce_sum', 'div']
            >>> exp, _, total, div = g.nodes
            >>> legal = Legality(g)
            >>> fused, verdict = legal.merge_verdict([exp, div], M.ONE_TO_ONE, [total],
            ...                                      M.MANY_TO_MANY, div, M.ONE_TO_MANY)
            >>> fused.label, verdict.name   # M2M then One-to-Many alone is YELLOW
            ('Many-to-Many', 'YELLOW')
        """
        _, alone = self.verdict(sibling_nodes, sibling_type, node, read_type)
        reductions_only = not any(
            node_mapping_type(n) is MappingType.MANY_TO_MANY and n.op not in PLAIN_REDUCTIONS
            for n in (*group_nodes, *sibling_nodes))
        fused, grown = join_verdict(sibling_type, group_type, reductions_only)
        return fused, max(alone, grown, key=_SEVERITY.__getitem__)

    def folds_into(self, layout_block: list[Node], alone: list[Node]) -> bool:
        """True if ``layout_block`` (only layout operations) should join ``alone``, a block
        holding one dot_general or convolution that must stay alone (XLA runs it), with the
        layouts already folded into it: XLA lays out a GEMM's operands and result for free,
        a copy kernel would not.

        Example (``context.transpose(0, 2, 1, 3).reshape(b, s, d) @ w_o``):
            >>> import jax.numpy as jnp
            >>> from dnnfusion_jax.frontend.trace import trace_function
            >>> f = lambda c, w: c.transpose(1, 0, 2).reshape(4, 32) @ w
            >>> g = trace_function(f, [jnp.ones((2, 4, 16)), jnp.ones((32, 8))]).graph
            >>> [n.op for n in g.nodes]
            ['transpose', 'reshape', 'dot_general']
            >>> Legality(g, lambda n: "XLA" if n.op == "dot_general" else None).folds_into(
            ...     g.nodes[:2], g.nodes[2:])
            True
        """
        absorbers = [n for n in alone if not self._is_layout(n)]
        return (len(absorbers) == 1 and absorbers[0].op in LAYOUT_ABSORBERS
                and self.must_stay_alone(absorbers[0])
                and all(map(self._is_layout, layout_block)))

    @staticmethod
    def _is_layout(node: Node) -> bool:
        return (node.op in LAYOUT_PRIMITIVES and not node.effects
                and node_mapping_type(node) in (MappingType.REORGANIZE, MappingType.SHUFFLE))

    def feeds_alone_absorber(self, node: Node) -> bool:
        """True if ``node`` is a transpose read only by dot_generals or convolutions that stay
        alone (XLA runs them) and that XLA folds into their dimension numbers (a dot's batch
        dimensions stay in place): it should not end its producer's kernel as a strided
        store (``tanh(x).T @ w``: XLA folds the transpose, a fused kernel copies it)."""
        users = self._consumers.get(node.outputs[0], ()) if len(node.outputs) == 1 else ()
        return bool(users) and node.op == "transpose" and not node.effects \
            and node.out not in self._returned \
            and all(u.op in LAYOUT_ABSORBERS and self.must_stay_alone(u)
                    and _keeps_batch_dims(u, node) for u in users)

    def within_constraints(self, block_nodes: list[Node], node: Node) -> bool:
        """True if the block stays within ``constraints`` after adding ``node``, and no
        convolution in it reads its input from inside the block: a convolution reads each
        input element once per window tap, so a fused producer would be recomputed that many
        times (9 per element for 3×3); its producers end their block and it starts one. Nor
        does an indexed read (gather): the kernel reads its operand from memory."""
        if len(block_nodes) + 1 > self.constraints.max_nodes:
            return False
        produced = {out for n in block_nodes for out in n.outputs}
        inputs = {v for n in (*block_nodes, node) for v in n.inputs if v not in produced}
        produced.update(node.outputs)
        if any(n.op == "conv_general_dilated" and n.inputs[0] in produced
               for n in (*block_nodes, node)):
            return False
        if any(n.op in INDEXED_OPERAND and n.inputs[INDEXED_OPERAND[n.op]] in produced
               for n in (*block_nodes, node)):
            return False  # a gather reads its operand at runtime positions, from memory
        return len(inputs) <= self.constraints.max_inputs


def _keeps_batch_dims(user: Node, transpose: Node) -> bool:
    """Does ``transpose`` leave the batch dimensions of the dot_general ``user`` in place
    (where it reads the transpose)? Convolutions fold any permutation."""
    if user.op != "dot_general":
        return True
    perm = transpose.params["permutation"]
    _, batch = user.params["dimension_numbers"]
    return all(perm[d] == d for side, dims in enumerate(batch)
               if user.inputs[side] is transpose.out for d in dims)
