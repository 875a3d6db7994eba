"""The Pallas backend (``codegen/pallas_*.py``), checked in interpret mode (no GPU needed).

(a) golden tests of the generated source (as for a GPU) for a few blocks; (b) every test model,
a dozen kernel kinds and a few of test_differential's random programs agree with ``jax.jit``
with ``backend="pallas"`` (small GEMMs inside kernels), also with grids of several programs
and GPU-sized tiles (as on a GPU, interpreted);
(c) inf/NaN inputs on softmax, layer norm, max/min and exp/log kernels; (d) a block the
backend cannot take falls back to XLA and ``explain()`` says why; (e) every kernel of those
lowers for an NVIDIA GPU through Triton (cross-lowered: no GPU needed).

Regenerate the golden files after an intended change with
``PYTHONPATH=. python3 tests/test_pallas_backend.py`` and read the diff.
"""
from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dnnfusion_jax as dnnfusion
from codegen.pallas import tuning as pallas_tuning
from codegen.pallas.backend import PallasBackend, cuda_lowerings
from dnnfusion_jax import options
from dnnfusion_jax.fusion.dnnfusion_planner import DnnFusionPlanner
from dnnfusion_jax.fusion.backend import UnsupportedBlock
from dnnfusion_jax.frontend.trace import trace_function

sys.path.insert(0, str(Path(__file__).parent))
import models as zoo  # noqa: E402
import test_differential as differential  # noqa: E402
from test_models import assert_trees_match, inject_nonfinite  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "pallas"

GOLDEN_CASES = {
    # name: (function, input shapes)
    "elementwise_chain": (lambda x, y: jnp.tanh(x * 2.0 + y) - jnp.exp(-x), [(16, 32), (16, 32)]),
    "softmax": (jax.nn.softmax, [(8, 64)]),
    "layer_norm": (zoo.layer_norm, [(8, 32), (32,), (32,)]),
    "transpose_sandwich": (lambda x: (jnp.tanh(x.T) * 2.0).T + x, [(16, 32)]),
    "transpose_read": (lambda x, y: jnp.tanh(x.T) * 2.0 + y, [(16, 32), (32, 16)]),
    "matmul_epilogue": (lambda x, w, b: jax.nn.gelu(x @ w + b), [(64, 32), (32, 16), (16,)]),
}


GPU_MEASURED = pallas_tuning.Settings(gemm_flops=1 << 20)
"""What a GPU's measurements might say: default tiles, and GEMMs up to 1 MFLOP inside kernels
(the path a GPU takes once ``benchmarks/pallas_gpu.py --tune`` found it pays)."""


