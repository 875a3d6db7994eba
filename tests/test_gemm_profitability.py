"""With ``profile=True`` a GEMM runs inside a kernel when it was timed no slower there than in
XLA on this device: both timings land in the planner's profiling database (keyed by device,
backend and shape), are reused, and decide the plan.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from codegen.c.backend import CBackend
from codegen.pallas.backend import PallasBackend
from codegen.pallas.tuning import Settings
from dnnfusion_jax.fusion.profitability import device_key, machine_key, profiling_database

RNG = np.random.default_rng(7)
ARGS = (RNG.standard_normal((32, 24)).astype(np.float32),
        RNG.standard_normal((24, 16)).astype(np.float32),
        RNG.standard_normal(16).astype(np.float32))


def gemm_epilogue(x, w, b):
    return jax.nn.gelu(x @ w + b)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DNNFUSION_CACHE_DIR", str(tmp_path))
    return tmp_path


def gemm_keys(entries) -> dict[str, str]:
    """Database key → backend name, of the entries timing the GEMM alone (a block signature
    is "inputs | operation | operation ...")."""
    split = (key.split("|", 2) for key in entries)
    return {"|".join(parts): parts[1] for parts in split
            if parts[2].count(" | ") == 1 and "dot_general[" in parts[2]}


def plan_ops(backend: str):
    fused = dnnfusion.jit(gemm_epilogue, backend=backend, profile=True, fallback=False)
    report = fused.explain(*ARGS)
    np.testing.assert_allclose(fused(*ARGS), jax.jit(gemm_epilogue)(*ARGS),
                               rtol=1e-5, atol=1e-5)
    return [b.ops for b in report.plan.blocks]


def gemm_alone(ops) -> bool:
    return ["dot_general"] in ops


def test_gemm_goes_where_the_database_says_it_is_faster(cache_dir):
    ops = plan_ops("c")
    database = profiling_database(CBackend())
    assert database.path.parent == cache_dir
    seconds = {backend: database.entries[key] for key, backend in gemm_keys(database.entries).items()}
    assert set(seconds) == {"c", "xla"}  # the GEMM was timed in a C kernel and in XLA
    assert gemm_alone(ops) == (seconds["c"] > seconds["xla"])

    # the database decides: make XLA's GEMM the faster one, then the C kernel's
    for c_seconds, xla_seconds, alone in ((1.0, 1e-9, True), (1e-9, 1.0, False)):
        entries = json.loads(database.path.read_text())
        for key, backend in gemm_keys(entries).items():
            entries[key] = c_seconds if backend == "c" else xla_seconds
        database.path.write_text(json.dumps(entries))
        ops = plan_ops("c")
        assert gemm_alone(ops) == alone, ops
        assert json.loads(database.path.read_text()) == entries  # read, nothing re-timed


def test_profiles_are_kept_per_device():
    assert device_key(CBackend()) == machine_key()
    assert device_key(PallasBackend(interpret=True)) == machine_key()  # runs on this CPU
    gpu = PallasBackend(interpret=False)
    gpu.__dict__["device"] = ("NVIDIA H200", Settings())  # what a GPU's backend would read
    assert device_key(gpu) == "NVIDIA H200"
    assert profiling_database(gpu).path.name == "profile-NVIDIA_H200.json"


def test_pallas_gemms_are_timed_against_xla_too(cache_dir):
    plan_ops("pallas")
    timed = set(gemm_keys(profiling_database(PallasBackend()).entries).values())
    assert timed == {"pallas", "xla"}


@pytest.mark.parametrize("a, b", [
    (np.zeros((0, 4), np.float32), np.ones((4, 3), np.float32)),    # no kernel: empty
    (np.ones((3, 4), np.complex64), np.ones((4, 3), np.complex64)),  # no kernel: complex
], ids=["empty", "complex"])
def test_gemms_without_a_kernel_are_not_timed(cache_dir, a, b):
    fn = lambda a, b: jnp.abs(a @ b) * 2  # noqa: E731
    got = dnnfusion.jit(fn, backend="c", profile=True, fallback=False)(a, b)
    np.testing.assert_allclose(got, jax.jit(fn)(a, b))
    assert not gemm_keys(profiling_database(CBackend()).entries)
