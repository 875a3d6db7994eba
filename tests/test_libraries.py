"""``dnnfusion.jit`` on models written with Flax (linen, nnx), Haiku, Equinox and Optax (see
``library_models.py``): what users actually write, not the hand-written layers of ``models.py``.

For every model (inference, and the two full Optax training steps) the fused function matches
``jax.jit`` leaf by leaf, and ``explain`` reports at least one fused kernel. A model whose
library is not installed is skipped, so the suite still collects without them.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion
from conftest import paired_leaves

try:  # tests/ imported as a package
    from . import library_models as libs
except ImportError:  # tests/ on sys.path (pytest's default rootdir-relative import)
    import library_models as libs

SCALED_TOLERANCE = 1e-4
"""max|ours - jax.jit| / max(1, max|jax.jit|) per float leaf: training steps run a backward
pass and an optimizer update, where a reordered sum in a gradient moves the last bits."""


class _Model:
    """One library model built once per session, with its reference and fused functions."""

    def __init__(self, name: str) -> None:
        self.fn, self.args = libs.LIBRARY_MODELS[name]()
        self.reference = jax.jit(self.fn)
        # fallback=False: an optimiser failure raises instead of silently running unfused
        self.fused = dnnfusion.jit(self.fn, fallback=False)


@functools.cache
def _model(name: str) -> _Model:
    return _Model(name)


def model(name: str) -> _Model:
    """The cached model, or a skip when its library is missing (a skip is not cached)."""
    for library in libs.LIBRARIES[name]:
        pytest.importorskip(library)
    return _model(name)


def assert_scaled_close(actual, expected, what: str) -> None:
    """Same pytree and, per leaf, same shape and dtype; floats within ``SCALED_TOLERANCE`` of
    the leaf's scale, other leaves (Adam's step count) equal."""
    for where, got, want in paired_leaves(actual, expected, what):
        got, want = np.asarray(got), np.asarray(want)
        if not np.issubdtype(want.dtype, np.inexact):
            np.testing.assert_array_equal(got, want, err_msg=where)
            continue
        # the inputs are finite and so is the reference: a comparison of NaNs proves nothing
        assert np.all(np.isfinite(want)), f"{where}: the jax.jit result is not finite"
        got, want = got.astype(np.float64), want.astype(np.float64)
        error = np.max(np.abs(got - want), initial=0.0) / max(1.0, np.max(np.abs(want),
                                                                          initial=0.0))
        assert error <= SCALED_TOLERANCE, f"{where}: scaled error {error:.2e}"


NAMES = list(libs.LIBRARY_MODELS)


@pytest.mark.parametrize("name", NAMES)
def test_library_model_matches_jax_jit(name):
    m = model(name)
    assert_scaled_close(m.fused(*m.args), m.reference(*m.args), what=name)


@pytest.mark.parametrize("name", NAMES)
def test_explain_reports_fused_blocks(name):
    m = model(name)
    summary = dnnfusion.explain(m.fused, *m.args).summary()
    assert summary["internal_error"] is None
    assert summary["fused_kernels"] >= 1, summary["left_to_xla"]
    assert summary["blocks"] >= summary["fused_kernels"] + sum(summary["left_to_xla"].values())
    assert all(isinstance(reason, str) and reason for reason in summary["left_to_xla"])


def test_the_catalogue_covers_each_library_and_both_kinds():
    """Inference and training lists partition the catalogue; every library is represented."""
    assert sorted(libs.INFERENCE + libs.TRAINING) == sorted(libs.LIBRARY_MODELS)
    assert len(libs.TRAINING) == 2
    used = {library for name in libs.LIBRARY_MODELS for library in libs.LIBRARIES[name]}
    assert used == {"flax", "haiku", "equinox", "optax"}


def test_a_training_step_variant_matches_jax_jit():
    """``training_step`` (the benchmark's step for inference models): one cheap model here,
    the benchmark runs the rest."""
    pytest.importorskip("equinox")
    pytest.importorskip("optax")
    step, args = libs.training_step("equinox_mlp_vmap")
    new_params, opt_state, loss = jax.jit(step)(*args)
    assert jnp.shape(loss) == () and np.isfinite(loss)
    assert jax.tree_util.tree_structure(new_params) == jax.tree_util.tree_structure(args[0])
    assert_scaled_close(dnnfusion.jit(step, fallback=False)(*args),
                        (new_params, opt_state, loss), what="equinox_mlp_vmap step")
