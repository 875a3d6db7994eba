"""E-graph rewriting on BERT-base: optimisation time and e-graph size (a script, not a test).

For 1-, 4- and 12-layer BERT-base encoders (batch 1, sequence 128) it traces the model, runs
the rewrite stage with the default ``SaturationBudget`` and reports, per depth: jaxpr ops,
ops after rewriting, e-nodes and e-classes, iterations and which budget stopped saturation,
the time of each step (simplify, e-graph build, saturation, extraction) and of the whole
``explain`` (trace + rewrite + plan), and FLOPs before and after. ``--ac`` also measures the
bounded-AC choice: AC rules in 0, 2 (default) or every iteration.

Run from the repository root:
    python benchmarks/rewrite_bert.py                 # 1, 4, 12 layers
    python benchmarks/rewrite_bert.py --layers 12 --ac
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dnnfusion_jax as dnnfusion  # noqa: E402
from dnnfusion_jax.rewrite.egraph_saturate import SaturationBudget  # noqa: E402
from overhead import load_bert, machine_description  # noqa: E402

TARGET_S = 10.0
STEPS = ("trace_s", "egraph_build_s", "saturate_s", "extract_s", "rewrite_s", "plan_s")


def measure(bert, layers: int, budget: SaturationBudget, repeats: int) -> dict:
    fn, args = bert.example(num_layers=layers)
    jax.block_until_ready(args)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        summary = dnnfusion.explain(dnnfusion.jit(fn, saturation=budget), *args).summary()
        summary["total_s"] = time.perf_counter() - start
        runs.append(summary)
    row = dict(runs[-1])
    for key in (*STEPS, "total_s"):
        row[key] = statistics.median(r.get(key, float("nan")) for r in runs)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="1,4,12")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ac", action="store_true", help="also compare AC iterations 0/2/all")
    opts = parser.parse_args(argv)
    layers = [int(n) for n in opts.layers.split(",")]
    budget = SaturationBudget()
    print("dnnfusion e-graph rewriting on BERT-base (batch 1, seq 128)")
    for line in machine_description():
        print("  " + line)
    print(f"  budget  : {budget}")
    header = (f"  {'layers':>6} {'jaxpr':>6} {'ops_rw':>6} {'e-nodes':>8} {'iters':>5} "
              f"{'stop':>10} " + " ".join(f"{s[:-2]:>9}" for s in STEPS)
              + f" {'total':>8} {'GFLOP before':>12} {'after':>8}")
    print("\n  times in ms (median of %d); total = explain (trace + rewrite + plan)" % opts.repeats)
    print(header)
    worst = {}
    for n in layers:
        row = measure(load_bert_cached(), n, budget, opts.repeats)
        worst[n] = row["total_s"]
        print(f"  {n:>6} {row['jaxpr_ops']:>6} {row['ops_after_rewrite']:>6} "
              f"{row['egraph_nodes']:>8} {row['egraph_iterations']:>5} {row['saturation_stop']:>10} "
              + " ".join(f"{row[s] * 1e3:>9.1f}" for s in STEPS)
              + f" {row['total_s'] * 1e3:>8.1f} {row['flops_before'] / 1e9:>12.4f} "
              f"{row['flops_after'] / 1e9:>8.4f}")
        fired = sorted(row["rules_fired"].items(), key=lambda kv: -kv[1])[:8]
        print("         most matched: " + ", ".join(f"{k} x{v}" for k, v in fired))
    if 12 in worst:
        print(f"  target: 12-layer optimisation < {TARGET_S:.0f} s: {worst[12]:.2f} s -> "
              f"{'PASS' if worst[12] < TARGET_S else 'FAIL'}")
    if opts.ac:
        print("\n  bounded AC: e-nodes / iterations / stop / saturate ms, by AC iterations")
        for n in layers:
            cells = []
            for ac in (0, 2, budget.iterations):
                row = measure(load_bert_cached(), n, dataclasses.replace(budget, ac_iterations=ac), 1)
                cells.append(f"ac={ac}: {row['egraph_nodes']} / {row['egraph_iterations']} / "
                             f"{row['saturation_stop']} / {row['saturate_s'] * 1e3:.0f}")
            print(f"  {n:>6} layers: " + "; ".join(cells))
        long_sum()
    return 0


def long_sum(terms: int = 12) -> None:
    """A 12-term sum of products x_i*w: where unbounded AC blows up."""
    import jax.numpy as jnp
    xs = [jnp.full((64, 64), float(i)) for i in range(terms + 1)]

    def f(w, *xs):
        return sum(x * w for x in xs)

    print(f"\n  bounded AC on a {terms}-term sum of x_i*w (64x64): "
          "e-nodes / iterations / stop / saturate ms / FLOPs after")
    for ac in (0, 2, 8):
        budget = SaturationBudget(ac_iterations=ac)
        s = dnnfusion.explain(dnnfusion.jit(f, saturation=budget), *xs).summary()
        print(f"    ac={ac}: {s['egraph_nodes']} / {s['egraph_iterations']} / "
              f"{s['saturation_stop']} / {s['saturate_s'] * 1e3:.0f} / {s['flops_after']} "
              f"(before {s['flops_before']})")


_BERT = []


def load_bert_cached():
    if not _BERT:
        _BERT.append(load_bert())
    return _BERT[0]


if __name__ == "__main__":
    sys.exit(main())
