"""Shared helpers for the test suite."""
from __future__ import annotations

import jax
import numpy as np

RTOL = ATOL = 1e-5


def assert_tree_allclose(actual, expected, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Leaf-by-leaf agreement (same structure, dtypes, shapes; NaN where NaN)."""
    actual_leaves, actual_tree = jax.tree_util.tree_flatten(actual)
    expected_leaves, expected_tree = jax.tree_util.tree_flatten(expected)
    assert actual_tree == expected_tree
    for a, e in zip(actual_leaves, expected_leaves):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape and a.dtype == e.dtype, (a.shape, a.dtype, e.shape, e.dtype)
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
