"""Rendering ``compare_xla`` rows: a text table like the paper's Table 5, Markdown, JSON, a plot.

Example:
    >>> row = {"name": "m", "jaxpr_ops": 12, "xla_kernels": 4, "blocks": 3,
    ...        "xla_fusion_rate": 3.0, "dnnfusion_fusion_rate": 4.0, "flops_before": 2e6,
    ...        "flops_after": 1e6, "xla_intermediate_bytes": 4096,
    ...        "dnnfusion_intermediate_bytes": 2048, "ms_xla": 2.0, "ms_dnnfusion": 1.0,
    ...        "speedup": 2.0, "max_abs_err": 0.0}
    >>> header, line = format_table([row]).splitlines()
    >>> header.split("  ")[:4]
    ['model', 'jaxpr ops', 'XLA kernels', 'our blocks']
    >>> line.split()[:6], line.split()[-4:]
    (['m', '12', '4', '3', '3.00x', '4.00x'], ['2.00', '1.00', '2.00x', '0e+00'])
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
from collections.abc import Sequence
from typing import Any

import jax

from dnnfusion_jax.report import _si

COLUMNS = (  # (header, key, format)
    ("model", "name", "s"), ("jaxpr ops", "jaxpr_ops", "d"), ("XLA kernels", "xla_kernels", "d"),
    ("our blocks", "blocks", "d"), ("XLA rate", "xla_fusion_rate", "rate"),
    ("our rate", "dnnfusion_fusion_rate", "rate"), ("FLOPs before", "flops_before", "si"),
    ("FLOPs after", "flops_after", "si"), ("XLA inter. B", "xla_intermediate_bytes", "bytes"),
    ("our inter. B", "dnnfusion_intermediate_bytes", "bytes"), ("XLA ms", "ms_xla", "ms"),
    ("our ms", "ms_dnnfusion", "ms"), ("speedup", "speedup", "rate"),
    ("max err", "max_abs_err", "err"),
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table, one line per model, columns right-aligned (model left-aligned)."""
    cells = [[header for header, _, _ in COLUMNS]]
    cells += [[_cell(row.get(key), fmt) for _, key, fmt in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths))).rstrip()
                     for line in cells)


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The same table as GitHub Markdown.

    Example:
        >>> header, rule = format_markdown([]).splitlines()
        >>> header[:40], rule[:13]
        ('| model | jaxpr ops | XLA kernels | our ', '|:--|--:|--:|')
    """
    lines = ["| " + " | ".join(header for header, _, _ in COLUMNS) + " |",
             "|:--|" + "--:|" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(_cell(row.get(key), fmt) for _, key, fmt in COLUMNS) + " |"
              for row in rows]
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """Where the figures were measured: platform, CPU count, versions, date (UTC).

    Example:
        >>> {"platform", "cpu_count", "jax", "date"} <= set(machine_info())
        True
    """
    import jaxlib
    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: str, rows: Sequence[dict[str, Any]], skipped: Sequence[dict] = (),
               failed: Sequence[dict] = ()) -> None:
    """Every figure of every row, plus ``machine``, the ``skipped`` and ``failed`` targets."""
    document = {"machine": machine_info(), "models": [_json_safe(row) for row in rows],
                "skipped": list(skipped), "failed": list(failed)}
    with open(path, "w") as file:
        json.dump(document, file, indent=2, default=str, allow_nan=False)
        file.write("\n")


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with inf and NaN floats as the strings "inf", "-inf" and "nan" (JSON has none)."""
    return {key: (str(value) if isinstance(value, float) and not math.isfinite(value) else value)
            for key, value in row.items()}


def plot(rows: Sequence[dict[str, Any]], path: str, title: str | None = None) -> None:
    """One PNG, two panels on linear axes with every bar labelled: kernels per model (XLA's
    and dnnfusion's side by side) and dnnfusion's speed-up over ``jax.jit`` (1.0 marked).

    Raises ImportError when matplotlib is missing (``pip install -e ".[plot]"``).

    Example:
        >>> import tempfile, os
        >>> rows = [{"name": "bert", "jaxpr_ops": 120, "xla_kernels": 67, "blocks": 41,
        ...          "speedup": 1.25}]
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     plot(rows, os.path.join(folder, "p.png"))
        ...     os.path.getsize(os.path.join(folder, "p.png")) > 1000
        True
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{row['name']}\n({row['jaxpr_ops']} ops)" for row in rows]
    x = list(range(len(rows)))
    fig, (kernels, speed) = plt.subplots(2, 1, figsize=(max(7, 1.1 * len(rows) + 3), 8),
                                         sharex=True)
    backend = next((row["backend"] for row in rows if row.get("backend")), None)
    fig.suptitle(title or "dnnfusion against jax.jit (XLA's own fusion)"
                 + (f": {backend} backend" if backend else "")
                 + f" on {jax.devices()[0].device_kind}", fontsize=12)
    width = 0.38
    for offset, label, key, colour in ((-width / 2, "XLA kernels (jax.jit)", "xla_kernels",
                                        "tab:gray"),
                                       (width / 2, "dnnfusion kernels (blocks)", "blocks",
                                        "tab:blue")):
        bars = kernels.bar([p + offset for p in x], [row[key] for row in rows], width,
                           label=label, color=colour)
        kernels.bar_label(bars, fontsize=8, padding=2)
    kernels.set_ylabel("kernels executed (fewer is better)")
    kernels.set_ylim(0, 1.3 * max(max(row["xla_kernels"], row["blocks"]) for row in rows))
    kernels.set_title("kernels per model", fontsize=10)
    kernels.legend(loc="upper left")
    speedups = [row["speedup"] for row in rows]
    bars = speed.bar(x, speedups, 0.5,
                     color=["tab:green" if v >= 1 else "tab:red" for v in speedups])
    speed.bar_label(bars, labels=[f"{v:.2f}x" for v in speedups], fontsize=8, padding=2)
    speed.axhline(1.0, color="black", linewidth=1, linestyle="--",
                  label="1.0 = as fast as jax.jit")
    speed.set_ylim(0, 1.3 * max([*speedups, 1.0]))
    speed.set_ylabel("speed-up over jax.jit (higher is better)")
    speed.set_title("speed-up: jax.jit time / dnnfusion time (median)", fontsize=10)
    speed.legend(loc="upper left")
    speed.set_xticks(x, names, rotation=45 if len(rows) > 6 else 0,
                     ha="right" if len(rows) > 6 else "center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "s":
        return str(value)
    if fmt == "d":
        return str(int(value))
    if fmt == "rate":
        return f"{value:.2f}x"
    if fmt == "ms":
        return f"{value:.2f}"
    if fmt == "err":
        return f"{value:.0e}"
    return _si(value, "B" if fmt == "bytes" else "")