def generated_source(name: str) -> str:
    """Every block of the case's plan: Pallas source as for a GPU (``GPU_MEASURED``), or the
    reason it stays with XLA."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(pallas_tuning.MEASURED, jax.devices()[0].device_kind, GPU_MEASURED)
        # and not what ``--tune`` recorded on this machine, which comes first
        patch.setattr(pallas_tuning, "_recorded", dict)
        return _generated_source(name)


def _generated_source(name: str) -> str:
    fn, shapes = GOLDEN_CASES[name]
    graph = trace_function(fn, [jnp.ones(s, jnp.float32) for s in shapes]).graph
    backend = PallasBackend(interpret=False)
    parts = []
    for block in DnnFusionPlanner(fusible=backend.fusible).plan(graph).blocks:
        try:
            parts.append(backend.source(block, graph.constants)[0])
        except UnsupportedBlock as why:
            parts.append(f"# block{block.id} stays with XLA: {why}\n")
    return "\n\n".join(parts)


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_generated_source_matches_golden(name):
    expected = (GOLDEN / f"{name}.py").read_text()
    assert generated_source(name) == expected, (
        f"generated Pallas source for {name} changed; if intended, regenerate the golden files "
        "(see this module's docstring) and review the diff")


def test_golden_kernels_compute_the_function():
    for name, (fn, shapes) in GOLDEN_CASES.items():
        rng = np.random.default_rng(0)
        args = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
        fused = dnnfusion.jit(fn, backend="pallas", fallback=False)
        assert_trees_match(fused(*args), jax.jit(fn)(*args), what=name)


# --------------------------------------------------------------------------------------------
# (b) every test model, with one grid step (interpret mode's choice) and with several
# --------------------------------------------------------------------------------------------

@functools.cache
def _model(name: str):
    return zoo.MODELS[name]()


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_model_matches_jax_jit(name):
    fn, args = _model(name)
    fused = dnnfusion.jit(fn, backend="pallas", fallback=False)
    assert_trees_match(fused(*args), jax.jit(fn)(*args), what=name)
    summary = fused.explain(*args).summary()
    assert summary["backend"] == "pallas"
    # blocks stay with XLA only for the lowering's reasons, never because Pallas refused them
    refused = [f["reason"] for f in summary["fallback_blocks"] if "Pallas" in f["reason"]]
    assert not refused, refused


def _two_rows(kernel, device_kind):
    """Blocks of two rows: a grid of many steps, as on a GPU, but interpreted."""
    rows = int(np.prod([v.extent for v in kernel.rows])) if kernel.rows else 1
    return 2 if rows % 2 == 0 else None


# (not "cnn": its pooling now fuses with the convolutions' epilogues, and at batch 2 none of
# its kernels has rows to split)
@pytest.mark.parametrize("name", ["transformer_encoder_erf", "gpt_block", "moe_router"])
def test_model_with_many_grid_steps(name, monkeypatch):
    monkeypatch.setitem(options.BACKENDS, "pallas_grid",
                        lambda: PallasBackend(interpret=True, block_points=_two_rows))
    fn, args = _model(name)
    fused = dnnfusion.jit(fn, backend="pallas_grid", fallback=False)
    assert_trees_match(fused(*args), jax.jit(fn)(*args), what=f"{name} (grid)")
    sources = [k.source for k in fused.explain(*args).optimized.executable.kernels]
    assert any("grid=(1,)" not in s for s in sources if "pallas_call" in s)


def test_models_with_gpu_sized_tiles_split_stages(monkeypatch):
    """Tiles of 256 elements, as a GPU would get them on big shapes (interpreted): kernels
    whose stages share no grid run one call per stage, the rest in many programs."""
    monkeypatch.setitem(options.BACKENDS, "pallas_small",
                        lambda: PallasBackend(interpret=True, tile=256))
    split = 0
    for name in sorted(zoo.MODELS):
        fn, args = _model(name)
        fused = dnnfusion.jit(fn, backend="pallas_small", fallback=False)
        assert_trees_match(fused(*args), jax.jit(fn)(*args), what=f"{name} (small tiles)")
        sources = [k.source for k in fused.explain(*args).optimized.executable.kernels]
        split += sum("one call per stage" in s for s in sources)
    assert split  # the split path ran


def _kernel_kinds():
    rng = np.random.default_rng(2)
    floats = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    ints = lambda low, high, *shape: rng.integers(low, high, shape).astype(np.int32)  # noqa: E731
    return {
        # integer division and remainder round toward zero (lax), jnp's // and % on top
        "int_div_rem": (lambda a, b: (a // b, a % b, jax.lax.div(a, b), jax.lax.rem(a, b)),
                        [ints(-20, 20, 4, 6), ints(1, 5, 4, 6)]),
        "bool_outputs": (lambda x: (x > 0, jnp.logical_not(x > 0.5) & (x < 2)), [floats(4, 6)]),
        "int_reductions": (lambda a: (jnp.sum(a, axis=1), jnp.max(a, axis=(0, 2)),
                                      jnp.prod(a, axis=-1)), [ints(-3, 4, 3, 4, 5)]),
        "iota_over_rows": (lambda x: x + jnp.arange(6.0)[:, None, None] * jnp.arange(4.0),
                           [floats(6, 5, 4)]),
        "two_row_dims": (lambda x: jax.nn.softmax(x, axis=-1) * 2, [floats(2, 4, 8)]),
        "reduce_middle_axis": (lambda x: x - jnp.mean(x, axis=1, keepdims=True),
                               [floats(4, 6, 8)]),
        "rev_slice_pad": (lambda x: jnp.pad(x[:, ::-1][1:, 2:], ((1, 1), (0, 2)),
                                            constant_values=3.0) + 1, [floats(6, 8)]),
        "converts": (lambda x: (x * 10).astype(jnp.int32).astype(jnp.float32) + jnp.round(x)
                     + (x > 0).astype(jnp.uint8) * 2, [floats(4, 8)]),
        "scalar_outputs": (lambda x: (jnp.sum(x), jnp.max(x)), [floats(4, 8)]),
        "transpose_3d": (lambda x: jnp.exp(jnp.transpose(x, (2, 0, 1))) + 1, [floats(2, 3, 4)]),
    }


@pytest.mark.parametrize("grid", ["one_step", "two_rows"])
def test_kernel_kinds_match_jax_jit(grid, monkeypatch):
    monkeypatch.setitem(options.BACKENDS, "pallas_grid", lambda: PallasBackend(
        interpret=True, block_points=_two_rows if grid == "two_rows" else None))
    for name, (fn, args) in _kernel_kinds().items():
        fused = dnnfusion.jit(fn, backend="pallas_grid", fallback=False)
        assert_trees_match(fused(*args), jax.jit(fn)(*args), what=f"{name} ({grid})")
        assert not fused.explain(*args).summary()["fallback_blocks"], name


# --------------------------------------------------------------------------------------------
# (c) inf and NaN
# --------------------------------------------------------------------------------------------

NONFINITE_CASES = {
    "softmax": (jax.nn.softmax, [(4, 16)]),
    "layer_norm": (zoo.layer_norm, [(4, 16), (16,), (16,)]),
    "max_min": (lambda x, y: jnp.max(x, axis=-1, keepdims=True) - jnp.minimum(x, y)
                + jnp.min(x, axis=0), [(4, 16), (4, 16)]),
    "exp_log": (lambda x: jnp.log(jnp.abs(x)) + jnp.exp(x) * jnp.log1p(x), [(4, 16)]),
}


@pytest.mark.parametrize("name", sorted(NONFINITE_CASES))
def test_nonfinite_inputs_match_jax_jit(name):
    fn, shapes = NONFINITE_CASES[name]
    rng = np.random.default_rng(1)
    args = inject_nonfinite(tuple(jnp.asarray(rng.standard_normal(s), jnp.float32)
                                  for s in shapes))
    fused = dnnfusion.jit(fn, backend="pallas", fallback=False)
    assert_trees_match(fused(*args), jax.jit(fn)(*args), equal_nan=True, what=name)
    assert not fused.explain(*args).summary()["fallback_blocks"]  # all of it ran in Pallas


def test_padded_lanes_of_a_store_never_undo_real_ones():
    """A row of 5 padded to 8 lanes: lanes 5-7 of row j have the offsets of row j+1's lanes
    0-2. Interpret mode writes masked lanes too (their old value), so without redirecting them
    the cached y (5, 4, 5) came back with NaN (uninitialised scratch) in rows 1-3."""
    x = np.random.default_rng(5).standard_normal((5, 4, 5)).astype(np.float32)

    def fn(x):
        y = jnp.square(jnp.tanh(x * x))
        return y, jnp.max(y, axis=1)
    fused = dnnfusion.jit(fn, backend="pallas", fallback=False)
    assert_trees_match(fused(x), jax.jit(fn)(x), what="padded store")
    assert fused.explain(x).summary()["blocks"] == 1


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(program=differential.programs(), seed=st.integers(0, 2**32 - 1),
       specials=differential.special_values)
def test_random_graphs_match_jax_jit(program, seed, specials):
    """A few of test_differential's random programs, every block through Pallas (all of them
    passed, 100 programs, when this backend was written)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(options.Options, "resolved_backend", lambda self: "pallas")
        differential.check_program(program, seed, specials, finite_math=False)


