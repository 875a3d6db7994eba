"""Command line: ``python -m dnnfusion_jax explain TARGET``, ``compare TARGET ...``, ``emit``, ``rules``.

``explain`` optimises a model, prints the report, runs it next to ``jax.jit`` and prints the
largest difference (exit status 1 when they disagree beyond f32 tolerance). ``--dot`` writes
the fusion plan as Graphviz DOT and ``--svg`` renders it with Graphviz's ``dot`` (checked for
before any work). ``--verbose`` adds why each block is left to XLA.

``explain`` and ``compare`` exit with status 3 when a function ran unfused through XLA (no C
compiler, an optimiser error), naming the cause, unless ``--allow-unfused`` is given.

``compare`` measures models against stock XLA fusion (``dnnfusion_jax.tools.compare``) and prints
one table like the paper's Table 5; ``examples`` names the whole zoo. Exit status 1 when a
model disagrees with ``jax.jit`` or fails, 2 on a usage error.

``emit`` writes a model's C kernels, their data and a test harness for aarch64 or x86-64
(``dnnfusion_jax.tools.emit_command``); ``--run`` builds it (aarch64: cross-compiled, run under
qemu) and exits 1 when a kernel disagrees with the XLA reference, 2 when a tool is missing.

``rules list [FILE ...]`` prints every rule (name, family, law); ``rules check [FILE ...]``
checks each rule's soundness on random and edge values (``dnnfusion_jax.rewrite.rules_check``) and
prints a counterexample for a wrong one (exit status 1). Without FILE: the library's rules,
then the graph-level algebra passes (guarded rewrites and merges,
``dnnfusion_jax.rewrite.passes_check``).

Example:
    python -m dnnfusion_jax explain examples/bert.py:example_small --svg plan.svg
    python -m dnnfusion_jax rules check my_rules.py
    python -m dnnfusion_jax compare examples --json zoo.json --markdown zoo.md --plot zoo.png
    python -m dnnfusion_jax emit examples/bert.py:example_small --target aarch64 --out arm --run
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from dnnfusion_jax.api import jit
from dnnfusion_jax.options import BACKENDS, PLANNERS, Options
from dnnfusion_jax.tools.targets import load_target

RTOL = ATOL = 1e-5
EXIT_UNFUSED = 3
"""Exit status of explain and compare when a function ran unfused (without --allow-unfused)."""

BACKEND_HELP = ('where fused blocks run: "auto" (c on CPU, pallas on GPU), "c" (C kernels built '
                'by the host C compiler), "pallas" (Pallas kernels; interpret mode off GPU) or '
                '"xla" (no kernels of ours: the reference)')
PLANNER_HELP = ('how operators are grouped into blocks: "dnnfusion" (the paper\'s mapping-type '
                'table, default), "greedy" (its always-fuse cells only) or "none" (one block '
                'per operator, for comparison)')
UNFUSED_HELP = ("accept a run that fell back to unfused XLA (no C compiler, an optimiser "
                f"error) instead of exiting with status {EXIT_UNFUSED}")


def _positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnnfusion_jax",
                                     description="DNNFusion-style operator fusion for JAX.")
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="optimise a model, print its fusion report "
                                  "and check it against jax.jit")
    explain.add_argument("target", help="path/to/file.py[:attr] or module:attr; attr "
                         "(default: example) returns (fn, args)")
    explain.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                         help=BACKEND_HELP)
    explain.add_argument("--planner", default=Options.planner, choices=list(PLANNERS),
                         help=PLANNER_HELP)
    explain.add_argument("--no-rewrite", action="store_true", help="skip graph rewriting")
    explain.add_argument("--dot", metavar="FILE", help="write the plan as Graphviz DOT")
    explain.add_argument("--svg", metavar="FILE", help="render the plan with Graphviz dot")
    explain.add_argument("--no-check", action="store_true", help="do not run the model")
    explain.add_argument("-v", "--verbose", action="store_true", help="say, block by block, "
                         "why a block is left to XLA")
    explain.add_argument("--allow-unfused", action="store_true", help=UNFUSED_HELP)
    compare = commands.add_parser("compare", help="measure models against stock XLA fusion "
                                  "(kernels, bytes, time, error) and print a Table 5")
    compare.add_argument("targets", nargs="+", metavar="TARGET", help="path/to/file.py[:attr], "
                         "module:attr, or `examples` for the whole model zoo")
    compare.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                         help=BACKEND_HELP)
    compare.add_argument("--allow-unfused", action="store_true", help=UNFUSED_HELP)
    compare.add_argument("--repeats", type=int, metavar="N", help="timed calls of each "
                         "(default: as many as fit in about 2 s per model, at least 5)")
    compare.add_argument("--json", metavar="FILE", help="write every figure and the machine")
    compare.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    compare.add_argument("--plot", metavar="FILE.png", help="plot kernels and speedups "
                         "(needs matplotlib)")
    emit = commands.add_parser("emit", help="write a model's C kernels with their data and a "
                               "test harness for aarch64 or x86-64; --run builds and runs it")
    emit.add_argument("target", help="path/to/file.py[:attr] or module:attr; attr "
                      "(default: example) returns (fn, args)")
    emit.add_argument("--target", dest="arch", default="aarch64", choices=["aarch64", "x86_64"],
                      help="architecture to compile for (default: aarch64, run under qemu)")
    emit.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    emit.add_argument("--run", action="store_true", help="compile, run the harness and exit "
                      "1 on a mismatch")
    rules = commands.add_parser("rules", help="list or check rewrite rules")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True)
    for name, text in (("list", "print every rule with its family and law"),
                       ("check", "check every rule on random and edge values; print a "
                        "counterexample for a wrong one")):
        sub = rules_commands.add_parser(name, help=text)
        sub.add_argument("files", nargs="*", metavar="FILE", help="rule files (Python files "
                         "defining RULES or Rule objects); default: the library's rules")
        if name == "check":
            sub.add_argument("--trials", type=_positive, default=45, help="samples per rule")
            sub.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "emit":
        from dnnfusion_jax.tools.emit_command import emit_command  # late: it imports codegen
        return emit_command(args.target, args.out, args.arch, args.run)
    if args.command == "rules":
        return _rules(args)
    return _explain(args) if args.command == "explain" else _compare(args)


def _rules(args: argparse.Namespace) -> int:
    from dnnfusion_jax.options import resolve_rules
    try:
        rules = resolve_rules(list(args.files) if args.files else None)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.rules_command == "list":
        width = max(len(r.name) for r in rules) if rules else 4
        for r in rules:
            flags = "".join((" [AC]" if r.ac else "", " [finite: " + ", ".join(str(v) for v in
                             r.finite) + "]" if r.finite else "", " [in range]" if r.in_range
                             else ""))
            print(f"{r.name:<{width}}  {r.family:<13} {r.law}{flags}")
        print(f"{len(rules)} rules")
        return 0
    from dnnfusion_jax.rewrite.rules_check import check_rule
    failed = 0
    for r in rules:
        result = check_rule(r, trials=args.trials, seed=args.seed)
        print(("ok    " if result.ok else "FAIL  ") + result.message, flush=True)
        failed += not result.ok
    print(f"{len(rules) - failed} of {len(rules)} rules passed")
    if args.files:  # the graph passes are the library's, checked with it
        return 1 if failed else 0
    from dnnfusion_jax.rewrite.passes_check import PASSES, check_pass
    failed_passes = 0
    for name in PASSES:
        result = check_pass(name, trials=args.trials, seed=args.seed)
        print(("ok    " if result.ok else "FAIL  ") + result.message, flush=True)
        failed_passes += not result.ok
    print(f"{len(PASSES) - failed_passes} of {len(PASSES)} graph passes (guarded rewrites and "
          "merges) passed")
    return 1 if failed or failed_passes else 0


def _explain(args: argparse.Namespace) -> int:
    try:
        fn, inputs, name = load_target(args.target)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not _writable(args.dot, args.svg):
        return 2
    if args.svg and not _have_dot():  # before the work, not after it
        return 2
    optimized = jit(fn, backend=args.backend, planner=args.planner, rewrite=not args.no_rewrite)
    report = optimized.explain(*inputs)
    print(report.format(verbose=args.verbose))
    if args.dot:
        with open(args.dot, "w") as file:
            file.write(report.to_dot())
        print(f"wrote {args.dot}")
    if args.svg and not _render_svg(report.to_dot(), args.svg):
        return 2
    unfused = report.summary()["internal_error"]
    ok = True
    if not args.no_check:
        from dnnfusion_jax.tools.compare import as_accurate, output_errors
        actual, expected = optimized(*inputs), jax.jit(fn)(*inputs)
        worst, _, ok = output_errors(actual, expected)
        # a reassociating rewrite rounds otherwise: judged against float64, as jax.jit is
        ok = ok or (np.isfinite(worst) and as_accurate(fn, inputs, actual, expected))
        error = (f"max abs error {worst:.3g}" if np.isfinite(worst) else
                 "inf or NaN where jax.jit has a number, or the other way round")
        print(f"\n{name}: {'matches' if ok else 'DOES NOT MATCH'} jax.jit "
              f"({error}; tolerance rtol={RTOL} atol={ATOL})")
    if not ok:
        return 1
    if unfused and not args.allow_unfused:
        print(f"error: {name} ran unfused through XLA, nothing was fused: {unfused}\n"
              f"(pass --allow-unfused to accept that; exit status {EXIT_UNFUSED})",
              file=sys.stderr)
        return EXIT_UNFUSED
    return 0


def _compare(args: argparse.Namespace) -> int:
    from dnnfusion_jax.tools.compare import compare_xla
    from dnnfusion_jax.tools.compare_report import format_markdown, format_table, plot, write_json

    if args.plot:
        try:
            import matplotlib  # noqa: F401  (checked before minutes of measuring)
        except ImportError:
            print('error: --plot needs matplotlib: pip install -e ".[plot]"', file=sys.stderr)
            return 2
    if args.repeats is not None and args.repeats < 1:
        print("error: --repeats must be at least 1", file=sys.stderr)
        return 2
    if not _writable(args.json, args.markdown, args.plot):  # before minutes of measuring
        return 2
    targets, skipped = [], []
    for target in args.targets:
        if target == "examples":
            found, missing = zoo_targets()
            targets += found
            skipped += missing
        else:
            targets.append(target)
    for entry in skipped:
        print(f"skipped {entry['target']}: {entry['reason']}", file=sys.stderr)
    rows, failed = [], []
    for index, target in enumerate(targets, 1):
        print(f"[{index}/{len(targets)}] {target} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            fn, inputs, name = load_target(target)
            row = compare_xla(fn, *inputs, backend=args.backend, repeats=args.repeats,
                              name=name)
        except Exception as error:  # one broken model must not stop the others
            if not isinstance(error, ValueError):  # load_target's errors explain themselves
                traceback.print_exc(file=sys.stderr)
            print(f"  FAILED: {type(error).__name__}: {error}", file=sys.stderr)
            failed.append({"target": target, "error": f"{type(error).__name__}: {error}"})
            continue
        rows.append(row)
        print(f"  {row['jaxpr_ops']} jaxpr ops, {row['xla_kernels']} XLA kernels, "
              f"{row['blocks']} blocks; {row['ms_xla']:.2f} ms vs {row['ms_dnnfusion']:.2f} ms "
              f"({row['speedup']:.2f}x); max error {row['max_abs_err']:.1e} "
              f"({'matches' if row['matches'] else 'DOES NOT MATCH'} jax.jit); "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    print(format_table(rows) if rows else "no models compared")
    if args.json:
        write_json(args.json, rows, skipped, failed)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(rows) + "\n")
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.plot and rows:
        plot(rows, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    mismatched = [row["name"] for row in rows if not row["matches"]]
    unfused = [row for row in rows if row.get("internal_error")]
    for row in unfused:
        print(f"{row['name']} ran unfused through XLA: {row['internal_error']}", file=sys.stderr)
    if unfused and not args.allow_unfused and not (mismatched or failed):
        print(f"error: {len(unfused)} of {len(rows)} models ran unfused (pass --allow-unfused "
              f"to accept that; exit status {EXIT_UNFUSED})", file=sys.stderr)
        return EXIT_UNFUSED
    if mismatched:
        print(f"DOES NOT MATCH jax.jit (rtol={RTOL} atol={ATOL}): {', '.join(mismatched)}",
              file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(f['target'] for f in failed)}", file=sys.stderr)
    return 1 if mismatched or failed else 0


def zoo_targets(names: Sequence[str] | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """The zoo's model files that exist, and ``{target, reason}`` for those that do not yet.

    ``names`` defaults to ``examples.ZOO`` of the source checkout this package sits in.
    """
    folder = Path(__file__).resolve().parents[2] / "examples"
    if not (folder / "__init__.py").is_file():
        return [], [{"target": "examples", "reason": f"no model zoo at {folder} (run from a "
                     "source checkout)"}]
    if names is None:
        if str(folder.parent) not in sys.path:
            sys.path.insert(0, str(folder.parent))
        names = importlib.import_module("examples").ZOO
    found, missing = [], []
    for name in names:
        path = folder / f"{name}.py"
        if path.is_file():
            found.append(str(path))
        else:
            missing.append({"target": f"examples/{name}.py", "reason": "does not exist yet"})
    return found, missing


def _writable(*paths: str | None) -> bool:
    """Whether every given output path's folder exists (else says which does not)."""
    for path in paths:
        folder = Path(path).resolve().parent if path else None
        if folder and not (folder.is_dir() and os.access(folder, os.W_OK)):
            why = "not writable" if folder.is_dir() else "no such folder"
            print(f"error: cannot write {path}: {folder} is {why}", file=sys.stderr)
            return False
    return True


def _have_dot() -> bool:
    """Whether Graphviz's ``dot`` is on PATH (else says how to install it)."""
    if shutil.which("dot") is None:
        print("error: --svg needs Graphviz's `dot` (Debian/Ubuntu: apt-get install graphviz; "
              "macOS: brew install graphviz); --dot FILE writes the DOT source instead",
              file=sys.stderr)
        return False
    return True


def _render_svg(dot_source: str, path: str) -> bool:
    if not _have_dot():
        return False
    subprocess.run([shutil.which("dot"), "-Tsvg", "-o", path], input=dot_source, text=True,
                   check=True)
    print(f"wrote {path}")
    return True
