"""The rule library of the e-graph rewriter, one module per family.

Families: ``identities`` (and constant folding), ``associative``, ``commutative``,
``distributive``, ``reductions``, ``layout`` (transpose/reshape cancellation and sinking),
``linalg`` (shared-operand factoring, matrix chains, scale hoisting, batch-norm folding).
Every rule has a stable name and a one-line law; ``python -m dnnfusion_jax rules list`` prints
them and ``rules check`` proves each on random and edge values.

Example:
    >>> rules = default_rules()
    >>> len({r.name for r in rules}) == len(rules)
    True
    >>> sorted({r.family for r in rules})
    ['associative', 'commutative', 'distributive', 'identities', 'layout', 'linalg', 'reductions']
"""
from __future__ import annotations

import importlib

FAMILIES = ("identities", "associative", "commutative", "distributive", "reductions", "layout",
            "linalg")


def default_rules() -> list:
    """Every rule of the library, family by family."""
    rules = []
    for family in FAMILIES:
        rules += importlib.import_module(f"egraph_rules.{family}").RULES
    return rules
