"""The model zoo: every model of the paper is there, and a smoke subset runs through compare.

The whole zoo is a benchmark (``python -m dnnfusion_jax compare examples``), not a CI test:
this file keeps CI inside its budget with the three cheapest models.
"""
import importlib

import pytest

import dnnfusion_jax as dnnfusion
from dnnfusion_jax.tools.targets import load_target
from examples import ZOO

SMOKE = ("tinybert", "c3d", "efficientnet_b0")


def test_zoo_lists_the_papers_15_models_each_with_an_example():
    assert len(ZOO) == 15
    for name in ZOO:
        module = importlib.import_module(f"examples.{name}")
        assert callable(getattr(module, "example", None)), f"examples/{name}.py lacks example()"
        assert module.__doc__ and "input" in module.__doc__.lower(), f"{name}: document the input"


@pytest.mark.parametrize("name", SMOKE)
def test_smoke_models_match_jax_jit_through_compare(name):
    fn, args, _ = load_target(f"examples/{name}.py")
    row = dnnfusion.compare_xla(fn, *args, repeats=2, name=name)
    assert row["matches"] and row["max_abs_err"] <= 1e-5
    assert 0 < row["xla_kernels"] <= row["jaxpr_ops"]
    # rewriting may add parameter-sized operators (batch-norm folding), never FLOPs
    assert 0 < row["blocks"] <= row["ops_after_rewrite"]
    assert row["flops_after"] <= row["flops_before"]
    assert row["ms_xla"] > 0 and row["ms_dnnfusion"] > 0
