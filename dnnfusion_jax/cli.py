"""Command line: ``python -m dnnfusion_jax explain TARGET``.

``explain`` optimises a model, prints the report, runs it next to ``jax.jit`` and prints the
largest difference (exit status 1 when they disagree beyond f32 tolerance). ``--dot`` writes
the fusion plan as Graphviz DOT and ``--svg`` renders it with Graphviz's ``dot``.

Example:
    python -m dnnfusion_jax explain examples/bert.py:example_small --svg plan.svg
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence

import jax
import numpy as np

from .api import jit
from .options import BACKENDS, PLANNERS
from .targets import load_target

RTOL = ATOL = 1e-5


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnnfusion_jax",
                                     description="DNNFusion-style operator fusion for JAX.")
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="optimise a model, print its fusion report "
                                  "and check it against jax.jit")
    explain.add_argument("target", help="path/to/file.py[:attr] or module:attr; attr "
                         "(default: example) returns (fn, args)")
    explain.add_argument("--backend", default="auto", choices=["auto", *BACKENDS])
    explain.add_argument("--planner", default="greedy", choices=list(PLANNERS))
    explain.add_argument("--no-rewrite", action="store_true", help="skip graph rewriting")
    explain.add_argument("--dot", metavar="FILE", help="write the plan as Graphviz DOT")
    explain.add_argument("--svg", metavar="FILE", help="render the plan with Graphviz dot")
    explain.add_argument("--no-check", action="store_true", help="do not run the model")
    args = parser.parse_args(argv)
    return _explain(args)


def _explain(args: argparse.Namespace) -> int:
    try:
        fn, inputs, name = load_target(args.target)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    optimized = jit(fn, backend=args.backend, planner=args.planner, rewrite=not args.no_rewrite)
    report = optimized.explain(*inputs)
    print(report)
    if args.dot:
        with open(args.dot, "w") as file:
            file.write(report.to_dot())
        print(f"wrote {args.dot}")
    if args.svg and not _render_svg(report.to_dot(), args.svg):
        return 2
    if args.no_check:
        return 0
    expected = jax.tree_util.tree_leaves(jax.jit(fn)(*inputs))
    actual = jax.tree_util.tree_leaves(optimized(*inputs))
    worst = max((_max_error(a, e) for a, e in zip(actual, expected)), default=0.0)
    ok = all(np.allclose(a, e, rtol=RTOL, atol=ATOL, equal_nan=True)
             for a, e in zip(actual, expected))
    print(f"\n{name}: {'matches' if ok else 'DOES NOT MATCH'} jax.jit "
          f"(max abs error {worst:.3g}, tolerance rtol={RTOL} atol={ATOL})")
    return 0 if ok else 1


def _max_error(actual, expected) -> float:
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    finite = np.isfinite(a) & np.isfinite(e)
    return float(np.max(np.abs(a - e)[finite], initial=0.0))


def _render_svg(dot_source: str, path: str) -> bool:
    dot = shutil.which("dot")
    if dot is None:
        print("error: --svg needs Graphviz's `dot` (Debian/Ubuntu: apt-get install graphviz; "
              "macOS: brew install graphviz); --dot FILE writes the DOT source instead",
              file=sys.stderr)
        return False
    subprocess.run([dot, "-Tsvg", "-o", path], input=dot_source, text=True, check=True)
    print(f"wrote {path}")
    return True