# --------------------------------------------------------------------------------------------
# (d) fallback, and the backend option
# --------------------------------------------------------------------------------------------

def test_fallback_reasons_in_explain():
    def fn(x, w):
        # a generic reduce_window (a product): no kernel lowering
        return jax.lax.reduce_window(jnp.tanh(x @ w), 1.0, jax.lax.mul, (1, 2), (1, 1),
                                     "VALID") * 2.0

    x, w = jnp.ones((64, 128)), jnp.ones((128, 128)) / 128  # 2 MFLOP: past the GEMM limit
    fused = dnnfusion.jit(fn, backend="pallas", fallback=False)
    assert_trees_match(fused(x, w), jax.jit(fn)(x, w), what="fallback")
    reasons = [f["reason"] for f in fused.explain(x, w).summary()["fallback_blocks"]]
    assert any("dot_general" in r for r in reasons), reasons
    assert any("reduce_window" in r for r in reasons), reasons


def test_small_gemm_runs_inside_the_kernel_with_its_epilogue():
    """Under the GEMM limit (interpret mode's; a GPU's is measured per device kind) a
    dot_general is a reduce stage of the Pallas kernel that also computes its epilogue."""
    fn = lambda x, w, b: jax.nn.gelu(x @ w + b)  # noqa: E731
    rng = np.random.default_rng(3)
    x, w, b = (jnp.asarray(rng.standard_normal(s), jnp.float32)
               for s in [(24, 32), (32, 48), (48,)])
    fused = dnnfusion.jit(fn, backend="pallas", fallback=False)
    assert_trees_match(fused(x, w, b), jax.jit(fn)(x, w, b), what="gemm epilogue")
    summary = fused.explain(x, w, b).summary()
    assert summary["blocks"] == 1 and not summary["fallback_blocks"], summary


