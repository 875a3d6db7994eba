"""Rewrite rules for the e-graph stage, one module per family (associative, distributive, ...).

The e-graph rewriter and its rule library are built by their own issue (see the README's
roadmap); until then ``dnnfusion_jax.simplify`` performs the identity, CSE and cancellation
clean-ups and this package holds no rules.
"""
