"""bf16 library models (``library_half_models.py``) fuse and are as accurate as jax.jit.

Against the same model in float32 arithmetic on the same values, dnnfusion's error is no
worse than jax.jit's (within 1.25x, or under 2e-3 of the leaf's scale), no block is left to
XLA for its dtype, and there are no more blocks than in the float32 model.
"""
from __future__ import annotations

import jax
import pytest

import dnnfusion_jax as dnnfusion

try:  # tests/ imported as a package
    from . import library_half_models as half
except ImportError:
    import library_half_models as half


@pytest.mark.parametrize("name", sorted(half.HALF_MODELS))
def test_half_model_is_as_accurate_as_jax_jit(name):
    for library in half.HALF_LIBRARIES[name]:
        pytest.importorskip(library)
    fn, args, f32_fn, f32_args = half.HALF_MODELS[name]()
    fused = dnnfusion.jit(fn, fallback=False)
    summary = fused.explain(*args).summary()
    assert not any("dtype" in reason for reason in summary["left_to_xla"]), summary["left_to_xla"]
    assert summary["blocks"] <= dnnfusion.explain(f32_fn, *f32_args).summary()["blocks"]
    reference = jax.jit(f32_fn)(*f32_args)
    ours = half.scaled_errors(fused(*args), reference)
    xla = half.scaled_errors(jax.jit(fn)(*args), reference)
    for k, (mine, theirs) in enumerate(zip(ours, xla)):
        assert mine <= max(1.25 * theirs, 2e-3), (name, k, mine, theirs)