def test_renderer_refusal_is_a_fallback_with_its_reason(monkeypatch):
    """A block the renderer cannot spell (here: a user's block size that is no power of two)
    runs through XLA, and explain() says why."""
    monkeypatch.setitem(options.BACKENDS, "pallas",
                        lambda: PallasBackend(block_points=lambda kernel, kind: 3))
    fn = lambda x: jnp.exp(x) * 2.0  # noqa: E731
    x = jnp.ones((6, 4))
    fused = dnnfusion.jit(fn, backend="pallas", fallback=False)
    assert_trees_match(fused(x), jax.jit(fn)(x), what="refused block")
    reasons = [f["reason"] for f in fused.explain(x).summary()["fallback_blocks"]]
    assert reasons == ["Pallas renderer: block of 3 points is no power of two"], reasons


def test_joined_store_without_rows_stays_with_xla_on_small_tiles(monkeypatch):
    """Two stages storing into one output (a joined concatenate) cannot run one call per
    stage; with tiles too small for one program the block falls back, saying why."""
    fn = lambda a, b: jnp.concatenate([jnp.tanh(a).sum(0), b * 2.0])  # noqa: E731
    a, b = jnp.ones((64, 32)), jnp.ones((16,))
    monkeypatch.setitem(options.BACKENDS, "pallas_small",
                        lambda: PallasBackend(interpret=True, tile=16))
    fused = dnnfusion.jit(fn, backend="pallas_small", fallback=False)
    assert_trees_match(fused(a, b), jax.jit(fn)(a, b), what="joined store")
    reasons = [f["reason"] for f in fused.explain(a, b).summary()["fallback_blocks"]]
    assert any("no stage-by-stage split" in r for r in reasons), reasons


def test_settings_are_recorded_per_device_kind(monkeypatch, tmp_path):
    monkeypatch.setenv("DNNFUSION_CACHE_DIR", str(tmp_path))
    # nothing recorded here: the README's measured row for an H200, the defaults for others
    assert pallas_tuning.settings("NVIDIA H200") == pallas_tuning.MEASURED["NVIDIA H200"]
    assert pallas_tuning.settings("another GPU") == pallas_tuning.Settings()
    path = pallas_tuning.record("NVIDIA H200", tile_elements=8192)
    pallas_tuning.record("NVIDIA H200", gemm_flops=1 << 24)
    assert path.parent == tmp_path
    assert pallas_tuning.settings("NVIDIA H200") == pallas_tuning.Settings(8192, 1 << 24)
    assert pallas_tuning.tile_elements("another GPU") == pallas_tuning.DEFAULT_TILE_ELEMENTS
    with pytest.raises(ValueError, match="power of two"):
        pallas_tuning.record("NVIDIA H200", tile_elements=3000)


