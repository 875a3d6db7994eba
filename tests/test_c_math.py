"""Accuracy of the C prelude's own transcendentals (``codegen/c/prelude.h``), run as C kernels
through the backend on a dense sweep against float64 references, plus their inf/NaN results.
Bounds in ulp of the float32 result: exp ~1 ulp; log1p <= 3.8 ulp (Goldberg's correction);
tanh and erf use XLA's rational forms (XLA's own are 4.4 and 5.1 ulp on this sweep); erfc <= 7 ulp
on every float (XLA's is 35 ulp off near x = 6). erfc's sweep stops at 9, where it is still
normal: inside jax.jit kernels run with subnormals flushed to zero, as XLA's own."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dnnfusion_jax as dnnfusion

CASES = {
    # name: (jax function, float64 reference, sweep range, ulp bound)
    "exp": (jnp.exp, np.exp, (-87.0, 88.0), 2.0),
    "tanh": (jnp.tanh, np.tanh, (-10.0, 10.0), 6.0),
    "erf": (jax.lax.erf, np.vectorize(math.erf), (-6.0, 6.0), 7.0),
    "erfc": (jax.lax.erfc, np.vectorize(math.erfc), (-4.0, 9.0), 7.0),
    "log1p": (jnp.log1p, np.log1p, (-0.999, 50.0), 4.0),
    "log1p near 0": (jnp.log1p, np.log1p, (-1e-3, 1e-3), 4.0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_prelude_function_accuracy_and_specials(name):
    fn, reference, (low, high), bound = CASES[name]
    x = np.linspace(low, high, 64 * 1024, dtype=np.float32).reshape(64, 1024)
    got = np.asarray(dnnfusion.jit(fn, backend="c", fallback=False)(x)).astype(np.float64)
    want = reference(x.astype(np.float64))
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert (np.abs(got - want) / ulp).max() <= bound

    specials = np.array([[np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, 100.0, -100.0]],
                        np.float32)
    got = dnnfusion.jit(fn, backend="c", fallback=False)(specials)
    np.testing.assert_allclose(got, jax.jit(fn)(specials), rtol=1e-6, atol=1e-30,
                               equal_nan=True)
