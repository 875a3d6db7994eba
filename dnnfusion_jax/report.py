"""The explain report: what the optimiser did to one function at one signature.

``summary()`` gives the figures as a dict, ``str(report)`` a readable table (``format(verbose=
True)`` adds why each block is left to XLA), ``to_dot()`` the graph in Graphviz DOT, one
coloured cluster per fusion block labelled by mapping type.

One vocabulary: every block is a "fused kernel (c)" / "fused kernel (pallas)", or "left to
XLA" with a reason (``block_reasons``); the reasons are summarised with counts. "Opaque" is
only a primitive that dnnfusion does not know.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import dnnfusion_jax as dnnfusion
    >>> report = dnnfusion.explain(lambda x: jax.nn.softmax(x), jnp.ones((4, 8)))
    >>> summary = report.summary()
    >>> summary["backend"] in ("c", "xla"), summary["blocks"] < summary["jaxpr_ops"]
    (True, True)
    >>> report.to_dot().startswith("digraph")
    True
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from dnnfusion_jax.loops import LOOP_BODIES, hoisted_kernel, loop_bodies_of
from dnnfusion_jax.ops.cost import total_flops
from dnnfusion_jax.ops.mapping_types import MappingType, node_mapping_type

if TYPE_CHECKING:
    from dnnfusion_jax.fusion.backend import Kernel
    from dnnfusion_jax.pipeline import OptimizedFunction

_NOUNS = {"dot_general": "GEMM", "conv_general_dilated": "convolution"}
"""What a block left to XLA for ``op: reason`` is called in the summary ("8 GEMMs: ...")."""

SUMMARY_KEYS = ("jaxpr_ops", "ops_after_rewrite", "flops_before", "flops_after", "rules_fired",
                "blocks", "block_types", "opaque_primitives", "intermediate_bytes", "backend",
                "egraph_nodes", "saturation_stop")

# One fill colour per mapping type (ColorBrewer Pastel1), so a picture reads like Table 3.
_COLOURS = {
    MappingType.ONE_TO_ONE: "#ccebc5", MappingType.REORGANIZE: "#fed9a6",
    MappingType.SHUFFLE: "#ffffcc", MappingType.ONE_TO_MANY: "#b3cde3",
    MappingType.MANY_TO_MANY: "#fbb4ae", MappingType.OPAQUE: "#dddddd",
}


class Report:
    """Figures, blocks and timings of one optimisation."""

    def __init__(self, optimized: OptimizedFunction) -> None:
        self.optimized = optimized
        self.plan = optimized.plan
        self.graph = optimized.graph

    def summary(self) -> dict[str, Any]:
        """The figures as a dict (keys in ``SUMMARY_KEYS``, then timings and fallbacks).

        ``blocks`` counts executed kernels, an Opaque node counting one;
        ``intermediate_bytes`` sums values written by one block and read by another.
        """
        opt = self.optimized
        opaque = sorted({node.op for node in self.graph.nodes  # loops are reported as loops
                         if node_mapping_type(node) is MappingType.OPAQUE
                         and node.op not in LOOP_BODIES and not hoisted_kernel(node)})
        return {
            "jaxpr_ops": opt.traced.jaxpr_ops,
            "ops_after_rewrite": len(self.graph.nodes),
            "flops_before": total_flops(opt.traced.graph.nodes),
            "flops_after": total_flops(self.graph.nodes),
            "rules_fired": dict(sorted(opt.rules_fired.items())),
            "blocks": len(self.plan.blocks),
            "block_types": dict(sorted(self.plan.block_types().items())),
            "opaque_primitives": opaque,
            "intermediate_bytes": self.plan.intermediate_bytes(),
            "backend": opt.backend,
            "egraph_nodes": opt.rewrite_stats.egraph_nodes,
            "saturation_stop": opt.rewrite_stats.stop,
            "egraph_iterations": opt.rewrite_stats.iterations,
            "rewrite_kept_original": opt.rewrite_stats.kept_original,
            "planner": self.plan.planner,
            "fallback_blocks": [{"block": block.id, "reason": reason}
                                for block, reason in opt.executable.fallbacks()],
            "fused_kernels": sum(1 for k in opt.executable.kernels if k.backend != "xla"),
            "left_to_xla": summarize_reasons(self.block_reasons().values()),
            "internal_error": opt.internal_error,
            "loops": [body.summary() for body in opt.loop_bodies],
            "guarded_rewrites": [str(rewrite) for rewrite in opt.rewrite_stats.guarded],
            # shapes each kernel runs at on one device, where XLA's partitioner split it
            "per_device_shapes": {k.block.id: [list(outs) for _, outs in k.per_device]
                                  for k in opt.executable.kernels if k.per_device},
            **{key: round(value, 6) for key, value in opt.timings.items()},
        }

    def block_reasons(self) -> dict[int, str]:
        """Block id → why the block is left to XLA, for every block that is not a fused kernel.

        Example:
            >>> import jax.numpy as jnp
            >>> import dnnfusion_jax as dnnfusion
            >>> report = dnnfusion.explain(lambda x: jnp.sort(jnp.exp(x)), jnp.ones(8))
            >>> list(report.block_reasons().values())
            ['primitive sort is unknown to dnnfusion (opaque)']
        """
        return {kernel.block.id: reason for kernel in self.optimized.executable.kernels
                if (reason := self._reason(kernel))}

    def _reason(self, kernel: Kernel) -> str | None:
        if kernel.backend != "xla":
            return None
        block = kernel.block
        bodies = self._bodies(block)
        if bodies:
            kernels = sum(b.summary()["fused_kernels"] for b in bodies)
            what = "the branch" if block.nodes[0].op == "cond" else "the loop"
            return (f"{block.nodes[0].op}: XLA runs {what}; its "
                    f"{'body runs' if len(bodies) == 1 else 'bodies run'} {kernels} fused "
                    f"kernel{'' if kernels == 1 else 's'} (plans below it)")
        if block.nodes[0].op == "cond" and self.optimized.rewrite_stats.guarded:
            return ("cond: a guarded rewrite's check picks its fast form or the original "
                    "(listed above); XLA runs the branch")
        if all(map(hoisted_kernel, block.nodes)):
            return "a fused kernel of a loop body that reads only the loop's constants, hoisted"
        if block.mapping_type is MappingType.OPAQUE:
            ops = sorted({n.op for n in block.nodes
                          if node_mapping_type(n) is MappingType.OPAQUE})
            return f"primitive {', '.join(ops)} is unknown to dnnfusion (opaque)"
        if kernel.fallback_reason:
            return kernel.fallback_reason
        if self.optimized.internal_error:
            return "the function ran unfused: " + self.optimized.internal_error.split("\n")[0]
        return "the xla backend was chosen"

    def __str__(self) -> str:
        return self.format()

    def format(self, verbose: bool = False) -> str:
        """The text report; ``verbose`` adds, under each block left to XLA, the reason."""
        s = self.summary()
        rate = s["jaxpr_ops"] / max(s["blocks"], 1)
        ran_unfused = s["internal_error"] is not None
        lines = [
            f"dnnfusion report for {self.optimized.name}: backend {s['backend']}, "
            f"planner {s['planner']}",
        ]
        if ran_unfused:
            lines.append("  RAN UNFUSED through XLA: " + s["internal_error"].split("\n")[0])
        lines += [
            f"  ops: {s['jaxpr_ops']} in jaxpr, {s['ops_after_rewrite']} after rewriting, "
            f"{s['blocks']} blocks (fusion rate {rate:.2f}x)",
            f"  FLOPs: {_si(s['flops_before'])} before, {_si(s['flops_after'])} after; "
            f"intermediate bytes {_si(s['intermediate_bytes'], 'B')}",
        ]
        if ran_unfused:
            lines.append("  e-graph and rules: results discarded (the function ran unfused)")
        else:
            lines += [
                f"  e-graph: {s['egraph_nodes']} e-nodes, {s['egraph_iterations']} iterations, "
                f"stopped: {s['saturation_stop']}"
                + ("; kept the original graph (no FLOPs or operators saved)"
                   if s["rewrite_kept_original"] else ""),
                "  rules fired: " + (", ".join(f"{k} x{v}" for k, v in s["rules_fired"].items())
                                     or "none"),
                *(f"  guarded rewrite: {rewrite}" for rewrite in s["guarded_rewrites"]),
            ]
        left = sum(s["left_to_xla"].values())
        kinds = sorted({k.backend for k in self.optimized.executable.kernels} - {"xla"})
        lines.append(f"  blocks: {s['fused_kernels']} fused kernel"
                     f"{'' if s['fused_kernels'] == 1 else 's'}"
                     + (f" ({', '.join(kinds)})" if kinds else "")
                     + f", {left} left to XLA" + (":" if left else ""))
        lines += [f"    - {reason}" for reason in s["left_to_xla"]]
        lines += [
            "  unknown primitives (opaque): " + (", ".join(s["opaque_primitives"]) or "none"),
            "  time: " + ", ".join(f"{k[:-2]} {v * 1e3:.1f} ms" for k, v in s.items()
                                   if k.endswith("_s")),
            "",
            f"  {'block':>5}  {'type':<12}  {'runs as':<18}  {'ops':>3}  {'writes':>9}  "
            "operations",
        ]
        reasons = self.block_reasons()
        for kernel in self.optimized.executable.kernels:
            block = kernel.block
            ops = "+".join(block.ops)
            runs_as = ("left to XLA" if block.id in reasons else
                       f"fused kernel ({kernel.backend})")
            label = (("Branch" if block.nodes[0].op == "cond" else "Loop")
                     if self._bodies(block) else block.mapping_type.label)
            lines.append(f"  {block.id:>5}  {label:<12}  {runs_as:<18}  "
                         f"{len(block.nodes):>3}  "
                         f"{_si(sum(v.nbytes for v in block.outputs), 'B'):>9}"
                         f"  {ops if len(ops) <= 60 else ops[:57] + '...'}")
            for operands, results in kernel.per_device:  # split by the partitioner
                lines.append(f"{'':9}per device: {', '.join(map(_shape, operands))} -> "
                             f"{', '.join(map(_shape, results))}")
            if verbose and block.id in reasons:
                lines.append(f"{'':9}left to XLA: {reasons[block.id]}")
            for body in self._bodies(block):
                lines += self._body_lines(body, verbose)
        return "\n".join(lines)

    def _bodies(self, block: Any) -> list[Any]:
        """The loop bodies of a block that is one loop or branch node (else none)."""
        if len(block.nodes) != 1:
            return []
        held = loop_bodies_of(block.nodes[0])
        return [body for body in self.optimized.loop_bodies
                if any(body.jaxpr is jaxpr for jaxpr in held)]

    @staticmethod
    def _body_lines(body: Any, verbose: bool) -> list[str]:
        """A body's plan, indented under its loop (nested loops further in)."""
        s = body.summary()
        head = (f"{'':9}{s['loop']}: {s['jaxpr_ops']} ops, {s['blocks']} blocks, "
                f"{s['fused_kernels']} fused kernels"
                + (f"; runs {s['runs']}" if body.reason else ""))
        table = Report(body.optimized).format(verbose).split("\n")
        rows = table[table.index("") + 2:]  # the body's block rows, after its header
        return [head, *(f"{'':8}{row}" for row in rows)]

    def to_dot(self) -> str:
        """Graphviz DOT: inputs as ellipses, each block a cluster coloured by mapping type."""
        graph = self.graph
        lines = ["digraph dnnfusion {", "  rankdir=TB;",
                 '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
        names: dict[Any, str] = {}
        for i, var in enumerate(graph.inputs):
            names[var] = f"in{i}"
            lines.append(f'  in{i} [shape=ellipse, fillcolor="#ffffff", label="input {i}\\n{var.type_str}"];')
        for block in self.plan.blocks:
            colour = _COLOURS[block.mapping_type]
            lines.append(f"  subgraph cluster_b{block.id} {{")
            lines.append(f'    label="block {block.id}: {block.mapping_type.label}"; '
                         f'style="rounded,filled"; fillcolor="{colour}"; color="#666666";')
            for node in block.nodes:
                node_id = f"n{node.outputs[0].id}"
                for out in node.outputs:
                    names[out] = node_id
                label = f"{node.op}\\n{node.outputs[0].type_str}"
                lines.append(f'    {node_id} [fillcolor="#ffffff", label="{label}"];')
            lines.append("  }")
        for block in self.plan.blocks:
            for node in block.nodes:
                for var in dict.fromkeys(node.inputs):
                    if var in names:  # constants are left out to keep the picture readable
                        lines.append(f"  {names[var]} -> n{node.outputs[0].id};")
        for i, var in enumerate(graph.outputs):
            lines.append(f'  out{i} [shape=ellipse, fillcolor="#ffffff", label="output {i}"];')
            if var in names:
                lines.append(f"  {names[var]} -> out{i};")
        lines.append("}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<dnnfusion Report {self.optimized.name}: {len(self.plan.blocks)} blocks>"


def summarize_reasons(reasons: Any) -> dict[str, int]:
    """Reasons for leaving blocks to XLA, counted and phrased by kind, most frequent first.

    Example:
        >>> summarize_reasons(["dot_general: XLA's GEMM is faster"] * 8 + ["primitive sort is "
        ...                    "unknown to dnnfusion (opaque)"])
        {"8 GEMMs: XLA's GEMM is faster": 8, '1 block: primitive sort is unknown to dnnfusion (opaque)': 1}
    """
    counts = Counter(reasons)
    summary = {}
    for reason, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        op, _, why = reason.partition(": ")
        if op in _NOUNS and why:
            noun, reason = _NOUNS[op], why
        else:
            noun = "block"
        summary[f"{count} {noun}{'' if count == 1 else 's'}: {reason}"] = count
    return summary


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _si(value: float, unit: str = "") -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip()
