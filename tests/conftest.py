"""Shared helpers for the test suite."""
from __future__ import annotations

import jax
import numpy as np

RTOL = ATOL = 1e-5


def paired_leaves(actual, expected, what: str = ""):
    """``(where, got, want)`` for every leaf, after checking that both are the same pytree and
    each leaf pair has one shape and dtype (``where`` names the leaf for error messages)."""
    actual_leaves, actual_tree = jax.tree_util.tree_flatten(actual)
    expected_leaves, expected_tree = jax.tree_util.tree_flatten(expected)
    assert actual_tree == expected_tree, f"{what}: pytree {actual_tree} != {expected_tree}"
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(expected)[0]]
    for path, got, want in zip(paths, actual_leaves, expected_leaves):
        where = f"{what} leaf {path}"
        assert got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}"
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
        yield where, got, want


def assert_tree_allclose(actual, expected, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Leaf-by-leaf agreement (same structure, dtypes, shapes; NaN where NaN)."""
    actual_leaves, actual_tree = jax.tree_util.tree_flatten(actual)
    expected_leaves, expected_tree = jax.tree_util.tree_flatten(expected)
    assert actual_tree == expected_tree
    for a, e in zip(actual_leaves, expected_leaves):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape and a.dtype == e.dtype, (a.shape, a.dtype, e.shape, e.dtype)
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