def test_gpu_benchmark_script_checks_results_without_a_gpu():
    """benchmarks/pallas_gpu.py --check: the GPU session's tool runs here (small shapes,
    interpreted, nothing timed) and every result agrees with jax.jit."""
    root = Path(__file__).parent.parent
    run = subprocess.run([sys.executable, str(root / "benchmarks" / "pallas_gpu.py"), "--check",
                          "softmax", "layer norm", "transpose"], cwd=root, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line for line in run.stdout.splitlines()
            if any(f" {verdict}" in line for verdict in ("ok", "rounding", "as accurate"))]
    # float32: softmax, causal softmax, layer norm, transpose; bf16: softmax, layer norm
    assert len(rows) == 6 and "MISMATCH" not in run.stdout, run.stdout


def test_auto_is_c_on_cpu_and_pallas_on_gpu(monkeypatch):
    assert options.make_options(backend="pallas").backend == "pallas"
    monkeypatch.setattr(options.jax, "default_backend", lambda: "cpu")
    assert options.make_options().resolved_backend() == "c"
    monkeypatch.setattr(options.jax, "default_backend", lambda: "gpu")
    assert options.make_options().resolved_backend() == "pallas"


# --------------------------------------------------------------------------------------------
# (e) the GPU's rules, without a GPU: every kernel lowered for CUDA through Triton
# --------------------------------------------------------------------------------------------

def _lowering_failures(cases):
    failures = []
    for case, (fn, args) in cases.items():
        graph = trace_function(fn, list(args)).graph
        for block, outcome in cuda_lowerings(graph):
            if isinstance(outcome, UnsupportedBlock):
                continue  # stays with XLA on every backend (convolutions, big GEMMs, ...)
            if isinstance(outcome, Exception):
                failures.append(f"{case}/block{block.id}: {type(outcome).__name__}: "
                                f"{str(outcome)[:300]}")
                continue
            assert "__gpu$xla.gpu.triton" in outcome, f"{case}/block{block.id} is no Triton call"
    return failures


def test_every_model_kernel_lowers_for_cuda_through_triton(monkeypatch):
    """Pallas lowers to Triton IR without a device: power-of-two arrays, primitives Triton
    has (erf, erfc and round through pallas_math), masked loads and stores, small GEMMs
    inside kernels (``GPU_MEASURED``). Triton's own compiler (register and shared-memory
    limits) runs only on a GPU."""
    monkeypatch.setitem(pallas_tuning.MEASURED, jax.devices()[0].device_kind, GPU_MEASURED)
    cases = {name: _model(name) for name in sorted(zoo.MODELS)}
    assert not _lowering_failures(cases)


def test_kernel_kinds_and_golden_cases_lower_for_cuda(monkeypatch):
    monkeypatch.setitem(pallas_tuning.MEASURED, jax.devices()[0].device_kind, GPU_MEASURED)
    rng = np.random.default_rng(0)
    cases = dict(_kernel_kinds())
    for name, (fn, shapes) in GOLDEN_CASES.items():
        cases[name] = (fn, [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes])
    failures = _lowering_failures(cases)
    # Triton has no product reduction: on a GPU that block fails to compile once and runs
    # through XLA (compile_block), as explain() then says
    assert len(failures) == 1 and "int_reductions" in failures[0], failures
    assert "reduce_prod" in failures[0], failures


if __name__ == "__main__":  # regenerate the golden files
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for case in sorted(GOLDEN_CASES):
        (GOLDEN / f"{case}.py").write_text(generated_source(case))
        print("wrote", GOLDEN / f"{case}.py")
