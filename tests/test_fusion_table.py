"""Table 3 as data: every cell, the cells the paper's prose fixes, and Opaque."""
import itertools

import pytest

from dnnfusion_jax.fusion.fusion_table import TABLE3, Verdict, fuse_verdict
from dnnfusion_jax.ops.mapping_types import MappingType as M

ANALYSED = [t for t in M if t is not M.OPAQUE]


def test_table_has_all_25_cells_with_a_verdict():
    assert set(TABLE3) == set(itertools.product(ANALYSED, ANALYSED))
    for fused, verdict in TABLE3.values():
        assert isinstance(fused, M) and fused is not M.OPAQUE and isinstance(verdict, Verdict)


@pytest.mark.parametrize("other", ANALYSED)
def test_one_to_one_fuses_with_anything_in_either_order(other):
    assert fuse_verdict(M.ONE_TO_ONE, other) == (other, Verdict.GREEN)
    assert fuse_verdict(other, M.ONE_TO_ONE) == (other, Verdict.GREEN)


@pytest.mark.parametrize("layout", [M.REORGANIZE, M.SHUFFLE])
@pytest.mark.parametrize("heavy", [M.ONE_TO_MANY, M.MANY_TO_MANY])
def test_layout_ops_with_heavy_ops_are_yellow(layout, heavy):
    assert fuse_verdict(layout, heavy)[1] is Verdict.YELLOW
    assert fuse_verdict(heavy, layout)[1] is Verdict.YELLOW


def test_cells_fixed_by_the_paper():
    assert fuse_verdict(M.MANY_TO_MANY, M.ONE_TO_MANY) == (M.MANY_TO_MANY, Verdict.YELLOW)
    assert fuse_verdict(M.ONE_TO_MANY, M.MANY_TO_MANY)[1] is Verdict.RED
    assert fuse_verdict(M.MANY_TO_MANY, M.MANY_TO_MANY)[1] is Verdict.RED
    legal = [cell for cell, (_, verdict) in TABLE3.items() if verdict is not Verdict.RED]
    assert len(legal) == 23


def test_fused_type_is_never_simpler_than_the_simpler_operand():
    for (first, second), (fused, _) in TABLE3.items():
        assert fused >= min(first, second)


@pytest.mark.parametrize("other", list(M))
def test_opaque_never_fuses(other):
    assert fuse_verdict(M.OPAQUE, other)[1] is Verdict.RED
    assert fuse_verdict(other, M.OPAQUE)[1] is Verdict.RED
