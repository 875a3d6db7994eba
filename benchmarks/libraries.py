"""Models written with Flax (linen, nnx), Haiku, Equinox and Optax against jax.jit, side by side
in one run: for every model of ``tests/library_models.py``, inference and one training step
(an SGD-with-momentum step on a squared error for the inference models, ``training_step``;
the two Optax classifiers are training steps already), then the bf16 models of
``tests/library_half_models.py`` (kind "bf16").

Each row comes from ``dnnfusion_jax.tools.compare.compare_xla``: median ms of interleaved
``jax.jit`` and ``dnnfusion.jit`` calls, ratio = jax.jit time / dnnfusion time (above 1:
dnnfusion is faster), dnnfusion's blocks, the kernels in XLA's optimised HLO, whether the
results agree (``compare_xla``'s rtol = atol = 1e-5; "~" when only within the scaled 1e-4 of
``tests/test_libraries.py``; for bf16, "yes" when no less accurate than jax.jit against the
model in float32), and the blocks left to XLA with the report's reasons. Then the geometric
mean of the ratios and the smallest one.

Run: python3 benchmarks/libraries.py [--quick] [--only NAME ...] [--json PATH]
     (needs pip install -e ".[test]": flax, dm-haiku, equinox, optax)
  --quick      5 timed calls per function instead of about 2 s of calls
  --only NAME  only these models (names of LIBRARY_MODELS; a training row goes with its model)
  --json PATH  every figure of every row, the machine, skipped and failed models, as JSON
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))
import dnnfusion_jax as dnnfusion  # noqa: E402
from dnnfusion_jax.tools.compare import compare_xla  # noqa: E402
from dnnfusion_jax.tools.compare_report import machine_info, write_json  # noqa: E402
import jax  # noqa: E402
import library_half_models as half  # noqa: E402
import library_models as libs  # noqa: E402

SCALED_TOLERANCE = 1e-4  # the test suite's bound, for the "~" mark


def workloads(names: list[str]):
    """``(row name, kind, builder)`` for every model: inference then its training step; a
    bf16 model (``library_half_models``) as it is, kind "bf16"."""
    for name in names:
        if name in half.HALF_MODELS:
            yield name, "bf16", half.HALF_MODELS[name]
        elif name in libs.TRAINING:
            yield name, "train step", libs.LIBRARY_MODELS[name]
        else:
            yield name, "inference", libs.LIBRARY_MODELS[name]
            yield name, "train step", lambda name=name: libs.training_step(name)


def measure(name: str, kind: str, build, repeats: int | None) -> dict:
    """One ``compare_xla`` row, plus ``kind``, the left-to-XLA reasons and a scaled error."""
    fn, args, *f32_model = build()
    row = compare_xla(fn, *args, repeats=repeats, name=name)
    if f32_model:  # bf16: "match" is "no less accurate than jax.jit against float32"
        f32_fn, f32_args = f32_model
        reference = jax.jit(f32_fn)(*f32_args)
        ours = max(half.scaled_errors(dnnfusion.jit(fn)(*args), reference))
        theirs = max(half.scaled_errors(jax.jit(fn)(*args), reference))
        row.update(error_vs_f32=ours, xla_error_vs_f32=theirs,
                   matches=ours <= max(1.25 * theirs, 2e-3))
    # compare_xla keeps its dnnfusion function to itself: explain again for the reasons (same
    # function, same options, so the same plan)
    row["left_to_xla"] = dnnfusion.explain(fn, *args).summary()["left_to_xla"]
    row["kind"] = kind
    return row


def format_rows(rows: list[dict]) -> str:
    """The table: one line per model and kind, the reasons last."""
    header = ("model", "kind", "ms jax.jit", "ms dnnfusion", "ratio", "blocks", "XLA kernels",
              "match", "left to XLA (reasons)")
    cells = [header]
    for row in rows:
        match = ("yes" if row["matches"] else
                 "~" if _scaled_error(row) <= SCALED_TOLERANCE else "NO")
        reasons = "; ".join(row["left_to_xla"]) or "-"
        cells.append((row["name"], row["kind"], f"{row['ms_xla']:.3f}",
                      f"{row['ms_dnnfusion']:.3f}", f"{row['speedup']:.2f}x",
                      str(row["blocks"]), str(row["xla_kernels"]), match, reasons))
    widths = [max(len(line[i]) for line in cells) for i in range(len(header) - 1)]
    return "\n".join("  ".join([line[0].ljust(widths[0]), line[1].ljust(widths[1])]
                               + [c.rjust(w) for c, w in zip(line[2:-1], widths[2:])]
                               + [line[-1]]) for line in cells)


def _scaled_error(row: dict) -> float:
    """A bound on the test suite's max|a-b| / max(1, max|b|) over the leaves: per leaf that is
    at most both the absolute and the relative error, so at most the smaller of their maxima."""
    return min(row["max_abs_err"], row["max_rel_err"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 timed calls per function")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        choices=[*libs.LIBRARY_MODELS, *half.HALF_MODELS])
    parser.add_argument("--json", metavar="PATH")
    options = parser.parse_args()

    machine = machine_info()
    print(f"{machine['processor']}, {machine['cpu_count']} CPUs, {machine['platform']}; "
          f"jax {machine['jax']} ({machine['backend']}, {machine['device']}); {machine['date']}")
    repeats = 5 if options.quick else None
    print("timing: " + ("5 calls" if repeats else "about 2 s of calls") + " per function, "
          "interleaved, median\n")

    rows, skipped, failed = [], [], []
    for name, kind, build in workloads(options.only or [*libs.LIBRARY_MODELS,
                                                          *half.HALF_MODELS]):
        needs = {**libs.LIBRARIES, **half.HALF_LIBRARIES}[name]
        missing = [lib for lib in needs + ("optax",) * (kind == "train step")
                   if importlib.util.find_spec(lib) is None]
        if missing:
            skipped.append({"name": name, "kind": kind, "reason": "not installed: "
                            + ", ".join(sorted(set(missing)))})
            continue
        start = time.perf_counter()
        try:
            rows.append(measure(name, kind, build, repeats))
        except Exception as error:  # a crash is a finding: report it, go on with the others
            failed.append({"name": name, "kind": kind, "error": f"{type(error).__name__}: "
                           f"{error}", "traceback": traceback.format_exc()})
            print(f"FAILED {name} ({kind}): {type(error).__name__}: {str(error)[:300]}",
                  file=sys.stderr)
            continue
        print(f"  measured {name} ({kind}) in {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)

    print(format_rows(rows))
    if rows:
        ratios = [row["speedup"] for row in rows]
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        worst = min(rows, key=lambda row: row["speedup"])
        print(f"\ngeomean ratio {geomean:.2f}x over {len(rows)} functions; minimum "
              f"{worst['speedup']:.2f}x ({worst['name']}, {worst['kind']})")
    for entry in skipped:
        print(f"skipped {entry['name']} ({entry['kind']}): {entry['reason']}")
    for entry in failed:
        print(f"FAILED {entry['name']} ({entry['kind']}): {entry['error'][:300]}")
    if options.json:
        write_json(options.json, rows, skipped,
                   [{k: v for k, v in f.items() if k != "traceback"} for f in failed])
        print(f"wrote {options.json}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
